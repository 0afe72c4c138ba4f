//! The embedded default: one SQLite file in WAL mode, written by one connection on a blocking
//! thread. Each batch is one transaction: rows inserted unless already there (their key is the
//! gateway's path and seq), the rollups of the new ones added, the quarantine, then the commit.
use super::{
    denial_total, rollup_sql, AlarmListRow, Applied, Batch, DenialRow, FeverRow, GatewayRow,
    Migration, PassageRow, Retention, RollupRow, Scope, StatsRow, StatusRow, Table, Which,
};
use super::{generic, GATE_ACK_SQL, ORDER_ISSUED_SQL, ORDER_RESULT_SQL};
use crate::ingest::decode::{OrderSeen, Row};
use crate::ingest::rollup::{self, COLUMNS};
use anyhow::Context;
use chrono_tz::Tz;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_records",
        up: include_str!("../../migrations/sqlite/0001_records.up.sql"),
        down: include_str!("../../migrations/sqlite/0001_records.down.sql"),
    },
    Migration {
        version: 2,
        name: "0002_web",
        up: include_str!("../../migrations/sqlite/0002_web.up.sql"),
        down: include_str!("../../migrations/sqlite/0002_web.down.sql"),
    },
];

pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    tz: Tz,
}

impl Sqlite {
    pub async fn open(path: &Path, tz: Tz) -> anyhow::Result<Sqlite> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<Connection> {
            let mut conn =
                Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // Durable at every commit: the broker's message is acked after it.
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await??;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            tz,
        })
    }

    /// Runs `f` on the connection, on a blocking thread.
    pub(super) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| anyhow::anyhow!("the SQLite connection's lock is poisoned"))?;
            f(&mut c)
        })
        .await?
    }

    pub async fn apply(&self, batch: &Batch) -> anyhow::Result<Applied> {
        // The blocking thread needs the rows as its own: a copy per batch (measured: 7,800/s).
        let rows = batch.rows.clone();
        let quarantine = batch.quarantine.clone();
        let (received_ms, tz) = (batch.received_ms, self.tz);
        self.with(move |c| apply(c, &rows, &quarantine, received_ms, tz))
            .await
    }

    pub async fn rollback_one(&self) -> anyhow::Result<Option<i64>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let Some(v) = tx.query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            else {
                return Ok(None);
            };
            let m = MIGRATIONS
                .iter()
                .find(|m| m.version == v)
                .with_context(|| format!("migration {v} is not known to this version"))?;
            tx.execute_batch(m.down)?;
            tx.execute("DELETE FROM schema_migrations WHERE version = ?1", [v])?;
            tx.commit()?;
            Ok(Some(v))
        })
        .await
    }

    pub async fn rollups(
        &self,
        scope: &Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<RollupRow>> {
        let (col, value) = scope.column();
        let sql = format!(
            "SELECT gw, community, street, lane, hour_ms, {} FROM rollups
             WHERE {col} = ?1 AND hour_ms >= ?2 AND hour_ms < ?3 ORDER BY gw, lane, hour_ms",
            COLUMNS.join(", ")
        );
        let value = value.to_string();
        self.with(move |c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![value, from_ms, to_ms], |r| {
                let mut counts = [0; COLUMNS.len()];
                for (i, n) in counts.iter_mut().enumerate() {
                    *n = r.get(5 + i)?;
                }
                Ok(RollupRow {
                    gw: r.get(0)?,
                    community: r.get(1)?,
                    street: r.get(2)?,
                    lane: r.get(3)?,
                    hour_ms: r.get(4)?,
                    counts,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn denials(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<DenialRow>> {
        let community = community.to_string();
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT gw, community, lane, hour_ms, reason, n FROM rollup_denials
                 WHERE community = ?1 AND hour_ms >= ?2 AND hour_ms < ?3
                 ORDER BY gw, lane, hour_ms, reason",
            )?;
            let rows = st.query_map(params![community, from_ms, to_ms], |r| {
                Ok(DenialRow {
                    gw: r.get(0)?,
                    community: r.get(1)?,
                    lane: r.get(2)?,
                    hour_ms: r.get(3)?,
                    reason: r.get(4)?,
                    n: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn stats(
        &self,
        scope: &Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<StatsRow>> {
        let (col, value) = scope.column();
        let sql = format!(
            "SELECT gw, community, street, lane, start_ms, entries, exits, vehicles_in,
                    vehicles_out, fevers, denials FROM stats
             WHERE {col} = ?1 AND start_ms >= ?2 AND start_ms < ?3 ORDER BY gw, lane, start_ms"
        );
        let value = value.to_string();
        self.with(move |c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![value, from_ms, to_ms], |r| {
                Ok(StatsRow {
                    gw: r.get(0)?,
                    community: r.get(1)?,
                    street: r.get(2)?,
                    lane: r.get(3)?,
                    start_ms: r.get(4)?,
                    entries: r.get(5)?,
                    exits: r.get(6)?,
                    vehicles_in: r.get(7)?,
                    vehicles_out: r.get(8)?,
                    fevers: r.get(9)?,
                    denials: denial_total(&r.get::<_, String>(10)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn fevers(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<FeverRow>> {
        let community = community.to_string();
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT gw, at_ms, lane, device, subject_id, household, celsius, threshold, fever,
                        device_disagrees FROM temperatures
                 WHERE community = ?1 AND at_ms >= ?2 AND at_ms < ?3
                   AND (fever = 1 OR device_disagrees = 1)
                 ORDER BY at_ms, gw, seq",
            )?;
            let rows = st.query_map(params![community, from_ms, to_ms], |r| {
                Ok(FeverRow {
                    gw: r.get(0)?,
                    at_ms: r.get(1)?,
                    lane: r.get(2)?,
                    device: r.get(3)?,
                    subject_id: r.get(4)?,
                    household: r.get(5)?,
                    celsius: r.get(6)?,
                    threshold: r.get(7)?,
                    fever: r.get(8)?,
                    device_disagrees: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn passages(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        which: Which,
    ) -> anyhow::Result<Vec<PassageRow>> {
        let community = community.to_string();
        let sql = format!(
            "SELECT gw, at_ms, lane, who, subject_id, household, allowed, reason, inbound, mode
             FROM passages WHERE community = ?1 AND at_ms >= ?2 AND at_ms < ?3
               AND not_actuated = FALSE AND {} ORDER BY at_ms, gw, seq",
            which.condition()
        );
        self.with(move |c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![community, from_ms, to_ms], |r| {
                Ok(PassageRow {
                    gw: r.get(0)?,
                    at_ms: r.get(1)?,
                    lane: r.get(2)?,
                    who: r.get(3)?,
                    subject_id: r.get(4)?,
                    household: r.get(5)?,
                    allowed: r.get(6)?,
                    reason: r.get(7)?,
                    inbound: r.get(8)?,
                    mode: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn alarms(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        kinds: Vec<String>,
    ) -> anyhow::Result<Vec<AlarmListRow>> {
        let community = community.to_string();
        self.with(move |c| {
            // The kinds as a JSON array: one statement for any number of them.
            let kinds = serde_json::to_string(&kinds)?;
            let mut st = c.prepare(
                "SELECT gw, at_ms, lane, device, kind, detail, subject_id FROM alarms
                 WHERE community = ?1 AND at_ms >= ?2 AND at_ms < ?3
                   AND kind IN (SELECT value FROM json_each(?4))
                 ORDER BY at_ms, gw, seq",
            )?;
            let rows = st.query_map(params![community, from_ms, to_ms, kinds], |r| {
                Ok(AlarmListRow {
                    gw: r.get(0)?,
                    at_ms: r.get(1)?,
                    lane: r.get(2)?,
                    device: r.get(3)?,
                    kind: r.get(4)?,
                    detail: r.get(5)?,
                    subject_id: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn gateways(&self, community: &str) -> anyhow::Result<Vec<GatewayRow>> {
        let community = community.to_string();
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT s.gw, s.online, s.outbox_depth, s.mode, s.received_ms
                 FROM gateway_status s JOIN gateways g ON g.gw = s.gw
                 WHERE g.community = ?1 ORDER BY s.gw",
            )?;
            let rows = st.query_map([community], |r| {
                Ok(GatewayRow {
                    gw: r.get(0)?,
                    online: r.get(1)?,
                    outbox_depth: r.get(2)?,
                    mode: r.get(3)?,
                    received_ms: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    pub async fn status(&self, gw: &str) -> anyhow::Result<Option<StatusRow>> {
        let gw = gw.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT gw, boot, seq, online, outbox_depth FROM gateway_status WHERE gw = ?1",
                [gw],
                |r| {
                    Ok(StatusRow {
                        gw: r.get(0)?,
                        boot: r.get(1)?,
                        seq: r.get(2)?,
                        online: r.get(3)?,
                        outbox_depth: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn count(&self, table: Table) -> anyhow::Result<i64> {
        self.with(move |c| {
            Ok(
                c.query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    pub async fn expire(&self, retention: Retention, now_ms: i64) -> anyhow::Result<u64> {
        self.with(move |c| {
            let day = 86_400_000_i64;
            let mut n = 0;
            if retention.passages_days > 0 {
                let before = now_ms - i64::from(retention.passages_days) * day;
                n += c.execute("DELETE FROM passages WHERE at_ms < ?1", [before])? as u64;
                n += c.execute("DELETE FROM alarms WHERE at_ms < ?1", [before])? as u64;
            }
            if retention.temperatures_days > 0 {
                let before = now_ms - i64::from(retention.temperatures_days) * day;
                n += c.execute("DELETE FROM temperatures WHERE at_ms < ?1", [before])? as u64;
            }
            Ok(n)
        })
        .await
    }

    pub async fn forget_temperatures(
        &self,
        subject: Option<&str>,
        before_ms: Option<i64>,
    ) -> anyhow::Result<u64> {
        let subject = subject.map(str::to_string);
        self.with(move |c| {
            let mut n = 0;
            if let Some(s) = subject {
                n += c.execute("DELETE FROM temperatures WHERE subject_id = ?1", [s])? as u64;
            }
            if let Some(b) = before_ms {
                n += c.execute("DELETE FROM temperatures WHERE at_ms < ?1", [b])? as u64;
            }
            Ok(n)
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    )?;
    let have: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for m in MIGRATIONS.iter().filter(|m| m.version > have) {
        tx.execute_batch(m.up)
            .with_context(|| format!("migration {}", m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            params![m.version, m.name],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn apply(
    c: &mut Connection,
    rows: &[Row],
    quarantine: &[super::Quarantined],
    received_ms: i64,
    tz: Tz,
) -> anyhow::Result<Applied> {
    let tx = c.transaction()?;
    let mut applied = Applied::default();
    let mut new: Vec<&Row> = Vec::new();
    {
        let mut gateway = tx.prepare_cached(
            "INSERT INTO gateways (gw, district, street, community) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?;
        let mut passage = tx.prepare_cached(
            "INSERT INTO passages (gw, seq, at_ms, community, lane, device, vehicle, who,
                subject_id, household, allowed, reason, inbound, mode, not_actuated, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT DO NOTHING",
        )?;
        let mut temperature = tx.prepare_cached(
            "INSERT INTO temperatures (gw, seq, at_ms, community, lane, device, subject_id,
                household, celsius, threshold, fever, device_disagrees, lone)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT DO NOTHING",
        )?;
        let mut alarm = tx.prepare_cached(
            "INSERT INTO alarms (gw, seq, at_ms, community, lane, device, kind, detail, subject_id,
                received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
        )?;
        let mut stats = tx.prepare_cached(
            "INSERT INTO stats (gw, stats_seq, lane, start_ms, end_ms, community, street, district,
                entries, exits, vehicles_in, vehicles_out, fevers, inside, denials)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT DO NOTHING",
        )?;
        let mut status = tx.prepare_cached(
            "INSERT INTO gateway_status (gw, boot, seq, online, mode, version, outbox_depth,
                gateway_time_ms, received_ms, registry_version, clock_unsynced, store_degraded,
                period_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (gw) DO UPDATE SET boot = excluded.boot, seq = excluded.seq,
                online = excluded.online, mode = excluded.mode, version = excluded.version,
                outbox_depth = excluded.outbox_depth, gateway_time_ms = excluded.gateway_time_ms,
                received_ms = excluded.received_ms, registry_version = excluded.registry_version,
                clock_unsynced = excluded.clock_unsynced, store_degraded = excluded.store_degraded,
                period_ms = excluded.period_ms
             WHERE (excluded.boot, excluded.seq) > (gateway_status.boot, gateway_status.seq)",
        )?;
        let mut order_issued = tx.prepare_cached(&generic::sqlite_sql(ORDER_ISSUED_SQL))?;
        let mut gate_ack = tx.prepare_cached(&generic::sqlite_sql(GATE_ACK_SQL))?;
        let mut order_result = tx.prepare_cached(&generic::sqlite_sql(ORDER_RESULT_SQL))?;
        let mut twin = tx.prepare_cached(
            "INSERT INTO twins (gw, device, lane, online, arm, fault_code, last_seen_ms,
                gateway_time_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (gw, device) DO UPDATE SET lane = excluded.lane, online = excluded.online,
                arm = excluded.arm, fault_code = excluded.fault_code,
                last_seen_ms = excluded.last_seen_ms, gateway_time_ms = excluded.gateway_time_ms
             WHERE excluded.gateway_time_ms > twins.gateway_time_ms",
        )?;
        let mut seen_gw: Option<&str> = None;
        for row in rows {
            if let Some(gw) = row.gateway().filter(|g| seen_gw != Some(g.path.as_str())) {
                gateway.execute(params![gw.path, gw.district, gw.street, gw.community])?;
                seen_gw = Some(gw.path.as_str());
            }
            let inserted = match row {
                Row::Passage(p) => passage.execute(params![
                    p.gw.path,
                    p.seq,
                    p.at_ms,
                    p.gw.community,
                    p.lane,
                    p.device,
                    p.vehicle,
                    p.who.as_str(),
                    p.subject_id,
                    p.household,
                    p.allowed,
                    p.reason,
                    p.inbound,
                    p.mode,
                    p.not_actuated,
                    received_ms
                ])?,
                Row::Temperature(t) => temperature.execute(params![
                    t.gw.path,
                    t.seq,
                    t.at_ms,
                    t.gw.community,
                    t.lane,
                    t.device,
                    t.subject_id,
                    t.household,
                    t.celsius,
                    t.threshold,
                    t.fever,
                    t.device_disagrees,
                    t.lone
                ])?,
                Row::Alarm(a) => alarm.execute(params![
                    a.gw.path,
                    a.seq,
                    a.at_ms,
                    a.gw.community,
                    a.lane,
                    a.device,
                    a.kind,
                    a.detail,
                    a.subject_id,
                    received_ms
                ])?,
                Row::Stats(s) => stats.execute(params![
                    s.gw.path,
                    s.stats_seq,
                    s.lane,
                    s.start_ms,
                    s.end_ms,
                    s.gw.community,
                    s.gw.street,
                    s.gw.district,
                    s.entries,
                    s.exits,
                    s.vehicles_in,
                    s.vehicles_out,
                    s.fevers,
                    s.inside,
                    s.denials
                ])?,
                Row::Status(s) => {
                    status.execute(params![
                        s.gw.path,
                        s.boot,
                        s.seq,
                        s.online,
                        s.mode,
                        s.version,
                        s.outbox_depth,
                        s.gateway_time_ms,
                        received_ms,
                        s.registry_version,
                        s.clock_unsynced,
                        s.store_degraded,
                        s.period_ms
                    ])?;
                    continue;
                }
                Row::Twin(t) => {
                    twin.execute(params![
                        t.gw.path,
                        t.device,
                        t.lane,
                        t.online,
                        t.arm,
                        t.fault_code,
                        t.last_seen_ms,
                        t.gateway_time_ms
                    ])?;
                    continue;
                }
                Row::Ack(k) => {
                    gate_ack.execute(params![
                        k.gw.path,
                        k.alarm_seq,
                        k.alarm_time_ms,
                        k.by,
                        k.acked_at_ms
                    ])?;
                    continue;
                }
                Row::Order(o) => {
                    match &o.what {
                        OrderSeen::Issued {
                            kind,
                            issued_ms,
                            expires_ms,
                        } => order_issued.execute(params![
                            o.target,
                            o.command_id,
                            kind,
                            issued_ms,
                            expires_ms
                        ])?,
                        OrderSeen::Result {
                            applied,
                            refused,
                            detail,
                            gateway_time_ms,
                        } => order_result.execute(params![
                            o.target,
                            o.command_id,
                            applied,
                            refused,
                            detail,
                            gateway_time_ms
                        ])?,
                    };
                    continue;
                }
            };
            if inserted == 1 {
                applied.stored += 1;
                new.push(row);
            } else {
                applied.duplicates += 1;
            }
        }
        let deltas = rollup::deltas(new, tz, received_ms);
        let (names, sums) = rollup_sql();
        let marks: Vec<String> = (7..7 + COLUMNS.len()).map(|i| format!("?{i}")).collect();
        let mut upsert = tx.prepare_cached(&format!(
            "INSERT INTO rollups (gw, lane, hour_ms, community, street, district, {names})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, {})
             ON CONFLICT (gw, lane, hour_ms) DO UPDATE SET {sums}",
            marks.join(", ")
        ))?;
        for (k, counts) in &deltas.counts {
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                &k.gw.path,
                &k.lane,
                &k.hour_ms,
                &k.gw.community,
                &k.gw.street,
                &k.gw.district,
            ];
            values.extend(counts.iter().map(|n| n as &dyn rusqlite::ToSql));
            upsert.execute(values.as_slice())?;
        }
        let mut denial = tx.prepare_cached(
            "INSERT INTO rollup_denials (gw, lane, hour_ms, community, reason, n)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (gw, lane, hour_ms, reason) DO UPDATE SET n = rollup_denials.n + excluded.n",
        )?;
        for ((k, reason), n) in &deltas.denials {
            denial.execute(params![
                k.gw.path,
                k.lane,
                k.hour_ms,
                k.gw.community,
                reason,
                n
            ])?;
        }
        let mut q = tx.prepare_cached(
            "INSERT INTO quarantine (received_ms, topic, error, digest, payload)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )?;
        for m in quarantine {
            applied.quarantined += q.execute(params![
                received_ms,
                m.topic,
                m.error,
                m.digest(),
                m.payload
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(applied)
}
