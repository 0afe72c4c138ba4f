//! The benches behind `gatehouse bench*`: each starts what it measures (a child daemon, a
//! stand-in company broker, simulated devices on the endpoint or on ptys) and reports numbers, never a pass or fail.
//! Shared by them: the child daemon (`child.rs`).
mod child;
mod http;
mod mqtt;
mod outbox;
mod serial;
mod start;
mod vehicle;

pub use http::{http, HttpBenchOptions, HttpReport};
pub use mqtt::{run, BenchOptions, Report};
pub use outbox::{outbox, OutboxBenchOptions};
pub use serial::{serial, SerialBenchOptions, SerialReport};
pub use start::{start, StartBenchOptions, StartReport};
pub use vehicle::{vehicle, VehicleBenchOptions, VehicleReport};
