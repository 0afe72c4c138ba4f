//! gatehouse: the daemon on the gateway box at a residential estate's gate.
//!
//! The data path, by module:
//! `sources` (device transports) → `core` (pure decisions) → actuator commands (first, fast) and
//! `store` (durable outbox, group commit) → `uplink` (protobuf over MQTT to the property company).
//! `daemon` wires them together; `sim` holds the device simulators used by tests and the demo.
pub mod bench;
pub mod broker;
pub mod commands;
pub mod config;
pub mod control;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod frame;
pub mod metrics;
pub mod mqtt;
pub mod profiles;
pub mod proto;
pub mod run;
pub mod sim;
pub mod sources;
pub mod stats;
pub mod store;
pub mod systemd;
pub mod twins;
pub mod uplink;

/// Wall-clock time, unix milliseconds. Only the wiring reads the clock; the core is given it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
