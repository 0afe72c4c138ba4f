//! Whether the wall clock can be trusted, and when it jumps. A gate box often has no
//! battery-backed clock: after a power cut it may boot in 1970 or years ahead until NTP has set
//! it, and a time server or a hand with `date -s` may step it at any time.
//!
//! **Known synced** is the kernel's own word — `adjtimex` without `STA_UNSYNC`, which chrony, ntpd
//! and systemd-timesyncd clear once they have set the clock — or, where the call is not allowed
//! (a unit with `ProtectClock=`; the shipped one allows it), the marker systemd-timesyncd leaves
//! once synced. `[clock] trusted = true` vouches for a box with a real-time clock instead. Read at
//! start and on every turn of the decision loop's one-second tick (one cheap system call). Once
//! synced, the clock stays trusted until it jumps: without its time server the kernel raises
//! `STA_UNSYNC` again after ~9 h (its error bound passing 16 s), while the clock is still right
//! to a few seconds — a night's network outage must not turn visitors away.
//!
//! **A jump** is the wall clock moving against the monotonic clock by more than [`JUMP_MS`]
//! between two readings (NTP's slewing moves it by at most 0.5 ms a second; only steps get
//! there). Every reading of the time the decision loop makes goes through [`ClockWatch::now`], so
//! a step is seen at the first reading after it, before any timer is compared with the new time.
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A step of the wall clock larger than this is a jump.
pub const JUMP_MS: i64 = 1000;

/// The wall clock as gatehouse sees it: trusted or not, and its jumps.
#[derive(Debug)]
pub struct ClockWatch {
    /// The operator vouches for the clock (`[clock] trusted`).
    vouched: bool,
    /// The kernel said synced at the last check.
    synced: AtomicBool,
    /// The kernel said synced at some check, and the clock has not jumped since.
    held: AtomicBool,
    /// The last reading, and the jumps it found, under one lock: readings come from several
    /// threads, and one that read the wall clock before a step must not undo the step another
    /// has seen (or count it twice).
    readings: Mutex<Readings>,
    pub jumps: AtomicU64,
    base: Instant,
    /// Test hooks (debug builds; `gatehouse` control requests): added to the wall clock, and a
    /// sync state forced instead of the kernel's.
    test_skew_ms: AtomicI64,
    test_synced: AtomicI64,
}

#[derive(Debug, Default)]
struct Readings {
    /// Wall minus monotonic time at the last reading, ms.
    offset_ms: i64,
    /// Jumps not yet handed to the decision loop, summed, ms.
    pending_ms: i64,
}

/// A reading whose two clocks were read further apart than this (the thread was pre-empted
/// between them) says nothing about a jump.
const READ_SKEW_MS: i64 = 50;

impl ClockWatch {
    pub fn new(vouched: bool) -> ClockWatch {
        let w = ClockWatch {
            vouched,
            synced: AtomicBool::new(false),
            held: AtomicBool::new(false),
            readings: Mutex::default(),
            jumps: AtomicU64::new(0),
            base: Instant::now(),
            test_skew_ms: AtomicI64::new(0),
            test_synced: AtomicI64::new(-1),
        };
        w.lock().offset_ms = w.wall_ms() - w.mono_ms();
        w.check_sync();
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.readings.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut r = self.lock();
        let mono = self.mono_ms();
        let wall = self.wall_ms();
        if self.mono_ms() - mono > READ_SKEW_MS {
            return wall;
        }
        let offset = wall - mono;
        let step = offset - std::mem::replace(&mut r.offset_ms, offset);
        if step.abs() > JUMP_MS {
            r.pending_ms += step;
            self.jumps.fetch_add(1, Ordering::Relaxed);
            // A clock that stepped is trusted again only when the kernel says synced.
            self.held.store(false, Ordering::Relaxed);
        }
        wall
    }

    /// The jumps seen since the last call, summed (ms; forwards positive), if any.
    pub fn take_jump(&self) -> Option<i64> {
        Some(std::mem::take(&mut self.lock().pending_ms)).filter(|&d| d != 0)
    }

    /// The time may be relied on: vouched for, known synced, or synced before and not jumped
    /// since.
    pub fn trusted(&self) -> bool {
        self.vouched || self.synced.load(Ordering::Relaxed) || self.held.load(Ordering::Relaxed)
    }

    /// Reads the sync state again; true when whether the time is trusted changed.
    pub fn check_sync(&self) -> bool {
        let before = self.trusted();
        let synced = match self.test_synced.load(Ordering::Relaxed) {
            -1 => synced(),
            forced => forced == 1,
        };
        self.synced.store(synced, Ordering::Relaxed);
        if synced {
            self.held.store(true, Ordering::Relaxed);
        }
        self.trusted() != before
    }

    /// Test hook: steps the clock this watch reads by `ms`.
    pub fn test_step(&self, ms: i64) {
        self.test_skew_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Test hook: the kernel's sync state is taken to be `synced` from now on (and, when not,
    /// as if it had never been: a box booted without its time server).
    pub fn test_force_synced(&self, synced: bool) {
        self.test_synced.store(i64::from(synced), Ordering::Relaxed);
        if !synced {
            self.held.store(false, Ordering::Relaxed);
        }
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

    #[test]
    fn synced_once_it_stays_trusted_until_it_jumps() {
        let w = ClockWatch::new(false);
        w.test_force_synced(true);
        w.check_sync();
        // The time server is gone for the night: the kernel says unsynced again.
        w.test_synced.store(0, Ordering::Relaxed);
        assert!(!w.check_sync(), "no change");
        assert!(w.trusted());
        // Someone sets the clock by hand meanwhile: no longer.
        w.test_step(3_600_000);
        w.now();
        assert!(!w.trusted());
        // Synced again.
        w.test_synced.store(1, Ordering::Relaxed);
        assert!(w.check_sync());
        assert!(w.trusted());
    }
}
