//! The outbox writer: the only task that writes the outbox. Group commit: a batch opens with its
//! first record and closes `commit_interval` later, or once `commit_max` records are queued (seen
//! within 10 ms), then is written in one transaction with one fsync. Only after that commit are
//! the batch's device events acknowledged and the uplink told there is more to send.
//!
//! Sequence numbers are handed out here, in commit order, and persisted (`meta.next_seq`) in the
//! same transaction as the records, so a seq is never reused, even across a crash.
//!
//! Bounded in bytes: before a batch goes in, records past their class's time-to-live go, and if
//! the outbox would pass `max_bytes` the oldest records go, routine first, then passage decisions,
//! alarms last. Every eviction is counted (metrics, and `meta` so restarts keep the totals), and
//! an `outbox_evicted` alarm tells upstream what was lost, at most once a minute. A full disk is
//! met the same way: the bound shrinks below what the disk took and the commit is tried again.
//!
//! Deletions (records the uplink broker acked) arrive on their own channel and ride along with
//! the next commit; a commit that adds no record skips the fsync (losing it in a crash only means
//! the records are sent again, with the same ids).
//!
//! One exception to "acknowledged only once durable": degraded mode (`outbox_degraded.rs`).
use super::{Class, MetaKey, Store, StoreError, HEADER, META};
use crate::clock::ClockWatch;
use crate::config::StoreSection;
use crate::metrics::Metrics;
use crate::proto::v1;
use redb::{Durability, ReadableTable};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// Run once the records it came with are durable: acknowledges the device's message.
pub type Ack = Box<dyn FnOnce() + Send>;

pub struct Append {
    pub records: Vec<Record>,
    /// Decision-core state changed with these records (key, value; `None` deletes), written in
    /// the same transaction so counters and the records that explain them never disagree.
    pub state: Vec<(String, Option<Vec<u8>>)>,
    pub ack: Option<Ack>,
}

/// Records the uplink broker acknowledged.
pub type Delete = Vec<(Class, u64)>;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub gateway: String,
    /// Commits failing this long: degraded mode (see the module docs).
    pub degraded_after: Duration,
    pub commit_interval: Duration,
    pub commit_max: usize,
    /// The outbox never holds more than this many bytes of records.
    pub max_bytes: u64,
    /// Time-to-live by class ([`Class::index`]).
    pub ttl: [Duration; 3],
    /// A record's age is measured only on a trusted clock, and not across a jump.
    pub clock: Arc<ClockWatch>,
}

impl WriterConfig {
    pub fn from_config(gateway: &str, s: &StoreSection, clock: Arc<ClockWatch>) -> WriterConfig {
        WriterConfig {
            clock,
            gateway: gateway.to_string(),
            degraded_after: Duration::from_secs(s.degraded_after_s),
            commit_interval: Duration::from_millis(s.commit_interval_ms),
            commit_max: s.commit_max,
            max_bytes: s.max_mib << 20,
            ttl: [s.ttl_routine_h, s.ttl_passage_h, s.ttl_alarm_h]
                .map(|h| Duration::from_secs(h * 3600)),
        }
    }
}

/// Channel capacities. Full appends channel → the sender waits (backpressure up to the device
/// broker, which holds unacknowledged events). Full deletes channel → the delete is dropped and
/// the record is sent again later (a duplicate, never a loss).
pub const APPEND_CAPACITY: usize = 8192;
pub const DELETE_CAPACITY: usize = 1024;
/// Longest the writer sleeps at a time while a batch lingers (the default interval is one step).
const LINGER_STEP: Duration = Duration::from_millis(10);

/// Eviction reports go upstream at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// A full disk evicts the outbox's own records only while it holds at least this much (below
/// it, something else filled the disk).
const DISK_FULL_EVICT_MIN: u64 = 1 << 20;

