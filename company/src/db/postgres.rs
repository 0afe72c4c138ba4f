//! PostgreSQL: one client, reconnected when the server went away. Each batch is one transaction
//! of a few statements whatever its size — every table's rows go in as arrays (`UNNEST`), the new
//! ones come back (`RETURNING`), and the rollups of the new ones are added in one upsert, its
//! keys in order (two instances adding to the same hour never deadlock). Passages are
//! partitioned by local day; a day's partition is made before its first record.
use super::{
    denial_total, rollup_sql, AlarmListRow, Applied, Batch, DenialRow, FeverRow, GatewayRow,
    Migration, PassageRow, Retention, RollupRow, Scope, StatsRow, StatusRow, Table, Which,
};
use crate::ingest::decode::Row;
use crate::ingest::rollup::{self, COLUMNS};
use anyhow::Context;
use chrono::{Days, NaiveDate, TimeZone};
use chrono_tz::Tz;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_records",
    up: include_str!("../../migrations/postgres/0001_records.up.sql"),
    down: include_str!("../../migrations/postgres/0001_records.down.sql"),
}];

const DAY_MS: i64 = 86_400_000;

/// The longest a batch's commit may take before its connection is taken for dead.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A query parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

pub struct Postgres {
    url: String,
    client: Mutex<Option<Client>>,
    tz: Tz,
    /// Day partitions known to exist (`YYYYMMDD`).
    partitions: std::sync::Mutex<HashSet<String>>,
}

impl Postgres {
    pub async fn open(url: &str, tz: Tz) -> anyhow::Result<Postgres> {
        let pg = Postgres {
            url: url.to_string(),
            client: Mutex::new(None),
            tz,
            partitions: Default::default(),
        };
        {
            let mut guard = pg.client.lock().await;
            let c = pg.connected(&mut guard).await?;
            migrate(c).await?;
        }
        Ok(pg)
    }

