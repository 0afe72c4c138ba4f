//! Everything that is not the daemon: the command line, the demo, the benches and the device
//! simulators. Nothing in the daemon's parts imports from here.
pub mod bench;
pub mod broker_config;
pub mod cli;
pub mod company;
pub mod company_broker;
pub mod demo;
pub mod lists;
pub mod sim;
pub mod simulate;
pub mod status;
pub mod tail;
