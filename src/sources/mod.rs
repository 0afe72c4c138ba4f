//! Device transports, one file each. A source turns a device's bytes into normalised
//! observations (with the device's profile) and hands them to the decision loop.
pub mod mqtt;
