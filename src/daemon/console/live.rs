//! What the console shows, kept current from a copy of the records (the outbox writer's tap,
//! each record once it has its seq) and the status the uplink reports: every lane's last
//! decisions, the alarms not yet acknowledged, each device's state, the mode and the clock.
//! Never on the decision path: the tap never waits for us — a console that falls behind loses
//! the oldest copies, counts them and says so on the page (alarms travel apart from passages,
//! so a flood of passages never pushes one out) — and what we hold is bounded: a lane's last 8
//! passages, 500 open alarms. Passages are turned into what the page shows only when sent, at
//! most 8 a lane each flush, whatever the rate.
//!
//! To browsers as server-sent events: `hello` (the whole picture; first, and again after a
//! gap), `batch` (what changed, at most 4 a second), `ping` (every 2 s: a page that hears
//! nothing for 6 s says it is not live).
use crate::proto::v1;
use crate::store::outbox::{Record, TapRx};
use crate::uplink::StatusSource;
use bytes::Bytes;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tracing::warn;

/// Decisions kept a lane (what its card shows).
const LANE_DECISIONS: usize = 8;
/// Open alarms kept; past it the oldest go (counted, said on the page).
const OPEN_ALARMS: usize = 500;
const FLUSH: Duration = Duration::from_millis(250);
const PING: Duration = Duration::from_secs(2);
/// Messages a browser's stream may fall behind before it is sent the whole picture again.
const STREAM_BACKLOG: usize = 64;

/// One lane as the console knows it.
pub struct Lane {
    pub id: String,
    pub direction: &'static str,
    /// Its devices: id, role, profile.
    pub devices: Vec<(String, String, String)>,
    /// It has a gate to open (a fire panel's lane has none).
    pub has_gate: bool,
}

pub struct View {
    state: Mutex<State>,
    /// Each event once, as the bytes every stream writes (a clone is a reference count).
    events: broadcast::Sender<Bytes>,
    status: StatusSource,
    /// Where the open alarms are kept across a restart.
    file: PathBuf,
    /// This run: a page that sees another knows the daemon restarted.
    pub run: String,
    pub lanes: Vec<Lane>,
    /// A write of the open alarms is under way.
    saving: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Per lane (config order): its last passages, newest first, as recorded.
    decisions: Vec<VecDeque<v1::Event>>,
    /// Per lane: how many of those came since the last batch.
    fresh: Vec<usize>,
    /// Open alarms by seq.
    alarms: BTreeMap<u64, v1::Alarm>,
    /// Open alarms dropped for room since the start.
    alarms_dropped: u64,
    /// Records the tap dropped for us since the start (we fell behind).
    missed_passages: u64,
    missed_alarms: u64,
    /// What changed since the last batch.
    new_alarms: Vec<Value>,
    closed: Vec<Value>,
    /// The open alarms changed since they were last written.
    unsaved: bool,
    /// The gate's state as last sent.
    gate: Value,
}

