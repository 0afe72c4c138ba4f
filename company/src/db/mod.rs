//! Where the records go: PostgreSQL for a company or a street office, SQLite (one file, WAL) as
//! the embedded default for a handful of gates and the demo. Both take the same batches and
//! answer the same queries; `tests` in the company crate runs one conformance suite on both.
//!
//! Clients: `tokio-postgres` (async, pipelined, arrays for multi-row upserts in one round trip,
//! no macros or compile-time database) and `rusqlite` (SQLite compiled in, synchronous: it runs
//! on a blocking thread). One SQL dialect each, written out, instead of a query builder.
pub mod generic;
pub mod postgres;
pub mod sqlite;

use crate::ingest::decode::Row;
use crate::ingest::rollup::{Counts, COLUMNS};
use chrono_tz::Tz;

/// The migrations, in order: (version, up, down). Applied at start; `migrate --down` rolls the
/// last one back.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

/// One commit's worth: every row of the messages taken since the last commit, and what could not
/// be decoded.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub quarantine: Vec<Quarantined>,
    /// When the batch was received (what makes a record late: its day had ended).
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub topic: String,
    pub error: String,
    pub payload: Vec<u8>,
}

impl Quarantined {
    /// What makes a redelivered message the same one: its bytes' SHA-256, in hex.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        gatehouse_contract::hex::to_hex(&sha2::Sha256::digest(&self.payload))
    }
}

/// What a commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Records stored for the first time (passages, temperatures, alarms, stats rows).
    pub stored: u64,
    /// Records already stored (a redelivery): nothing changed.
    pub duplicates: u64,
    pub quarantined: u64,
}

/// Which communities a form covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Community(String),
    Street(String),
    District(String),
}

impl Scope {
    /// The rollups' column this scope filters on, and its value.
    pub fn column(&self) -> (&'static str, &str) {
        match self {
            Scope::Community(c) => ("community", c),
            Scope::Street(s) => ("street", s),
            Scope::District(d) => ("district", d),
        }
    }
}

/// One lane's hour, as the forms read it.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub gw: String,
    pub community: String,
    pub street: String,
    pub lane: String,
    pub hour_ms: i64,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DenialRow {
    pub gw: String,
    pub community: String,
    pub lane: String,
    pub hour_ms: i64,
    pub reason: String,
    pub n: i64,
}

/// A gateway's statistics for one lane and period.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    pub gw: String,
    pub community: String,
    pub street: String,
    pub lane: String,
    pub start_ms: i64,
    pub entries: i64,
    pub exits: i64,
    pub vehicles_in: i64,
    pub vehicles_out: i64,
    pub fevers: i64,
    pub denials: i64,
}

/// A temperature at or above its lane's threshold, or one the device's own flag disagreed on.
#[derive(Debug, Clone, PartialEq)]
pub struct FeverRow {
    pub gw: String,
    pub at_ms: i64,
    pub lane: String,
    pub device: String,
    pub subject_id: String,
    pub household: String,
    pub celsius: f64,
    pub threshold: Option<f64>,
    pub fever: bool,
    pub device_disagrees: bool,
}

/// A passage as the day's lists read it (visitors, vehicles, lockdown outings).
#[derive(Debug, Clone, PartialEq)]
pub struct PassageRow {
    pub gw: String,
    pub at_ms: i64,
    pub lane: String,
    pub who: String,
    pub subject_id: String,
    pub household: String,
    pub allowed: bool,
    pub reason: String,
    pub inbound: bool,
    pub mode: String,
}

/// Which passages a list reads (never those not acted on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Visitors let in.
    Visitors,
    /// Vehicles, let through or not.
    Vehicles,
    /// Residents' passages (and denials) in lockdown mode.
    Lockdown,
}