    /// The client, connecting first if there is none or the last one broke.
    async fn connected<'a>(&self, slot: &'a mut Option<Client>) -> anyhow::Result<&'a mut Client> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let mut config: tokio_postgres::Config = self.url.parse().context("database.url")?;
            // A server gone without a word (a cable, a failover) is noticed in seconds, not
            // after the kernel's two hours.
            config
                .connect_timeout(Duration::from_secs(10))
                .keepalives_idle(Duration::from_secs(10))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3)
                .tcp_user_timeout(Duration::from_secs(30));
            let (client, connection) = config
                .connect(NoTls)
                .await
                .context("connecting to PostgreSQL")?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("PostgreSQL connection ended: {e}");
                }
            });
            *slot = Some(client);
        }
        slot.as_mut().context("no PostgreSQL client")
    }

    pub async fn apply(&self, batch: &Batch) -> anyhow::Result<Applied> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        let r = tokio::time::timeout(APPLY_TIMEOUT, async {
            self.make_partitions(c, batch).await?;
            apply(c, batch, self.tz).await
        })
        .await;
        match r {
            Ok(r) => {
                if r.is_err() && c.is_closed() {
                    *guard = None;
                }
                r
            }
            Err(_) => {
                // A connection that stopped answering: dropped (its transaction rolls back
                // with it), made anew at the next try.
                *guard = None;
                anyhow::bail!("the commit took over {APPLY_TIMEOUT:?}")
            }
        }
    }

    /// Makes the day partitions the batch's passages need, and today's and the next two days'
    /// ahead (within a window around today: a record dated decades off goes to the default
    /// partition instead).
    async fn make_partitions(&self, c: &Client, batch: &Batch) -> anyhow::Result<()> {
        let days: BTreeSet<NaiveDate> = batch
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Passage(p) => Some(p.at_ms),
                _ => None,
            })
            // Today's, and the next two days' ahead of their first record.
            .chain([0, 1, 2].map(|d| batch.received_ms + d * DAY_MS))
            // A gateway clock up to 30 days fast still gets day partitions of its own, so the
            // default one never holds a day that comes later.
            .filter(|ms| {
                (batch.received_ms - 400 * DAY_MS..=batch.received_ms + 30 * DAY_MS).contains(ms)
            })
            .filter_map(|ms| self.tz.timestamp_millis_opt(ms).single())
            .map(|t| t.date_naive())
            .collect();
        for day in days {
            let name = day.format("%Y%m%d").to_string();
            if self
                .partitions
                .lock()
                .map(|p| p.contains(&name))
                .unwrap_or(false)
            {
                continue;
            }
            let start = self.midnight_ms(day)?;
            let end = self.midnight_ms(day.checked_add_days(Days::new(1)).context("date")?)?;
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS passages_{name} PARTITION OF passages
                 FOR VALUES FROM ({start}) TO ({end})"
            );
            match c.batch_execute(&sql).await {
                Ok(()) => {
                    if let Ok(mut p) = self.partitions.lock() {
                        p.insert(name);
                    }
                }
                Err(e) => {
                    // Another instance made it at the same moment (then it is there), or the
                    // default partition already holds that day's rows (a gateway clock more
                    // than 30 days fast): they stay there, still counted and found. Not taken
                    // as made, so it is tried again with the next batch of that day.
                    let why = e
                        .as_db_error()
                        .map_or(e.to_string(), |d| d.message().to_string());
                    tracing::warn!("partition passages_{name}: {why}");
                }
            }
        }
        Ok(())
    }

    fn midnight_ms(&self, day: NaiveDate) -> anyhow::Result<i64> {
        let t = day.and_hms_opt(0, 0, 0).context("midnight")?;
        Ok(self
            .tz
            .from_local_datetime(&t)
            .earliest()
            .context("no such local time")?
            .timestamp_millis())
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        Ok(c.query(sql, params).await?)
    }

    pub async fn rollback_one(&self) -> anyhow::Result<Option<i64>> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        let tx = c.transaction().await?;
        let v: Option<i64> = tx
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await?
            .get(0);
        let Some(v) = v else { return Ok(None) };
        let m = MIGRATIONS
            .iter()
            .find(|m| m.version == v)
            .with_context(|| format!("migration {v} is not known to this version"))?;
        tx.batch_execute(m.down).await?;
        tx.execute("DELETE FROM schema_migrations WHERE version = $1", &[&v])
            .await?;
        tx.commit().await?;
        self.partitions.lock().map(|mut p| p.clear()).ok();
        Ok(Some(v))
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
             WHERE {col} = $1 AND hour_ms >= $2 AND hour_ms < $3 ORDER BY gw, lane, hour_ms",
            COLUMNS.join(", ")
        );
        let rows = self.query(&sql, &[&value, &from_ms, &to_ms]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut counts = [0; COLUMNS.len()];
                for (i, n) in counts.iter_mut().enumerate() {
                    *n = r.get(5 + i);
                }
                RollupRow {
                    gw: r.get(0),
                    community: r.get(1),
                    street: r.get(2),
                    lane: r.get(3),
                    hour_ms: r.get(4),
                    counts,
                }
            })
            .collect())
    }

    pub async fn denials(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<DenialRow>> {
        let rows = self
            .query(
                "SELECT gw, community, lane, hour_ms, reason, n FROM rollup_denials
                 WHERE community = $1 AND hour_ms >= $2 AND hour_ms < $3
                 ORDER BY gw, lane, hour_ms, reason",
                &[&community, &from_ms, &to_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DenialRow {
                gw: r.get(0),
                community: r.get(1),
                lane: r.get(2),
                hour_ms: r.get(3),
                reason: r.get(4),
                n: r.get(5),
            })
            .collect())
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
             WHERE {col} = $1 AND start_ms >= $2 AND start_ms < $3 ORDER BY gw, lane, start_ms"
        );
        let rows = self.query(&sql, &[&value, &from_ms, &to_ms]).await?;
        Ok(rows
            .iter()
            .map(|r| StatsRow {
                gw: r.get(0),
                community: r.get(1),
                street: r.get(2),
                lane: r.get(3),
                start_ms: r.get(4),
                entries: r.get(5),
                exits: r.get(6),
                vehicles_in: r.get(7),
                vehicles_out: r.get(8),
                fevers: r.get(9),
                denials: denial_total(r.get(10)),
            })
            .collect())
    }

    pub async fn fevers(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<FeverRow>> {
        let rows = self
            .query(
                "SELECT gw, at_ms, lane, device, subject_id, household, celsius, threshold, fever,
                        device_disagrees FROM temperatures
                 WHERE community = $1 AND at_ms >= $2 AND at_ms < $3
                   AND (fever OR device_disagrees)
                 ORDER BY at_ms, gw, seq",
                &[&community, &from_ms, &to_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FeverRow {
                gw: r.get(0),
                at_ms: r.get(1),
                lane: r.get(2),
                device: r.get(3),
                subject_id: r.get(4),
                household: r.get(5),
                celsius: r.get(6),
                threshold: r.get(7),
                fever: r.get(8),
                device_disagrees: r.get(9),
            })
            .collect())
    }

    pub async fn passages(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        which: Which,
    ) -> anyhow::Result<Vec<PassageRow>> {
        let sql = format!(
            "SELECT gw, at_ms, lane, who, subject_id, household, allowed, reason, inbound, mode
             FROM passages WHERE community = $1 AND at_ms >= $2 AND at_ms < $3
               AND NOT not_actuated AND {} ORDER BY at_ms, gw, seq",
            which.condition()
        );
        let rows = self.query(&sql, &[&community, &from_ms, &to_ms]).await?;
        Ok(rows
            .iter()
            .map(|r| PassageRow {
                gw: r.get(0),
                at_ms: r.get(1),
                lane: r.get(2),
                who: r.get(3),
                subject_id: r.get(4),
                household: r.get(5),
                allowed: r.get(6),
                reason: r.get(7),
                inbound: r.get(8),
                mode: r.get(9),
            })
            .collect())
    }

    pub async fn alarms(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        kinds: Vec<String>,
    ) -> anyhow::Result<Vec<AlarmListRow>> {
        let rows = self
            .query(
                "SELECT gw, at_ms, lane, device, kind, detail, subject_id FROM alarms
                 WHERE community = $1 AND at_ms >= $2 AND at_ms < $3 AND kind = ANY($4)
                 ORDER BY at_ms, gw, seq",
                &[&community, &from_ms, &to_ms, &kinds],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AlarmListRow {
                gw: r.get(0),
                at_ms: r.get(1),
                lane: r.get(2),
                device: r.get(3),
                kind: r.get(4),
                detail: r.get(5),
                subject_id: r.get(6),
            })
            .collect())
    }

    pub async fn gateways(&self, community: &str) -> anyhow::Result<Vec<GatewayRow>> {
        let rows = self
            .query(
                "SELECT s.gw, s.online, s.outbox_depth, s.mode, s.received_ms
                 FROM gateway_status s JOIN gateways g ON g.gw = s.gw
                 WHERE g.community = $1 ORDER BY s.gw",
                &[&community],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| GatewayRow {
                gw: r.get(0),
                online: r.get(1),
                outbox_depth: r.get(2),
                mode: r.get(3),
                received_ms: r.get(4),
            })
            .collect())
    }

    pub async fn status(&self, gw: &str) -> anyhow::Result<Option<StatusRow>> {
        let rows = self
            .query(
                "SELECT gw, boot, seq, online, outbox_depth FROM gateway_status WHERE gw = $1",
                &[&gw],
            )
            .await?;
        Ok(rows.first().map(|r| StatusRow {
            gw: r.get(0),
            boot: r.get(1),
            seq: r.get(2),
            online: r.get(3),
            outbox_depth: r.get(4),
        }))
    }

    pub async fn count(&self, table: Table) -> anyhow::Result<i64> {
        let rows = self
            .query(&format!("SELECT count(*) FROM {}", table.name()), &[])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    pub async fn expire(&self, retention: Retention, now_ms: i64) -> anyhow::Result<u64> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        let mut n = 0;
        if retention.passages_days > 0 {
            let before = now_ms - i64::from(retention.passages_days) * DAY_MS;
            // Whole days go with their partition; the default partition row by row.
            let cutoff = self
                .tz
                .timestamp_millis_opt(before)
                .single()
                .map(|t| t.date_naive().format("%Y%m%d").to_string())
                .unwrap_or_default();
            let parts = c
                .query(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     WHERE p.relname = 'passages' AND c.relname ~ '^passages_[0-9]{8}$'",
                    &[],
                )
                .await?;
            for r in parts {
                let name: String = r.get(0);
                if name["passages_".len()..] < *cutoff {
                    c.batch_execute(&format!("DROP TABLE {name}")).await?;
                    self.partitions
                        .lock()
                        .map(|mut p| p.remove(&name["passages_".len()..]))
                        .ok();
                    n += 1;
                }
            }
            n += c
                .execute("DELETE FROM passages_default WHERE at_ms < $1", &[&before])
                .await?;
            n += c
                .execute("DELETE FROM alarms WHERE at_ms < $1", &[&before])
                .await?;
        }
        if retention.temperatures_days > 0 {
            let before = now_ms - i64::from(retention.temperatures_days) * DAY_MS;
            n += c
                .execute("DELETE FROM temperatures WHERE at_ms < $1", &[&before])
                .await?;
        }
        Ok(n)
    }

    pub async fn forget_temperatures(
        &self,
        subject: Option<&str>,
        before_ms: Option<i64>,
    ) -> anyhow::Result<u64> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        let mut n = 0;
        if let Some(s) = subject {
            n += c
                .execute("DELETE FROM temperatures WHERE subject_id = $1", &[&s])
                .await?;
        }
        if let Some(b) = before_ms {
            n += c
                .execute("DELETE FROM temperatures WHERE at_ms < $1", &[&b])
                .await?;
        }
        Ok(n)
    }
}

