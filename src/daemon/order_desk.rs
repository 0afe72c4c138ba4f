//! Signed orders from above, in two steps:
//! - the [`Gatekeeper`], a task of its own, checks each order as it arrives (decode, signature,
//!   key scope, lifetime, store age) so that junk costs the decision loop nothing; refusals are
//!   logged at the 1st, 10th, 100th… and answered upstream at a bounded rate;
//! - the [`OrderDesk`], on the decision loop, checks replay against the ids it holds, applies the
//!   order to the core — one small function per payload kind — and answers on `cmd/result` once
//!   the change is durable. A registry sync (whole, or assembled from chunks) is written and
//!   loaded off the loop and answered when it is swapped in.
use crate::clock::ClockWatch;

/// What the order checks know of time: the store's creation time (unix ms; 0 while not known —
/// the desk settles it) and whether the box's clock is right.
#[derive(Clone)]
pub struct OrderTime {
    pub store_created: Arc<AtomicI64>,
    pub clock: Arc<ClockWatch>,
}
use super::order_quota::Quotas;
use crate::config::Config;
use crate::decision::{Core, Mode, Origin, Output, Registry, StateKey};
use crate::metrics::{worth_logging, Metrics};
use crate::orders::{
    self, Limits, Place, Refused, StoreAge, TrustedKey, Verified, MAX_CHUNKS, MAX_TRANSFER_BYTES,
};
use crate::proto::v1;
use crate::store::outbox;
use crate::store::sync::SyncLimits;
use crate::store::Store;
use crate::uplink::RawOrder;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::{info, warn};

/// An order that passed the gatekeeper, still holding its share of the order queue.
pub struct Checked {
    pub verified: Verified,
    pub _queued: OwnedSemaphorePermit,
}

/// The place and the keys, from the config.
fn place(config: &Config) -> Place {
    let g = &config.gateway;
    Place {
        gateway: g.id.clone(),
        community: g.community.clone(),
        street: g.street.clone(),
        district: g.district.clone(),
    }
}

/// Refusals answered upstream: at most this many in a burst, then one a second.
const REFUSAL_BURST: f64 = 10.0;

/// Checks orders off the decision loop.
pub struct Gatekeeper {
    trusted: Vec<TrustedKey>,
    place: Place,
    max_skew_ms: i64,
    max_lifetime_ms: i64,
    time: OrderTime,
    results: mpsc::Sender<v1::CommandResult>,
    refusals: Refusals,
}

impl Gatekeeper {
    pub fn new(
        config: &Config,
        time: OrderTime,
        results: mpsc::Sender<v1::CommandResult>,
        metrics: Arc<Metrics>,
    ) -> Gatekeeper {
        let trusted = config
            .orders
            .keys
            .iter()
            .filter_map(|k| {
                // Validation has checked every key.
                Some(TrustedKey {
                    id: k.id.clone(),
                    key: orders::parse_public_key(&k.public_key).ok()?,
                    levels: k.levels.clone(),
                    kinds: k.kinds.clone(),
                })
            })
            .collect();
        Gatekeeper {
            trusted,
            place: place(config),
            max_skew_ms: config.orders.max_skew_s as i64 * 1000,
            max_lifetime_ms: config.orders.max_lifetime_s as i64 * 1000,
            time,
            results,
            refusals: Refusals::new(metrics),
        }
    }

