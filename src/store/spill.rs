//! The outbox in memory, for a store that cannot be written (degraded mode).
//!
//! A gate that only stops acknowledging stops: HTTP terminals wait for their 200 before sending
//! the next event, MQTT clients stop at their in-flight limit. So once commits have failed for
//! `degraded_after` (or the appends back up), the writer acknowledges from memory and keeps the
//! records here instead, already encoded as they would be stored (with their seq and id, marked
//! `not_durable`). The uplink reads them with the stored ones (`Store::outbox_from`), in seq
//! order, and its PUBACKs delete them here. When a commit works again, what is still here goes
//! into the store with the same seqs, and the uplink starts over from the oldest record.
//!
//! Bounded: past [`MAX_BYTES`] the oldest go, routine records first, then passage decisions,
//! alarms last, each counted. Nothing here survives a crash — that is what degraded means, and
//! why every record says so.
use super::{Class, Row, HEADER};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The most record bytes kept in memory while degraded (the box's RAM is small).
pub const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct Spill {
    rows: Mutex<Rows>,
    degraded: AtomicBool,
    /// Goes up each time the spill is written back to the store: the uplink reads from the
    /// oldest record again.
    epoch: AtomicU64,
}

#[derive(Debug, Default)]
struct Rows {
    /// seq → class and the row as the store keeps it (creation time header, then the message).
    by_seq: BTreeMap<u64, (Class, Vec<u8>)>,
    bytes: usize,
}

impl Spill {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub(crate) fn set_degraded(&self, on: bool) {
        self.degraded.store(on, Ordering::Relaxed);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Keeps one row; the oldest of the lowest class go when over [`MAX_BYTES`]. Returns how
    /// many of each class ([`Class::index`]) were evicted for it.
    pub(crate) fn push(&self, class: Class, seq: u64, row: Vec<u8>) -> [u64; 3] {
        let mut r = self.rows();
        r.bytes += row.len();
        r.by_seq.insert(seq, (class, row));
        let mut evicted = [0; 3];
        for c in Class::ALL {
            while r.bytes > MAX_BYTES {
                let Some(oldest) = r.by_seq.iter().find(|(_, (k, _))| *k == c).map(|(s, _)| *s)
                else {
                    break;
                };
                if let Some((_, row)) = r.by_seq.remove(&oldest) {
                    r.bytes -= row.len();
                    evicted[c.index()] += 1;
                }
            }
        }
        evicted
    }

    /// The broker has it: gone from memory. False if it was not here (it is in the store).
    pub(crate) fn delete(&self, seq: u64) -> bool {
        let mut r = self.rows();
        match r.by_seq.remove(&seq) {
            Some((_, row)) => {
                r.bytes -= row.len();
                true
            }
            None => false,
        }
    }

    /// Rows of `classes` from `from` on, at most `max` and about `max_bytes`, in seq order.
    pub(crate) fn rows_from(
        &self,
        classes: &[Class],
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Vec<Row> {
        let r = self.rows();
        let mut bytes = 0;
        r.by_seq
            .range(from..)
            .filter(|(_, (c, _))| classes.contains(c))
            .take(max)
            .take_while(|(_, (_, row))| {
                let under = bytes < max_bytes;
                bytes += row.len();
                under
            })
            .map(|(&seq, (class, row))| Row {
                seq,
                class: *class,
                message: row.get(HEADER..).unwrap_or_default().to_vec(),
            })
            .collect()
    }

    /// Everything held, to be written back to the store (kept here until that commit is done).
    pub(crate) fn snapshot(&self) -> Vec<(Class, u64, Vec<u8>)> {
        let r = self.rows();
        r.by_seq
            .iter()
            .map(|(&seq, (class, row))| (*class, seq, row.clone()))
            .collect()
    }

    /// The rows in `written` are in the store now: gone from here, and the uplink starts over.
    pub(crate) fn written_back(&self, written: &[(Class, u64, Vec<u8>)]) {
        let mut r = self.rows();
        for (_, seq, _) in written {
            if let Some((_, row)) = r.by_seq.remove(seq) {
                r.bytes -= row.len();
            }
        }
        drop(r);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.rows().by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.rows().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(len: usize) -> Vec<u8> {
        vec![0u8; HEADER + len]
    }

    #[test]
    fn over_its_bound_the_oldest_routine_records_go_first_and_alarms_last() {
        let s = Spill::default();
        let big = MAX_BYTES / 4;
        s.push(Class::Alarm, 1, row(big));
        s.push(Class::Routine, 2, row(big));
        s.push(Class::Passage, 3, row(big));
        s.push(Class::Routine, 4, row(big / 2));
        assert_eq!(s.push(Class::Passage, 5, row(big)), [1, 0, 0]);
        let left: Vec<u64> = s
            .rows_from(&Class::ALL, 0, 100, usize::MAX)
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(left, vec![1, 3, 4, 5], "the oldest routine record went");
        assert!(s.bytes() <= MAX_BYTES);
    }

    #[test]
    fn rows_come_back_in_seq_order_by_class_and_deleted_ones_do_not() {
        let s = Spill::default();
        s.push(Class::Passage, 7, row(10));
        s.push(Class::Alarm, 8, row(10));
        s.push(Class::Routine, 9, row(10));
        assert!(s.delete(7));
        assert!(!s.delete(7), "gone already");
        let events: Vec<u64> = s
            .rows_from(&[Class::Passage, Class::Routine], 0, 10, usize::MAX)
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(events, vec![9]);
        let all = s.snapshot();
        s.written_back(&all);
        assert!(s.is_empty());
        assert_eq!(s.epoch(), 1);
    }
}
