//! gatehouse: the daemon on the gateway box at a residential estate's gate.
//!
//! The data path, by module:
//! `sources` (device transports) → `core` (pure decisions) → actuator commands (first, fast) and
//! `store` (durable outbox, group commit) → `uplink` (protobuf over MQTT to the property company).
//! `daemon` wires them together; `sim` holds the device simulators used by tests and the demo.
pub mod config;
pub mod core;
pub mod metrics;
pub mod profiles;
pub mod proto;
pub mod store;
