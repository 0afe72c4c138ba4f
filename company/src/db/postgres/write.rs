//! One batch's transaction in PostgreSQL: every table's rows in as arrays (`UNNEST`), in key
//! order, the new ones back (`RETURNING`), their rollups added in one upsert, the quarantine.
use super::Param;
use crate::db::{rollup_sql, Applied, Batch, GATE_ACK_SQL, ORDER_ISSUED_SQL, ORDER_RESULT_SQL};
use crate::ingest::decode::{OrderSeen, Row};
use crate::ingest::rollup::{self, COLUMNS};
use chrono_tz::Tz;
use std::collections::{BTreeSet, HashSet};
use tokio_postgres::Client;

/// A row's table and key, for the insert order.
fn row_key(r: &Row) -> (u8, &str, i64) {
    match r {
        Row::Passage(p) => (0, &p.gw.path, p.seq),
        Row::Temperature(t) => (1, &t.gw.path, t.seq),
        Row::Alarm(a) => (2, &a.gw.path, a.seq),
        Row::Stats(s) => (3, &s.gw.path, s.stats_seq),
        Row::Status(s) => (4, &s.gw.path, s.seq),
        Row::Twin(t) => (5, &t.gw.path, t.gateway_time_ms),
        Row::Order(o) => (6, &o.target, 0),
        Row::Ack(k) => (7, &k.gw.path, k.alarm_seq),
    }
}

/// Columns of one table's new rows, as arrays for `UNNEST`.
#[derive(Default)]
struct Cols {
    text: Vec<Vec<String>>,
    int: Vec<Vec<i64>>,
    boolean: Vec<Vec<bool>>,
    float: Vec<Vec<Option<f64>>>,
}

impl Cols {
    fn new(text: usize, int: usize, boolean: usize, float: usize) -> Cols {
        Cols {
            text: vec![Vec::new(); text],
            int: vec![Vec::new(); int],
            boolean: vec![Vec::new(); boolean],
            float: vec![Vec::new(); float],
        }
    }
    fn len(&self) -> usize {
        self.int.first().map_or(0, Vec::len)
    }
    fn t(&mut self, i: usize, v: &str) {
        self.text[i].push(v.to_string());
    }
    fn params(&self) -> Vec<Param<'_>> {
        let mut p: Vec<Param> = Vec::new();
        p.extend(self.text.iter().map(|v| v as Param));
        p.extend(self.int.iter().map(|v| v as Param));
        p.extend(self.boolean.iter().map(|v| v as Param));
        p.extend(self.float.iter().map(|v| v as Param));
        p
    }
}

