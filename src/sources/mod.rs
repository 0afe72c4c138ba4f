//! Device transports, one file each. A source turns a device's bytes into normalised
//! observations (with the device's profile) and hands them to the decision loop. What every
//! source shares is here: the observation on its way ([`Input`]), link and acknowledgement news
//! ([`SourceEvent`]), the status each keeps of its devices ([`DeviceLive`]), and for MQTT (the
//! endpoint or an external broker) the topic routes and their decoding ([`Route`], [`decode`]).
pub mod endpoint;
pub mod modbus;
pub mod mqtt;
pub mod serial;

use crate::decision::Decoded;
use crate::device::Profile;
use crate::metrics::{worth_logging, Metrics};
use crate::store::outbox::Ack;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tracing::warn;

/// One decoded device message on its way to the decision loop.
pub struct Input {
    pub device: usize,
    /// `None`: the message did not decode (already counted and logged); only its ack is left.
    pub decoded: Option<Decoded>,
    /// When the message came off the socket: decision latency is measured from here.
    pub received: Instant,
    /// Sent again by the device's broker (MQTT DUP): never acknowledged the first time.
    pub redelivered: bool,
    pub ack: Ack,
}

/// Capacity of the decision loop's input. Full → the events task waits, and the broker holds
/// the unacknowledged events (backpressure; nothing dropped).
pub const INPUT_CAPACITY: usize = 4096;

/// A port's link went down or came back: the devices on it, and why.
#[derive(Debug, Clone)]
pub struct LinkChange {
    pub devices: Vec<usize>,
    pub online: bool,
    pub detail: String,
}

/// What a source tells the decision loop besides observations.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    Link(LinkChange),
    /// A gate acknowledged a command frame; `code` 0 is "accepted".
    Ack {
        device: usize,
        code: u64,
    },
    /// A client on the device endpoint broke its rules (refused at CONNECT, a topic not its
    /// own, …): `device` when it had authenticated.
    Misbehaving {
        device: Option<usize>,
        detail: String,
    },
}

/// What the status says about one device, updated by its source.
#[derive(Debug, Default)]
pub struct DeviceLive {
    /// Unix ms of the device's last message; 0 when none yet.
    pub last_seen: AtomicI64,
    /// The link gatehouse holds for it (a serial port) is down.
    pub offline: AtomicBool,
}

/// A device whose events arrive on `topic`.
pub struct Route {
    pub device: usize,
    pub device_id: String,
    pub profile: Arc<Profile>,
    pub live: Arc<DeviceLive>,
    /// A status topic of the device (index into its profile's `status_topics`), not its events.
    pub status: Option<usize>,
}

/// Routes a device message by its topic and decodes it with the device's profile. A message that
/// does not decode is counted and logged (`None`), and still passed on so its ack keeps its place.
pub fn decode(
    routes: &HashMap<String, Route>,
    topic: &str,
    payload: &[u8],
    metrics: &Metrics,
) -> (usize, Option<Decoded>) {
    Metrics::inc(&metrics.events_received);
    let Some(r) = routes.get(topic) else {
        return (usize::MAX, None);
    };
    r.live.last_seen.store(crate::now_ms(), Ordering::Relaxed);
    let decoded = match r.status {
        None => r.profile.decode(payload),
        Some(i) => r.profile.decode_status(i, payload),
    };
    match decoded {
        Ok(d) => (r.device, Some(d)),
        Err(e) => {
            let n = metrics.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %r.device_id, profile = %r.profile.name, topic = %topic, error = %e, bad_messages = n, "Device message does not decode; dropped.");
            }
            (r.device, None)
        }
    }
}
