//! `[store]`: where the durable outbox and the lists live, and how it commits and bounds itself.
use super::problems::Problems;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default = "default_store_dir")]
    pub dir: PathBuf,
    /// A group commit closes this long after its first record (or, within 10 ms, when full).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// A group commit closes at this many records (seen within 10 ms).
    #[serde(default = "default_commit_max")]
    pub commit_max: usize,
    /// The outbox never holds more than this (MiB); past it the oldest records are evicted,
    /// routine first, then passage decisions, alarms last.
    #[serde(default = "default_max_mib")]
    pub max_mib: u64,
    /// Hours a record may wait for the uplink, by class.
    #[serde(default = "default_ttl_routine_h")]
    pub ttl_routine_h: u64,
    #[serde(default = "default_ttl_h")]
    pub ttl_passage_h: u64,
    #[serde(default = "default_ttl_h")]
    pub ttl_alarm_h: u64,
    /// After commits have failed this long (s), the box goes on from memory (degraded mode):
    /// devices acknowledged without the disk, records kept in memory until the uplink has them
    /// or the store works again. 0: at the first failure.
    #[serde(default = "default_degraded_after_s")]
    pub degraded_after_s: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            dir: default_store_dir(),
            commit_interval_ms: default_commit_interval_ms(),
            commit_max: default_commit_max(),
            max_mib: default_max_mib(),
            ttl_routine_h: default_ttl_routine_h(),
            ttl_passage_h: default_ttl_h(),
            ttl_alarm_h: default_ttl_h(),
            degraded_after_s: default_degraded_after_s(),
        }
    }
}

fn default_max_mib() -> u64 {
    256
}
fn default_ttl_routine_h() -> u64 {
    24
}
/// Local journals are kept 30 days (docs/ARCHITECTURE.md, "Contracts"); so is what waits for the uplink.
fn default_ttl_h() -> u64 {
    30 * 24
}

/// Long enough for a transient error (a full disk's eviction, a reopen) to pass; short enough
/// that devices' in-flight windows and the appends queue do not fill at a busy gate.
fn default_degraded_after_s() -> u64 {
    5
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("/var/lib/gatehouse")
}
fn default_commit_interval_ms() -> u64 {
    10
}
fn default_commit_max() -> usize {
    1024
}

impl StoreSection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        if self.commit_max == 0 {
            out.add(format!("{path}.commit_max"), "must be at least 1");
        }
        if self.max_mib == 0 {
            out.add(format!("{path}.max_mib"), "must be at least 1");
        }
    }
}