    /// Checks every order until the uplink goes; passes the good ones on to the decision loop.
    pub async fn run(mut self, mut raw: mpsc::Receiver<RawOrder>, checked: mpsc::Sender<Checked>) {
        while let Some(order) = raw.recv().await {
            let now = self.time.clock.now();
            let store = match self.time.store_created.load(Ordering::Relaxed) {
                0 => StoreAge::Unknown,
                ms => StoreAge::Since(ms),
            };
            let limits = Limits {
                max_skew_ms: self.max_skew_ms,
                max_lifetime_ms: self.max_lifetime_ms,
                store,
                clock_trusted: self.time.clock.trusted(),
            };
            // Ed25519 and a large decode are CPU work: off the async threads.
            let (bytes, trusted, place) = (order.bytes, self.trusted.clone(), self.place.clone());
            let verified = tokio::task::spawn_blocking(move || {
                orders::verify(&bytes, &trusted, &place, now, &limits)
            })
            .await;
            match verified {
                Ok(Ok(verified)) => {
                    let c = Checked {
                        verified,
                        _queued: order.queued,
                    };
                    if checked.send(c).await.is_err() {
                        break;
                    }
                }
                Ok(Err(r)) => self.refused(r, now),
                Err(e) => warn!(error = %e, "Order check failed."),
            }
        }
    }

    fn refused(&mut self, r: Refused, now: i64) {
        self.refusals.metrics.order_result(r.reason);
        if self.refusals.allow(&r) {
            let _ =
                self.results
                    .try_send(result(&self.place.gateway, r.id, r.reason, r.detail, now));
        }
    }
}

/// Orders answer with a result; the registry syncs answer later, with the new lists.
pub struct OrderDesk {
    gateway: String,
    /// Order ids applied: until when they stay refused as replays, and the key that signed them.
    applied: HashMap<String, (i64, String)>,
    /// Each key's rate and its share of `applied`.
    quotas: Quotas,
    results: mpsc::Sender<v1::CommandResult>,
    /// For registry sync, which writes and loads the lists off the decision loop.
    store: Store,
    sync_limits: SyncLimits,
    swaps: mpsc::Sender<RegistrySwap>,
    /// Snapshots arriving in chunks, by signing key and transfer id.
    transfers: HashMap<(String, String), Transfer>,
    /// Syncs write the store one at a time: two at once could both pass the version check and
    /// the older commit last.
    sync_lock: Arc<std::sync::Mutex<()>>,
    /// Replay refusals answered upstream and logged at a bounded rate, as the gatekeeper's.
    refusals: Refusals,
    /// The store's creation time (settled here once a trusted clock gives it), and the clock.
    time: OrderTime,
    /// The blocking task settling it, while one runs.
    settling: Option<tokio::task::JoinHandle<()>>,
    /// `[commands] max_skew_s`: after a lost store, orders issued this long after the new one
    /// was made are refused too.
    max_skew_ms: i64,
}

/// A registry sync done off the decision loop: the new registry (or why not), and its result.
pub struct RegistrySwap {
    pub registry: Option<Registry>,
    pub version: u64,
    pub result: v1::CommandResult,
}

/// A snapshot on its way in chunks, from one key: its parts, and what every chunk says the
/// whole is (length and SHA-256).
struct Transfer {
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    total_bytes: u64,
    sha256: Vec<u8>,
    started_ms: i64,
}

/// Chunk transfers: how many at once, how many chunks and bytes each, and how long they may
/// take before they are abandoned.
const MAX_TRANSFERS: usize = 2;
const TRANSFER_TIMEOUT_MS: i64 = 5 * 60 * 1000;

