//! Hourly statistics per lane — entries, exits, denials by reason, fevers, vehicles in and out,
//! and how many are inside — the forms a community worker used to fill in by hand. Pure: the
//! decision loop feeds decisions and the time; a finished period comes out as a `StatsBatch`.
use crate::decision::StateKey;
use crate::decision::{Decision, Direction, Reason};
use crate::proto::v1;

#[derive(Debug, Clone)]
pub struct Stats {
    period_ms: i64,
    lanes: Vec<String>,
    current: v1::StatsBatch,
}

impl Stats {
    /// Counting for `lanes`, in periods of `period_ms` aligned to the epoch (hours fall on the
    /// hour in UTC+8 too).
    pub fn new(gateway: &str, lanes: Vec<String>, period_ms: i64, now_ms: i64) -> Stats {
        let mut s = Stats {
            period_ms: period_ms.max(1),
            lanes,
            current: v1::StatsBatch {
                gateway: gateway.to_string(),
                stats: Vec::new(),
            },
        };
        s.reset(now_ms);
        s
    }

    fn reset(&mut self, now_ms: i64) {
        let start = now_ms - now_ms.rem_euclid(self.period_ms);
        self.current.stats = self
            .lanes
            .iter()
            .map(|l| v1::LaneStats {
                lane: l.clone(),
                period_start_ms: start,
                period_end_ms: start + self.period_ms,
                ..Default::default()
            })
            .collect();
    }

    /// Picks up the counts of the current period after a restart (from [`Stats::snapshot`]).
    pub fn restore(&mut self, saved: v1::StatsBatch) {
        let same = saved.stats.first().map(|s| s.period_start_ms)
            == self.current.stats.first().map(|s| s.period_start_ms);
        if same && saved.stats.len() == self.current.stats.len() {
            self.current = saved;
        }
    }

    pub fn snapshot(&self) -> &v1::StatsBatch {
        &self.current
    }

    /// The period in progress as durable state: written with the records that changed it, so a
    /// restart mid-hour loses nothing.
    pub fn state(&self) -> (StateKey, Option<Vec<u8>>) {
        (
            StateKey::StatsNow,
            Some(prost::Message::encode_to_vec(&self.current)),
        )
    }

    /// After a restart: the period in progress, and the finished ones upstream has not yet
    /// acknowledged (into `pending`), from the durable state.
    pub fn restore_from(&mut self, state: &[(String, Vec<u8>)], pending: &Pending) {
        for (k, v) in state {
            let key = StateKey::decode(k);
            if !matches!(key, Some(StateKey::StatsNow | StateKey::StatsPeriod(_))) {
                continue;
            }
            let Ok(batch) = <v1::StatsBatch as prost::Message>::decode(v.as_slice()) else {
                continue;
            };
            match key {
                Some(StateKey::StatsPeriod(start)) => pending.add(start, batch),
                _ => self.restore(batch),
            }
        }
    }

    /// Counts one decision; `clock_unsynced`: made on a clock not known to be right (the period
    /// says so).
    pub fn record(&mut self, d: &Decision, clock_unsynced: bool) {
        // Decided again after a restart, too late to act on: counted the first time, if at all.
        if d.not_actuated {
            return;
        }
        let Some(s) = self.current.stats.get_mut(d.lane) else {
            return;
        };
        s.clock_unsynced |= clock_unsynced;
        if d.allow {
            match (d.vehicle, d.direction) {
                (true, Direction::In) => s.vehicles_in += 1,
                (true, Direction::Out) => s.vehicles_out += 1,
                (false, Direction::In) => s.entries += 1,
                (false, Direction::Out) => s.exits += 1,
            }
        } else {
            match s.denials.get_mut(d.reason.as_str()) {
                Some(n) => *n += 1,
                None => {
                    s.denials.insert(d.reason.as_str().to_string(), 1);
                }
            }
        }
        if d.reason == Reason::Fever {
            s.fevers += 1;
        }
    }

