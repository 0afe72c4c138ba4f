//! The outbox writer: the only task that writes the outbox. Group commit: a batch opens with its
//! first record and closes after `commit_interval` or at `commit_max` records, then is written in
//! one transaction with one fsync. Only after that commit are the batch's device events
//! acknowledged and the uplink told there is more to send.
//!
//! Sequence numbers are handed out here, in commit order, and persisted (`meta.next_seq`) in the
//! same transaction as the records, so a seq is never reused, even across a crash.
//!
//! Deletions (records the uplink broker acked) arrive on their own channel and ride along with
//! the next commit; a delete-only commit skips the fsync (losing it in a crash only means the
//! records are sent again, with the same ids).
use super::{Store, StoreError, KIND_ALARM, KIND_EVENT, OUTBOX};
use crate::metrics::Metrics;
use crate::proto::v1;
use prost::Message;
use redb::Durability;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

/// Something to keep until the uplink broker has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(v1::Event),
    Alarm(v1::Alarm),
}

/// Run once the records it came with are durable: acknowledges the device's message.
pub type Ack = Box<dyn FnOnce() + Send>;

pub struct Append {
    pub records: Vec<Record>,
    pub ack: Option<Ack>,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub gateway: String,
    pub commit_interval: Duration,
    pub commit_max: usize,
}

/// Channel capacities. Full appends channel → the sender waits (backpressure up to the device
/// broker, which holds unacknowledged events). Full deletes channel → the delete is dropped and
/// the record is sent again later (a duplicate, never a loss).
pub const APPEND_CAPACITY: usize = 8192;
pub const DELETE_CAPACITY: usize = 1024;

pub struct WriterHandle {
    pub appends: mpsc::Sender<Append>,
    pub deletes: mpsc::Sender<Vec<u64>>,
    /// The highest seq made durable so far.
    pub committed: watch::Receiver<u64>,
    /// Fires when the appends channel has closed and everything in it is durable.
    pub appends_done: oneshot::Receiver<()>,
    pub join: tokio::task::JoinHandle<()>,
}

pub fn spawn(
    store: Store,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
) -> Result<WriterHandle, StoreError> {
    let next_seq = store.next_seq()?;
    metrics
        .outbox_depth
        .store(store.outbox_len()?, Ordering::Relaxed);
    let (append_tx, append_rx) = mpsc::channel(APPEND_CAPACITY);
    let (delete_tx, delete_rx) = mpsc::channel(DELETE_CAPACITY);
    let (committed_tx, committed_rx) = watch::channel(next_seq - 1);
    let (done_tx, done_rx) = oneshot::channel();
    let w = Writer {
        store,
        cfg,
        metrics,
        next_seq,
        append_rx,
        delete_rx,
        committed: committed_tx,
    };
    let join = tokio::spawn(w.run(done_tx));
    Ok(WriterHandle {
        appends: append_tx,
        deletes: delete_tx,
        committed: committed_rx,
        appends_done: done_rx,
        join,
    })
}

struct Writer {
    store: Store,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
    next_seq: u64,
    append_rx: mpsc::Receiver<Append>,
    delete_rx: mpsc::Receiver<Vec<u64>>,
    committed: watch::Sender<u64>,
}