pub(super) async fn apply(c: &mut Client, batch: &Batch, tz: Tz) -> anyhow::Result<Applied> {
    let received_ms = batch.received_ms;
    // text: gw, community, lane, device, who, subject_id, household, reason, mode;
    // int: seq, at_ms, received_ms; bool: vehicle, allowed, inbound, not_actuated.
    let mut passages = Cols::new(9, 3, 4, 0);
    // text: gw, community, lane, device, subject_id, household; int: seq, at_ms;
    // bool: fever, device_disagrees, lone; float: celsius, threshold.
    let mut temps = Cols::new(6, 2, 3, 2);
    // text: gw, community, lane, device, kind, detail, subject_id; int: seq, at_ms.
    let mut alarms = Cols::new(7, 3, 0, 0);
    // text: gw, lane, community, street, district, denials; int: stats_seq, start_ms, end_ms,
    // entries, exits, vehicles_in, vehicles_out, fevers, inside.
    let mut stats = Cols::new(6, 9, 0, 0);
    let mut gateways: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    // In key order: two instances inserting the same records (a redelivery racing its first
    // delivery) take their row locks in the same order, and never deadlock.
    let mut rows: Vec<&Row> = batch.rows.iter().collect();
    rows.sort_by(|a, b| row_key(a).cmp(&row_key(b)));
    for row in rows {
        match row {
            Row::Passage(p) => {
                for (i, v) in [
                    &p.gw.path,
                    &p.gw.community,
                    &p.lane,
                    &p.device,
                    p.who.as_str(),
                    &p.subject_id,
                    &p.household,
                    &p.reason,
                    &p.mode,
                ]
                .into_iter()
                .enumerate()
                {
                    passages.t(i, v);
                }
                for (i, v) in [p.seq, p.at_ms, received_ms].into_iter().enumerate() {
                    passages.int[i].push(v);
                }
                for (i, v) in [p.vehicle, p.allowed, p.inbound, p.not_actuated]
                    .into_iter()
                    .enumerate()
                {
                    passages.boolean[i].push(v);
                }
            }
            Row::Temperature(t) => {
                for (i, v) in [
                    &t.gw.path,
                    &t.gw.community,
                    &t.lane,
                    &t.device,
                    &t.subject_id,
                    &t.household,
                ]
                .into_iter()
                .enumerate()
                {
                    temps.t(i, v);
                }
                temps.int[0].push(t.seq);
                temps.int[1].push(t.at_ms);
                for (i, v) in [t.fever, t.device_disagrees, t.lone]
                    .into_iter()
                    .enumerate()
                {
                    temps.boolean[i].push(v);
                }
                temps.float[0].push(Some(t.celsius));
                temps.float[1].push(t.threshold);
            }
            Row::Alarm(a) => {
                for (i, v) in [
                    &a.gw.path,
                    &a.gw.community,
                    &a.lane,
                    &a.device,
                    &a.kind,
                    &a.detail,
                    &a.subject_id,
                ]
                .into_iter()
                .enumerate()
                {
                    alarms.t(i, v);
                }
                alarms.int[0].push(a.seq);
                alarms.int[1].push(a.at_ms);
                alarms.int[2].push(batch.received_ms);
            }
            Row::Stats(s) => {
                for (i, v) in [
                    &s.gw.path,
                    &s.lane,
                    &s.gw.community,
                    &s.gw.street,
                    &s.gw.district,
                    &s.denials,
                ]
                .into_iter()
                .enumerate()
                {
                    stats.t(i, v);
                }
                for (i, v) in [
                    s.stats_seq,
                    s.start_ms,
                    s.end_ms,
                    s.entries,
                    s.exits,
                    s.vehicles_in,
                    s.vehicles_out,
                    s.fevers,
                    s.inside,
                ]
                .into_iter()
                .enumerate()
                {
                    stats.int[i].push(v);
                }
            }
            Row::Status(_) | Row::Twin(_) | Row::Order(_) | Row::Ack(_) => {}
        }
        // One look-up per row, not a scan of the gateways seen.
        if let Some(gw) = row.gateway().filter(|g| seen.insert(g.path.as_str())) {
            gateways.insert((
                gw.path.clone(),
                gw.district.clone(),
                gw.street.clone(),
                gw.community.clone(),
            ));
        }
    }

    let tx = c.transaction().await?;
    let mut applied = Applied::default();
    if !gateways.is_empty() {
        let cols: [Vec<String>; 4] = [
            gateways.iter().map(|g| g.0.clone()).collect(),
            gateways.iter().map(|g| g.1.clone()).collect(),
            gateways.iter().map(|g| g.2.clone()).collect(),
            gateways.iter().map(|g| g.3.clone()).collect(),
        ];
        tx.execute(
            "INSERT INTO gateways (gw, district, street, community)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT DO NOTHING",
            &[&cols[0], &cols[1], &cols[2], &cols[3]],
        )
        .await?;
    }
    // The keys stored for the first time.
    let mut new_passages: HashSet<(String, i64)> = HashSet::new();
    let mut new_temps: HashSet<(String, i64)> = HashSet::new();
    if passages.len() > 0 {
        let rows = tx
            .query(
                "INSERT INTO passages (gw, community, lane, device, who, subject_id, household,
                    reason, mode, seq, at_ms, received_ms, vehicle, allowed, inbound, not_actuated)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[],
                    $12::bigint[], $13::bool[], $14::bool[], $15::bool[], $16::bool[])
                 ON CONFLICT DO NOTHING RETURNING gw, seq",
                &passages.params(),
            )
            .await?;
        new_passages.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        applied.stored += rows.len() as u64;
        applied.duplicates += (passages.len() - rows.len()) as u64;
    }
    if temps.len() > 0 {
        let rows = tx
            .query(
                "INSERT INTO temperatures (gw, community, lane, device, subject_id, household, seq,
                    at_ms, fever, device_disagrees, lone, celsius, threshold)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::bigint[], $8::bigint[], $9::bool[], $10::bool[], $11::bool[],
                    $12::float8[], $13::float8[])
                 ON CONFLICT DO NOTHING RETURNING gw, seq",
                &temps.params(),
            )
            .await?;
        new_temps.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        applied.stored += rows.len() as u64;
        applied.duplicates += (temps.len() - rows.len()) as u64;
    }
    if alarms.len() > 0 {
        let n = tx
            .execute(
                "INSERT INTO alarms (gw, community, lane, device, kind, detail, subject_id, seq,
                    at_ms, received_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[])
                 ON CONFLICT DO NOTHING",
                &alarms.params(),
            )
            .await?;
        applied.stored += n;
        applied.duplicates += alarms.len() as u64 - n;
    }
    if stats.len() > 0 {
        let n = tx
            .execute(
                "INSERT INTO stats (gw, lane, community, street, district, denials, stats_seq,
                    start_ms, end_ms, entries, exits, vehicles_in, vehicles_out, fevers, inside)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                    $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[])
                 ON CONFLICT DO NOTHING",
                &stats.params(),
            )
            .await?;
        applied.stored += n;
        applied.duplicates += stats.len() as u64 - n;
    }
    for row in &batch.rows {
        match row {
            Row::Status(s) => {
                tx.execute(
                    "INSERT INTO gateway_status (gw, boot, seq, online, mode, version,
                        outbox_depth, gateway_time_ms, received_ms, registry_version,
                        clock_unsynced, store_degraded, period_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (gw) DO UPDATE SET boot = excluded.boot, seq = excluded.seq,
                        online = excluded.online, mode = excluded.mode,
                        version = excluded.version, outbox_depth = excluded.outbox_depth,
                        gateway_time_ms = excluded.gateway_time_ms,
                        received_ms = excluded.received_ms,
                        registry_version = excluded.registry_version,
                        clock_unsynced = excluded.clock_unsynced,
                        store_degraded = excluded.store_degraded, period_ms = excluded.period_ms
                     WHERE (excluded.boot, excluded.seq)
                         > (gateway_status.boot, gateway_status.seq)",
                    &[
                        &s.gw.path,
                        &s.boot,
                        &s.seq,
                        &s.online,
                        &s.mode,
                        &s.version,
                        &s.outbox_depth,
                        &s.gateway_time_ms,
                        &received_ms,
                        &s.registry_version,
                        &s.clock_unsynced,
                        &s.store_degraded,
                        &s.period_ms,
                    ],
                )
                .await?;
            }
            Row::Twin(t) => {
                tx.execute(
                    "INSERT INTO twins (gw, device, lane, online, arm, fault_code, last_seen_ms,
                        gateway_time_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (gw, device) DO UPDATE SET lane = excluded.lane,
                        online = excluded.online, arm = excluded.arm,
                        fault_code = excluded.fault_code, last_seen_ms = excluded.last_seen_ms,
                        gateway_time_ms = excluded.gateway_time_ms
                     WHERE excluded.gateway_time_ms > twins.gateway_time_ms",
                    &[
                        &t.gw.path,
                        &t.device,
                        &t.lane,
                        &t.online,
                        &t.arm,
                        &t.fault_code,
                        &t.last_seen_ms,
                        &t.gateway_time_ms,
                    ],
                )
                .await?;
            }
            Row::Order(o) => {
                match &o.what {
                    OrderSeen::Issued {
                        kind,
                        issued_ms,
                        expires_ms,
                    } => {
                        tx.execute(
                            ORDER_ISSUED_SQL,
                            &[&o.target, &o.command_id, kind, issued_ms, expires_ms],
                        )
                        .await?
                    }
                    OrderSeen::Result {
                        applied,
                        refused,
                        detail,
                        gateway_time_ms,
                    } => {
                        tx.execute(
                            ORDER_RESULT_SQL,
                            &[
                                &o.target,
                                &o.command_id,
                                applied,
                                refused,
                                detail,
                                gateway_time_ms,
                            ],
                        )
                        .await?
                    }
                };
            }
            Row::Ack(k) => {
                tx.execute(
                    GATE_ACK_SQL,
                    &[
                        &k.gw.path,
                        &k.alarm_seq,
                        &k.alarm_time_ms,
                        &k.by,
                        &k.acked_at_ms,
                    ],
                )
                .await?;
            }
            _ => {}
        }
    }

    // The rollups of what was new, in key order.
    let new = batch.rows.iter().filter(|r| match r {
        Row::Passage(p) => new_passages.remove(&(p.gw.path.clone(), p.seq)),
        Row::Temperature(t) => new_temps.remove(&(t.gw.path.clone(), t.seq)),
        _ => false,
    });
    let deltas = rollup::deltas(new, tz, received_ms);
    if !deltas.counts.is_empty() {
        let keys: Vec<_> = deltas.counts.keys().collect();
        let text: [Vec<String>; 5] = [
            keys.iter().map(|k| k.gw.path.clone()).collect(),
            keys.iter().map(|k| k.lane.clone()).collect(),
            keys.iter().map(|k| k.gw.community.clone()).collect(),
            keys.iter().map(|k| k.gw.street.clone()).collect(),
            keys.iter().map(|k| k.gw.district.clone()).collect(),
        ];
        let hours: Vec<i64> = keys.iter().map(|k| k.hour_ms).collect();
        let counts: Vec<Vec<i64>> = (0..COLUMNS.len())
            .map(|i| deltas.counts.values().map(|c| c[i]).collect())
            .collect();
        let mut params: Vec<Param> = text.iter().map(|v| v as Param).collect();
        params.push(&hours);
        params.extend(counts.iter().map(|v| v as Param));
        let (names, sums) = rollup_sql();
        let arrays: Vec<String> = (7..7 + COLUMNS.len())
            .map(|i| format!("${i}::bigint[]"))
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO rollups (gw, lane, community, street, district, hour_ms, {names})
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::text[], $6::bigint[], {})
                 ON CONFLICT (gw, lane, hour_ms) DO UPDATE SET {sums}",
                arrays.join(", ")
            ),
            &params,
        )
        .await?;
    }
    if !deltas.denials.is_empty() {
        let d = &deltas.denials;
        let cols: [Vec<String>; 4] = [
            d.keys().map(|(k, _)| k.gw.path.clone()).collect(),
            d.keys().map(|(k, _)| k.lane.clone()).collect(),
            d.keys().map(|(k, _)| k.gw.community.clone()).collect(),
            d.keys().map(|(_, r)| r.clone()).collect(),
        ];
        let hours: Vec<i64> = d.keys().map(|(k, _)| k.hour_ms).collect();
        let ns: Vec<i64> = d.values().copied().collect();
        tx.execute(
            "INSERT INTO rollup_denials (gw, lane, community, reason, hour_ms, n)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                $6::bigint[])
             ON CONFLICT (gw, lane, hour_ms, reason)
             DO UPDATE SET n = rollup_denials.n + excluded.n",
            &[&cols[0], &cols[1], &cols[2], &cols[3], &hours, &ns],
        )
        .await?;
    }
    for q in &batch.quarantine {
        let n = tx
            .execute(
                "INSERT INTO quarantine (received_ms, topic, error, digest, payload)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&received_ms, &q.topic, &q.error, &q.digest(), &q.payload],
            )
            .await?;
        applied.quarantined += n;
    }
    tx.commit().await?;
    Ok(applied)
}
