//! The benches behind `gatehouse-demo bench*`: each starts what it measures (a child `gatehouse`
//! daemon, the company's embedded broker, simulated devices on the endpoint or on ptys) and
//! reports numbers, never a pass or fail. Shared by them: the child daemon (`child.rs`).
mod child;
mod forms;
mod http;
mod ingest;
mod mqtt;
mod outbox;
mod serial;
mod start;
mod vehicle;

pub use forms::{forms, FormsBenchOptions};
pub use http::{http, HttpBenchOptions};
pub use ingest::{ingest, IngestBenchOptions};
pub use mqtt::{run, BenchOptions};
pub use outbox::{outbox, OutboxBenchOptions};
pub use serial::{serial, SerialBenchOptions};
pub use start::{start, StartBenchOptions};
pub use vehicle::{vehicle, VehicleBenchOptions};