impl Which {
    /// The SQL condition, the same in both dialects.
    fn condition(self) -> &'static str {
        match self {
            Which::Visitors => "who = 'visitor' AND allowed = TRUE AND inbound = TRUE",
            Which::Vehicles => "vehicle = TRUE",
            Which::Lockdown => "who = 'resident' AND mode = 'lockdown'",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmListRow {
    pub gw: String,
    pub at_ms: i64,
    pub lane: String,
    pub device: String,
    pub kind: String,
    pub detail: String,
    pub subject_id: String,
}

/// A gateway's newest status, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    pub gw: String,
    pub online: bool,
    pub outbox_depth: i64,
    pub mode: String,
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub gw: String,
    pub boot: i64,
    pub seq: i64,
    pub online: bool,
    pub outbox_depth: i64,
}

/// An order seen issued (`gw`: where it was sent — a gateway, or a place's `_all`): kept once
/// — a later copy under the same id never rewrites it; if its result came first, the order
/// fills in that row.
pub const ORDER_ISSUED_SQL: &str =
    "INSERT INTO orders (gw, command_id, kind, issued_ms, expires_ms,
        applied, refused, detail, result_ms)
     VALUES ($1, $2, $3, $4, $5, NULL, '', '', NULL)
     ON CONFLICT (gw, command_id) DO UPDATE SET kind = excluded.kind,
        issued_ms = excluded.issued_ms, expires_ms = excluded.expires_ms
     WHERE orders.kind = ''";
/// An order's result, from the gateway that answered (`gw`): each gateway answers an id once.
pub const ORDER_RESULT_SQL: &str =
    "INSERT INTO orders (gw, command_id, kind, issued_ms, expires_ms,
        applied, refused, detail, result_ms)
     VALUES ($1, $2, '', 0, 0, $3, $4, $5, $6)
     ON CONFLICT (gw, command_id) DO UPDATE SET applied = excluded.applied,
        refused = excluded.refused, detail = excluded.detail, result_ms = excluded.result_ms";

/// An alarm acknowledged at the gate: the first acknowledgement, wherever made, stands.
pub const GATE_ACK_SQL: &str = "INSERT INTO alarm_acks (gw, seq, at_ms, by_user, acked_ms, source)
     VALUES ($1, $2, $3, $4, $5, 'gateway') ON CONFLICT (gw, seq, at_ms) DO NOTHING";

/// The database, either kind.
pub enum Db {
    Sqlite(sqlite::Sqlite),
    Postgres(Box<postgres::Postgres>),
}

/// How long records are kept, in days (0: for ever). Passages are personal data, temperatures
/// health data: both kept no longer than needed; rollups and stats (the forms) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub passages_days: u32,
    pub temperatures_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            passages_days: 180,
            temperatures_days: 14,
        }
    }
}

