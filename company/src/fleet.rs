//! A fleet of simulated gateways publishing what real ones publish — `EventBatch`es of passages
//! (residents in and out, visitors, strangers turned away, fevers, vehicles by plate), then each
//! gateway's `StatsBatch` for the hours it covered and its `Status` — at a set rate of records,
//! for the ingest's benchmark and the demo. Every record is numbered per gateway, so what was
//! published can be counted against what was stored.
use crate::ingest::rollup::HOUR_MS;
use gatehouse_contract::proto::v1;
use prost::Message;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Fleet {
    pub communities: u32,
    /// Gateways per community.
    pub gateways: u32,
    /// Records (events) per second, all gateways together.
    pub rate: u32,
    pub seconds: u32,
    /// Events per `EventBatch`.
    pub batch: u32,
    /// The first community's code; the others follow it (`330106001001`, `…002`, …).
    pub first_community: u64,
    /// The records' gateway time starts here (unix ms).
    pub start_ms: i64,
    /// Seqs start after this (a second run of the same fleet continues its numbering).
    pub seq_base: u64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            communities: 10,
            gateways: 2,
            rate: 1000,
            seconds: 10,
            batch: 50,
            first_community: 330_106_001_001,
            start_ms: chrono::Utc::now().timestamp_millis(),
            seq_base: 0,
        }
    }
}

/// What a run published.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Published {
    pub events: u64,
    pub batches: u64,
    pub passages: u64,
    pub stats_batches: u64,
    pub seconds: f64,
}

/// One simulated gateway: its records, numbered, and the statistics it keeps of them.
pub struct Gateway {
    community: String,
    id: String,
    seq: u64,
    stats_seq: u64,
    /// Per lane and hour: entries, exits, vehicles in, out, denials by reason, fevers.
    counts: BTreeMap<(String, i64), v1::LaneStats>,
}

impl Gateway {
    pub fn new(community: String, id: String, seq_base: u64) -> Gateway {
        Gateway {
            community,
            id,
            seq: seq_base,
            stats_seq: seq_base / 1000,
            counts: BTreeMap::new(),
        }
    }

    /// Its statistics so far, as the next `StatsBatch`.
    pub fn stats(&mut self) -> v1::StatsBatch {
        self.stats_seq += 1;
        v1::StatsBatch {
            gateway: self.id.clone(),
            seq: self.stats_seq,
            stats: self.counts.values().cloned().collect(),
        }
    }

    pub fn topic(&self, channel: &str) -> String {
        let c = &self.community;
        let part = |n: usize| c.get(..n).unwrap_or(c);
        format!(
            "gh/v1/{}/{}/{}/{c}/{}/{channel}",
            part(4),
            part(6),
            part(9),
            self.id
        )
    }