impl View {
    pub fn new(status: StatusSource, lanes: Vec<Lane>, store_dir: &std::path::Path) -> View {
        let file = store_dir.join("console-alarms.pb");
        let mut state = State {
            decisions: vec![VecDeque::new(); lanes.len()],
            fresh: vec![0; lanes.len()],
            ..State::default()
        };
        // The alarms open when the daemon stopped stay open: an acknowledgement is a person's.
        if let Ok(bytes) = std::fs::read(&file) {
            match v1::AlarmBatch::decode(bytes.as_slice()) {
                Ok(b) => state.alarms = b.alarms.into_iter().map(|a| (a.seq, a)).collect(),
                Err(e) => {
                    warn!(error = %e, file = %file.display(), "Console: the open alarms' file is unreadable; starting without them.")
                }
            }
        }
        let (events, _) = broadcast::channel(STREAM_BACKLOG);
        let run = format!("{}-{}", status.boot, crate::now_ms());
        View {
            state: Mutex::new(state),
            events,
            status,
            file,
            run,
            lanes,
            saving: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A browser's stream: the whole picture first, then the changes.
    pub fn subscribe(&self) -> (Bytes, broadcast::Receiver<Bytes>) {
        let rx = self.events.subscribe();
        (self.hello(), rx)
    }

    pub fn hello(&self) -> Bytes {
        let s = self.state();
        let lanes: Vec<Vec<Value>> = (s.decisions.iter())
            .map(|d| d.iter().filter_map(decision_json).collect())
            .collect();
        let data = json!({
            "run": self.run,
            "gate": self.gate(),
            "lanes": lanes,
            "alarms": s.alarms.values().rev().map(alarm_json).collect::<Vec<_>>(),
            "missed": [s.missed_passages, s.missed_alarms, s.alarms_dropped],
        });
        sse("hello", &data)
    }

    /// Takes an open alarm for its acknowledgement: closed at once on every page, so a second
    /// click (or the booth's other screen) finds nothing to acknowledge. `None` if it is not
    /// open.
    pub fn claim(&self, seq: u64, by: &str) -> Option<v1::Alarm> {
        let mut s = self.state();
        let alarm = s.alarms.remove(&seq)?;
        s.closed.push(json!({"seq": seq.to_string(), "by": by}));
        s.unsaved = true;
        Some(alarm)
    }

    /// An acknowledgement that could not be recorded: the alarm is open again.
    pub fn unclaim(&self, alarm: v1::Alarm) {
        let mut s = self.state();
        s.new_alarms.push(alarm_json(&alarm));
        s.alarms.insert(alarm.seq, alarm);
        s.unsaved = true;
    }

    /// The mode, the clock, the fire inputs and every device, as the page shows them.
    fn gate(&self) -> Value {
        let s = self.status.now(v1::GatewayState::Online);
        let twins = self.status.twins.all();
        let devices: Vec<Value> = twins
            .iter()
            .map(|t| {
                json!({
                    "id": t.device, "lane": t.lane, "online": t.online,
                    "last_seen_ms": t.last_seen_ms, "arm": t.arm,
                    "safety_loop": t.safety_loop, "arming_loop": t.arming_loop,
                    "fault": t.fault_code, "uncertain": t.uncertain_commands,
                    "fire_input": t.fire_input,
                })
            })
            .collect();
        json!({
            "mode": s.mode,
            "clock_synced": !s.clock_unsynced,
            "store_durable": !s.store_degraded,
            "outbox": s.outbox_depth,
            "uplink": self.status.metrics.uplink_connected.load(std::sync::atomic::Ordering::Relaxed),
            "devices": devices,
        })
    }

    fn apply(&self, r: std::sync::Arc<Record>) {
        let mut s = self.state();
        // Only what is kept is copied: a lane's passages, the alarms.
        match &*r {
            Record::Event(e) => {
                if !matches!(e.body, Some(v1::event::Body::Passage(_))) {
                    return;
                }
                let Some(lane) = self.lanes.iter().position(|l| l.id == e.lane) else {
                    return;
                };
                let list = &mut s.decisions[lane];
                list.push_front(e.clone());
                list.truncate(LANE_DECISIONS);
                s.fresh[lane] = (s.fresh[lane] + 1).min(LANE_DECISIONS);
            }
            Record::Alarm(a) => {
                // Back online is the device list's news, not an alarm to acknowledge.
                if a.kind() == v1::AlarmKind::DeviceOnline {
                    return;
                }
                s.new_alarms.push(alarm_json(a));
                s.alarms.insert(a.seq, a.clone());
                // Past room the oldest goes, from every page too (the page says how many).
                while s.alarms.len() > OPEN_ALARMS {
                    if let Some((seq, _)) = s.alarms.pop_first() {
                        s.closed.push(json!({"seq": seq.to_string(), "by": ""}));
                    }
                    s.alarms_dropped += 1;
                }
                s.unsaved = true;
            }
            Record::AlarmAck(ack) => {
                let this = |a: &v1::Alarm| a.gateway_time_ms == ack.alarm_time_ms;
                // Only the alarm it names, seq and time: pages close what the server closed.
                if s.alarms.get(&ack.alarm_seq).is_some_and(this) {
                    s.alarms.remove(&ack.alarm_seq);
                    s.unsaved = true;
                    s.closed
                        .push(json!({"seq": ack.alarm_seq.to_string(), "by": ack.by}));
                }
            }
        }
    }

    /// What changed since the last flush, as one event.
    fn flush(&self, pinged: &mut tokio::time::Instant) {
        let gate = self.gate();
        let mut s = self.state();
        // Each lane's new passages, oldest first (the page puts each on top).
        let mut decisions = Vec::new();
        for lane in 0..s.fresh.len() {
            let n = std::mem::take(&mut s.fresh[lane]);
            for e in s.decisions[lane].iter().take(n).rev() {
                if let Some(d) = decision_json(e) {
                    decisions.push(json!({"lane": lane, "d": d}));
                }
            }
        }
        let gate_changed = s.gate != gate;
        if !gate_changed && decisions.is_empty() && s.new_alarms.is_empty() && s.closed.is_empty() {
            return;
        }
        let mut data = json!({
            "decisions": decisions,
            "alarms": std::mem::take(&mut s.new_alarms),
            "closed": std::mem::take(&mut s.closed),
            "missed": [s.missed_passages, s.missed_alarms, s.alarms_dropped],
        });
        if gate_changed {
            data["gate"] = gate.clone();
            s.gate = gate;
        }
        drop(s);
        let _ = self.events.send(sse("batch", &data));
        *pinged = tokio::time::Instant::now();
    }

    /// Records the tap dropped for us: counted, logged at the 1st, 10th, 100th…, on the page.
    fn missed(&self, n: u64, alarms: bool) {
        let mut s = self.state();
        let total = if alarms {
            s.missed_alarms += n;
            s.missed_alarms
        } else {
            s.missed_passages += n;
            s.missed_passages
        };
        if crate::metrics::worth_logging(total) {
            warn!(
                records = n,
                total, alarms, "Console fell behind the records; some are not shown."
            );
        }
    }

    /// Writes the open alarms if they changed: off the decision path, at most once a flush.
    fn save(&self) {
        let batch = {
            let mut s = self.state();
            if !std::mem::take(&mut s.unsaved) {
                return;
            }
            v1::AlarmBatch {
                alarms: s.alarms.values().cloned().collect(),
                acks: Vec::new(),
            }
        };
        let tmp = self.file.with_extension("new");
        let written = std::fs::write(&tmp, batch.encode_to_vec())
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            // Kept in memory; tried again at the next change.
            warn!(error = %e, "Console: the open alarms could not be written.");
            self.state().unsaved = true;
        }
    }
}

/// Reads the tap until shutdown: records in, batches out.
pub async fn feed(view: Arc<View>, mut tap: TapRx, mut shutdown: watch::Receiver<bool>) {
    let mut flush = tokio::time::interval(FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pinged = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            // Alarms first: they are what the guard must not miss.
            r = tap.alarms.recv() => match r {
                Ok(r) => view.apply(r),
                Err(broadcast::error::RecvError::Lagged(n)) => view.missed(n, true),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            r = tap.passages.recv() => match r {
                Ok(r) => view.apply(r),
                Err(broadcast::error::RecvError::Lagged(n)) => view.missed(n, false),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = flush.tick() => {
                view.flush(&mut pinged);
                if pinged.elapsed() >= PING {
                    let _ = view.events.send(sse("ping", &json!({"run": view.run})));
                    pinged = tokio::time::Instant::now();
                }
                // One write at a time, never waited for here: a slow disk must not hold the
                // tap's reading.
                if !view.saving.swap(true, Ordering::AcqRel) {
                    let v = view.clone();
                    tokio::task::spawn_blocking(move || {
                        v.save();
                        v.saving.store(false, Ordering::Release);
                    });
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    view.save();
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn decision_json(e: &v1::Event) -> Option<Value> {
    let Some(v1::event::Body::Passage(p)) = &e.body else {
        return None;
    };
    Some(json!({
        // The page shows each once: a batch may repeat what a fresh page's hello had.
        "seq": e.seq,
        "at": e.gateway_time_ms,
        "device": e.device,
        "kind": match p.subject_kind() {
            v1::SubjectKind::Resident => "resident",
            v1::SubjectKind::Visitor => "visitor",
            v1::SubjectKind::Credential => "credential",
            v1::SubjectKind::Plate => "plate",
            _ => "unknown",
        },
        "subject": p.subject_id,
        "t": p.temperature_c.filter(|t| t.is_finite()),
        "fever": p.fever,
        "allow": p.verdict() == v1::Verdict::Allow,
        "reason": p.reason,
        "by": p.operator_id,
        "why": p.operator_reason,
        "not_actuated": p.not_actuated,
    }))
}

pub fn alarm_json(a: &v1::Alarm) -> Value {
    json!({
        // As text: a seq past 2^53 would not survive a browser's numbers.
        "seq": a.seq.to_string(),
        "at": a.gateway_time_ms,
        "kind": a.kind().as_str_name().trim_start_matches("ALARM_KIND_").to_ascii_lowercase(),
        "lane": a.lane,
        "device": a.device,
        "detail": a.detail,
        "t": a.temperature_c.filter(|t| t.is_finite()),
        "subject": a.subject_id,
    })
}