/// What became of one order: refused with a reason code (empty: applied) and a detail.
type Outcome = (&'static str, String);

const APPLIED: Outcome = ("", String::new());

impl OrderDesk {
    /// `state`: the durable state, for the ids applied and not yet expired (replay protection
    /// across restarts).
    pub fn new(
        config: &Config,
        state: &[(String, Vec<u8>)],
        store: Store,
        time: OrderTime,
        results: mpsc::Sender<v1::CommandResult>,
        swaps: mpsc::Sender<RegistrySwap>,
        metrics: Arc<Metrics>,
    ) -> OrderDesk {
        // Restored ids count against no key: a key's cap bounds what it applied since the start
        // (the stored value stays the expiry alone, as every version reads it).
        let applied: HashMap<String, (i64, String)> = state
            .iter()
            .filter_map(|(k, v)| match StateKey::decode(k)? {
                StateKey::OrderApplied(id) => {
                    let expires = i64::from_le_bytes(v.as_slice().try_into().ok()?);
                    Some((id, (expires, String::new())))
                }
                _ => None,
            })
            .collect();
        let quotas = Quotas::default();
        let mut desk = OrderDesk {
            gateway: config.gateway.id.clone(),
            applied,
            quotas,
            results,
            store,
            sync_limits: SyncLimits {
                max_residents: config.registry.max_residents,
                max_version_step: config.orders.max_version_step,
            },
            swaps,
            transfers: HashMap::new(),
            sync_lock: Arc::default(),
            refusals: Refusals::new(metrics),
            time,
            settling: None,
            max_skew_ms: config.orders.max_skew_s as i64 * 1000,
        };
        // At start, before the decision loop turns: here, at once.
        desk.settle_store_age(crate::now_ms(), true);
        desk
    }

    /// Takes the store's creation time from the store, or — the first time the clock is known to
    /// be right — records it. Until then orders a replay could abuse are refused. The read (and
    /// the one write, with its fsync) run off the decision loop, one at a time.
    fn settle_store_age(&mut self, now: i64, inline: bool) {
        if self.time.store_created.load(Ordering::Relaxed) != 0
            || self.settling.as_ref().is_some_and(|t| !t.is_finished())
        {
            return;
        }
        let (store, trusted) = (self.store.clone(), self.time.clock.trusted());
        let created = self.time.store_created.clone();
        let max_skew_ms = self.max_skew_ms;
        let settle = move || {
            let settled = match store.created_ms() {
                Ok(Some(ms)) => Ok(ms),
                Ok(None) if trusted => store.settle_created(now),
                Ok(None) => return,
                Err(e) => Err(e),
            };
            // A store made anew after a loss: an order applied to the lost one may have been
            // issued up to the allowed skew after this one was made (ahead of the clock then).
            let after_loss = store.made_after_loss().unwrap_or(true);
            let margin = if after_loss { max_skew_ms } else { 0 };
            match settled {
                Ok(ms) => {
                    created.store(ms + margin, Ordering::Relaxed);
                    info!(
                        store_created_ms = ms,
                        after_loss,
                        "Store age known: orders issued before it (after a loss: before it and the allowed clock skew) are refused."
                    );
                }
                Err(e) => warn!(error = %e, "Store creation time not recorded; retrying."),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !inline => self.settling = Some(rt.spawn_blocking(settle)),
            _ => settle(),
        }
    }

    fn result(&self, id: String, refused: &str, detail: String, now: i64) -> v1::CommandResult {
        result(&self.gateway, id, refused, detail, now)
    }

    /// Hands a result to the uplink (dropped if its queue is full: the order's effect stands).
    pub fn answer(&self, result: v1::CommandResult) {
        self.refusals.metrics.order_result(&result.refused);
        let _ = self.results.try_send(result);
    }

    /// The result to send once the order's change is durable (the writer calls it).
    pub fn answer_later(&self, result: Option<v1::CommandResult>) -> Option<outbox::Ack> {
        let r = result?;
        self.refusals.metrics.order_result(&r.refused);
        let results = self.results.clone();
        Some(Box::new(move || {
            let _ = results.try_send(r);
        }))
    }

    /// Applies one checked order unless its id was applied before. Returns what to write and,
    /// unless the order is answered later (a registry sync), the result to send once that is
    /// durable.
    pub fn take(
        &mut self,
        v: Verified,
        core: &mut Core,
        now: i64,
        out: &mut Vec<Output>,
    ) -> Option<v1::CommandResult> {
        if let Some(r) = v.replayed(|id| self.applied.contains_key(id)) {
            let result = self.result(r.id.clone(), r.reason, r.detail.clone(), now);
            if self.refusals.allow(&r) {
                self.answer(result);
            }
            return None;
        }
        let id = v.command.id.clone();
        // A mode change (lockdown, fire's end by order, …) is never held back by the rate: a
        // flood of pings on the same key must not delay it. It still counts against the cap.
        let urgent = matches!(v.command.payload, Some(v1::command::Payload::SetMode(_)));
        if let Err(detail) = self
            .quotas
            .take(&v.key_id, urgent, std::time::Instant::now())
        {
            let r = Refused {
                id: id.clone(),
                reason: "too_many_orders",
                detail,
            };
            let result = self.result(id, r.reason, r.detail.clone(), now);
            if self.refusals.allow(&r) {
                self.answer(result);
            }
            return None;
        }
        let expires = v.command.expires_at_ms;
        let value = expires.to_le_bytes().to_vec();
        out.push(Output::State(
            StateKey::OrderApplied(id.clone()),
            Some(value),
        ));
        self.quotas.hold(&v.key_id);
        self.applied.insert(id.clone(), (expires, v.key_id.clone()));
        use v1::command::Payload;
        let (refused, detail) = match v.command.payload {
            Some(Payload::SetMode(m)) => set_mode(core, &id, &m, out),
            Some(Payload::RemoteOpen(o)) => remote_open(core, &id, &o, now, out),
            Some(Payload::SetThreshold(t)) => set_threshold(core, &id, &t, out),
            Some(Payload::RegistrySnapshot(s)) => {
                self.sync(id, now, Sync::Snapshot(s));
                return None;
            }
            Some(Payload::RegistryDelta(d)) => {
                self.sync(id, now, Sync::Delta(d));
                return None;
            }
            Some(Payload::SnapshotChunk(c)) => self.chunk(&v.key_id, c, now),
            Some(Payload::AckAlarm(a)) => {
                // The company's login, marked as theirs (the console's say `console:`).
                out.push(Output::Acknowledged {
                    alarm_seq: a.alarm_seq,
                    alarm_time_ms: a.alarm_time_ms,
                    by: format!("company:{}", a.by.chars().take(64).collect::<String>()),
                });
                APPLIED
            }
            Some(Payload::Ping(_)) | None => APPLIED,
        };
        Some(self.result(id, refused, detail, now))
    }

    /// One chunk of a snapshot: kept until its transfer is whole, then the snapshot is joined,
    /// checked against the length and SHA-256 every chunk carries, decoded and applied off the
    /// decision loop, as if it had come in one piece (answered under the transfer's id).
    fn chunk(&mut self, key_id: &str, c: v1::SnapshotChunk, now: i64) -> Outcome {
        if c.transfer_id.is_empty() || c.transfer_id.len() > 128 {
            return ("malformed", "a transfer id is 1–128 bytes".into());
        }
        // Each refusal says what is wrong with this chunk's numbers.
        let numbers = if c.count == 0 || c.count > MAX_CHUNKS {
            Some(format!(
                "a transfer of {} chunks: 1 to {MAX_CHUNKS}",
                c.count
            ))
        } else if c.index >= c.count {
            let last = c.count - 1;
            Some(format!(
                "chunk index {} past the last, {last} (chunks count from 0)",
                c.index
            ))
        } else {
            None
        };
        if let Some(detail) = numbers {
            return ("malformed", detail);
        }
        if c.total_bytes > MAX_TRANSFER_BYTES as u64 || c.sha256.len() != 32 {
            return (
                "malformed",
                format!(
                    "a snapshot of {} bytes (at most {MAX_TRANSFER_BYTES}) with a 32-byte SHA-256",
                    c.total_bytes
                ),
            );
        }
        let key = (key_id.to_string(), c.transfer_id.clone());
        if !self.transfers.contains_key(&key) && self.transfers.len() >= MAX_TRANSFERS {
            return (
                "too_many",
                format!("{MAX_TRANSFERS} transfers under way already"),
            );
        }
        let t = self
            .transfers
            .entry(key.clone())
            .or_insert_with(|| Transfer {
                parts: vec![None; c.count as usize],
                bytes: 0,
                total_bytes: c.total_bytes,
                sha256: c.sha256.clone(),
                started_ms: now,
            });
        if t.parts.len() != c.count as usize
            || t.total_bytes != c.total_bytes
            || t.sha256 != c.sha256
        {
            return (
                "malformed",
                format!(
                    "transfer {:?}: this chunk belongs to another snapshot",
                    c.transfer_id
                ),
            );
        }
        let index = c.index as usize;
        if t.parts[index].is_none() {
            if (t.bytes + c.data.len()) as u64 > t.total_bytes {
                let t = self.transfers.remove(&key);
                let detail = format!(
                    "transfer {:?}: more bytes than its {} announced",
                    c.transfer_id,
                    t.map_or(0, |t| t.total_bytes)
                );
                self.answer(self.result(c.transfer_id.clone(), "malformed", detail.clone(), now));
                return ("malformed", detail);
            }
            t.bytes += c.data.len();
            t.parts[index] = Some(c.data);
        }
        let have = t.parts.iter().filter(|p| p.is_some()).count();
        if have < t.parts.len() {
            return (
                "",
                format!(
                    "chunk {} of {} of transfer {:?}",
                    index + 1,
                    c.count,
                    c.transfer_id
                ),
            );
        }
        let Some(t) = self.transfers.remove(&key) else {
            return APPLIED;
        };
        info!(transfer = %c.transfer_id, chunks = c.count, bytes = t.bytes, "Snapshot transfer complete.");
        self.sync(
            c.transfer_id.clone(),
            now,
            Sync::Chunks(t.parts.into_iter().flatten().collect(), t.sha256),
        );
        (
            "",
            format!("last chunk of transfer {:?}: applying", c.transfer_id),
        )
    }

    /// The wall clock stepped: a snapshot transfer's time limit moves with it.
    pub fn clock_stepped(&mut self, delta_ms: i64) {
        for t in self.transfers.values_mut() {
            t.started_ms = t.started_ms.saturating_add(delta_ms);
        }
    }

    /// Order ids whose orders have expired can no longer be replayed: forgotten. Transfers that
    /// did not complete in time are abandoned, with a result. The store's age is settled once
    /// the clock is known to be right.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Output>) {
        // Only a clock known to be right may expire them: one that booted years ahead would
        // forget every id, and once NTP set it back the orders could be replayed.
        if self.time.clock.trusted() {
            let quotas = &mut self.quotas;
            self.applied.retain(|id, (until, key)| {
                let keep = *until >= now;
                if !keep {
                    out.push(Output::State(StateKey::OrderApplied(id.clone()), None));
                    quotas.release(key);
                }
                keep
            });
        }
        let stale: Vec<(String, String)> = self
            .transfers
            .iter()
            .filter(|(_, t)| now - t.started_ms > TRANSFER_TIMEOUT_MS)
            .map(|(key, _)| key.clone())
            .collect();
        for id in stale {
            if let Some(t) = self.transfers.remove(&id) {
                let have = t.parts.iter().filter(|p| p.is_some()).count();
                let detail = format!(
                    "{have} of {} chunks within {} s",
                    t.parts.len(),
                    TRANSFER_TIMEOUT_MS / 1000
                );
                warn!(transfer = %id.1, detail = %detail, "Snapshot transfer abandoned.");
                self.answer(self.result(id.1, "transfer_timeout", detail, now));
            }
        }
        self.settle_store_age(now, false);
    }

    /// Writes a snapshot or delta to the store and loads the new registry, on a blocking thread
    /// (one sync at a time): decisions keep flowing meanwhile, and the new lists are swapped in
    /// whole. A chunked snapshot is joined, checked and decoded there too.
    fn sync(&self, id: String, now: i64, what: Sync) {
        let store = self.store.clone();
        let swaps = self.swaps.clone();
        let gateway = self.gateway.clone();
        let limits = self.sync_limits;
        let lock = self.sync_lock.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
            let started = Instant::now();
            let what = match what {
                Sync::Chunks(parts, sha256) => match join_chunks(parts, &sha256) {
                    Ok(s) => Sync::Snapshot(s),
                    Err(detail) => {
                        let result = result(&gateway, id, "malformed", detail, now);
                        let _ = swaps.blocking_send(RegistrySwap {
                            registry: None,
                            version: 0,
                            result,
                        });
                        return;
                    }
                },
                other => other,
            };
            let (version, applied) = match &what {
                Sync::Snapshot(s) => (s.version, store.apply_snapshot(s, limits)),
                Sync::Delta(d) => (d.version, store.apply_delta(d, limits)),
                Sync::Chunks(..) => return,
            };
            let loaded = match applied {
                Ok(Ok(())) => store.load_registry().map(Ok),
                Ok(Err(refused)) => Ok(Err(refused)),
                Err(e) => Err(e),
            };
            let (registry, refused, detail) = match loaded {
                Ok(Ok(r)) => (
                    Some(r),
                    String::new(),
                    format!(
                        "version {version} applied in {} ms",
                        started.elapsed().as_millis()
                    ),
                ),
                Ok(Err(r)) => (None, r.reason.to_string(), r.detail),
                Err(e) => (None, "store_error".into(), e.to_string()),
            };
            let _ = swaps.blocking_send(RegistrySwap {
                registry,
                version,
                result: result(&gateway, id, &refused, detail, now),
            });
        });
    }
}

