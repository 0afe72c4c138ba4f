//! What one message from a gateway becomes: rows to store, nothing (a channel the ingest does not
//! keep), or a reason to quarantine it. Pure: no I/O, no clock.
use gatehouse_contract::proto::v1;
use gatehouse_contract::topics::{self, Channel, GatewayPath};
use prost::Message;
use std::sync::Arc;

/// The largest message kept: anything larger is quarantined unread (a gateway's batches are far
/// smaller; the broker's own limit should be lower still).
pub const MAX_MESSAGE: usize = 8 << 20;

/// A gateway by its full path: gateway ids are unique only within a community.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gw {
    /// `city/district/street/community/gateway`: the key of every record.
    pub path: String,
    pub district: String,
    pub street: String,
    pub community: String,
}

impl Gw {
    pub fn new(p: &GatewayPath) -> Gw {
        Gw {
            path: format!(
                "{}/{}/{}/{}/{}",
                p.city, p.district, p.street, p.community, p.gateway
            ),
            district: p.district.clone(),
            street: p.street.clone(),
            community: p.community.clone(),
        }
    }
}

/// Who passed, as the forms split them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Resident,
    Visitor,
    /// Nobody identified (a remote open, a stranger, an allow-listed plate).
    Other,
}

impl Who {
    pub fn as_str(self) -> &'static str {
        match self {
            Who::Resident => "resident",
            Who::Visitor => "visitor",
            Who::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub gw: Arc<Gw>,
    pub seq: i64,
    pub at_ms: i64,
    pub lane: String,
    pub device: String,
    /// A vehicle (by its plate), not a person.
    pub vehicle: bool,
    pub who: Who,
    pub subject_id: String,
    pub household: String,
    pub allowed: bool,
    pub reason: String,
    pub inbound: bool,
    pub mode: String,
    pub not_actuated: bool,
}

/// A temperature: health data, kept in a table of its own with its own retention.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    pub gw: Arc<Gw>,
    pub seq: i64,
    pub at_ms: i64,
    pub lane: String,
    pub device: String,
    pub subject_id: String,
    pub household: String,
    pub celsius: f64,
    /// The lane's threshold in force, as the gateway said; `None` from a gateway before it.
    pub threshold: Option<f64>,
    pub fever: bool,
    pub device_disagrees: bool,
    /// Counted by the gateway's statistics as a fever (a passage denied `fever` and acted on, or
    /// a lone reading at or above the threshold).
    pub counted_fever: bool,
    /// A lone reading (no passage came with it).
    pub lone: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    pub gw: Arc<Gw>,
    pub seq: i64,
    pub at_ms: i64,
    pub lane: String,
    pub device: String,
    pub kind: String,
    pub detail: String,
    pub subject_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    pub gw: Arc<Gw>,
    pub stats_seq: i64,
    pub lane: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub entries: i64,
    pub exits: i64,
    pub vehicles_in: i64,
    pub vehicles_out: i64,
    pub fevers: i64,
    pub inside: i64,
    /// Denials by reason, as JSON (`{"fever":2}`).
    pub denials: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub gw: Arc<Gw>,
    pub boot: i64,
    pub seq: i64,
    pub online: bool,
    pub mode: String,
    pub version: String,
    pub outbox_depth: i64,
    pub gateway_time_ms: i64,
    pub registry_version: i64,
    pub clock_unsynced: bool,
    pub store_degraded: bool,
    /// How often the gateway sends its status, ms (0: a gateway before the field).
    pub period_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TwinRow {
    pub gw: Arc<Gw>,
    pub device: String,
    pub lane: String,
    pub online: bool,
    pub arm: String,
    pub fault_code: i64,
    pub last_seen_ms: i64,
    pub gateway_time_ms: i64,
}

/// An alarm acknowledged at the gate.
#[derive(Debug, Clone, PartialEq)]
pub struct AckRow {
    pub gw: Arc<Gw>,
    pub alarm_seq: i64,
    pub alarm_time_ms: i64,
    pub by: String,
    pub acked_at_ms: i64,
}

/// An order seen on a `cmd` topic, or its result from a gateway's `cmd/result`. `target` is
/// the path below `gh/v1/` it was sent to: a gateway's, or a community's, street's or
/// district's with `_all`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub target: String,
    pub command_id: String,
    pub what: OrderSeen,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderSeen {
    Issued {
        kind: String,
        issued_ms: i64,
        expires_ms: i64,
    },
    Result {
        applied: bool,
        refused: String,
        detail: String,
        gateway_time_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Passage(Passage),
    Temperature(Temperature),
    Alarm(AlarmRow),
    Stats(StatsRow),
    Status(StatusRow),
    Twin(TwinRow),
    Order(OrderRow),
    Ack(AckRow),
}

impl Row {
    /// The gateway the row came from — none for an order, which is addressed to a place (and
    /// may be for a whole community: never a gateway of its own).
    pub fn gateway(&self) -> Option<&Arc<Gw>> {
        match self {
            Row::Passage(p) => Some(&p.gw),
            Row::Temperature(t) => Some(&t.gw),
            Row::Alarm(a) => Some(&a.gw),
            Row::Stats(s) => Some(&s.gw),
            Row::Status(s) => Some(&s.gw),
            Row::Twin(t) => Some(&t.gw),
            Row::Ack(k) => Some(&k.gw),
            Row::Order(_) => None,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Decoded {
    Rows(Vec<Row>),
    /// A channel the ingest does not keep (orders, their results): acked, counted.
    Skipped,
    /// Kept raw with this error: never a reason to stop the stream.
    Quarantine(String),
}

/// The rows of one message from `topic`.
pub fn decode(topic: &str, payload: &[u8]) -> Decoded {
    if payload.len() > MAX_MESSAGE {
        return Decoded::Quarantine(format!(
            "{} bytes, over the {MAX_MESSAGE}-byte limit",
            payload.len()
        ));
    }
    // An order for a whole street or district (a community's parses as gateway `_all`).
    if let Some(target) = topic
        .strip_prefix("gh/v1/")
        .and_then(|t| t.strip_suffix("/_all/cmd"))
        .filter(|t| (1..=2).contains(&t.matches('/').count()))
    {
        return order(format!("{target}/_all"), payload);
    }
    let Some((path, channel)) = topics::parse(topic) else {
        return Decoded::Quarantine("not a gateway channel topic".into());
    };
    let gw = Arc::new(Gw::new(&path));
    let bad = |what: &str, e: prost::DecodeError| Decoded::Quarantine(format!("{what}: {e}"));
    match channel {
        Channel::Events => match v1::EventBatch::decode(payload) {
            Ok(b) => Decoded::Rows(b.events.into_iter().flat_map(|e| event(&gw, e)).collect()),
            Err(e) => bad("not an EventBatch", e),
        },
        Channel::Alarms => match v1::AlarmBatch::decode(payload) {
            Ok(b) => Decoded::Rows(
                b.alarms
                    .into_iter()
                    .map(|a| alarm(&gw, a))
                    .chain(b.acks.into_iter().map(|k| {
                        Row::Ack(AckRow {
                            gw: gw.clone(),
                            // As the alarm's own `seq` is kept (`alarm`), so the two match.
                            alarm_seq: k.alarm_seq as i64,
                            alarm_time_ms: k.alarm_time_ms,
                            by: k.by,
                            acked_at_ms: k.acked_at_ms,
                        })
                    }))
                    .collect(),
            ),
            Err(e) => bad("not an AlarmBatch", e),
        },
        Channel::Stats => match v1::StatsBatch::decode(payload) {
            Ok(b) => Decoded::Rows(stats(&gw, b, payload)),
            Err(e) => bad("not a StatsBatch", e),
        },
        Channel::Status => match v1::Status::decode(payload) {
            Ok(s) => Decoded::Rows(vec![Row::Status(StatusRow {
                gw,
                boot: s.boot as i64,
                // Within a signed column (a connection count never nears 2^31).
                seq: s.seq.min(i64::MAX as u64) as i64,
                online: s.state() == v1::GatewayState::Online,
                mode: s.mode,
                version: s.version,
                outbox_depth: s.outbox_depth.min(i64::MAX as u64) as i64,
                gateway_time_ms: s.gateway_time_ms,
                registry_version: s.registry_version.min(i64::MAX as u64) as i64,
                clock_unsynced: s.clock_unsynced,
                store_degraded: s.store_degraded,
                // A second to an hour (0: not said): what a stale status is judged by.
                period_ms: match s.status_period_ms {
                    0 => 0,
                    p => p.clamp(1_000, 3_600_000) as i64,
                },
            })]),
            Err(e) => bad("not a Status", e),
        },
        Channel::Twin(device) => match v1::DeviceTwin::decode(payload) {
            Ok(t) => Decoded::Rows(vec![Row::Twin(TwinRow {
                gw,
                device,
                lane: t.lane,
                online: t.online,
                arm: t.arm,
                fault_code: i64::from(t.fault_code),
                last_seen_ms: t.last_seen_ms,
                gateway_time_ms: t.gateway_time_ms,
            })]),
            Err(e) => bad("not a DeviceTwin", e),
        },
        Channel::Cmd => order(gw.path.clone(), payload),
        Channel::CmdResult => match v1::CommandResult::decode(payload) {
            // The answer to an order too broken to have an id: nothing to show it against.
            Ok(r) if r.command_id.is_empty() => Decoded::Skipped,
            Ok(r) => Decoded::Rows(vec![Row::Order(OrderRow {
                target: gw.path.clone(),
                command_id: r.command_id,
                what: OrderSeen::Result {
                    applied: r.applied,
                    refused: r.refused,
                    detail: r.detail,
                    gateway_time_ms: r.gateway_time_ms,
                },
            })]),
            Err(e) => bad("not a CommandResult", e),
        },
    }
}

/// An order (signed; shown as seen — the gateways check the signature) sent to `target`.
fn order(target: String, payload: &[u8]) -> Decoded {
    match v1::SignedCommand::decode(payload).and_then(|s| v1::Command::decode(s.command.as_slice()))
    {
        Ok(c) => match order_kind(&c) {
            Some(kind) if !c.id.is_empty() => Decoded::Rows(vec![Row::Order(OrderRow {
                target,
                command_id: c.id,
                what: OrderSeen::Issued {
                    kind,
                    issued_ms: c.issued_at_ms,
                    expires_ms: c.expires_at_ms,
                },
            })]),
            _ => Decoded::Skipped,
        },
        Err(e) => Decoded::Quarantine(format!("not a SignedCommand: {e}")),
    }
}

/// What an order does, as the operator's page names it; a snapshot's chunks after the first
/// are not orders of their own (none).
fn order_kind(c: &v1::Command) -> Option<String> {
    use v1::command::Payload;
    Some(match c.payload.as_ref()? {
        Payload::SetMode(m) => format!("set_mode {}", m.mode),
        Payload::RemoteOpen(o) => format!("remote_open {}", o.lane),
        Payload::Ping(_) => "ping".into(),
        Payload::RegistrySnapshot(_) => "registry_snapshot".into(),
        Payload::RegistryDelta(_) => "registry_delta".into(),
        Payload::SetThreshold(_) => "set_threshold".into(),
        Payload::AckAlarm(a) => format!("ack_alarm {}", a.alarm_seq),
        Payload::SnapshotChunk(k) if k.index == 0 => {
            format!("registry_snapshot ({} chunks)", k.count)
        }
        Payload::SnapshotChunk(_) => return None,
    })
}

fn event(gw: &Arc<Gw>, e: v1::Event) -> Vec<Row> {
    let seq = e.seq as i64;
    let temperature = |celsius: f32, threshold: Option<f32>, fever: bool| Temperature {
        gw: gw.clone(),
        seq,
        at_ms: e.gateway_time_ms,
        lane: e.lane.clone(),
        device: e.device.clone(),
        subject_id: String::new(),
        household: String::new(),
        celsius: round2(celsius),
        threshold: threshold.filter(|t| t.is_finite()).map(round2),
        fever,
        device_disagrees: false,
        counted_fever: false,
        lone: false,
    };
    match e.body {
        Some(v1::event::Body::Passage(ref p)) => {
            let vehicle = match p.medium() {
                v1::Medium::Plate => true,
                v1::Medium::Unspecified => p.subject_kind() == v1::SubjectKind::Plate,
                _ => false,
            };
            let who = match p.subject_kind() {
                v1::SubjectKind::Resident => Who::Resident,
                v1::SubjectKind::Visitor => Who::Visitor,
                // A known plate is a resident's car unless the list says otherwise; the
                // household says whose.
                v1::SubjectKind::Plate if !p.household.is_empty() => Who::Resident,
                _ => Who::Other,
            };
            let allowed = p.verdict() == v1::Verdict::Allow;
            let mut rows = Vec::with_capacity(2);
            // A reading the gateway found unusable (NaN, infinite) is no temperature: the
            // passage stays, denied `invalid_reading`.
            if let Some(t) = p.temperature_c.filter(|t| t.is_finite()) {
                rows.push(Row::Temperature(Temperature {
                    subject_id: p.subject_id.clone(),
                    household: p.household.clone(),
                    device_disagrees: p.device_flag_disagrees,
                    counted_fever: p.reason == "fever" && !p.not_actuated,
                    ..temperature(t, p.fever_threshold_c, p.fever || p.reason == "fever")
                }));
            }
            rows.push(Row::Passage(Passage {
                gw: gw.clone(),
                seq,
                at_ms: e.gateway_time_ms,
                lane: e.lane,
                device: e.device,
                vehicle,
                who,
                subject_id: p.subject_id.clone(),
                household: p.household.clone(),
                allowed,
                reason: p.reason.clone(),
                inbound: p.direction() != v1::Direction::Out,
                mode: p.mode.clone(),
                not_actuated: p.not_actuated,
            }));
            rows
        }
        Some(v1::event::Body::Reading(ref r)) if r.temperature_c.is_finite() => {
            // A gateway before the verdict field: no threshold, so no fever is claimed.
            vec![Row::Temperature(Temperature {
                counted_fever: r.fever,
                lone: true,
                ..temperature(r.temperature_c, r.fever_threshold_c, r.fever)
            })]
        }
        // Barrier inputs and command outcomes: the twins say the device's state.
        _ => Vec::new(),
    }
}

/// Device temperatures come as f32 (36.6 is 36.599998…): kept to the hundredth, as measured.
fn round2(c: f32) -> f64 {
    (f64::from(c) * 100.0).round() / 100.0
}

fn alarm(gw: &Arc<Gw>, a: v1::Alarm) -> Row {
    Row::Alarm(AlarmRow {
        gw: gw.clone(),
        seq: a.seq as i64,
        at_ms: a.gateway_time_ms,
        kind: a.kind().as_str_name().to_string(),
        lane: a.lane,
        device: a.device,
        detail: a.detail,
        subject_id: a.subject_id,
    })
}

fn stats(gw: &Arc<Gw>, b: v1::StatsBatch, payload: &[u8]) -> Vec<Row> {
    // A gateway before the batch's `seq` sends 0: the batch's own bytes stand in for it (a
    // redelivery is the same bytes; another batch for the same hour is not), as a negative
    // number no gateway's `seq` can be.
    let stats_seq = if b.seq > 0 {
        b.seq.min(i64::MAX as u64) as i64
    } else {
        use sha2::Digest;
        let d = sha2::Sha256::digest(payload);
        -(i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) & i64::MAX) - 1
    };
    b.stats
        .into_iter()
        .map(|s| {
            let denials: std::collections::BTreeMap<_, _> = s.denials.into_iter().collect();
            Row::Stats(StatsRow {
                gw: gw.clone(),
                stats_seq,
                lane: s.lane,
                start_ms: s.period_start_ms,
                end_ms: s.period_end_ms,
                entries: i64::from(s.entries),
                exits: i64::from(s.exits),
                vehicles_in: i64::from(s.vehicles_in),
                vehicles_out: i64::from(s.vehicles_out),
                fevers: i64::from(s.fevers),
                inside: i64::from(s.inside),
                denials: serde_json::to_string(&denials).unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "gh/v1/3301/330106/330106001/330106001001/gw-1";

    #[test]
    fn garbage_an_unknown_topic_and_oversize_are_quarantined_with_why() {
        let q = |d| matches!(d, Decoded::Quarantine(_));
        assert!(q(decode(&format!("{BASE}/events"), b"\xff\xff\xff")));
        assert!(q(decode("gh/v1/elsewhere", b"")));
        assert!(q(decode(
            &format!("{BASE}/alarms"),
            &vec![0; MAX_MESSAGE + 1]
        )));
        assert_eq!(decode(&format!("{BASE}/cmd/result"), b""), Decoded::Skipped);
    }

    #[test]
    fn a_fever_passage_is_a_passage_and_a_temperature_keyed_by_the_full_path() {
        let e = v1::Event {
            seq: 9,
            gateway_time_ms: 1_000,
            lane: "east".into(),
            body: Some(v1::event::Body::Passage(v1::PassageDecision {
                subject_kind: v1::SubjectKind::Resident as i32,
                subject_id: "R1".into(),
                household: "H1".into(),
                temperature_c: Some(38.2),
                fever_threshold_c: Some(37.3),
                fever: true,
                reason: "fever".into(),
                verdict: v1::Verdict::Deny as i32,
                medium: v1::Medium::Person as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        let b = v1::EventBatch { events: vec![e] }.encode_to_vec();
        let Decoded::Rows(rows) = decode(&format!("{BASE}/events"), &b) else {
            panic!()
        };
        let [Row::Temperature(t), Row::Passage(p)] = rows.as_slice() else {
            panic!("{rows:?}")
        };
        assert_eq!(p.gw.path, "3301/330106/330106001/330106001001/gw-1");
        assert_eq!(
            (p.seq, p.who, p.vehicle, p.allowed),
            (9, Who::Resident, false, false)
        );
        assert_eq!(
            (t.celsius, t.threshold, t.fever, t.counted_fever),
            (38.2, Some(37.3), true, true)
        );
    }
}
