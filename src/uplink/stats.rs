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
                seq: 1,
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

    /// After a restart: the finished batches upstream has not yet acknowledged (into
    /// `pending`), and the period the daemon stopped in — counted on if it is still the current
    /// one, else finished now (with `inside`, the count at start) so its counts are not lost.
    /// Returns the state to write: the batches it finished or numbered, and the period now.
    pub fn restore_from(
        &mut self,
        state: &[(String, Vec<u8>)],
        pending: &Pending,
        inside: usize,
    ) -> Vec<(StateKey, Option<Vec<u8>>)> {
        let decode = |v: &Vec<u8>| <v1::StatsBatch as prost::Message>::decode(v.as_slice()).ok();
        let mut saved = None;
        let mut finished = Vec::new();
        let mut given_out = 0;
        for (k, v) in state {
            match StateKey::decode(k) {
                Some(StateKey::StatsNow) => saved = decode(v),
                Some(StateKey::StatsBatch(key)) => finished.extend(decode(v).map(|b| (key, b))),
                Some(StateKey::StatsSeq) => {
                    given_out = v.as_slice().try_into().map_or(0, u64::from_le_bytes);
                }
                _ => {}
            }
        }
        // Numbers go on from the highest ever given out (0: a store from before numbers).
        let mut next = finished
            .iter()
            .map(|(_, b)| b.seq)
            .chain(saved.as_ref().map(|b| b.seq))
            .chain([given_out])
            .max()
            .unwrap_or(0)
            + 1;
        let mut number = |b: &mut v1::StatsBatch| {
            if b.seq == 0 {
                b.seq = next;
                next += 1;
            }
        };
        let mut writes = Vec::new();
        for (key, mut batch) in finished {
            if batch.seq == 0 {
                // Keyed by its period's start until now.
                number(&mut batch);
                writes.push((StateKey::StatsBatch(key), None));
                writes.push(finished_state(&batch));
            }
            pending.add(batch);
        }
        match saved {
            Some(mut saved) if same_period(&saved, &self.current) => {
                number(&mut saved);
                self.current = saved;
            }
            Some(mut saved) => {
                number(&mut saved);
                for s in &mut saved.stats {
                    s.inside = inside as u32;
                }
                writes.push(finished_state(&saved));
                pending.add(saved);
                self.current.seq = 0;
                number(&mut self.current);
            }
            None => {
                self.current.seq = 0;
                number(&mut self.current);
            }
        }
        writes.push(self.seq_state());
        writes.push(self.state());
        writes
    }

    /// The highest `seq` given out (the current period's), as durable state: written whenever
    /// a number is given out, so none is given twice.
    pub fn seq_state(&self) -> (StateKey, Option<Vec<u8>>) {
        (
            StateKey::StatsSeq,
            Some(self.current.seq.to_le_bytes().to_vec()),
        )
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

    /// Whether the clock has left the period in progress (a clock stepped back out of it too).
    pub fn ended(&self, now_ms: i64) -> bool {
        self.current
            .stats
            .first()
            .is_some_and(|s| !(s.period_start_ms..s.period_end_ms).contains(&now_ms))
    }

    /// When the period is over: its batch (with the count inside), and counting starts afresh.
    pub fn roll(&mut self, now_ms: i64, inside: usize) -> Option<v1::StatsBatch> {
        if !self.ended(now_ms) {
            return None;
        }
        let mut done = self.current.clone();
        for s in &mut done.stats {
            s.inside = inside as u32;
        }
        self.reset(now_ms);
        self.current.seq = done.seq + 1;
        Some(done)
    }
}

/// The same period of the same lanes, in the same order (counts are kept by lane index).
fn same_period(a: &v1::StatsBatch, b: &v1::StatsBatch) -> bool {
    a.stats.len() == b.stats.len()
        && a.stats
            .iter()
            .zip(&b.stats)
            .all(|(x, y)| x.lane == y.lane && x.period_start_ms == y.period_start_ms)
}

