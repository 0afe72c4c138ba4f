//! gatehouse: the daemon on the gateway box at a residential estate's gate.
//!
//! The data path, by folder (docs/ARCHITECTURE.md walks one event through it):
//! `sources` (device transports) → `decision` (pure rules) → gate commands (first, fast) and
//! `store` (durable outbox, group commit) → `uplink` (protobuf over MQTT to the property company).
//! `device` says how each vendor model speaks; `daemon` wires the parts together; `tools` holds
//! the installer's command line and the device simulators. What it shares with the company's side
//! (protobuf, topics, signed orders, list files) is the `gatehouse-contract` crate.
pub mod backoff;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod decision;
pub mod device;
pub mod metrics;
pub mod problem;
pub mod run;
pub mod sources;
pub mod store;
pub mod systemd;
pub mod tools;
pub mod uplink;

// The wire contract, shared with the company's side (`contract/`), at the paths the box's parts
// have always used.
pub use gatehouse_contract::mqtt as mqtt_client;
pub use gatehouse_contract::{hex, orders, proto, timefmt};

/// Wall-clock time, unix milliseconds. Only the wiring reads the clock; the core is given it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