/// What a sync writes.
enum Sync {
    Snapshot(v1::RegistrySnapshot),
    Delta(v1::RegistryDelta),
    /// A chunked snapshot's parts, in order, and the SHA-256 its chunks announced.
    Chunks(Vec<Vec<u8>>, Vec<u8>),
}

fn join_chunks(parts: Vec<Vec<u8>>, sha256: &[u8]) -> Result<v1::RegistrySnapshot, String> {
    use sha2::Digest;
    let mut bytes = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for p in parts {
        bytes.extend_from_slice(&p);
    }
    if sha2::Sha256::digest(&bytes).as_slice() != sha256 {
        return Err("the joined chunks do not match the SHA-256 they announced".into());
    }
    <v1::RegistrySnapshot as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| format!("the joined chunks are not a snapshot: {e}"))
}

/// Refusals answered upstream at most [`REFUSAL_BURST`] at once, then one a second, and logged
/// at the 1st, 10th, 100th…; the rest are counted.
struct Refusals {
    metrics: Arc<Metrics>,
    answers: f64,
    refilled: Instant,
}

impl Refusals {
    fn new(metrics: Arc<Metrics>) -> Refusals {
        Refusals {
            metrics,
            answers: REFUSAL_BURST,
            refilled: Instant::now(),
        }
    }