impl Db {
    /// `sqlite:PATH` (or a path ending in `.db`/`.sqlite`) or `postgres://…`; migrations applied.
    pub async fn open(url: &str, tz: Tz) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Postgres(Box::new(
                postgres::Postgres::open(url, tz).await?,
            )))
        } else {
            let path = url.strip_prefix("sqlite:").unwrap_or(url);
            Ok(Db::Sqlite(sqlite::Sqlite::open(path.as_ref(), tz).await?))
        }
    }

    pub async fn apply(&self, batch: &Batch) -> anyhow::Result<Applied> {
        match self {
            Db::Sqlite(d) => d.apply(batch).await,
            Db::Postgres(d) => d.apply(batch).await,
        }
    }

    /// Whether the database answers at all.
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.count(Table::Twins).await.map(|_| ())
    }

    /// Rolls the newest migration back; returns its version (none: nothing to roll back).
    pub async fn rollback_one(&self) -> anyhow::Result<Option<i64>> {
        match self {
            Db::Sqlite(d) => d.rollback_one().await,
            Db::Postgres(d) => d.rollback_one().await,
        }
    }

    pub async fn rollups(
        &self,
        scope: &Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<RollupRow>> {
        match self {
            Db::Sqlite(d) => d.rollups(scope, from_ms, to_ms).await,
            Db::Postgres(d) => d.rollups(scope, from_ms, to_ms).await,
        }
    }

    pub async fn denials(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<DenialRow>> {
        match self {
            Db::Sqlite(d) => d.denials(community, from_ms, to_ms).await,
            Db::Postgres(d) => d.denials(community, from_ms, to_ms).await,
        }
    }

    pub async fn stats(
        &self,
        scope: &Scope,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<StatsRow>> {
        match self {
            Db::Sqlite(d) => d.stats(scope, from_ms, to_ms).await,
            Db::Postgres(d) => d.stats(scope, from_ms, to_ms).await,
        }
    }

    pub async fn fevers(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<FeverRow>> {
        match self {
            Db::Sqlite(d) => d.fevers(community, from_ms, to_ms).await,
            Db::Postgres(d) => d.fevers(community, from_ms, to_ms).await,
        }
    }

    /// A community's passages of one kind, in time order (not-acted-on ones left out).
    pub async fn passages(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        which: Which,
    ) -> anyhow::Result<Vec<PassageRow>> {
        match self {
            Db::Sqlite(d) => d.passages(community, from_ms, to_ms, which).await,
            Db::Postgres(d) => d.passages(community, from_ms, to_ms, which).await,
        }
    }

    /// A community's alarms of the given kinds (`ALARM_KIND_…`), in time order.
    pub async fn alarms(
        &self,
        community: &str,
        from_ms: i64,
        to_ms: i64,
        kinds: &[&str],
    ) -> anyhow::Result<Vec<AlarmListRow>> {
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        match self {
            Db::Sqlite(d) => d.alarms(community, from_ms, to_ms, kinds).await,
            Db::Postgres(d) => d.alarms(community, from_ms, to_ms, kinds).await,
        }
    }

    /// The newest status of each of a community's gateways.
    pub async fn gateways(&self, community: &str) -> anyhow::Result<Vec<GatewayRow>> {
        match self {
            Db::Sqlite(d) => d.gateways(community).await,
            Db::Postgres(d) => d.gateways(community).await,
        }
    }

    pub async fn status(&self, gw: &str) -> anyhow::Result<Option<StatusRow>> {
        match self {
            Db::Sqlite(d) => d.status(gw).await,
            Db::Postgres(d) => d.status(gw).await,
        }
    }

    /// Rows in a table (the tests' and the benchmark's count).
    pub async fn count(&self, table: Table) -> anyhow::Result<i64> {
        match self {
            Db::Sqlite(d) => d.count(table).await,
            Db::Postgres(d) => d.count(table).await,
        }
    }

    /// Deletes what is past its retention, as of `now_ms`; returns rows (or, for PostgreSQL's
    /// dropped day partitions, partitions) removed.
    pub async fn expire(&self, retention: Retention, now_ms: i64) -> anyhow::Result<u64> {
        match self {
            Db::Sqlite(d) => d.expire(retention, now_ms).await,
            Db::Postgres(d) => d.expire(retention, now_ms).await,
        }
    }

    /// Deletes temperatures: all of one subject (`subject`), or all before `before_ms`.
    pub async fn forget_temperatures(
        &self,
        subject: Option<&str>,
        before_ms: Option<i64>,
    ) -> anyhow::Result<u64> {
        match self {
            Db::Sqlite(d) => d.forget_temperatures(subject, before_ms).await,
            Db::Postgres(d) => d.forget_temperatures(subject, before_ms).await,
        }
    }
}

/// Whether the database refused a batch for its data — a constraint, a value out of range or of
/// the wrong type — rather than being unable to take any (down, read-only, a deadlock, a
/// timeout). Only such a refusal sends a message to the quarantine.
pub fn refused_for_data(e: &anyhow::Error) -> bool {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
        return pg
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
    }
    match e.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            rusqlite::ErrorCode::ConstraintViolation
                | rusqlite::ErrorCode::TooBig
                | rusqlite::ErrorCode::TypeMismatch
        ),
        Some(rusqlite::Error::ToSqlConversionFailure(_)) => true,
        _ => false,
    }
}

/// The tables a count may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Passages,
    Temperatures,
    Alarms,
    Stats,
    Quarantine,
    Twins,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Passages => "passages",
            Table::Temperatures => "temperatures",
            Table::Alarms => "alarms",
            Table::Stats => "stats",
            Table::Quarantine => "quarantine",
            Table::Twins => "twins",
        }
    }
}

/// The rollup upsert's column lists, from [`COLUMNS`]: `a, b, …` and `a = rollups.a + excluded.a, …`.
fn rollup_sql() -> (String, String) {
    let names = COLUMNS.join(", ");
    let sums = COLUMNS
        .iter()
        .map(|c| format!("{c} = rollups.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    (names, sums)
}

/// The total of a stats row's denials (`{"fever":2,…}`).
fn denial_total(json: &str) -> i64 {
    serde_json::from_str::<std::collections::BTreeMap<String, i64>>(json)
        .map(|m| m.values().sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rollup_column_is_in_both_schemas() {
        for m in sqlite::MIGRATIONS.iter().chain(postgres::MIGRATIONS) {
            if m.version == 1 {
                for c in COLUMNS {
                    assert!(m.up.contains(&format!("{c} ")), "{c} in {}", m.name);
                }
            }
        }
    }
}
