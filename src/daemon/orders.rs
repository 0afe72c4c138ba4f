//! Signed orders from above, taken on the decision loop: checked (signature, key scope, time,
//! replay), applied to the core — one small function per payload kind — and answered on
//! `cmd/result` once the change is durable. A registry sync is written and loaded off the loop
//! and answered when it is swapped in.
use crate::config::Config;
use crate::decision::{Core, Mode, Origin, Output, Registry, StateKey};
use crate::orders::{self, Place, TrustedKey};
use crate::proto::v1;
use crate::store::outbox;
use crate::store::Store;
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Orders answer with a result; the registry syncs answer later, with the new lists.
pub struct OrderDesk {
    trusted: Vec<TrustedKey>,
    place: Place,
    max_skew_ms: i64,
    /// Order ids applied, until when they stay refused as replays.
    applied: HashMap<String, i64>,
    results: mpsc::Sender<v1::CommandResult>,
    /// For registry sync, which writes and loads the lists off the decision loop.
    store: Store,
    swaps: mpsc::Sender<RegistrySwap>,
}

/// A registry sync done off the decision loop: the new registry (or why not), and its result.
pub struct RegistrySwap {
    pub registry: Option<Registry>,
    pub version: u64,
    pub result: v1::CommandResult,
}

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
        results: mpsc::Sender<v1::CommandResult>,
        swaps: mpsc::Sender<RegistrySwap>,
    ) -> OrderDesk {
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
        let g = &config.gateway;
        let applied = state
            .iter()
            .filter_map(|(k, v)| match StateKey::decode(k)? {
                StateKey::OrderApplied(id) => {
                    Some((id, i64::from_le_bytes(v.as_slice().try_into().ok()?)))
                }
                _ => None,
            })
            .collect();
        OrderDesk {
            trusted,
            place: Place {
                gateway: g.id.clone(),
                community: g.community.clone(),
                street: g.street.clone(),
                district: g.district.clone(),
            },
            max_skew_ms: config.orders.max_skew_s as i64 * 1000,
            applied,
            results,
            store,
            swaps,
        }
    }

    /// The one way a result is made.
    pub fn result(&self, id: String, refused: &str, detail: String, now: i64) -> v1::CommandResult {
        result(&self.place.gateway, id, refused, detail, now)
    }

    /// Hands a result to the uplink (dropped if its queue is full: the order's effect stands).
    pub fn answer(&self, result: v1::CommandResult) {
        let _ = self.results.try_send(result);
    }

    /// The result to send once the order's change is durable (the writer calls it).
    pub fn answer_later(&self, result: Option<v1::CommandResult>) -> Option<outbox::Ack> {
        let r = result?;
        let results = self.results.clone();
        Some(Box::new(move || {
            let _ = results.try_send(r);
        }))
    }

    /// Checks and applies one signed order. Returns what to write and, unless the order is
    /// answered later (a registry sync), the result to send once that is durable.
    pub fn take(
        &mut self,
        bytes: &[u8],
        core: &mut Core,
        now: i64,
        out: &mut Vec<Output>,
    ) -> Option<v1::CommandResult> {
        let applied = &self.applied;
        let verified = orders::verify(
            bytes,
            &self.trusted,
            &self.place,
            now,
            self.max_skew_ms,
            |id| applied.contains_key(id),
        );
        let v = match verified {
            Ok(v) => v,
            Err(r) => {
                warn!(order = %r.id, reason = r.reason, detail = %r.detail, "Order refused.");
                self.answer(self.result(r.id, r.reason, r.detail, now));
                return None;
            }
        };
        let id = v.command.id.clone();
        out.push(Output::State(
            StateKey::OrderApplied(id.clone()),
            Some(v.command.expires_at_ms.to_le_bytes().to_vec()),
        ));
        self.applied.insert(id.clone(), v.command.expires_at_ms);
        use v1::command::Payload;
        let (refused, detail) = match v.command.payload {
            Some(Payload::SetMode(m)) => set_mode(core, &id, &m, out),
            Some(Payload::RemoteOpen(o)) => remote_open(core, &id, &o, now, out),
            Some(Payload::SetThreshold(t)) => set_threshold(core, &id, &t, out),
            Some(Payload::RegistrySnapshot(s)) => {
                self.sync(id, now, Ok(s));
                return None;
            }
            Some(Payload::RegistryDelta(d)) => {
                self.sync(id, now, Err(d));
                return None;
            }
            Some(Payload::Ping(_)) | None => APPLIED,
        };
        Some(self.result(id, refused, detail, now))
    }

    /// Order ids whose orders have expired can no longer be replayed: forgotten.
    pub fn forget_expired(&mut self, now: i64, out: &mut Vec<Output>) {
        self.applied.retain(|id, until| {
            let keep = *until >= now;
            if !keep {
                out.push(Output::State(StateKey::OrderApplied(id.clone()), None));
            }
            keep
        });
    }

    /// Writes a snapshot (`Ok`) or delta (`Err`) to the store and loads the new registry, on a
    /// blocking thread: decisions keep flowing meanwhile, and the new lists are swapped in whole.
    fn sync(&self, id: String, now: i64, what: Result<v1::RegistrySnapshot, v1::RegistryDelta>) {
        let store = self.store.clone();
        let swaps = self.swaps.clone();
        let gateway = self.place.gateway.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let (version, applied) = match &what {
                Ok(s) => (s.version, store.apply_snapshot(s)),
                Err(d) => (d.version, store.apply_delta(d)),
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
