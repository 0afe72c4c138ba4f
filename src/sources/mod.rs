//! Device transports, one file each. A source turns a device's bytes into normalised
//! observations (with the device's profile) and hands them to the decision loop.
pub mod modbus;
pub mod mqtt;
pub mod serial;

use std::sync::atomic::{AtomicBool, AtomicI64};

/// What the status says about one device, updated by its source.
#[derive(Debug, Default)]
pub struct DeviceLive {
    /// Unix ms of the device's last message; 0 when none yet.
    pub last_seen: AtomicI64,
    /// The link gatehouse holds for it (a serial port) is down.
    pub offline: AtomicBool,
}
