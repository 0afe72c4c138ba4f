//! What the box's operators configure about the box itself: the clock, and the metrics and
//! health endpoint.
use super::problems::Problems;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[clock]`: whether the wall clock is right from boot (`src/clock.rs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    /// The box has a battery-backed clock checked at installation: its time is relied on from
    /// boot. Otherwise gatehouse waits for the kernel to report the clock synced (NTP).
    #[serde(default)]
    pub trusted: bool,
}

/// `[metrics]`: the Prometheus text endpoint (`/metrics`) and the health endpoint (`/health`).
/// Off unless `listen` is given; meant for loopback (a local agent scrapes and forwards) — any
/// other address must be asked for with `allow_remote`, as it tells whoever asks how the gate is
/// used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub allow_remote: bool,
}

impl MetricsSection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        let Some(at) = self.listen else { return };
        if !at.ip().is_loopback() && !self.allow_remote {
            out.add(
                format!("{path}.listen"),
                format!(
                    "{at} is reachable from outside the box: metrics tell anyone how the gate is \
                     used; bind to 127.0.0.1 or set metrics.allow_remote = true"
                ),
            );
        }
    }
}