async fn migrate(c: &mut Client) -> anyhow::Result<()> {
    let tx = c.transaction().await?;
    // One instance migrates at a time; the others wait here.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL);
         LOCK TABLE schema_migrations IN EXCLUSIVE MODE",
    )
    .await?;
    let have: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    for m in MIGRATIONS.iter().filter(|m| m.version > have) {
        tx.batch_execute(m.up)
            .await
            .with_context(|| format!("migration {}", m.name))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A row's table and key, for the insert order.
fn row_key(r: &Row) -> (u8, &str, i64) {
    match r {
        Row::Passage(p) => (0, &p.gw.path, p.seq),
        Row::Temperature(t) => (1, &t.gw.path, t.seq),
        Row::Alarm(a) => (2, &a.gw.path, a.seq),
        Row::Stats(s) => (3, &s.gw.path, s.stats_seq),
        Row::Status(s) => (4, &s.gw.path, s.seq),
        Row::Twin(t) => (5, &t.gw.path, t.gateway_time_ms),
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

async fn apply(c: &mut Client, batch: &Batch, tz: Tz) -> anyhow::Result<Applied> {
    let received_ms = batch.received_ms;
    // text: gw, community, lane, device, who, subject_id, household, reason, mode;
    // int: seq, at_ms, received_ms; bool: vehicle, allowed, inbound, not_actuated.
    let mut passages = Cols::new(9, 3, 4, 0);
    // text: gw, community, lane, device, subject_id, household; int: seq, at_ms;
    // bool: fever, device_disagrees, lone; float: celsius, threshold.
    let mut temps = Cols::new(6, 2, 3, 2);
    // text: gw, community, lane, device, kind, detail, subject_id; int: seq, at_ms.
    let mut alarms = Cols::new(7, 2, 0, 0);
    // text: gw, lane, community, street, district, denials; int: stats_seq, start_ms, end_ms,
    // entries, exits, vehicles_in, vehicles_out, fevers, inside.
    let mut stats = Cols::new(6, 9, 0, 0);
    let mut gateways: BTreeSet<(String, String, String, String)> = BTreeSet::new();
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
            Row::Status(_) | Row::Twin(_) => {}
        }
        let gw = match row {
            Row::Passage(p) => &p.gw,
            Row::Temperature(t) => &t.gw,
            Row::Alarm(a) => &a.gw,
            Row::Stats(s) => &s.gw,
            Row::Status(s) => &s.gw,
            Row::Twin(t) => &t.gw,
        };
        if !gateways.iter().any(|g| g.0 == gw.path) {
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
                    at_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::text[], $7::text[], $8::bigint[], $9::bigint[])
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
                        outbox_depth, gateway_time_ms, received_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (gw) DO UPDATE SET boot = excluded.boot, seq = excluded.seq,
                        online = excluded.online, mode = excluded.mode,
                        version = excluded.version, outbox_depth = excluded.outbox_depth,
                        gateway_time_ms = excluded.gateway_time_ms,
                        received_ms = excluded.received_ms
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
