//! The rules in force, as the core holds them: lanes, devices, thresholds, quotas. Built from
//! the config by the wiring; changed at run time only through the core (mode, thresholds).
use super::vocabulary::{Direction, Role};

/// A day, for quota windows.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Reading ↔ identification join window on a lane with a separate thermal station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    pub before_ms: i64,
    pub after_ms: i64,
}

/// What the core knows about a lane.
#[derive(Debug, Clone)]
pub struct LanePolicy {
    pub id: String,
    pub fever_threshold_c: f64,
    /// The device (index into [`Policy::devices`]) that receives this lane's commands.
    pub gate: Option<usize>,
    /// Set when the lane's thermal station and identifier are different devices.
    pub join: Option<JoinWindow>,
    pub anti_passback: bool,
    pub direction: Direction,
}

/// What the core knows about a device.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    pub id: String,
    /// Index into [`Policy::lanes`].
    pub lane: usize,
    pub role: Role,
    pub calibration_offset_c: f64,
    /// Overrides the lane's direction (an exit reader on a shared turnstile).
    pub direction: Option<Direction>,
}

/// Household outing quota in lockdown: `outings` exits per `days` days; an outing longer than
/// `overdue_h` hours raises an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub outings: u32,
    pub days: u32,
    pub overdue_h: u32,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    pub plausible_min_c: f64,
    pub plausible_max_c: f64,
    pub quota: Quota,
    /// Plate reads below this confidence (1–100) are denied `low_confidence` and the guard called.
    pub min_plate_confidence: u8,
    /// A barrier's arm must reach its limit this long after a command; an arm that goes up with
    /// no open of ours this long before is tampered with.
    pub barrier_confirm_ms: i64,
    /// An event older than this by the device's learned clock is recorded, never acted on
    /// (`stale_event`).
    pub stale_event_ms: i64,
    pub lanes: Vec<LanePolicy>,
    pub devices: Vec<DevicePolicy>,
}

impl Policy {
    /// A reading is plausible inside [`Policy::plausible_min_c`, `plausible_max_c`]; outside it
    /// is a bad measurement (measure again), never a fever. NaN is not plausible.
    #[inline]
    pub fn plausible(&self, celsius: f64) -> bool {
        celsius >= self.plausible_min_c && celsius <= self.plausible_max_c
    }

    /// The fever predicate, the one place it is written: a plausible reading at or above the
    /// lane's threshold.
    #[inline]
    pub fn is_fever(&self, lane: usize, celsius: f64) -> bool {
        self.lanes
            .get(lane)
            .is_some_and(|l| celsius >= l.fever_threshold_c)
            && celsius <= self.plausible_max_c
    }
}

/// A fever threshold may be set (in the config or from above) only inside the plausible range:
/// above its minimum (else everyone has a fever) and at most its maximum.
#[inline]
pub fn threshold_plausible(celsius: f64, plausible_min_c: f64, plausible_max_c: f64) -> bool {
    celsius.is_finite() && celsius > plausible_min_c && celsius <= plausible_max_c
}

/// A reading with the device's calibration offset, rounded to 0.01 °C.
#[inline]
pub fn calibrate(t: f64, offset: f64) -> f64 {
    ((t + offset) * 100.0).round() / 100.0
}
