//! The web pages' queries, each written once for both databases (`db::generic`).
use super::who::{Role, Who};
use crate::db::generic::Row;
use crate::db::Db;

/// The alarms someone must acknowledge (the rest are information: a device back online, a fire
/// input cleared). The queries use `ack_kinds_sql!`, kept equal to this by a test.
#[cfg(test)]
pub(crate) const ACK_KINDS: &[&str] = &[
    "ALARM_KIND_FEVER",
    "ALARM_KIND_TAMPER",
    "ALARM_KIND_FIRE_MODE",
    "ALARM_KIND_FIRE_INPUT_UNKNOWN",
    "ALARM_KIND_DEVICE_OFFLINE",
    "ALARM_KIND_DEVICE_MISBEHAVING",
    "ALARM_KIND_STORAGE_LOSS",
    "ALARM_KIND_OUTBOX_EVICTED",
    "ALARM_KIND_COMMAND_UNCERTAIN",
    "ALARM_KIND_COMMAND_OUTCOME_UNCERTAIN",
    "ALARM_KIND_DEVICE_CLOCK",
];

/// `ACK_KINDS` as SQL, for the queries (kept equal to it by a test).
macro_rules! ack_kinds_sql {
    () => {
        "('ALARM_KIND_FEVER', 'ALARM_KIND_TAMPER', 'ALARM_KIND_FIRE_MODE',
    'ALARM_KIND_FIRE_INPUT_UNKNOWN', 'ALARM_KIND_DEVICE_OFFLINE', 'ALARM_KIND_DEVICE_MISBEHAVING',
    'ALARM_KIND_STORAGE_LOSS', 'ALARM_KIND_OUTBOX_EVICTED', 'ALARM_KIND_COMMAND_UNCERTAIN',
    'ALARM_KIND_COMMAND_OUTCOME_UNCERTAIN', 'ALARM_KIND_DEVICE_CLOCK')"
    };
}
#[cfg(test)]
pub(crate) const ACK_KINDS_SQL: &str = ack_kinds_sql!();

/// How far back the alarm pages look (an alarm older than this, still open, is in the
/// community's health form).
pub const ALARM_DAYS: i64 = 30;

pub struct User {
    pub name: String,
    pub role: Role,
    pub scope: String,
    pub hash: String,
    pub disabled: bool,
}

fn user_of(r: &Row) -> Option<User> {
    Some(User {
        name: r.text(0),
        role: Role::parse(&r.text(1))?,
        scope: r.text(2),
        hash: r.text(3),
        disabled: r.bool(4),
    })
}

pub async fn user(db: &Db, name: &str) -> anyhow::Result<Option<User>> {
    let rows = db
        .query(
            "SELECT name, role, scope, hash, disabled FROM users WHERE name = $1",
            vec![name.into()],
        )
        .await?;
    Ok(rows.first().and_then(user_of))
}

pub async fn users(db: &Db) -> anyhow::Result<Vec<User>> {
    let rows = db
        .query(
            "SELECT name, role, scope, hash, disabled FROM users ORDER BY name",
            vec![],
        )
        .await?;
    Ok(rows.iter().filter_map(user_of).collect())
}

pub async fn add_user(
    db: &Db,
    name: &str,
    role: Role,
    scope: &str,
    hash: &str,
    now: i64,
) -> anyhow::Result<bool> {
    Ok(db
        .execute(
            "INSERT INTO users (name, role, scope, hash, disabled, created_ms)
             VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT (name) DO NOTHING",
            vec![
                name.into(),
                role.as_str().into(),
                scope.into(),
                hash.into(),
                now.into(),
            ],
        )
        .await?
        == 1)
}

/// Disables (or enables) a user; a disabled user's sessions end.
pub async fn set_disabled(db: &Db, name: &str, disabled: bool) -> anyhow::Result<bool> {
    let n = db
        .execute(
            "UPDATE users SET disabled = $1 WHERE name = $2",
            vec![disabled.into(), name.into()],
        )
        .await?;
    if disabled {
        close_sessions_of(db, name).await?;
    }
    Ok(n == 1)
}

/// A new password; every session of the user ends.
pub async fn set_hash(db: &Db, name: &str, hash: &str) -> anyhow::Result<bool> {
    let n = db
        .execute(
            "UPDATE users SET hash = $1 WHERE name = $2",
            vec![hash.into(), name.into()],
        )
        .await?;
    close_sessions_of(db, name).await?;
    Ok(n == 1)
}