    /// Counts and logs a refusal; true if it may be answered upstream.
    fn allow(&mut self, r: &Refused) -> bool {
        let n = self.metrics.orders_refused.fetch_add(1, Ordering::Relaxed) + 1;
        if worth_logging(n) {
            warn!(order = %r.id, reason = r.reason, detail = %r.detail, refused = n, "Order refused.");
        }
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.answers = (self.answers + elapsed).min(REFUSAL_BURST);
        if self.answers >= 1.0 {
            self.answers -= 1.0;
            true
        } else {
            Metrics::inc(&self.metrics.orders_refusals_unanswered);
            false
        }
    }
}

fn result(gateway: &str, id: String, refused: &str, detail: String, now: i64) -> v1::CommandResult {
    v1::CommandResult {
        gateway: gateway.to_string(),
        command_id: id,
        applied: refused.is_empty(),
        refused: refused.to_string(),
        detail,
        gateway_time_ms: now,
    }
}

fn set_mode(core: &mut Core, id: &str, m: &v1::SetMode, out: &mut Vec<Output>) -> Outcome {
    let Some(mode) = Mode::parse(&m.mode) else {
        return ("malformed", format!("unknown mode {:?}", m.mode));
    };
    match core.set_mode(mode, Origin::Remote, out) {
        Ok(()) => {
            info!(order = %id, mode = mode.as_str(), "Mode changed from above.");
            APPLIED
        }
        Err(_) => ("fire_mode", "fire mode holds until a local reset".into()),
    }
}