    /// A fever reading that joined nobody still counts as a fever.
    pub fn fever(&mut self, lane: usize) {
        if let Some(s) = self.current.stats.get_mut(lane) {
            s.fevers += 1;
        }
    }

    /// When the period is over: its batch (with the count inside), and counting starts afresh.
    pub fn roll(&mut self, now_ms: i64, inside: usize) -> Option<v1::StatsBatch> {
        let (start, end) = self
            .current
            .stats
            .first()
            .map(|s| (s.period_start_ms, s.period_end_ms))?;
        // A clock stepped back out of the period ends it too.
        if (start..end).contains(&now_ms) {
            return None;
        }
        let mut done = self.current.clone();
        for s in &mut done.stats {
            s.inside = inside as u32;
        }
        self.reset(now_ms);
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Mode, SubjectKind};
    use std::time::Instant;

    const H: i64 = 3_600_000;
    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % H;

    fn d(
        lane: usize,
        allow: bool,
        reason: Reason,
        vehicle: bool,
        direction: Direction,
    ) -> Decision {
        Decision {
            lane,
            device: 0,
            direction,
            mode: Mode::Normal,
            subject_kind: SubjectKind::Resident,
            subject_id: String::new(),
            temperature_c: None,
            allow,
            reason,
            rule: "",
            device_flag_disagrees: false,
            cause: Vec::new(),
            received: Instant::now(),
            gate: None,
            vehicle,
            confidence: None,
            operator: None,
            not_actuated: false,
            device_clock_offset_ms: None,
        }
    }

    #[test]
    fn a_scripted_hour_adds_up_and_the_next_starts_empty() {
        let mut s = Stats::new("gw", vec!["east".into(), "car".into()], H, T0 + 10);
        for _ in 0..5 {
            s.record(&d(0, true, Reason::Ok, false, Direction::In), false);
        }
        s.record(&d(0, true, Reason::Ok, false, Direction::Out), false);
        s.record(&d(0, false, Reason::Fever, false, Direction::In), false);
        s.record(&d(0, false, Reason::Fever, false, Direction::In), false);
        s.record(
            &d(0, false, Reason::UnknownSubject, false, Direction::In),
            false,
        );
        s.fever(0);
        s.record(&d(1, true, Reason::Ok, true, Direction::In), false);
        s.record(&d(1, true, Reason::RemoteOpen, true, Direction::Out), false);
        s.record(
            &d(1, false, Reason::LowConfidence, true, Direction::In),
            false,
        );
        assert!(s.roll(T0 + H - 1, 4).is_none());
        let b = s.roll(T0 + H, 4).unwrap();
        let east = &b.stats[0];
        assert_eq!(
            (east.entries, east.exits, east.fevers, east.inside),
            (5, 1, 3, 4)
        );
        assert_eq!(east.denials.get("fever"), Some(&2));
        assert_eq!(east.denials.get("unknown_subject"), Some(&1));
        assert_eq!((east.period_start_ms, east.period_end_ms), (T0, T0 + H));
        let car = &b.stats[1];
        assert_eq!((car.vehicles_in, car.vehicles_out), (1, 1));
        assert_eq!(car.denials.get("low_confidence"), Some(&1));
        let next = s.snapshot();
        assert_eq!(next.stats[0].period_start_ms, T0 + H);
        assert_eq!(next.stats[0].entries, 0);
    }
}

/// Finished periods waiting for the uplink's PUBACK (also kept in the store until then).
#[derive(Debug, Default)]
pub struct Pending {
    batches: std::sync::Mutex<std::collections::BTreeMap<i64, v1::StatsBatch>>,
    pub changed: tokio::sync::Notify,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<i64, v1::StatsBatch>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, period_start_ms: i64, batch: v1::StatsBatch) {
        self.lock().insert(period_start_ms, batch);
        self.changed.notify_one();
    }

    /// Everything pending, oldest first.
    pub fn all(&self) -> Vec<(i64, v1::StatsBatch)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub fn remove(&self, period_start_ms: i64) -> bool {
        self.lock().remove(&period_start_ms).is_some()
    }
}
