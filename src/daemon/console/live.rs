//! What the console shows, kept current from a copy of the records (the outbox writer's tap,
//! each record once it has its seq) and the status the uplink reports: every lane's last
//! decisions, the alarms not yet acknowledged, each device's state, the mode and the clock.
//! Never on the decision path: the tap never waits for us (a console that falls behind loses
//! the oldest copies and sends its browsers the whole picture again), and what we hold is
//! bounded.
//!
//! To browsers as server-sent events: `hello` (the whole picture; first, and again after a
//! gap), `batch` (what changed, at most 4 a second), `ping` (every 2 s: a page that hears
//! nothing for 6 s says it is not live).
use crate::proto::v1;
use crate::store::outbox::Record;
use crate::uplink::StatusSource;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
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
}

pub struct View {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<str>>,
    status: StatusSource,
    /// Where the open alarms are kept across a restart.
    file: PathBuf,
    /// This run: a page that sees another knows the daemon restarted.
    pub run: String,
    pub lanes: Vec<Lane>,
}

#[derive(Default)]
struct State {
    /// Per lane (config order): newest first.
    decisions: Vec<VecDeque<Value>>,
    /// Open alarms by seq.
    alarms: BTreeMap<u64, v1::Alarm>,
    /// Open alarms dropped for room since the start.
    alarms_dropped: u64,
    /// What changed since the last batch.
    new_decisions: Vec<Value>,
    new_alarms: Vec<Value>,
    closed: Vec<Value>,
    /// The open alarms changed since they were last written.
    unsaved: bool,
    /// The gate's state as last sent.
    gate: Value,
    /// The tap dropped records for us: the next batch is the whole picture.
    resync: bool,
}

impl View {
    pub fn new(status: StatusSource, lanes: Vec<Lane>, store_dir: &std::path::Path) -> View {
        let file = store_dir.join("console-alarms.pb");
        let mut state = State {
            decisions: vec![VecDeque::new(); lanes.len()],
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
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A browser's stream: the whole picture first, then the changes.
    pub fn subscribe(&self) -> (Arc<str>, broadcast::Receiver<Arc<str>>) {
        let rx = self.events.subscribe();
        (self.hello(), rx)
    }

    pub fn hello(&self) -> Arc<str> {
        let s = self.state();
        let data = json!({
            "run": self.run,
            "gate": self.gate(),
            "lanes": s.decisions.iter().map(|d| d.iter().collect::<Vec<_>>()).collect::<Vec<_>>(),
            "alarms": s.alarms.values().rev().map(alarm_json).collect::<Vec<_>>(),
            "alarms_dropped": s.alarms_dropped,
        });
        sse("hello", &data)
    }

    /// Open alarm by seq, for an acknowledgement.
    pub fn open_alarm(&self, seq: u64) -> Option<v1::Alarm> {
        self.state().alarms.get(&seq).cloned()
    }

    pub fn open_alarms(&self) -> usize {
        self.state().alarms.len()
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

    fn apply(&self, r: Record) {
        let mut s = self.state();
        match r {
            Record::Event(e) => {
                let Some(v1::event::Body::Passage(p)) = &e.body else {
                    return;
                };
                let Some(lane) = self.lanes.iter().position(|l| l.id == e.lane) else {
                    return;
                };
                let d = decision_json(&e, p);
                let list = &mut s.decisions[lane];
                list.push_front(d.clone());
                list.truncate(LANE_DECISIONS);
                s.new_decisions.push(json!({"lane": lane, "d": d}));
            }
            Record::Alarm(a) => {
                // Back online is the device list's news, not an alarm to acknowledge.
                if a.kind() == v1::AlarmKind::DeviceOnline {
                    return;
                }
                s.new_alarms.push(alarm_json(&a));
                s.alarms.insert(a.seq, a);
                while s.alarms.len() > OPEN_ALARMS {
                    s.alarms.pop_first();
                    s.alarms_dropped += 1;
                }
                s.unsaved = true;
            }
            Record::AlarmAck(ack) => {
                if s.alarms.remove(&ack.alarm_seq).is_some() {
                    s.unsaved = true;
                }
                s.closed
                    .push(json!({"seq": ack.alarm_seq.to_string(), "by": ack.by}));
            }
        }
    }

    /// What changed since the last flush, as one event; the whole picture after a gap.
    fn flush(&self, pinged: &mut tokio::time::Instant) {
        let gate = self.gate();
        let mut s = self.state();
        if std::mem::take(&mut s.resync) {
            s.new_decisions.clear();
            s.new_alarms.clear();
            s.closed.clear();
            s.gate = gate;
            drop(s);
            let _ = self.events.send(self.hello());
            *pinged = tokio::time::Instant::now();
            return;
        }
        let gate_changed = s.gate != gate;
        if !gate_changed
            && s.new_decisions.is_empty()
            && s.new_alarms.is_empty()
            && s.closed.is_empty()
        {
            return;
        }
        let mut data = json!({
            "decisions": std::mem::take(&mut s.new_decisions),
            "alarms": std::mem::take(&mut s.new_alarms),
            "closed": std::mem::take(&mut s.closed),
        });
        if gate_changed {
            data["gate"] = gate.clone();
            s.gate = gate;
        }
        drop(s);
        let _ = self.events.send(sse("batch", &data));
        *pinged = tokio::time::Instant::now();
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
pub async fn feed(
    view: Arc<View>,
    mut tap: broadcast::Receiver<Record>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut flush = tokio::time::interval(FLUSH);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pinged = tokio::time::Instant::now();
    loop {
        tokio::select! {
            r = tap.recv() => match r {
                Ok(r) => view.apply(r),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(records = n, "Console fell behind the records; sending the whole picture again.");
                    view.state().resync = true;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = flush.tick() => {
                view.flush(&mut pinged);
                if pinged.elapsed() >= PING {
                    let _ = view.events.send(sse("ping", &json!({"run": view.run})));
                    pinged = tokio::time::Instant::now();
                }
                let v = view.clone();
                // A slow disk must not hold the flushes.
                let _ = tokio::task::spawn_blocking(move || v.save()).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    view.save();
}

fn sse(event: &str, data: &Value) -> Arc<str> {
    format!("event: {event}\ndata: {data}\n\n").into()
}

fn decision_json(e: &v1::Event, p: &v1::PassageDecision) -> Value {
    json!({
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
    })
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
