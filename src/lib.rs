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

/// From the kernel's CSPRNG by `getrandom(2)`: no file descriptor to run out of, and once the
/// pool is initialised at boot it does not fail.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length name the unfilled rest of `b`, which we own.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // ENOSYS before Linux 3.17 only; nothing random can be made on such a kernel.
            std::process::abort();
        }
    }
    b
}

/// Wall-clock time, unix milliseconds. Only the wiring reads the clock; the core is given it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