pub struct WriterHandle {
    pub appends: mpsc::Sender<Append>,
    pub deletes: mpsc::Sender<Delete>,
    /// The highest seq made durable so far.
    pub committed: watch::Receiver<u64>,
    /// Fires when the appends channel has closed and everything in it is durable.
    pub appends_done: oneshot::Receiver<()>,
    pub join: tokio::task::JoinHandle<()>,
    /// This run's count (`Store::next_run_generation`): the status's `boot`.
    pub generation: u64,
    /// Every passage and alarm as it gets its seq (`subscribe` to watch).
    pub tap: Tap,
}

pub fn spawn(
    store: Store,
    cfg: WriterConfig,
    metrics: Arc<Metrics>,
) -> Result<WriterHandle, StoreError> {
    let ledger = Ledger::load(&store)?;
    let generation = store.next_run_generation()?;
    metrics
        .outbox_depth
        .store(store.outbox_len()?, Ordering::Relaxed);
    metrics
        .outbox_bytes
        .store(ledger.total(), Ordering::Relaxed);
    metrics
        .outbox_evicted
        .store(ledger.lost(), Ordering::Relaxed);
    let (append_tx, append_rx) = mpsc::channel(APPEND_CAPACITY);
    let (delete_tx, delete_rx) = mpsc::channel(DELETE_CAPACITY);
    let (committed_tx, committed_rx) = watch::channel(ledger.next_seq - 1);
    let (done_tx, done_rx) = oneshot::channel();
    let tap = Tap::default();
    let commits = Commits::start(cfg.commit_interval).map_err(StoreError::Threads)?;
    let w = Writer {
        tap: tap.clone(),
        store,
        max_bytes: cfg.max_bytes,
        cfg,
        metrics,
        reported: ledger.clone(),
        last_report: None,
        last_sweep: tokio::time::Instant::now(),
        ledger,
        append_rx,
        delete_rx,
        committed: committed_tx,
        record_commits: 0,
        jumps_seen: 0,
        panic_at: crate::metrics::panic_commit_at(),
        generation,
        fail_hook: crate::metrics::fail_commits_while(),
        failing_since: None,
        last_probe: tokio::time::Instant::now(),
        held: Held::default(),
        notices: Vec::new(),
        commits,
    };
    let join = tokio::spawn(w.run(done_tx));
    Ok(WriterHandle {
        appends: append_tx,
        deletes: delete_tx,
        committed: committed_rx,
        appends_done: done_rx,
        join,
        generation,
        tap,
    })
}

struct Writer {
    store: Store,
    cfg: WriterConfig,
    /// The bound in force: `cfg.max_bytes`, or less once the disk said it was full.
    max_bytes: u64,
    metrics: Arc<Metrics>,
    ledger: Ledger,
    /// The ledger as last reported upstream.
    reported: Ledger,
    last_report: Option<tokio::time::Instant>,
    /// When a commit last swept expired records (every commit does).
    last_sweep: tokio::time::Instant,
    append_rx: mpsc::Receiver<Append>,
    delete_rx: mpsc::Receiver<Delete>,
    committed: watch::Sender<u64>,
    /// Commits holding records so far, for the commit-panic test hook (`panic_at`, debug builds).
    record_commits: u64,
    /// The clock's jumps seen at the last commit.
    jumps_seen: u64,
    panic_at: Option<u64>,
    /// This run's count (`Store::next_run_generation`): where its degraded seqs start.
    generation: u64,
    /// Debug builds: commits fail while this file exists (a store whose disk fails).
    fail_hook: Option<std::path::PathBuf>,
    /// Since when commits have failed without a break.
    failing_since: Option<tokio::time::Instant>,
    /// When a commit was last tried while degraded.
    last_probe: tokio::time::Instant,
    /// What degraded mode holds besides the spilled records.
    held: Held,
    /// Alarms of the writer's own (degraded, durable again) for the next commit.
    notices: Vec<Record>,
    /// A copy of the records once they have their seqs, for whoever watches (the console).
    tap: Tap,
    /// The thread the commits run on, and its priority.
    commits: Commits,
}