/// A finished batch as durable state, kept until upstream acknowledges it.
pub fn finished_state(batch: &v1::StatsBatch) -> (StateKey, Option<Vec<u8>>) {
    (
        StateKey::StatsBatch(batch.seq),
        Some(prost::Message::encode_to_vec(batch)),
    )
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
            credential: None,
            household: String::new(),
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
        assert_eq!((b.seq, next.seq), (1, 2));
    }

    /// The durable state as `restore_from` reads it after a restart.
    fn stored(writes: &[(StateKey, Option<Vec<u8>>)]) -> Vec<(String, Vec<u8>)> {
        let mut state = std::collections::BTreeMap::new();
        for (k, v) in writes {
            match v {
                Some(v) => state.insert(k.encode(), v.clone()),
                None => state.remove(&k.encode()),
            };
        }
        state.into_iter().collect()
    }

    fn entered(s: &mut Stats, n: usize) {
        for _ in 0..n {
            s.record(&d(0, true, Reason::Ok, false, Direction::In), false);
        }
    }

    #[test]
    fn a_restart_counts_on_in_its_period_and_finishes_one_it_stopped_in() {
        let lanes = || vec!["east".to_string()];
        let mut s = Stats::new("gw", lanes(), H, T0 + 10);
        entered(&mut s, 3);
        let state = stored(&[s.state()]);

        // Back within the hour: counting goes on, same batch.
        let mut again = Stats::new("gw", lanes(), H, T0 + 20);
        let pending = Pending::default();
        again.restore_from(&state, &pending, 7);
        assert_eq!(
            (again.snapshot().stats[0].entries, again.snapshot().seq),
            (3, 1)
        );
        assert!(pending.all().is_empty());

        // Back after the hour: the hour it stopped in goes up as it was (it used to be dropped).
        let mut later = Stats::new("gw", lanes(), H, T0 + H + 5);
        let pending = Pending::default();
        let writes = later.restore_from(&state, &pending, 7);
        let done = pending.all();
        assert_eq!(done.len(), 1);
        let (seq, b) = &done[0];
        assert_eq!((*seq, b.stats[0].entries, b.stats[0].inside), (1, 3, 7));
        assert_eq!(b.stats[0].period_start_ms, T0);
        assert_eq!(later.snapshot().seq, 2);
        assert_eq!(later.snapshot().stats[0].entries, 0);
        // ...and is in the store until upstream has it, across another restart.
        let pending = Pending::default();
        let mut third = Stats::new("gw", lanes(), H, T0 + H + 9);
        third.restore_from(&stored(&writes), &pending, 7);
        assert_eq!(pending.all().len(), 1);
        assert_eq!(third.snapshot().seq, 2);
    }

    #[test]
    fn a_clock_stepped_back_into_a_finished_period_sends_a_second_batch_not_an_overwrite() {
        let mut s = Stats::new("gw", vec!["east".into()], H, T0 + 10);
        let pending = Pending::default();
        entered(&mut s, 2);
        let first = s.roll(T0 + H + 10, 0).unwrap();
        pending.add(first);
        entered(&mut s, 1);
        // Stepped back into the hour already finished, then on past its end again.
        let stepped = s.roll(T0 + 20, 0).unwrap();
        pending.add(stepped);
        entered(&mut s, 4);
        pending.add(s.roll(T0 + H + 30, 0).unwrap());
        let all = pending.all();
        let counts: Vec<_> = all
            .iter()
            .map(|(seq, b)| (*seq, b.stats[0].period_start_ms, b.stats[0].entries))
            .collect();
        assert_eq!(counts, [(1, T0, 2), (2, T0 + H, 1), (3, T0, 4)]);
    }

    #[test]
    fn numbers_are_not_given_twice_when_every_batch_is_acknowledged_and_gone() {
        let mut s = Stats::new("gw", vec!["east".into()], H, T0 + 10);
        let pending = Pending::default();
        let mut writes = s.restore_from(&[], &pending, 0);
        for k in 1..4 {
            let done = s.roll(T0 + k * H, 0).unwrap();
            writes.push(finished_state(&done));
            writes.push(s.seq_state());
            writes.push(s.state());
            // Acknowledged upstream: deleted.
            writes.push((StateKey::StatsBatch(done.seq), None));
        }
        assert_eq!(s.snapshot().seq, 4);
        // The period in progress unreadable (damaged, or rewritten by an older version).
        writes.push((StateKey::StatsNow, Some(vec![0xff, 0xff])));
        let mut again = Stats::new("gw", vec!["east".into()], H, T0 + 3 * H + 1);
        again.restore_from(&stored(&writes), &pending, 0);
        assert_eq!(again.snapshot().seq, 5);
    }

    #[test]
    fn batches_stored_before_they_had_numbers_are_numbered_and_rekeyed() {
        let old = |start: i64, entries: u32| v1::StatsBatch {
            gateway: "gw".into(),
            stats: vec![v1::LaneStats {
                lane: "east".into(),
                period_start_ms: start,
                period_end_ms: start + H,
                entries,
                ..Default::default()
            }],
            seq: 0,
        };
        let encode = |b: &v1::StatsBatch| Some(prost::Message::encode_to_vec(b));
        let state = stored(&[
            (StateKey::StatsBatch(T0 as u64), encode(&old(T0, 5))),
            (
                StateKey::StatsBatch((T0 + H) as u64),
                encode(&old(T0 + H, 6)),
            ),
            (StateKey::StatsNow, encode(&old(T0 + 2 * H, 7))),
        ]);
        let mut s = Stats::new("gw", vec!["east".into()], H, T0 + 2 * H + 1);
        let pending = Pending::default();
        let writes = s.restore_from(&state, &pending, 0);
        let seqs: Vec<_> = pending
            .all()
            .iter()
            .map(|(q, b)| (*q, b.stats[0].entries))
            .collect();
        assert_eq!(seqs, [(1, 5), (2, 6)]);
        assert_eq!((s.snapshot().seq, s.snapshot().stats[0].entries), (3, 7));
        let keys: Vec<_> = stored(
            &[
                state
                    .iter()
                    .map(|(k, v)| (StateKey::decode(k).unwrap(), Some(v.clone())))
                    .collect::<Vec<_>>(),
                writes,
            ]
            .concat(),
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(keys, ["stats/1", "stats/2", "stats_now/", "stats_seq/"]);
    }
}

/// Finished periods waiting for the uplink's PUBACK (also kept in the store until then).
#[derive(Debug, Default)]
pub struct Pending {
    /// By `seq`.
    batches: std::sync::Mutex<std::collections::BTreeMap<u64, v1::StatsBatch>>,
    pub changed: tokio::sync::Notify,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, v1::StatsBatch>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, batch: v1::StatsBatch) {
        self.lock().insert(batch.seq, batch);
        self.changed.notify_one();
    }

    /// Everything pending, oldest first.
    pub fn all(&self) -> Vec<(u64, v1::StatsBatch)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub fn remove(&self, seq: u64) -> bool {
        self.lock().remove(&seq).is_some()
    }
}