pub async fn open_session(
    db: &Db,
    token_hash: &str,
    user: &str,
    csrf: &str,
    now: i64,
    expires: i64,
) -> anyhow::Result<()> {
    // Expired sessions go as new ones come.
    db.execute(
        "DELETE FROM web_sessions WHERE expires_ms < $1",
        vec![now.into()],
    )
    .await?;
    db.execute(
        "INSERT INTO web_sessions (token_hash, user_name, csrf, created_ms, expires_ms)
         VALUES ($1, $2, $3, $4, $5)",
        vec![
            token_hash.into(),
            user.into(),
            csrf.into(),
            now.into(),
            expires.into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn close_session(db: &Db, token_hash: &str) -> anyhow::Result<()> {
    db.execute(
        "DELETE FROM web_sessions WHERE token_hash = $1",
        vec![token_hash.into()],
    )
    .await?;
    Ok(())
}

async fn close_sessions_of(db: &Db, user: &str) -> anyhow::Result<()> {
    db.execute(
        "DELETE FROM web_sessions WHERE user_name = $1",
        vec![user.into()],
    )
    .await?;
    Ok(())
}

/// The session's person, if the session is open and its user enabled.
pub async fn session(db: &Db, token_hash: &str, now: i64) -> anyhow::Result<Option<Who>> {
    let rows = db
        .query(
            "SELECT u.name, u.role, u.scope, s.csrf FROM web_sessions s
             JOIN users u ON u.name = s.user_name
             WHERE s.token_hash = $1 AND s.expires_ms > $2 AND u.disabled = FALSE",
            vec![token_hash.into(), now.into()],
        )
        .await?;
    Ok(rows.first().and_then(|r| {
        Some(Who {
            name: r.text(0),
            role: Role::parse(&r.text(1))?,
            scope: r.text(2),
            csrf: r.text(3),
            address: String::new(),
        })
    }))
}

pub async fn audit(
    db: &Db,
    user: &str,
    address: &str,
    action: &str,
    detail: &str,
) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO audit (at_ms, user_name, address, action, detail) VALUES ($1, $2, $3, $4, $5)",
        vec![
            chrono::Utc::now().timestamp_millis().into(),
            user.into(),
            address.into(),
            action.into(),
            detail.into(),
        ],
    )
    .await?;
    Ok(())
}

/// The audit trail, newest first (the tests and `user audit`).
pub async fn audit_trail(
    db: &Db,
    limit: i64,
) -> anyhow::Result<Vec<(i64, String, String, String)>> {
    let rows = db
        .query(
            "SELECT at_ms, user_name, action, detail FROM audit ORDER BY at_ms DESC LIMIT $1",
            vec![limit.into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.int(0), r.text(1), r.text(2), r.text(3)))
        .collect())
}

/// The street and district a community's gateways are in — none unless all of them agree (a
/// gateway publishing under a wrong path never opens a community to another street).
pub async fn community_parents(
    db: &Db,
    community: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let rows = db
        .query(
            "SELECT DISTINCT street, district FROM gateways WHERE community = $1 LIMIT 2",
            vec![community.into()],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some((r.text(0), r.text(1))),
        _ => None,
    })
}

/// The district a street's gateways are in, if they all agree.
pub async fn street_district(db: &Db, street: &str) -> anyhow::Result<Option<String>> {
    let rows = db
        .query(
            "SELECT DISTINCT district FROM gateways WHERE street = $1 LIMIT 2",
            vec![street.into()],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some(r.text(0)),
        _ => None,
    })
}

/// What the comparison table shows, summed over a scope and span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub entries: i64,
    pub exits: i64,
    pub vehicles: i64,
    pub screened: i64,
    pub fevers: i64,
    pub denied: i64,
    /// Communities with records in the span (the street's average divides by it).
    pub communities: i64,
}

/// A community's, a street's or a district's totals over `[from, to)`.
pub async fn totals(
    db: &Db,
    level: Role,
    code: &str,
    (from, to): (i64, i64),
) -> anyhow::Result<Totals> {
    let sql = match level {
        Role::Street => TOTALS_STREET,
        Role::District => TOTALS_DISTRICT,
        _ => TOTALS_COMMUNITY,
    };
    let rows = db
        .query(sql, vec![code.into(), from.into(), to.into()])
        .await?;
    Ok(rows.first().map_or_else(Totals::default, |r| Totals {
        entries: r.int(0),
        exits: r.int(1),
        vehicles: r.int(2),
        screened: r.int(3),
        fevers: r.int(4),
        denied: r.int(5),
        communities: r.int(6),
    }))
}