impl Writer {
    /// Copies the records to the tap's watchers, if any.
    pub(super) fn show(&self, records: &[Record]) {
        self.tap.show(records);
    }

    async fn run(mut self, done: oneshot::Sender<()>) {
        let mut done = Some(done);
        let mut appends_open = true;
        let mut deletes_open = true;
        let mut batch: Vec<Append> = Vec::new();
        let mut deletes: Delete = Vec::new();
        let stall = crate::metrics::stall_at("WRITER");
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
                    // Idle: still sweep expired records now and then, and count a turn for
                    // the watchdog.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            crate::metrics::stall_if_due(stall, "outbox writer").await;
            Metrics::inc(&self.metrics.writer_ticks);
            self.take_queued(&mut batch, &mut appends_open);
            // Linger for more records — only when there is something to make durable (acks of
            // messages with nothing to keep must not wait) and room in the batch.
            if appends_open && records(&batch) > 0 && records(&batch) < self.cfg.commit_max {
                self.linger(records(&batch)).await;
                self.take_queued(&mut batch, &mut appends_open);
            }
            while let Ok(d) = self.delete_rx.try_recv() {
                deletes.extend(d);
            }
            if records(&batch) == 0 && deletes.is_empty() && !self.ttl_due() {
                // Only acks (garbage, heartbeats): nothing to write, and every record before
                // them is already durable, so they go now, still in order.
                for a in batch.drain(..) {
                    if let Some(ack) = a.ack {
                        ack();
                    }
                }
            } else if !batch.is_empty() || !deletes.is_empty() || self.ttl_due() || self.probe_due()
            {
                self.commit(&mut batch, &mut deletes).await;
            }
            let last_turn = !appends_open && !deletes_open && deletes.is_empty();
            let mut notices = std::mem::take(&mut self.notices);
            notices.extend(self.eviction_report(last_turn));
            if !notices.is_empty() {
                batch.push(Append {
                    records: notices,
                    state: Vec::new(),
                    ack: None,
                });
                self.commit(&mut batch, &mut deletes).await;
            }
            if !appends_open && batch.is_empty() {
                // A last chance for what memory holds (the disk freed before a restart).
                if done.is_some() && self.store.spill().degraded() {
                    self.write_back().await;
                }
                if let Some(d) = done.take() {
                    let _ = d.send(());
                }
            }
        }
    }

    /// Waits until the batch's interval is up, enough is queued to fill it (or the channel),
    /// or the channel has closed, whichever is first. Asleep, not woken by every append: on two
    /// cores a wake-up per event was half the daemon's context switches and ~60 µs of the gate
    /// latency of a burst's later events. A long interval is slept in steps, so a busy one still closes at
    /// `commit_max` records (within a step) and no sender waits on a full channel for long.
    async fn linger(&self, in_batch: usize) {
        let deadline = tokio::time::Instant::now() + self.cfg.commit_interval;
        let room = self
            .cfg
            .commit_max
            .saturating_sub(in_batch)
            .min(self.append_rx.max_capacity());
        loop {
            let now = tokio::time::Instant::now();
            let rx = &self.append_rx;
            if now >= deadline || rx.len() >= room || rx.is_closed() {
                return;
            }
            tokio::time::sleep((deadline - now).min(LINGER_STEP)).await;
        }
    }

    /// Takes what is already queued, up to `commit_max` records in the batch.
    fn take_queued(&mut self, batch: &mut Vec<Append>, appends_open: &mut bool) {
        while *appends_open && records(batch) < self.cfg.commit_max {
            match self.append_rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => *appends_open = false,
            }
        }
    }

    /// Degraded, and time to try the store again (also when nothing else comes).
    fn probe_due(&self) -> bool {
        self.store.spill().degraded() && self.last_probe.elapsed() >= PROBE_EVERY
    }

    /// Whether to sweep for records past their time-to-live: once a second while any are held.
    fn ttl_due(&self) -> bool {
        self.ledger.total() > 0 && self.last_sweep.elapsed() >= Duration::from_secs(1)
    }

    /// An alarm saying what was evicted since the last report, if anything was and the last
    /// report is old enough (or this is the last chance before a stop).
    fn eviction_report(&mut self, last_chance: bool) -> Option<Record> {
        if self.ledger.lost() == self.reported.lost() {
            return None;
        }
        let now = tokio::time::Instant::now();
        if !last_chance && self.last_report.is_some_and(|t| now - t < REPORT_EVERY) {
            return None;
        }
        let mut parts = Vec::new();
        for c in Class::ALL {
            let i = c.index();
            // A reopen may read back less than was counted (sweeps not fsynced): never below 0.
            let evicted = self.ledger.evicted[i].saturating_sub(self.reported.evicted[i]);
            let expired = self.ledger.expired[i].saturating_sub(self.reported.expired[i]);
            if evicted + expired > 0 {
                parts.push(format!(
                    "{} {}: {evicted} for room, {expired} past their time-to-live",
                    evicted + expired,
                    c.as_str()
                ));
            }
        }
        self.reported = self.ledger.clone();
        self.last_report = Some(now);
        warn!(lost = %parts.join("; "), "Outbox evicted records.");
        Some(Record::Alarm(v1::Alarm {
            gateway_time_ms: crate::now_ms(),
            kind: v1::AlarmKind::OutboxEvicted as i32,
            detail: format!(
                "outbox full or records expired before the uplink took them: {}",
                parts.join("; ")
            ),
            ..Default::default()
        }))
    }

    /// Commits until it succeeds: acknowledged device events are only ever those on disk, so a
    /// failing disk holds the pipeline back rather than dropping anything — until it has failed
    /// for `degraded_after`: then the batch goes to memory (degraded mode, see the module docs).
    async fn commit(&mut self, batch: &mut Vec<Append>, deletes: &mut Delete) {
        let degraded = self.store.spill().degraded();
        if degraded && (self.last_probe.elapsed() < PROBE_EVERY || !self.write_back().await) {
            self.spill(batch, deletes);
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let e = match self.try_write(batch, deletes, false).await {
                Ok(()) => {
                    self.failing_since = None;
                    return;
                }
                Err(e) => e,
            };
            let since = *self
                .failing_since
                .get_or_insert_with(tokio::time::Instant::now);
            // A full disk the outbox itself fills (it is smaller than the configured bound) is
            // met like a full outbox: the real bound is learned and the oldest go. One that
            // something else filled is no reason to drop records: a failing store, degraded
            // after `degraded_after`, written back when room returns.
            let disk_full = is_disk_full(&e) && self.ledger.total() >= DISK_FULL_EVICT_MIN;
            if disk_full {
                // The disk is smaller than the configured bound: learn the real one.
                let shrunk = (self.ledger.total() * 9 / 10).min(self.max_bytes * 9 / 10);
                warn!(
                    bound = self.max_bytes,
                    now = shrunk,
                    "Disk full: lowering the outbox bound and evicting."
                );
                self.max_bytes = shrunk;
            }
            let n = self
                .metrics
                .outbox_commit_errors
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if crate::metrics::worth_logging(n) {
                error!(error = %e, failures = n, retry_in_ms = backoff.as_millis() as u64, "Outbox commit failed; retrying. Device events stay unacknowledged.");
            }
            // Failing too long, or the decision loop about to wait on us: go on from memory
            // (a full disk of our own records is given the time its eviction takes).
            let backed_up = |rx: &mpsc::Receiver<Append>| rx.len() >= APPEND_CAPACITY / 2;
            if since.elapsed() >= self.cfg.degraded_after
                || (backed_up(&self.append_rx) && !disk_full)
            {
                self.enter_degraded(&e);
                self.spill(batch, deletes);
                return;
            }
            // Asleep in steps: appends backing up end the wait (and the wait for memory).
            let until = tokio::time::Instant::now() + backoff;
            while tokio::time::Instant::now() < until && (disk_full || !backed_up(&self.append_rx))
            {
                tokio::time::sleep(LINGER_STEP * 5).await;
            }
            // A failing disk is not a hung writer: the watchdog must not restart us for it.
            Metrics::inc(&self.metrics.writer_ticks);
            backoff = (backoff * 2).min(Duration::from_secs(5));
            // After an I/O error redb refuses every transaction until the file is opened again.
            let broken = disk_full
                || matches!(
                    e,
                    StoreError::Db(redb::Error::PreviousIo) | StoreError::Reopening
                );
            if broken {
                if let Err(e) = self.reopen().await {
                    warn!(error = %e, "Store could not be reopened yet.");
                    continue;
                }
                if disk_full {
                    // Make room in a commit of its own: the pages it frees serve the batch next.
                    let _ = self.try_write(&mut Vec::new(), &mut Vec::new(), true).await;
                }
            }
            if batch.is_empty() && self.append_rx.is_closed() {
                info!("Outbox: giving up a delete-only commit at shutdown.");
                deletes.clear();
                return;
            }
        }
    }

    /// One attempt. On success the batch's acks have run and both inputs are emptied; on failure
    /// they are left as they were.
    async fn try_write(
        &mut self,
        batch: &mut Vec<Append>,
        deletes: &mut Delete,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.try_write_with(batch, deletes, durable, None).await
    }

    /// [`Self::try_write`], with what degraded mode held (`back`: the spilled rows, the held
    /// state and deletes) written first in the same transaction.
    async fn try_write_with(
        &mut self,
        batch: &mut Vec<Append>,
        deletes: &mut Delete,
        durable: bool,
        back: Option<WriteBack>,
    ) -> Result<(), StoreError> {
        if self.fail_hook.as_ref().is_some_and(|f| f.exists()) {
            return Err(StoreError::Db(redb::Error::Io(
                std::io::Error::from_raw_os_error(5),
            )));
        }
        let store = self.store.clone();
        let gateway = self.cfg.gateway.clone();
        let ledger = self.ledger.clone();
        // Read through the watch, so a step is seen here even before the decision loop sees it.
        let now = self.cfg.clock.now();
        let jumps = self.cfg.clock.jumps.load(Ordering::Relaxed);
        let clock = Clocked {
            now,
            trusted: self.cfg.clock.trusted(),
            jumped: jumps != self.jumps_seen,
        };
        let limits = (self.max_bytes, self.cfg.ttl, clock);
        let mut taken = std::mem::take(batch);
        let dels = std::mem::take(deletes);
        // A raised age floor must survive a crash: the records below it would expire after.
        let durable = durable || records(&taken) > 0 || clock.jumped || back.is_some();
        if records(&taken) > 0 {
            self.record_commits += 1;
        }
        let panic_now = self.panic_at == Some(self.record_commits) && records(&taken) > 0;
        // Closed by its size, or appends queued behind it (each one event's records and state).
        let busy =
            records(&taken) >= self.cfg.commit_max || self.append_rx.len() >= APPEND_CAPACITY / 8;
        let result = self
            .commits
            .run(busy, move || {
                if panic_now {
                    panic!("test hook: this commit panics");
                }
                let r = write(
                    &store,
                    &gateway,
                    ledger,
                    limits,
                    durable,
                    (&mut taken, &dels),
                    &back,
                );
                (r, taken, dels, back)
            })
            .await;
        let Ok((r, taken, dels, back)) = result else {
            // The write panicked (a bug in redb or here) and took its batch with it: the acks
            // of those events would never run and the in-order ack queue would jam behind them.
            // Die as a release build does (panic = abort): systemd restarts the daemon and the
            // broker sends the unacknowledged events again.
            error!("Outbox commit panicked; aborting so nothing is lost quietly.");
            std::process::abort();
        };
        let (ledger, depth_change) = match r {
            Ok(x) => x,
            Err(e) => {
                *batch = taken;
                *deletes = dels;
                return Err(e);
            }
        };
        // Only now is the jump written down (a failed commit sees it again).
        self.jumps_seen = jumps;
        if let Some((rows, _)) = back {
            self.store.spill().written_back(&rows);
        }
        let appended = ledger.next_seq - self.ledger.next_seq;
        let m = &self.metrics;
        Metrics::inc(&m.outbox_commits);
        if durable {
            // Counted where the fsync was asked for: a test holds every commit with records or
            // state to it.
            Metrics::inc(&m.outbox_durable_commits);
        }
        Metrics::add(&m.outbox_appended, appended);
        m.outbox_bytes.store(ledger.total(), Ordering::Relaxed);
        m.outbox_evicted.store(ledger.lost(), Ordering::Relaxed);
        let depth = Metrics::get(&m.outbox_depth).saturating_add_signed(depth_change);
        m.outbox_depth.store(depth, Ordering::Relaxed);
        self.ledger = ledger;
        self.last_sweep = tokio::time::Instant::now();
        for a in taken {
            self.show(&a.records);
            if let Some(ack) = a.ack {
                ack();
            }
        }
        if appended > 0 {
            self.committed.send_replace(self.ledger.next_seq - 1);
        }
        Ok(())
    }
}