    /// The gateway's next event (a deterministic mix), decided at `at_ms`.
    pub fn event(&mut self, at_ms: i64) -> v1::Event {
        self.seq += 1;
        let n = self.seq;
        let vehicle = n % 10 == 0;
        let (kind, subject, household, allow, reason) = match n % 20 {
            0..=13 => (
                v1::SubjectKind::Resident,
                format!("R{:06}", n % 5000),
                format!("H{:04}", n % 2000),
                true,
                "ok",
            ),
            14 => (
                v1::SubjectKind::Visitor,
                format!("P{:05}", n % 300),
                format!("H{:04}", n % 2000),
                true,
                "ok",
            ),
            15 => (
                v1::SubjectKind::Unknown,
                String::new(),
                String::new(),
                false,
                "unknown_subject",
            ),
            16 if !vehicle => (
                v1::SubjectKind::Resident,
                format!("R{:06}", n % 5000),
                format!("H{:04}", n % 2000),
                false,
                "fever",
            ),
            _ => (
                v1::SubjectKind::Resident,
                format!("R{:06}", n % 5000),
                format!("H{:04}", n % 2000),
                true,
                "ok",
            ),
        };
        let out = n % 2 == 1;
        let lane = if vehicle { "car" } else { "east" };
        let fever = reason == "fever";
        let (kind, subject) = if vehicle && kind == v1::SubjectKind::Resident {
            (v1::SubjectKind::Plate, format!("浙A{:05}", n % 20000))
        } else {
            (kind, subject)
        };
        let hour = at_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let s = self
            .counts
            .entry((lane.to_string(), hour))
            .or_insert_with(|| v1::LaneStats {
                lane: lane.into(),
                period_start_ms: hour,
                period_end_ms: hour + HOUR_MS,
                ..Default::default()
            });
        match (allow, vehicle, out) {
            (true, false, false) => s.entries += 1,
            (true, false, true) => s.exits += 1,
            (true, true, false) => s.vehicles_in += 1,
            (true, true, true) => s.vehicles_out += 1,
            (false, _, _) => *s.denials.entry(reason.to_string()).or_insert(0) += 1,
        }
        if fever {
            s.fevers += 1;
        }
        v1::Event {
            event_id: format!("{}:{n}", self.id),
            seq: n,
            gateway_time_ms: at_ms,
            lane: lane.into(),
            device: if vehicle { "camera-1" } else { "thermal-1" }.into(),
            body: Some(v1::event::Body::Passage(v1::PassageDecision {
                subject_kind: kind as i32,
                subject_id: subject,
                household,
                temperature_c: (!vehicle).then_some(if fever { 38.1 } else { 36.5 }),
                fever_threshold_c: (!vehicle).then_some(37.3),
                fever,
                verdict: if allow {
                    v1::Verdict::Allow
                } else {
                    v1::Verdict::Deny
                } as i32,
                reason: reason.into(),
                direction: if out {
                    v1::Direction::Out
                } else {
                    v1::Direction::In
                } as i32,
                medium: if vehicle {
                    v1::Medium::Plate
                } else {
                    v1::Medium::Person
                } as i32,
                mode: "normal".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

/// Publishes the fleet's records to the broker at `host:port` (QoS 1, over `connections`
/// client connections), then each gateway's statistics and status. Returns what it published.
pub async fn run(
    host: &str,
    port: u16,
    f: &Fleet,
    connections: usize,
) -> anyhow::Result<Published> {
    let mut gateways: Vec<Gateway> = (0..f.communities)
        .flat_map(|c| {
            (0..f.gateways).map(move |g| {
                Gateway::new(
                    (f.first_community + u64::from(c)).to_string(),
                    format!("gw-{}", g + 1),
                    f.seq_base,
                )
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut loops = Vec::new();
    for i in 0..connections.max(1) {
        let mut o = MqttOptions::new(format!("fleet-{}-{i}", std::process::id()), host, port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_inflight(200);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        loops.push(tokio::spawn(async move {
            loop {
                if let Err(e) = el.poll().await {
                    tracing::warn!("fleet connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
        clients.push(client);
    }
    let mut p = Published::default();
    for (i, g) in gateways.iter().enumerate() {
        let s = v1::Status {
            gateway: g.id.clone(),
            state: v1::GatewayState::Online as i32,
            boot: 1,
            seq: 1,
            ..Default::default()
        };
        clients[i % clients.len()]
            .publish(g.topic("status"), QoS::AtLeastOnce, true, s.encode_to_vec())
            .await?;
    }
    let total = u64::from(f.rate) * u64::from(f.seconds);
    let batch = u64::from(f.batch.max(1));
    let started = Instant::now();
    // Gateway time runs at the pace of the run: the records spread over the hours as real ones.
    let per_ms = f64::from(f.rate) / 1000.0;
    let mut next = 0usize;
    while p.events < total {
        let due = ((started.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64).min(total);
        while p.events + batch <= due.max(batch) && p.events < total {
            let len = gateways.len();
            let g = &mut gateways[next % len];
            next += 1;
            let n = batch.min(total - p.events);
            let at = f.start_ms + (p.events as f64 / per_ms) as i64;
            let events: Vec<_> = (0..n).map(|_| g.event(at)).collect();
            p.events += n;
            p.passages += n;
            p.batches += 1;
            let topic = g.topic("events");
            clients[next % clients.len()]
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    v1::EventBatch { events }.encode_to_vec(),
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (i, g) in gateways.iter_mut().enumerate() {
        g.stats_seq += 1;
        let b = v1::StatsBatch {
            gateway: g.id.clone(),
            seq: g.stats_seq,
            stats: g.counts.values().cloned().collect(),
        };
        clients[i % clients.len()]
            .publish(g.topic("stats"), QoS::AtLeastOnce, false, b.encode_to_vec())
            .await?;
        p.stats_batches += 1;
    }
    p.seconds = started.elapsed().as_secs_f64();
    // Let the connections hand over what is queued before they go.
    for c in &clients {
        let _ = c.disconnect().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for l in loops {
        l.abort();
    }
    Ok(p)
}