impl Writer {
    async fn run(mut self, done: oneshot::Sender<()>) {
        let mut done = Some(done);
        let mut appends_open = true;
        let mut deletes_open = true;
        let mut batch: Vec<Append> = Vec::new();
        let mut deletes: Vec<u64> = Vec::new();
        while appends_open || deletes_open || !deletes.is_empty() {
            if batch.is_empty() && deletes.is_empty() {
                tokio::select! {
                    a = self.append_rx.recv(), if appends_open => match a {
                        Some(a) => batch.push(a),
                        None => appends_open = false,
                    },
                    d = self.delete_rx.recv(), if deletes_open => match d {
                        Some(d) => deletes.extend(d),
                        None => deletes_open = false,
                    },
                }
            }
            // Linger for more records, up to the interval or the size limit.
            if !batch.is_empty() {
                let deadline = tokio::time::Instant::now() + self.cfg.commit_interval;
                while appends_open && records(&batch) < self.cfg.commit_max {
                    tokio::select! {
                        a = self.append_rx.recv() => match a {
                            Some(a) => batch.push(a),
                            None => appends_open = false,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            while let Ok(d) = self.delete_rx.try_recv() {
                deletes.extend(d);
            }
            if !batch.is_empty() || !deletes.is_empty() {
                self.commit(&mut batch, &mut deletes).await;
            }
            if !appends_open && batch.is_empty() {
                if let Some(d) = done.take() {
                    let _ = d.send(());
                }
            }
        }
    }

    /// Commits until it succeeds: acknowledged device events are only ever those on disk, so a
    /// failing disk holds the pipeline back rather than dropping anything.
    async fn commit(&mut self, batch: &mut Vec<Append>, deletes: &mut Vec<u64>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let store = self.store.clone();
            let gateway = self.cfg.gateway.clone();
            let next = self.next_seq;
            let mut taken = std::mem::take(batch);
            let dels = std::mem::take(deletes);
            let result = tokio::task::spawn_blocking(move || {
                let r = write(&store, &gateway, next, &mut taken, &dels);
                (r, taken, dels)
            })
            .await;
            let (r, taken, dels) = match result {
                Ok(x) => x,
                Err(e) => {
                    // The write panicked (a bug in redb or here); the batch is gone with it.
                    error!(error = %e, "Outbox commit task failed.");
                    Metrics::inc(&self.metrics.outbox_commit_errors);
                    return;
                }
            };
            match r {
                Ok((next_seq, removed)) => {
                    let appended = next_seq - self.next_seq;
                    self.next_seq = next_seq;
                    let m = &self.metrics;
                    Metrics::inc(&m.outbox_commits);
                    Metrics::add(&m.outbox_appended, appended);
                    m.outbox_depth.fetch_add(appended, Ordering::Relaxed);
                    m.outbox_depth.fetch_sub(
                        removed.min(Metrics::get(&m.outbox_depth)),
                        Ordering::Relaxed,
                    );
                    for a in taken {
                        if let Some(ack) = a.ack {
                            ack();
                        }
                    }
                    if appended > 0 {
                        self.committed.send_replace(next_seq - 1);
                    }
                    return;
                }
                Err(e) => {
                    let n = self
                        .metrics
                        .outbox_commit_errors
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    if crate::metrics::worth_logging(n) {
                        error!(error = %e, failures = n, retry_in_ms = backoff.as_millis() as u64, "Outbox commit failed; retrying. Device events stay unacknowledged.");
                    }
                    *batch = taken;
                    *deletes = dels;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if batch.is_empty() && self.append_rx.is_closed() {
                        info!("Outbox: giving up a delete-only commit at shutdown.");
                        deletes.clear();
                        return;
                    }
                }
            }
        }
    }
}

fn records(batch: &[Append]) -> usize {
    batch.iter().map(|a| a.records.len()).sum()
}

/// One transaction: the batch's records get their seqs and ids and go in; the deletes come out.
/// Returns the next free seq and how many records were removed.
fn write(
    store: &Store,
    gateway: &str,
    mut next: u64,
    batch: &mut [Append],
    deletes: &[u64],
) -> Result<(u64, u64), StoreError> {
    let mut txn = store.db().begin_write()?;
    // Nothing new to keep (only deletes, or acks of messages with nothing to record): skip the
    // fsync; losing this commit in a crash loses nothing.
    if records(batch) == 0 {
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Db(e.into()))?;
    }
    let mut removed = 0;
    {
        let mut table = txn.open_table(OUTBOX)?;
        let mut buf = Vec::with_capacity(256);
        for a in batch.iter_mut() {
            for r in a.records.iter_mut() {
                let id = format!("{gateway}:{next}");
                buf.clear();
                match r {
                    Record::Event(e) => {
                        e.seq = next;
                        e.event_id = id;
                        buf.push(KIND_EVENT);
                        e.encode(&mut buf).expect("a Vec grows as needed");
                    }
                    Record::Alarm(al) => {
                        al.seq = next;
                        al.alarm_id = id;
                        buf.push(KIND_ALARM);
                        al.encode(&mut buf).expect("a Vec grows as needed");
                    }
                }
                table.insert(next, buf.as_slice())?;
                next += 1;
            }
        }
        for &seq in deletes {
            if table.remove(seq)?.is_some() {
                removed += 1;
            }
        }
        let mut meta = txn.open_table(super::META)?;
        meta.insert("next_seq", next)?;
    }
    txn.commit()?;
    Ok((next, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn event(lane: &str) -> Record {
        Record::Event(v1::Event {
            lane: lane.into(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn records_get_gapless_ids_acks_run_after_commit_and_seqs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let cfg = WriterConfig {
            gateway: "gw1".into(),
            commit_interval: Duration::from_millis(5),
            commit_max: 100,
        };
        let h = spawn(store.clone(), cfg.clone(), metrics.clone()).unwrap();
        let acked = Arc::new(AtomicUsize::new(0));
        for i in 0..250 {
            let acked = acked.clone();
            let ack: Ack = Box::new(move || {
                acked.fetch_add(1, Ordering::SeqCst);
            });
            h.appends
                .send(Append {
                    records: vec![event(&format!("l{i}"))],
                    ack: Some(ack),
                })
                .await
                .unwrap();
        }
        drop(h.appends);
        h.appends_done.await.unwrap();
        assert_eq!(acked.load(Ordering::SeqCst), 250);
        assert_eq!(*h.committed.borrow(), 250);
        let rows = store.outbox_from(1, 1000, usize::MAX).unwrap();
        assert_eq!(rows.len(), 250);
        let first = v1::Event::decode(&rows[0].1[1..]).unwrap();
        assert_eq!(
            (first.event_id.as_str(), first.lane.as_str()),
            ("gw1:1", "l0")
        );
        h.deletes.send((1..=200).collect()).await.unwrap();
        drop(h.deletes);
        h.join.await.unwrap();
        assert_eq!(store.outbox_len().unwrap(), 50);
        assert_eq!(Metrics::get(&metrics.outbox_depth), 50);
        drop(store);

        // Reopen: numbering continues after the highest seq ever handed out.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.next_seq().unwrap(), 251);
    }
}