/// What a batch has to make durable: its records and its state changes.
fn records(batch: &[Append]) -> usize {
    batch.iter().map(|a| a.records.len() + a.state.len()).sum()
}

fn is_disk_full(e: &StoreError) -> bool {
    let io = match e {
        StoreError::Db(redb::Error::Io(io)) => io,
        _ => return false,
    };
    io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
}

/// What the writer knows of the clock at a commit.
#[derive(Debug, Clone, Copy)]
struct Clocked {
    now: i64,
    trusted: bool,
    /// It stepped since the last commit.
    jumped: bool,
}

/// One transaction: what degraded mode held first (`back`), expired records out, room made, the
/// batch's records in with their seqs and ids, acked records out. Returns the new ledger and how
/// the record count changed.
fn write(
    store: &Store,
    gateway: &str,
    mut ledger: Ledger,
    (max_bytes, ttl, clock): (u64, [Duration; 3], Clocked),
    durable: bool,
    (batch, deletes): (&mut [Append], &[(Class, u64)]),
    back: &Option<WriteBack>,
) -> Result<(Ledger, i64), StoreError> {
    let now = clock.now;
    let mut txn = store.db()?.begin_write()?;
    // Nothing new to keep (only deletes, expiries, or acks of messages with nothing to record):
    // skip the fsync; losing this commit in a crash loses nothing.
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Db(e.into()))?;
    }
    let mut depth: i64 = 0;
    {
        let mut tables = [
            txn.open_table(Class::Routine.table())?,
            txn.open_table(Class::Passage.table())?,
            txn.open_table(Class::Alarm.table())?,
        ];
        if let Some((rows, held)) = back {
            for (class, seq, row) in rows {
                ledger.bytes[class.index()] += row.len() as u64;
                tables[class.index()].insert(*seq, row.as_slice())?;
                depth += 1;
            }
            let mut state = txn.open_table(super::STATE)?;
            for (k, v) in &held.state {
                match v {
                    Some(v) => state.insert(k.as_str(), v.as_slice())?,
                    None => state.remove(k.as_str())?,
                };
            }
            for &(class, seq) in &held.deletes {
                if let Some(v) = tables[class.index()].remove(seq)? {
                    ledger.bytes[class.index()] =
                        ledger.bytes[class.index()].saturating_sub(v.value().len() as u64);
                    depth -= 1;
                }
            }
        }
        for &(class, seq) in deletes {
            if let Some(v) = tables[class.index()].remove(seq)? {
                ledger.bytes[class.index()] =
                    ledger.bytes[class.index()].saturating_sub(v.value().len() as u64);
                depth -= 1;
            }
        }
        if clock.jumped {
            ledger.age_floor = ledger.next_seq;
        }
        let floor = ledger.age_floor;
        for c in Class::ALL.into_iter().filter(|_| clock.trusted) {
            let i = c.index();
            let cutoff = now.saturating_sub(ttl[i].as_millis() as i64);
            while let Some(len) = pop_oldest_if(&mut tables[i], floor, |t| t < cutoff)? {
                ledger.bytes[i] = ledger.bytes[i].saturating_sub(len);
                ledger.expired[i] += 1;
                depth -= 1;
            }
        }

        let mut encoded = Vec::with_capacity(records(batch));
        for a in batch.iter_mut() {
            for r in a.records.iter_mut() {
                let seq = ledger.next_seq;
                ledger.next_seq += 1;
                encoded.push((r.class(), seq, encode(r, gateway, seq, now)));
            }
        }
        if !clock.trusted {
            ledger.age_floor = ledger.next_seq;
        }
        for (class, seq, buf) in encoded {
            ledger.bytes[class.index()] += buf.len() as u64;
            tables[class.index()].insert(seq, buf.as_slice())?;
            depth += 1;
        }
        // Over the bound: the oldest go, routine first, alarms last (the batch's own records
        // too, if it alone is larger than the room).
        'room: for c in Class::ALL {
            while ledger.total() > max_bytes {
                match pop_oldest_if(&mut tables[c.index()], 0, |_| true)? {
                    Some(len) => {
                        ledger.bytes[c.index()] = ledger.bytes[c.index()].saturating_sub(len);
                        ledger.evicted[c.index()] += 1;
                        depth -= 1;
                    }
                    None => continue 'room,
                }
            }
        }

        // A key changed several times in one batch (the hour's counts, after every decision) is
        // written once, with its last value.
        let mut last: std::collections::HashMap<&str, Option<&[u8]>> = Default::default();
        for (k, v) in batch.iter().flat_map(|a| &a.state) {
            last.insert(k.as_str(), v.as_deref());
        }
        let mut state = txn.open_table(super::STATE)?;
        for (k, v) in last {
            match v {
                Some(v) => state.insert(k, v)?,
                None => state.remove(k)?,
            };
        }

        let mut meta = txn.open_table(META)?;
        meta.insert(&*MetaKey::NextSeq.name(), ledger.next_seq)?;
        meta.insert(&*MetaKey::AgeFloorSeq.name(), ledger.age_floor)?;
        for c in Class::ALL {
            let i = c.index();
            meta.insert(&*MetaKey::Bytes(c).name(), ledger.bytes[i])?;
            meta.insert(&*MetaKey::Evicted(c).name(), ledger.evicted[i])?;
            meta.insert(&*MetaKey::Expired(c).name(), ledger.expired[i])?;
        }
    }
    txn.commit()?;
    Ok((ledger, depth))
}

/// Removes the oldest record of a table from seq `from` on if `doomed(created_ms)`; returns its
/// size.
fn pop_oldest_if(
    table: &mut redb::Table<u64, &[u8]>,
    from: u64,
    doomed: impl Fn(i64) -> bool,
) -> Result<Option<u64>, StoreError> {
    let (seq, created) = match table.range(from..)?.next() {
        None => return Ok(None),
        Some(row) => {
            let (k, v) = row?;
            let v = v.value();
            let header: [u8; HEADER] = v
                .get(..HEADER)
                .and_then(|h| h.try_into().ok())
                .unwrap_or_default();
            (k.value(), i64::from_le_bytes(header))
        }
    };
    if !doomed(created) {
        return Ok(None);
    }
    Ok(table.remove(seq)?.map(|v| v.value().len() as u64))
}

#[path = "outbox_record.rs"]
mod record;
use record::encode;
pub use record::{frame, Record, Tap, TapRx, ACK_FIELD};
#[path = "outbox_commits.rs"]
mod commits;
use commits::Commits;
#[path = "outbox_degraded.rs"]
mod degraded;
#[path = "outbox_ledger.rs"]
mod ledger;
use degraded::{Held, WriteBack, PROBE_EVERY};
use ledger::Ledger;

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
