//! PostgreSQL: one client, reconnected when the server went away. Each batch is one transaction
//! of a few statements whatever its size — every table's rows go in as arrays (`UNNEST`), the new
//! ones come back (`RETURNING`), and the rollups of the new ones are added in one upsert, its
//! keys in order (two instances adding to the same hour never deadlock). Passages are
//! partitioned by local day; a day's partition is made before its first record.
use super::{
    denial_total, AlarmListRow, Applied, Batch, DenialRow, FeverRow, GatewayRow, Migration,
    PassageRow, Retention, RollupRow, Scope, StatsRow, StatusRow, Table, Which,
};
use crate::ingest::decode::Row;
use crate::ingest::rollup::COLUMNS;
use anyhow::Context;
use chrono::{Days, NaiveDate, TimeZone};
use chrono_tz::Tz;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

mod write;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_records",
        up: include_str!("../../../migrations/postgres/0001_records.up.sql"),
        down: include_str!("../../../migrations/postgres/0001_records.down.sql"),
    },
    Migration {
        version: 2,
        name: "0002_web",
        up: include_str!("../../../migrations/postgres/0002_web.up.sql"),
        down: include_str!("../../../migrations/postgres/0002_web.down.sql"),
    },
];

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
                .tcp_user_timeout(Duration::from_secs(30))
                // The migrations' `IF NOT EXISTS` notices are not news at every start.
                .options("-c client_min_messages=warning");
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

    /// The client, held (the queries written once for both databases: `db::generic`).
    pub(in crate::db) async fn client(
        &self,
    ) -> anyhow::Result<tokio::sync::MappedMutexGuard<'_, Client>> {
        let mut guard = self.client.lock().await;
        self.connected(&mut guard).await?;
        tokio::sync::MutexGuard::try_map(guard, |c| c.as_mut())
            .map_err(|_| anyhow::anyhow!("no PostgreSQL client"))
    }

    pub async fn apply(&self, batch: &Batch) -> anyhow::Result<Applied> {
        let mut guard = self.client.lock().await;
        let c = self.connected(&mut guard).await?;
        let r = tokio::time::timeout(APPLY_TIMEOUT, async {
            self.make_partitions(c, batch).await?;
            write::apply(c, batch, self.tz).await
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
