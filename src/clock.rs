//! Whether the wall clock can be trusted, and when it jumps. A gate box often has no
//! battery-backed clock: after a power cut it may boot in 1970 or years ahead until NTP has set
//! it, and a time server or a hand with `date -s` may step it at any time.
//!
//! **Known synced** is the kernel's own word — `adjtimex` without `STA_UNSYNC`, which chrony, ntpd
//! and systemd-timesyncd clear once they have set the clock — or, where the call is not allowed
//! (a unit with `ProtectClock=`; the shipped one allows it), the marker systemd-timesyncd leaves
//! once synced. `[clock] trusted = true` vouches for a box with a real-time clock instead. Read at
//! start and on every turn of the decision loop's one-second tick (one cheap system call).
//!
//! **A jump** is the wall clock moving against the monotonic clock by more than [`JUMP_MS`]
//! between two readings (NTP's slewing moves it by at most 0.5 ms a second; only steps get
//! there). Every reading of the time the decision loop makes goes through [`ClockWatch::now`], so
//! a step is seen at the first reading after it, before any timer is compared with the new time.
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// A step of the wall clock larger than this is a jump.
pub const JUMP_MS: i64 = 1000;

/// The wall clock as gatehouse sees it: trusted or not, and its jumps.
#[derive(Debug)]
pub struct ClockWatch {
    /// The operator vouches for the clock (`[clock] trusted`).
    vouched: bool,
    synced: AtomicBool,
    /// Wall minus monotonic time at the last reading, ms.
    offset_ms: AtomicI64,
    /// Jumps not yet handed to the decision loop, summed, ms.
    pending_ms: AtomicI64,
    pub jumps: AtomicU64,
    base: Instant,
    /// Test hooks (debug builds; `gatehouse` control requests): added to the wall clock, and a
    /// sync state forced instead of the kernel's.
    test_skew_ms: AtomicI64,
    test_synced: AtomicI64,
}

impl ClockWatch {
    pub fn new(vouched: bool) -> ClockWatch {
        let w = ClockWatch {
            vouched,
            synced: AtomicBool::new(false),
            offset_ms: AtomicI64::new(0),
            pending_ms: AtomicI64::new(0),
            jumps: AtomicU64::new(0),
            base: Instant::now(),
            test_skew_ms: AtomicI64::new(0),
            test_synced: AtomicI64::new(-1),
        };
        w.offset_ms
            .store(w.wall_ms() - w.mono_ms(), Ordering::Relaxed);
        w.check_sync();
        w
    }

    /// Milliseconds on the monotonic clock since this watch began: never jumps.
    pub fn mono_ms(&self) -> i64 {
        self.base.elapsed().as_millis() as i64
    }

    fn wall_ms(&self) -> i64 {
        crate::now_ms() + self.test_skew_ms.load(Ordering::Relaxed)
    }

    /// The wall clock, unix ms; a jump since the last reading is noted (see [`Self::take_jump`]).
    pub fn now(&self) -> i64 {
        let wall = self.wall_ms();
        let offset = wall - self.mono_ms();
        let before = self.offset_ms.swap(offset, Ordering::Relaxed);
        let step = offset - before;
        if step.abs() > JUMP_MS {
            self.pending_ms.fetch_add(step, Ordering::Relaxed);
            self.jumps.fetch_add(1, Ordering::Relaxed);
        }
        wall
    }

    /// The jumps seen since the last call, summed (ms; forwards positive), if any.
    pub fn take_jump(&self) -> Option<i64> {
        Some(self.pending_ms.swap(0, Ordering::Relaxed)).filter(|&d| d != 0)
    }

    /// The time may be relied on: vouched for, or known synced.
    pub fn trusted(&self) -> bool {
        self.vouched || self.synced.load(Ordering::Relaxed)
    }

    /// Reads the sync state again; true when it changed.
    pub fn check_sync(&self) -> bool {
        let now = match self.test_synced.load(Ordering::Relaxed) {
            -1 => synced(),
            forced => forced == 1,
        };
        self.synced.swap(now, Ordering::Relaxed) != now
    }

    /// Test hook: steps the clock this watch reads by `ms`.
    pub fn test_step(&self, ms: i64) {
        self.test_skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Test hook: the kernel's sync state is taken to be `synced` from now on.
    pub fn test_force_synced(&self, synced: bool) {
        self.test_synced.store(i64::from(synced), Ordering::Relaxed);
    }
}

/// Milliseconds on the monotonic clock since the process's first call: for timers that a step
/// of the wall clock must not disturb.
pub fn mono_ms() -> i64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as i64
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_either_way_is_one_jump_and_slewing_is_none() {
        let w = ClockWatch::new(true);
        w.now();
        assert_eq!(w.take_jump(), None);
        w.test_step(JUMP_MS / 2);
        w.now();
        assert_eq!(w.take_jump(), None, "half a second is slewing, not a jump");
        w.test_step(10 * 365 * 86_400_000);
        w.now();
        w.now();
        let j = w.take_jump().unwrap();
        assert!((j - 10 * 365 * 86_400_000).abs() < 50, "{j}");
        assert_eq!(w.take_jump(), None, "handed over once");
        w.test_step(-3_600_000);
        w.now();
        assert!(w.take_jump().unwrap() < -3_599_000);
        assert_eq!(w.jumps.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn trust_is_vouched_or_synced() {
        let w = ClockWatch::new(false);
        w.test_force_synced(false);
        w.check_sync();
        assert!(!w.trusted());
        w.test_force_synced(true);
        assert!(w.check_sync(), "a change is reported");
        assert!(w.trusted());
        assert!(ClockWatch::new(true).trusted());
    }
}
