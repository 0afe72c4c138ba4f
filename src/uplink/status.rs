//! What the retained `status` says about this gateway: mode, registry version, outbox depth and
//! each device's link, read fresh whenever a status goes up. The decision loop keeps the mode and
//! the twins current; the sources keep each device's last-seen time and link.
use crate::clock::ClockWatch;
use crate::metrics::Metrics;
use crate::proto::v1;
use crate::sources::DeviceLive;
use crate::uplink::twins::Twins;
use gatehouse_contract::topics::{Channel, Topics};
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What the retained status says about this gateway.
#[derive(Debug, Clone)]
pub struct StatusSource {
    pub gateway: String,
    /// The mode in force; the decision loop changes it.
    pub mode: Arc<Mutex<&'static str>>,
    pub registry_version: Arc<AtomicU64>,
    /// Each device's status, with its last-seen time and link filled in when a status is made.
    pub devices: Vec<(v1::DeviceStatus, Arc<DeviceLive>)>,
    pub metrics: Arc<Metrics>,
    pub twins: Arc<Twins>,
    pub clock: Arc<ClockWatch>,
    /// Poked when what the status says changed (the mode): it goes up at once, not at the next
    /// periodic status.
    pub changed: Arc<Notify>,
    /// This run's count from the store (the status's `boot`); the status's `seq`: the uplink's
    /// connection in the high 32 bits, the statuses made on it in the low ones.
    pub boot: u64,
    pub seq: Arc<AtomicU64>,
    /// How often a status goes up, ms (the uplink sets it): the company flags a status older
    /// than that as stale.
    pub period_ms: u64,
}

/// The low 32 bits of `seq`, all ones: a will, last of its connection.
const LAST_OF_CONNECTION: u64 = 0xFFFF_FFFF;

impl StatusSource {
    /// The next status to publish: numbered after every one before it in this boot.
    pub fn status(&self, state: v1::GatewayState) -> v1::Status {
        v1::Status {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ..self.now(state)
        }
    }

    /// Numbers a new uplink connection (before each connect): its statuses come after the last
    /// connection's will.
    pub fn next_connection(&self) {
        let connection = (self.seq.load(Ordering::Relaxed) >> 32) + 1;
        self.seq.store(connection << 32, Ordering::Relaxed);
    }

    /// The MQTT will of the connection about to be made (and the clean stop's "offline"):
    /// encoded before the connection, yet numbered last of it — newer than every status it
    /// carries, older than the next connection's (a network blip's will must not outrank the
    /// "online" after it) and the next boot's.
    pub fn will(&self) -> v1::Status {
        v1::Status {
            seq: self.seq.load(Ordering::Relaxed) | LAST_OF_CONNECTION,
            ..self.now(v1::GatewayState::Offline)
        }
    }

    /// The will of the connection about to be made, as the MQTT client takes it: its
    /// "offline", retained on the status topic.
    pub fn last_will(&self, topics: &Topics) -> rumqttc::LastWill {
        let will = self.will().encode_to_vec();
        let topic = topics.channel(&Channel::Status);
        rumqttc::LastWill::new(topic, will, rumqttc::QoS::AtLeastOnce, true)
    }

    /// What a status would say now, unnumbered.
    pub fn now(&self, state: v1::GatewayState) -> v1::Status {
        v1::Status {
            boot: self.boot,
            seq: 0,
            gateway: self.gateway.clone(),
            state: state as i32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.lock().map_or("", |m| *m).to_string(),
            registry_version: self.registry_version.load(Ordering::Relaxed),
            needs_snapshot: self.registry_version.load(Ordering::Relaxed) == 0,
            outbox_depth: Metrics::get(&self.metrics.outbox_depth),
            outbox_bytes: Metrics::get(&self.metrics.outbox_bytes),
            outbox_evicted: Metrics::get(&self.metrics.outbox_evicted),
            store_degraded: self.metrics.store_degraded.load(Ordering::Relaxed),
            devices: self
                .devices
                .iter()
                .map(|(d, live)| v1::DeviceStatus {
                    last_seen_ms: live.last_seen.load(Ordering::Relaxed),
                    offline: live.offline.load(Ordering::Relaxed),
                    ..d.clone()
                })
                .collect(),
            gateway_time_ms: self.clock.now(),
            clock_unsynced: !self.clock.trusted(),
            clock_jumps: self.clock.jumps.load(Ordering::Relaxed),
            status_period_ms: self.period_ms,
        }
    }
}

impl StatusSource {
    /// What `gatehouse status` shows, as one JSON object: the retained status, with the twins,
    /// the uplink and the clock.
    pub fn report(&self) -> String {
        let s = self.now(v1::GatewayState::Online);
        let m = &self.metrics;
        let devices: Vec<_> = self
            .twins
            .all()
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.device, "lane": t.lane, "profile": t.profile, "online": t.online,
                    "last_seen_ms": t.last_seen_ms, "arm": t.arm,
                    "uncertain_commands": t.uncertain_commands, "fire_input": t.fire_input,
                })
            })
            .collect();
        serde_json::json!({
            "gateway": s.gateway,
            "version": s.version,
            "mode": s.mode,
            "registry_version": s.registry_version,
            "needs_snapshot": s.needs_snapshot,
            "time_ms": s.gateway_time_ms,
            "clock": { "synced": !s.clock_unsynced, "jumps": s.clock_jumps },
            "uplink": {
                "connected": m.uplink_connected.load(Ordering::Relaxed),
                "published": Metrics::get(&m.uplink_published),
                "acked": Metrics::get(&m.uplink_acked),
            },
            "outbox": {
                "depth": s.outbox_depth, "bytes": s.outbox_bytes, "evicted": s.outbox_evicted,
                "durable": !s.store_degraded,
                "in_memory": Metrics::get(&m.outbox_in_memory),
                "spilled": Metrics::get(&m.outbox_spilled),
            },
            "decisions": Metrics::get(&m.decisions),
            "devices": devices,
        })
        .to_string()
    }
}
