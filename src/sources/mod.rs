//! Device transports, one file each. A source turns a device's bytes into normalised
//! observations (with the device's profile) and hands them to the decision loop. What every
//! source shares is here: the observation on its way ([`Input`]), link and acknowledgement news
//! ([`SourceEvent`]), the status each keeps of its devices ([`DeviceLive`]), and for MQTT (the
//! endpoint or an external broker) the topic routes and their decoding ([`Route`], [`decode`]).
pub mod endpoint;
pub mod fire_input;
pub mod http;
pub mod liveness;
pub mod modbus;
pub mod mqtt;
pub mod serial;
pub mod slots;

use crate::decision::Decoded;
use crate::device::Profile;
use crate::metrics::{worth_logging, Metrics};
use crate::store::outbox::Ack;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
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
    /// A device whose reply is its gate command (a camera told "ok" over HTTP): where the
    /// command for this event's decision goes, instead of the gate's usual link.
    pub reply: Option<PendingReply>,
}

/// The answer a pushing device waits for when that answer is its gate command (a Zhenshi camera
/// told "ok" or "no"). Only the decision on this very push may use it; the source answers an
/// open at once (the open is the point) and anything else once the record is durable.
pub struct PendingReply {
    device: usize,
    received: Instant,
    tx: tokio::sync::oneshot::Sender<ReplyCommand>,
}

/// The gate command a [`PendingReply`] carries back to its source.
#[derive(Debug)]
pub struct ReplyCommand {
    pub payload: Vec<u8>,
    /// It lets someone through: it may go before the record.
    pub opens: bool,
}

impl PendingReply {
    /// The reply of `device`'s push that arrived at `received`, and where its source waits.
    pub fn new(
        device: usize,
        received: Instant,
    ) -> (PendingReply, tokio::sync::oneshot::Receiver<ReplyCommand>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply = PendingReply {
            device,
            received,
            tx,
        };
        (reply, rx)
    }

    /// Whether a decision on `device`'s event of `received`, for `gate`, answers this push: its
    /// own decision, not an earlier one the same call decided (a join window closing).
    pub fn answers(&self, gate: usize, device: usize, received: Instant) -> bool {
        self.device == gate && self.device == device && self.received == received
    }

    /// False when the push is no longer waiting.
    pub fn send(self, payload: Vec<u8>, opens: bool) -> bool {
        self.tx.send(ReplyCommand { payload, opens }).is_ok()
    }
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
    /// A gate command was never written: its link went down before it could be, or it waited
    /// past its transport's bound (`why`). Never retried.
    NotWritten {
        device: usize,
        command: &'static str,
        why: &'static str,
    },
    /// A gate can take commands again (a device on the endpoint connected with its command
    /// subscription): in fire mode it is held open at once, not at the next re-assert.
    GateReady {
        device: usize,
    },
    /// A message on a command topic broke the uplink's connection (`detail`: which topic, and
    /// for how long it is left out).
    OrderTopicPoisoned {
        detail: String,
    },
    /// A fire panel's input has a new debounced reading (`detail`: why it is unknown).
    FireInput {
        device: usize,
        state: crate::decision::FireInput,
        detail: String,
    },
}

/// What the status says about one device, updated by its source.
#[derive(Debug, Default)]
pub struct DeviceLive {
    /// Unix ms of the device's last message; 0 when none yet.
    pub last_seen: AtomicI64,
    /// The same on the monotonic clock ([`crate::clock::mono_ms`]), for liveness: a step of the
    /// wall clock must not make every device look silent.
    pub heard_mono: AtomicI64,
    /// Its messages that did not decode (or did not read in full), for the operations team.
    pub bad_messages: AtomicU64,
    /// Frames on its serial line dropped for a bad checksum or shape (a bus's noise shows on
    /// each of its devices: the line is what a technician checks).
    pub frame_errors: AtomicU64,
    /// The link gatehouse holds for it (a serial port) is down.
    pub offline: AtomicBool,
}

impl DeviceLive {
    /// The device was heard from just now.
    pub fn heard(&self) {
        self.last_seen.store(crate::now_ms(), Ordering::Relaxed);
        self.heard_mono
            .store(crate::clock::mono_ms(), Ordering::Relaxed);
    }
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
    r.live.heard();
    let decoded = match r.status {
        None => r.profile.decode(payload),
        Some(i) => r.profile.decode_status(i, payload),
    };
    (
        r.device,
        checked(decoded, &r.device_id, &r.profile.name, &r.live, metrics),
    )
}

/// A decode result as the decision loop takes it: an error is counted and logged (at the 1st,
/// 10th, 100th…) and becomes `None`; an event that names someone but did not read in full is
/// counted and logged too, and goes on to be denied `invalid_reading`.
pub fn checked(
    decoded: Result<Decoded, crate::device::DecodeError>,
    device_id: &str,
    profile: &str,
    live: &DeviceLive,
    metrics: &Metrics,
) -> Option<Decoded> {
    let error = match &decoded {
        Ok(d) => d.unreadable.clone(),
        Err(e) => Some(e.to_string()),
    };
    if let Some(error) = error {
        live.bad_messages.fetch_add(1, Ordering::Relaxed);
        let n = metrics.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            let kept = decoded.is_ok();
            warn!(device = %device_id, profile, %error, bad_messages = n, kept, "Device message does not decode (kept: the person it names is told to try again).");
        }
    }
    decoded.ok()
}

/// Refusals of device clients (the MQTT endpoint's, the HTTP listener's): counted
/// (`device_refusals`), logged at the 1st, 10th, 100th…, and raised upstream as
/// `device_misbehaving` at most once a minute per device (and once for all unknown clients).
pub struct Refusals {
    metrics: Arc<Metrics>,
    events: mpsc::Sender<SourceEvent>,
    last_alarm: Mutex<HashMap<Option<usize>, Instant>>,
}

const ALARM_EVERY: Duration = Duration::from_secs(60);

impl Refusals {
    /// Where the source's other events go (the decision loop's `source_events`).
    pub fn events(&self) -> &mpsc::Sender<SourceEvent> {
        &self.events
    }

    pub fn new(metrics: Arc<Metrics>, events: mpsc::Sender<SourceEvent>) -> Refusals {
        Refusals {
            metrics,
            events,
            last_alarm: Mutex::new(HashMap::new()),
        }
    }

    /// `device` is the device's index when the client proved or named who it is.
    pub fn refuse(&self, device: Option<usize>, id: &str, peer: SocketAddr, what: &str) {
        let n = self.metrics.device_refusals.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            warn!(device = %id, peer = %peer, refusals = n, "Device refused: {what}.");
        }
        let now = Instant::now();
        let mut last = self.last_alarm.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(&device)
            .is_some_and(|t| now.duration_since(*t) < ALARM_EVERY)
        {
            return;
        }
        last.insert(device, now);
        let _ = self.events.try_send(SourceEvent::Misbehaving {
            device,
            detail: format!("{what} (from {peer}, as {id})"),
        });
    }
}
