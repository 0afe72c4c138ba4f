//! Degraded mode: the outbox writer's way on when the store cannot be written (`spill.rs` holds
//! the records).
//!
//! **Degraded mode** is the one exception to "acknowledged only once durable": when commits have
//! failed for `degraded_after` (or the appends back up meanwhile), the writer acknowledges from
//! memory and keeps the records in the store's memory spill (`spill.rs`, bounded), marked
//! `not_durable`, where the uplink takes them; their state changes wait in memory too. A storage
//! alarm says so, and so do the status and `/metrics`. Every few seconds a commit is tried again
//! with everything the spill holds; once one works the records are in the store with their seqs,
//! the box is durable again, and an alarm says that too. A crash while degraded loses what only
//! memory held: that is the price of a gate that keeps opening on a dead disk. Seqs given out
//! while degraded start at this run's own range (its generation, counted up durably at every
//! start, × 2^40), so a restart after such a crash (its store's `next_seq` from before) never
//! hands the same seq to another record. Memory is written back every few seconds, when idle
//! too, and once more before a stop.
use super::*;

/// While degraded, a commit of everything held in memory is tried this often.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Deletes kept for a store that cannot be written; past this the rest are dropped (those
/// records go upstream once more, with the same ids).
pub(super) const PENDING_DELETES_MAX: usize = 100_000;
/// Each run's degraded seqs start at its generation (`meta.run_generation`, counted up durably
/// at every start) times this: far past any seq a run hands out in normal operation.
pub(super) const SEQS_PER_RUN: u64 = 1 << 40;

/// What degraded mode held, written back in one commit: the spilled rows (class, seq, row as
/// stored), then the held state and deletes.
pub(super) type WriteBack = (Vec<(Class, u64, Vec<u8>)>, Held);

/// Degraded mode's state changes and deletes, for the store once it can be written: written
/// first in that commit, so newer values never lose to them.
#[derive(Debug, Default, Clone)]
pub(super) struct Held {
    pub(super) state: std::collections::BTreeMap<String, Option<Vec<u8>>>,
    pub(super) deletes: Vec<(Class, u64)>,
}

impl Writer {
    /// Opens the store's file again, off the runtime's workers (an open reads and may repair),
    /// and reads the ledger back from it: commits made without an fsync (deletes only) may not
    /// have survived the reopen, and the ledger must say what the file holds.
    pub(super) async fn reopen(&mut self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            store.reopen()?;
            Ok::<_, StoreError>((Ledger::load(&store)?, store.outbox_len()?))
        })
        .await
        .unwrap_or(Err(StoreError::Reopening));
        let (ledger, depth) = reopened?;
        // Seqs handed out while degraded stay handed out.
        let next_seq = self.ledger.next_seq.max(ledger.next_seq);
        self.ledger = Ledger { next_seq, ..ledger };
        self.metrics.outbox_depth.store(depth, Ordering::Relaxed);
        Ok(())
    }

    /// The store has failed for too long: from now on the gate goes on from memory.
    pub(super) fn enter_degraded(&mut self, e: &StoreError) {
        let spill = self.store.spill();
        spill.set_degraded(true);
        self.metrics.store_degraded.store(true, Ordering::Relaxed);
        self.last_probe = tokio::time::Instant::now();
        // Seqs from here on cannot be written down: start them in this run's own range, past
        // anything a restart after a crash now could hand out again (see the module docs).
        let base = self.generation.saturating_mul(SEQS_PER_RUN);
        self.ledger.next_seq = self.ledger.next_seq.max(base);
        error!(error = %e, "The store cannot be written: degraded mode. The gate keeps deciding; devices are acknowledged from memory and records wait in memory only (lost if the box stops now).");
        self.notices.push(storage_alarm(format!(
            "the store cannot be written ({e}): the gate keeps deciding, devices are \
             acknowledged from memory and records wait in memory (up to {} MiB) until the uplink \
             takes them or the store works again; a restart now loses them",
            crate::store::spill::MAX_BYTES >> 20
        )));
    }

    /// Degraded: the batch's records go to memory (marked not durable), its state changes and
    /// the deletes wait for the store, and its devices are acknowledged now.
    pub(super) fn spill(&mut self, batch: &mut Vec<Append>, deletes: &mut Delete) {
        let now = self.cfg.clock.now();
        let notices = std::mem::take(&mut self.notices);
        let mut appended = 0u64;
        let spill = self.store.spill();
        let notices = Append {
            records: notices,
            state: Vec::new(),
            ack: None,
        };
        for a in std::iter::once(notices).chain(batch.drain(..)) {
            for mut r in a.records {
                r.mark_not_durable();
                let seq = self.ledger.next_seq;
                self.ledger.next_seq += 1;
                let row = encode(&mut r, &self.cfg.gateway, seq, now);
                self.show(std::slice::from_ref(&r));
                // Counted with the store's evictions: reported upstream the same way.
                let evicted = spill.push(r.class(), seq, row);
                for (total, n) in self.ledger.evicted.iter_mut().zip(evicted) {
                    *total += n;
                }
                let lost = self.ledger.lost();
                self.metrics.outbox_evicted.store(lost, Ordering::Relaxed);
                appended += 1;
            }
            for (k, v) in a.state {
                self.held.state.insert(k, v);
            }
            if let Some(ack) = a.ack {
                ack();
            }
        }
        for (class, seq) in deletes.drain(..) {
            if !spill.delete(seq) && self.held.deletes.len() < PENDING_DELETES_MAX {
                self.held.deletes.push((class, seq));
            }
        }
        Metrics::add(&self.metrics.outbox_spilled, appended);
        let held = spill.len() as u64;
        self.metrics.outbox_in_memory.store(held, Ordering::Relaxed);
        if appended > 0 {
            self.committed.send_replace(self.ledger.next_seq - 1);
        }
    }

    /// Degraded, and time to try the store again: one commit with everything memory holds.
    /// True if it worked (the box is durable again).
    pub(super) async fn write_back(&mut self) -> bool {
        self.last_probe = tokio::time::Instant::now();
        // After an I/O error redb refuses everything until the file is opened again.
        if self.reopen().await.is_err() {
            return false;
        }
        let rows = self.store.spill().snapshot();
        let held = self.held.clone();
        let back = Some((rows.clone(), held));
        let (mut none, mut no_deletes) = (Vec::new(), Vec::new());
        if let Err(e) = self
            .try_write_with(&mut none, &mut no_deletes, true, back)
            .await
        {
            warn!(error = %e, "The store still cannot be written; staying in degraded mode.");
            return false;
        }
        self.held = Held::default();
        self.failing_since = None;
        // Room came back: the bound a full disk taught no longer holds.
        self.max_bytes = self.cfg.max_bytes;
        self.store.spill().set_degraded(false);
        self.metrics.store_degraded.store(false, Ordering::Relaxed);
        self.metrics.outbox_in_memory.store(0, Ordering::Relaxed);
        info!(
            records = rows.len(),
            "The store can be written again: what memory held is in it; durable again."
        );
        self.notices.push(storage_alarm(format!(
            "the store can be written again: {} records held in memory are in it; every \
             acknowledgement is durable again",
            rows.len()
        )));
        true
    }
}

/// A storage alarm of the writer's own.
pub(super) fn storage_alarm(detail: String) -> Record {
    Record::Alarm(v1::Alarm {
        gateway_time_ms: crate::now_ms(),
        kind: v1::AlarmKind::StorageLoss as i32,
        detail,
        ..Default::default()
    })
}
