//! `[rules]`: the decision rules' settings — the mode at start, temperatures, join windows,
//! quotas, barrier timings.
use super::problems::Problems;
use crate::decision::policy::threshold_plausible;
use crate::decision::Mode;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// A reading at or above this (°C, after calibration) is a fever.
    #[serde(default = "default_fever_threshold")]
    pub fever_threshold_c: f64,
    /// Readings outside [min, max] are implausible: measure again, not fever.
    #[serde(default = "default_plausible_min")]
    pub plausible_min_c: f64,
    #[serde(default = "default_plausible_max")]
    pub plausible_max_c: f64,
    /// The mode at first start: normal, epidemic, lockdown or fire. Once running, the mode is
    /// kept in the store and changed with `gatehouse mode` (or from upstream); this value applies
    /// again only when it changes in this file.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// On lanes with a separate thermal station: a reading this long before an identification
    /// joins it…
    #[serde(default = "default_join_before_ms")]
    pub join_before_ms: u64,
    /// …and where a temperature is required, the decision waits this long after for one.
    #[serde(default = "default_join_after_ms")]
    pub join_after_ms: u64,
    /// Lockdown: a household may go out this many times…
    #[serde(default = "default_quota_outings")]
    pub quota_outings: u32,
    /// …per this many days (counted on exit).
    #[serde(default = "default_quota_days")]
    pub quota_days: u32,
    /// Lockdown: an outing longer than this raises an alarm.
    #[serde(default = "default_overdue_h")]
    pub overdue_h: u32,
    /// Plate reads below this confidence (1–100) are denied `low_confidence` and the guard is
    /// alerted.
    #[serde(default = "default_min_plate_confidence")]
    pub min_plate_confidence: u8,
    /// A barrier's arm must reach its limit switch this long after a command, or the outcome is
    /// `uncertain` (an alarm; never retried).
    #[serde(default = "default_barrier_confirm_ms")]
    pub barrier_confirm_ms: u64,
    /// An event older than this, by the device's clock as gatehouse learned it, is recorded but
    /// never opens a gate (`stale_event`): a terminal re-uploading what it stored while offline.
    /// 0 turns the age check off (the device's own stored marker still counts).
    #[serde(default = "default_stale_event_s")]
    pub stale_event_s: u64,
    /// Modbus devices are polled this often…
    #[serde(default = "default_modbus_poll_ms")]
    pub modbus_poll_ms: u64,
    /// …and a request not answered in this long is a miss (three in a row: offline).
    #[serde(default = "default_modbus_timeout_ms")]
    pub modbus_timeout_ms: u64,
}

impl Default for RulesSection {
    fn default() -> Self {
        Self {
            fever_threshold_c: default_fever_threshold(),
            plausible_min_c: default_plausible_min(),
            plausible_max_c: default_plausible_max(),
            mode: default_mode(),
            join_before_ms: default_join_before_ms(),
            join_after_ms: default_join_after_ms(),
            quota_outings: default_quota_outings(),
            quota_days: default_quota_days(),
            overdue_h: default_overdue_h(),
            min_plate_confidence: default_min_plate_confidence(),
            barrier_confirm_ms: default_barrier_confirm_ms(),
            stale_event_s: default_stale_event_s(),
            modbus_poll_ms: default_modbus_poll_ms(),
            modbus_timeout_ms: default_modbus_timeout_ms(),
        }
    }
}

fn default_mode() -> Mode {
    Mode::Normal
}
fn default_join_before_ms() -> u64 {
    3000
}
fn default_join_after_ms() -> u64 {
    1500
}
/// One member of each household out every two days: the common lockdown rule.
fn default_quota_outings() -> u32 {
    1
}
fn default_quota_days() -> u32 {
    2
}
fn default_overdue_h() -> u32 {
    4
}
/// Arms take 1.5–3 s; a little more than that.
fn default_stale_event_s() -> u64 {
    30
}
fn default_barrier_confirm_ms() -> u64 {
    4000
}
fn default_modbus_poll_ms() -> u64 {
    100
}
fn default_modbus_timeout_ms() -> u64 {
    150
}
/// Good reads score 90 and up on the cameras we know; below 80 a human should look.
fn default_min_plate_confidence() -> u8 {
    80
}

fn default_fever_threshold() -> f64 {
    37.3
}
fn default_plausible_min() -> f64 {
    30.0
}
fn default_plausible_max() -> f64 {
    43.0
}

impl RulesSection {
    /// A fever threshold inside the plausible range of body temperatures.
    pub(super) fn threshold_ok(&self, t: f64) -> bool {
        threshold_plausible(t, self.plausible_min_c, self.plausible_max_c)
    }

    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        if self.plausible_min_c >= self.plausible_max_c {
            out.add(
                format!("{path}.plausible_min_c"),
                format!(
                    "{} must be below plausible_max_c ({})",
                    self.plausible_min_c, self.plausible_max_c
                ),
            );
        }
        if !self.threshold_ok(self.fever_threshold_c) {
            out.add(
                format!("{path}.fever_threshold_c"),
                format!(
                    "{} lies outside the plausible range {}–{} °C",
                    self.fever_threshold_c, self.plausible_min_c, self.plausible_max_c
                ),
            );
        }
        if self.quota_outings == 0 || self.quota_days == 0 || self.overdue_h == 0 {
            out.add(
                path,
                "quota_outings, quota_days and overdue_h must be at least 1",
            );
        }
        if self.join_before_ms > 60_000 || self.join_after_ms > 10_000 {
            out.add(
                path,
                "join_before_ms is at most 60000 and join_after_ms at most 10000 (a person waits at the gate)",
            );
        }
    }
}
