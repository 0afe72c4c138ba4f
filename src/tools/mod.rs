//! Everything that is not the daemon but ships with it: the installer's command line (`cli`,
//! `broker_config`, `status`) and the device simulators (`simulate`, `sim`). Nothing in the
//! daemon's parts imports from here. The company's tools, the demo and the benches are crates of
//! their own (`company/`, `demo/`): a gate box carries none of them.
pub mod broker_config;
pub mod cli;
pub mod console_cert;
pub mod console_user;
pub mod sim;
pub mod simulate;
pub mod status;
