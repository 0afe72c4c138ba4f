//! The one integration-test binary (one link step): real sockets, an in-process broker on a free
//! port, simulated devices. Shared helpers live in `common/`.
mod common;

mod chaos;
mod cli;
mod clock;
mod commands;
mod console;
mod console_browser;
mod console_passes;
mod crash;
mod degraded;
mod durability;
mod endpoint;
mod endpoint_clients;
mod fire_input;
mod fuzz_seeds;
mod http_api;
mod http_intake;
mod interop;
mod liveness;
mod operations;
mod orders;
mod pedestrian_lane;
mod serial_lane;
mod uplink;
mod vehicle_lane;