macro_rules! totals_sql {
    ($col:literal) => {
        concat!(
            // PostgreSQL sums BIGINTs as NUMERIC: cast back.
            "SELECT CAST(coalesce(sum(residents_in + visitors_in + others_in), 0) AS BIGINT),
                CAST(coalesce(sum(residents_out + visitors_out + others_out), 0) AS BIGINT),
                CAST(coalesce(sum(vehicles_in + vehicles_out), 0) AS BIGINT),
                CAST(coalesce(sum(screened), 0) AS BIGINT), CAST(coalesce(sum(fevers), 0) AS BIGINT),
                CAST(coalesce(sum(denied), 0) AS BIGINT), count(DISTINCT community)
             FROM rollups WHERE ",
            $col,
            " = $1 AND hour_ms >= $2 AND hour_ms < $3"
        )
    };
}
const TOTALS_COMMUNITY: &str = totals_sql!("community");
const TOTALS_STREET: &str = totals_sql!("street");
const TOTALS_DISTRICT: &str = totals_sql!("district");

/// Denials by reason over `[from, to)`, a community's or a street's.
pub async fn denials_by_reason(
    db: &Db,
    level: Role,
    code: &str,
    (from, to): (i64, i64),
) -> anyhow::Result<Vec<(String, i64)>> {
    let sql = if level == Role::Street {
        "SELECT d.reason, CAST(sum(d.n) AS BIGINT) FROM rollup_denials d
         JOIN gateways g ON g.gw = d.gw
         WHERE g.street = $1 AND d.hour_ms >= $2 AND d.hour_ms < $3
         GROUP BY d.reason ORDER BY d.reason"
    } else {
        "SELECT reason, CAST(sum(n) AS BIGINT) FROM rollup_denials
         WHERE community = $1 AND hour_ms >= $2 AND hour_ms < $3
         GROUP BY reason ORDER BY reason"
    };
    let rows = db
        .query(sql, vec![code.into(), from.into(), to.into()])
        .await?;
    Ok(rows.iter().map(|r| (r.text(0), r.int(1))).collect())
}

/// A community's people in and fevers per hour over `[from, to)`.
pub async fn hourly(
    db: &Db,
    community: &str,
    (from, to): (i64, i64),
) -> anyhow::Result<Vec<(i64, i64, i64)>> {
    let rows = db
        .query(
            "SELECT hour_ms, CAST(sum(residents_in + visitors_in + others_in) AS BIGINT),
                CAST(sum(fevers) AS BIGINT)
             FROM rollups WHERE community = $1 AND hour_ms >= $2 AND hour_ms < $3
             GROUP BY hour_ms ORDER BY hour_ms",
            vec![community.into(), from.into(), to.into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.int(0), r.int(1), r.int(2)))
        .collect())
}

/// A gateway as the operator's page shows it.
#[derive(Debug, Clone)]
pub struct FleetRow {
    pub gw: String,
    pub community: String,
    pub street: String,
    pub status: Option<GatewayStatus>,
    pub devices_offline: i64,
    pub open_alarms: i64,
}

#[derive(Debug, Clone)]
pub struct GatewayStatus {
    pub online: bool,
    pub mode: String,
    pub outbox_depth: i64,
    pub registry_version: i64,
    pub received_ms: i64,
    pub period_ms: i64,
    pub clock_unsynced: bool,
    pub store_degraded: bool,
}

/// The status period assumed for a gateway that does not say its own.
pub const DEFAULT_PERIOD_MS: i64 = 60_000;

impl GatewayStatus {
    /// Older than its period (and half again, for the network): no longer news of the gateway.
    pub fn stale(&self, now: i64) -> bool {
        let period = if self.period_ms > 0 {
            self.period_ms
        } else {
            DEFAULT_PERIOD_MS
        };
        self.online && now - self.received_ms > period + period / 2
    }
}

pub async fn fleet(db: &Db, since: i64) -> anyhow::Result<Vec<FleetRow>> {
    const SQL: &str = concat!(
        "SELECT g.gw, g.community, g.street, s.online, s.mode, s.outbox_depth,
            s.registry_version, s.received_ms, s.period_ms, s.clock_unsynced, s.store_degraded,
            (SELECT count(*) FROM twins t WHERE t.gw = g.gw AND t.online = FALSE),
            (SELECT count(*) FROM alarms a WHERE a.gw = g.gw AND a.received_ms >= $1
                AND a.kind IN ",
        ack_kinds_sql!(),
        " AND NOT EXISTS (SELECT 1 FROM alarm_acks k
                    WHERE k.gw = a.gw AND k.seq = a.seq AND k.at_ms = a.at_ms))
         FROM gateways g LEFT JOIN gateway_status s ON s.gw = g.gw
         ORDER BY g.district, g.street, g.community, g.gw"
    );
    let rows = db.query(SQL, vec![since.into()]).await?;
    Ok(rows
        .iter()
        .map(|r| FleetRow {
            gw: r.text(0),
            community: r.text(1),
            street: r.text(2),
            status: r.opt_bool(3).map(|online| GatewayStatus {
                online,
                mode: r.text(4),
                outbox_depth: r.int(5),
                registry_version: r.int(6),
                received_ms: r.int(7),
                period_ms: r.int(8),
                clock_unsynced: r.bool(9),
                store_degraded: r.bool(10),
            }),
            devices_offline: r.int(11),
            open_alarms: r.int(12),
        })
        .collect())
}