fn remote_open(
    core: &mut Core,
    id: &str,
    o: &v1::RemoteOpen,
    now: i64,
    out: &mut Vec<Output>,
) -> Outcome {
    let operator = (o.operator_id.clone(), o.reason.clone());
    match core.remote_open(&o.lane, operator, id.to_string(), now, out) {
        Some(()) => {
            info!(order = %id, lane = %o.lane, operator = %o.operator_id, "Remote open.");
            APPLIED
        }
        None => ("unknown_lane", format!("no lane {:?} with a gate", o.lane)),
    }
}

fn set_threshold(
    core: &mut Core,
    id: &str,
    t: &v1::SetThreshold,
    out: &mut Vec<Output>,
) -> Outcome {
    let lane = (!t.lane.is_empty()).then_some(t.lane.as_str());
    match core.set_threshold(lane, t.fever_threshold_c, out) {
        Ok(()) => {
            info!(order = %id, threshold = t.fever_threshold_c, lane = %t.lane, "Fever threshold changed from above.");
            APPLIED
        }
        Err(e) => ("malformed", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(dir: &std::path::Path) -> (OrderDesk, mpsc::Receiver<v1::CommandResult>) {
        let path = dir.join("gatehouse.toml");
        std::fs::write(&path, crate::config::tests_support::MINIMAL).unwrap();
        let config = Config::load(&path).unwrap();
        let store = Store::open(&dir.join("store")).unwrap();
        let (results, rx) = mpsc::channel(16);
        let (swaps, _) = mpsc::channel(1);
        let created = Arc::new(AtomicI64::new(1));
        (
            OrderDesk::new(
                &config,
                &[],
                store,
                OrderTime {
                    store_created: created,
                    clock: Arc::new(ClockWatch::new(true)),
                },
                results,
                swaps,
                Arc::default(),
            ),
            rx,
        )
    }

    fn chunk(transfer: &str, index: u32, count: u32) -> v1::SnapshotChunk {
        v1::SnapshotChunk {
            transfer_id: transfer.into(),
            index,
            count,
            data: vec![0; 10],
            total_bytes: 10 * count as u64,
            sha256: vec![1; 32],
        }
    }

    #[test]
    fn a_transfer_not_complete_in_time_is_abandoned_with_a_result_and_bounded_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desk, mut results) = desk(dir.path());
        let t0 = 1_800_000_000_000;
        let (refused, detail) = desk.chunk("k", chunk("t1", 0, 3), t0);
        assert_eq!(refused, "");
        assert!(detail.contains("chunk 1 of 3"), "{detail}");
        desk.chunk("k", chunk("t2", 0, 2), t0);
        // A third transfer at once is refused; bad chunk numbers too.
        assert_eq!(desk.chunk("k", chunk("t3", 0, 2), t0).0, "too_many");
        let (refused, detail) = desk.chunk("k", chunk("t1", 3, 3), t0);
        assert_eq!(refused, "malformed");
        assert!(
            detail.contains("chunk index 3 past the last, 2"),
            "{detail}"
        );
        let (refused, detail) = desk.chunk("c-4", chunk("t4", 0, MAX_CHUNKS + 1), t0);
        assert_eq!(refused, "malformed");
        assert!(detail.contains("1 to 1024"), "{detail}");
        let mut out = Vec::new();
        desk.tick(t0 + TRANSFER_TIMEOUT_MS - 1, &mut out);
        assert!(results.try_recv().is_err(), "still within its time");
        desk.tick(t0 + TRANSFER_TIMEOUT_MS + 1, &mut out);
        let mut abandoned: Vec<_> = std::iter::from_fn(|| results.try_recv().ok())
            .map(|r| (r.command_id, r.refused))
            .collect();
        abandoned.sort();
        assert_eq!(
            abandoned,
            [
                ("t1".to_string(), "transfer_timeout".to_string()),
                ("t2".to_string(), "transfer_timeout".to_string())
            ]
        );
        assert!(desk.transfers.is_empty());
    }
}
