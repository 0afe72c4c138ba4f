//! Whether the wall clock can be trusted. A gate box often has no battery-backed clock: after a
//! power cut it may boot in 1970 or years ahead until NTP has set it. "Known synced" here is the
//! kernel's own word — `adjtimex` without `STA_UNSYNC`, which chrony, ntpd and systemd-timesyncd
//! clear once they have set the clock — or, where the call is not allowed (a unit with
//! `ProtectClock=`; the shipped one allows it), the marker systemd-timesyncd leaves once synced.

/// The kernel (or the time-sync daemon) says the clock is synchronised.
pub fn synced() -> bool {
    match kernel_synced() {
        Some(synced) => synced,
        None => std::path::Path::new("/run/systemd/timesync/synchronized").exists(),
    }
}

#[cfg(target_os = "linux")]
fn kernel_synced() -> Option<bool> {
    // SAFETY: timex is plain data; with `modes` 0 adjtimex only reads the kernel's state into it.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return None;
    }
    Some(state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0)
}

#[cfg(not(target_os = "linux"))]
fn kernel_synced() -> Option<bool> {
    None
}