/// An alarm on the operator's list, with its acknowledgement if any.
#[derive(Debug, Clone)]
pub struct AlarmItem {
    pub gw: String,
    pub seq: i64,
    pub at_ms: i64,
    pub community: String,
    pub lane: String,
    pub device: String,
    pub kind: String,
    pub detail: String,
    pub acked: Option<(String, i64, String)>,
}

/// The newest alarms that need acknowledging, open ones first.
pub async fn alarms(db: &Db, since: i64, limit: i64) -> anyhow::Result<Vec<AlarmItem>> {
    const SQL: &str = concat!(
        "SELECT a.gw, a.seq, a.at_ms, a.community, a.lane, a.device, a.kind, a.detail,
            k.by_user, k.acked_ms, k.source
         FROM alarms a LEFT JOIN alarm_acks k
            ON k.gw = a.gw AND k.seq = a.seq AND k.at_ms = a.at_ms
         WHERE a.received_ms >= $1 AND a.kind IN ",
        ack_kinds_sql!(),
        " ORDER BY (k.by_user IS NULL) DESC, a.at_ms DESC LIMIT $2"
    );
    let rows = db.query(SQL, vec![since.into(), limit.into()]).await?;
    Ok(rows
        .iter()
        .map(|r| AlarmItem {
            gw: r.text(0),
            seq: r.int(1),
            at_ms: r.int(2),
            community: r.text(3),
            lane: r.text(4),
            device: r.text(5),
            kind: r.text(6),
            detail: r.text(7),
            acked: r.opt_int(9).map(|at| (r.text(8), at, r.text(10))),
        })
        .collect())
}

/// Records an acknowledgement (the first one stands); false when the alarm does not exist or
/// was acknowledged already.
pub async fn acknowledge(
    db: &Db,
    (gw, seq, at_ms): (&str, i64, i64),
    by: &str,
    source: &str,
    now: i64,
) -> anyhow::Result<bool> {
    let n = db
        .execute(
            "INSERT INTO alarm_acks (gw, seq, at_ms, by_user, acked_ms, source)
             SELECT gw, seq, at_ms, $4, $5, $6 FROM alarms
             WHERE gw = $1 AND seq = $2 AND at_ms = $3
             ON CONFLICT (gw, seq, at_ms) DO NOTHING",
            vec![
                gw.into(),
                seq.into(),
                at_ms.into(),
                by.into(),
                now.into(),
                source.into(),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// An order and what became of it: one row per order id, over every gateway that answered (an
/// order for a whole street is answered by each of its gateways).
#[derive(Debug, Clone)]
pub struct OrderItem {
    pub command_id: String,
    /// Where it was sent (a gateway, or a place's `_all`); the answering gateway when the
    /// order itself was not seen.
    pub target: String,
    pub kind: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub applied: i64,
    pub refused: i64,
    /// A refusal's reason and detail, if any.
    pub why: String,
    pub detail: String,
}

pub async fn orders(db: &Db, limit: i64) -> anyhow::Result<Vec<OrderItem>> {
    let rows = db
        .query(
            "SELECT command_id, coalesce(max(CASE WHEN kind <> '' THEN gw END), max(gw)),
                max(kind), max(issued_ms), max(expires_ms),
                CAST(sum(CASE WHEN applied = TRUE THEN 1 ELSE 0 END) AS BIGINT),
                CAST(sum(CASE WHEN applied = FALSE THEN 1 ELSE 0 END) AS BIGINT),
                max(refused), max(detail)
             FROM orders GROUP BY command_id
             ORDER BY max(issued_ms) DESC, command_id LIMIT $1",
            vec![limit.into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OrderItem {
            command_id: r.text(0),
            target: r.text(1),
            kind: r.text(2),
            issued_ms: r.int(3),
            expires_ms: r.int(4),
            applied: r.int(5),
            refused: r.int(6),
            why: r.text(7),
            detail: r.text(8),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sql_kinds_are_the_kinds() {
        for k in super::ACK_KINDS {
            assert!(super::ACK_KINDS_SQL.contains(&format!("'{k}'")), "{k}");
        }
        assert_eq!(
            super::ACK_KINDS_SQL.matches('\'').count(),
            2 * super::ACK_KINDS.len()
        );
    }
}
