//! The daily forms, as the community workers filled them by hand — read from the hourly rollups
//! (never a scan of the passages), reconciled against the gateways' own statistics: where the
//! records received fall short of what a gateway counted (records still in its outbox, a gateway
//! offline), the form shows the gap instead of a wrong total.
//!
//! Each form is a table (`Form`): a title, headers in Chinese as on the paper forms, rows, and
//! notes; `export` writes it as XLSX, CSV or text.
pub mod export;
mod lists;

use crate::db::{Db, DenialRow, RollupRow, Scope, StatsRow};
use crate::ingest::rollup::{col, Counts, COLUMNS, COUNTED_BY_GATEWAY, HOUR_MS};
use anyhow::Context;
use chrono::{Days, NaiveDate, TimeZone};
use chrono_tz::Tz;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    Num(f64),
    Empty,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub title: String,
    /// What the form covers: scope and dates.
    pub subtitle: String,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    pub notes: Vec<String>,
}

/// Which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// 出入登记: entries and exits per lane and hour, denials by reason, reconciled.
    Entry,
    /// 体温登记: people screened, every fever, where the device's flag disagreed.
    Temperature,
    /// A street's or a district's day: one row per community (street) or street (district).
    Summary,
    /// 访客登记: passes used, by host household.
    Visitor,
    /// 车辆登记: vehicles in and out, resident or visitor, dwell time.
    Vehicle,
    /// 封控外出: households' outings in lockdown, quota refusals, overdue returns.
    Outings,
    /// 设备状况: device downtime, offline alarms, gateways' outbox backlog.
    Health,
}

/// The local days `from..=to` as unix ms `[start, end)`.
pub fn span(tz: Tz, from: NaiveDate, to: NaiveDate) -> anyhow::Result<(i64, i64)> {
    let midnight = |d: NaiveDate| -> anyhow::Result<i64> {
        Ok(tz
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).context("midnight")?)
            .earliest()
            .context("no such local time")?
            .timestamp_millis())
    };
    let end = to
        .checked_add_days(Days::new(1))
        .context("date out of range")?;
    Ok((midnight(from)?, midnight(end)?))
}

fn local(tz: Tz, ms: i64, fmt: &str) -> String {
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format(fmt).to_string())
        .unwrap_or_default()
}

fn dates(from: NaiveDate, to: NaiveDate) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from} 至 {to}")
    }
}

/// The passages a gateway's statistics count: people and vehicles let through, and denials.
fn counted(c: &Counts) -> i64 {
    COUNTED_BY_GATEWAY.iter().map(|n| c[col(n)]).sum()
}

fn stats_counted(s: &StatsRow) -> i64 {
    s.entries + s.exits + s.vehicles_in + s.vehicles_out + s.denials
}

/// Builds the form `kind` for `scope` over the local days `from..=to`, as of `now_ms` (a device
/// still offline is offline until then).
pub async fn build(
    db: &Db,
    kind: Kind,
    scope: &Scope,
    tz: Tz,
    (from, to): (NaiveDate, NaiveDate),
    now_ms: i64,
) -> anyhow::Result<Form> {
    match (kind, scope) {
        (Kind::Entry, Scope::Community(c)) => entry(db, c, tz, from, to).await,
        (Kind::Temperature, Scope::Community(c)) => temperature(db, c, tz, from, to).await,
        (Kind::Summary, Scope::Street(_) | Scope::District(_)) => {
            summary(db, scope, tz, from, to).await
        }
        (Kind::Visitor | Kind::Vehicle | Kind::Outings | Kind::Health, Scope::Community(c)) => {
            let span = span(tz, from, to)?;
            let days = dates(from, to);
            match kind {
                Kind::Visitor => lists::visitors(db, c, tz, span, days).await,
                Kind::Vehicle => lists::vehicles(db, c, tz, span, days).await,
                Kind::Outings => lists::outings(db, c, tz, span, days).await,
                _ => lists::health(db, c, tz, span, days, now_ms).await,
            }
        }
        (Kind::Summary, Scope::Community(_)) => {
            anyhow::bail!("the summary is a street's or a district's: give --street or --district")
        }
        _ => {
            anyhow::bail!("the entry and temperature registers are a community's: give --community")
        }
    }
}

type LaneHour = (String, String, i64);

/// A scope's rollups and the gateways' statistics over the local days `from..=to`, and the span.
async fn read(
    db: &Db,
    scope: &Scope,
    tz: Tz,
    (from, to): (NaiveDate, NaiveDate),
) -> anyhow::Result<(Vec<RollupRow>, Vec<StatsRow>, (i64, i64))> {
    let (start, end) = span(tz, from, to)?;
    let rollups = db.rollups(scope, start, end).await?;
    let stats = db.stats(scope, start, end).await?;
    Ok((rollups, stats, (start, end)))
}

async fn entry(
    db: &Db,
    community: &str,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Form> {
    let scope = Scope::Community(community.to_string());
    let (rollups, stats, (start, end)) = read(db, &scope, tz, (from, to)).await?;
    let denials = db.denials(community, start, end).await?;
    // Every lane-hour either side has, in order; a gateway's statistics summed per hour (one hour
    // may come in two batches).
    let mut hours: BTreeMap<LaneHour, (Option<&RollupRow>, Option<StatsRow>)> = BTreeMap::new();
    for r in &rollups {
        hours
            .entry((r.gw.clone(), r.lane.clone(), r.hour_ms))
            .or_default()
            .0 = Some(r);
    }
    for s in &stats {
        let hour = s.start_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let slot = &mut hours
            .entry((s.gw.clone(), s.lane.clone(), hour))
            .or_default()
            .1;
        match slot {
            Some(sum) => {
                sum.entries += s.entries;
                sum.exits += s.exits;
                sum.vehicles_in += s.vehicles_in;
                sum.vehicles_out += s.vehicles_out;
                sum.denials += s.denials;
                sum.fevers += s.fevers;
            }
            None => *slot = Some(s.clone()),
        }
    }
    let reasons = |gw: &str, lane: &str, hour: i64| {
        denials
            .iter()
            .filter(|d: &&DenialRow| d.gw == gw && d.lane == lane && d.hour_ms == hour)
            .map(|d| format!("{} {}", reason_zh(&d.reason), d.n))
            .collect::<Vec<_>>()
            .join("; ")
    };
    // The entry register's counters: the rollup's first eleven (people, vehicles, denied).
    let shown = &COLUMNS[..=col("denied")];
    let mut totals = [0i64; COLUMNS.len()];
    let (mut stats_total, mut gap_total, mut pending) = (0i64, 0i64, 0usize);
    let mut rows = Vec::new();
    for ((gw, lane, hour), (r, s)) in &hours {
        let counts = r.map_or([0; COLUMNS.len()], |r| r.counts);
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
        let mut row = vec![
            Cell::text(local(tz, *hour, "%Y-%m-%d")),
            Cell::text(format!(
                "{}–{}",
                local(tz, *hour, "%H:00"),
                local(tz, hour + HOUR_MS, "%H:00")
            )),
            Cell::text(lane),
            Cell::text(gw.rsplit('/').next().unwrap_or(gw)),
        ];
        row.extend(shown.iter().map(|n| Cell::Int(counts[col(n)])));
        row.push(Cell::text(reasons(gw, lane, *hour)));
        row.push(Cell::Int(counts[col("not_actuated")]));
        match s {
            Some(s) => {
                let gap = stats_counted(s) - counted(&counts);
                stats_total += stats_counted(s);
                gap_total += gap;
                row.push(Cell::Int(stats_counted(s)));
                row.push(Cell::Int(gap));
                row.push(Cell::text(if gap == 0 { "一致" } else { "有差额" }));
            }
            None => {
                pending += 1;
                row.extend([Cell::Empty, Cell::Empty, Cell::text("网关统计未到")]);
            }
        }
        row.push(Cell::Int(counts[col("amended")]));
        rows.push(row);
    }
    let mut total = vec![Cell::text("合计"), Cell::Empty, Cell::Empty, Cell::Empty];
    total.extend(shown.iter().map(|n| Cell::Int(totals[col(n)])));
    total.extend([
        Cell::Empty,
        Cell::Int(totals[col("not_actuated")]),
        Cell::Int(stats_total),
        Cell::Int(gap_total),
        Cell::text(match (gap_total, pending) {
            (0, 0) => "一致",
            (0, p) if p == hours.len() => "未核对",
            (0, _) => "部分核对",
            _ => "有差额",
        }),
        Cell::Int(totals[col("amended")]),
    ]);
    rows.push(total);
    let mut notes = vec![
        "差额 = 网关统计的通行与拒绝次数 − 已收到的记录数；大于 0 表示仍有记录在网关缓存中或网关离线。".to_string(),
        "未执行：网关重启后补判的记录或设备离线存储的记录，未开闸，不计入网关统计。".to_string(),
    ];
    if pending > 0 {
        notes.push(format!(
            "{pending} 个时段的网关统计尚未收到（当前小时，或网关未上报）：这些时段不核对。"
        ));
    }
    if totals[col("amended")] > 0 {
        notes.push(format!(
            "补录：{} 条记录在当日结束后才收到（来自网关缓存），已计入所属日期。",
            totals[col("amended")]
        ));
    }
    Ok(Form {
        title: "出入登记".into(),
        subtitle: format!("社区 {community}  日期 {}", dates(from, to)),
        headers: vec![
            "日期",
            "时段",
            "通道",
            "网关",
            "居民进",
            "居民出",
            "访客进",
            "访客出",
            "其他进",
            "其他出",
            "车辆进",
            "车辆出",
            "访客车辆进",
            "访客车辆出",
            "拒绝",
            "拒绝原因",
            "未执行",
            "网关统计",
            "差额",
            "核对",
            "补录",
        ],
        rows,
        notes,
    })
}

async fn temperature(
    db: &Db,
    community: &str,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Form> {
    let scope = Scope::Community(community.to_string());
    let (rollups, stats, (start, end)) = read(db, &scope, tz, (from, to)).await?;
    let fevers = db.fevers(community, start, end).await?;
    let sum = |name: &str| rollups.iter().map(|r| r.counts[col(name)]).sum::<i64>();
    let rows = fevers
        .iter()
        .map(|f| {
            vec![
                Cell::text(local(tz, f.at_ms, "%Y-%m-%d %H:%M:%S")),
                Cell::text(&f.lane),
                Cell::text(&f.device),
                Cell::Num(f.celsius),
                f.threshold.map_or(Cell::Empty, Cell::Num),
                Cell::text(if f.fever { "是" } else { "否" }),
                Cell::text(&f.subject_id),
                Cell::text(&f.household),
                Cell::text(if f.device_disagrees { "不一致" } else { "" }),
            ]
        })
        .collect();
    // Reconciled only over the lane-hours the gateways have reported (not the hour in progress).
    let covered: std::collections::BTreeSet<(&str, &str, i64)> = stats
        .iter()
        .map(|s| {
            (
                s.gw.as_str(),
                s.lane.as_str(),
                s.start_ms.div_euclid(HOUR_MS) * HOUR_MS,
            )
        })
        .collect();
    let counted: i64 = rollups
        .iter()
        .filter(|r| covered.contains(&(r.gw.as_str(), r.lane.as_str(), r.hour_ms)))
        .map(|r| r.counts[col("counted_fevers")])
        .sum();
    let stats_fevers: i64 = stats.iter().map(|s| s.fevers).sum();
    let mut notes = vec![
        format!(
            "测温 {} 人次，发热 {} 人次（体温达到或超过该通道阈值）。",
            sum("screened"),
            sum("fevers")
        ),
        format!(
            "网关统计发热 {stats_fevers} 次，已收到记录中计入统计的发热 {counted} 次，差额 {}。",
            stats_fevers - counted
        ),
        "设备标记“不一致”：设备自身的异常体温标记与阈值判定不同。体温属健康信息，按较短期限保存。"
            .to_string(),
    ];
    if fevers.is_empty() {
        notes.insert(0, "本期无发热记录。".into());
    }
    Ok(Form {
        title: "体温登记".into(),
        subtitle: format!("社区 {community}  日期 {}", dates(from, to)),
        headers: vec![
            "时间",
            "通道",
            "设备",
            "体温(℃)",
            "阈值(℃)",
            "发热",
            "人员编号",
            "户号",
            "设备标记",
        ],
        rows,
        notes,
    })
}

async fn summary(
    db: &Db,
    scope: &Scope,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Form> {
    let (rollups, stats, _) = read(db, scope, tz, (from, to)).await?;
    // One row per community of a street, per street of a district.
    let unit = |community: &str, street: &str| match scope {
        Scope::District(_) => street.to_string(),
        _ => community.to_string(),
    };
    let mut by: BTreeMap<String, ([i64; COLUMNS.len()], i64)> = BTreeMap::new();
    for r in &rollups {
        let e = by.entry(unit(&r.community, &r.street)).or_default();
        for (t, c) in e.0.iter_mut().zip(r.counts) {
            *t += c;
        }
    }
    // The gap is taken only over the hours the gateways have reported.
    let mut reported: BTreeMap<String, i64> = BTreeMap::new();
    for s in &stats {
        *reported.entry(unit(&s.community, &s.street)).or_default() += stats_counted(s);
        by.entry(unit(&s.community, &s.street)).or_default().1 += stats_counted(s);
    }
    let covered: BTreeMap<(String, String, i64), ()> = stats
        .iter()
        .map(|s| {
            (
                (
                    s.gw.clone(),
                    s.lane.clone(),
                    s.start_ms.div_euclid(HOUR_MS) * HOUR_MS,
                ),
                (),
            )
        })
        .collect();
    let mut received_in_reported: BTreeMap<String, i64> = BTreeMap::new();
    for r in &rollups {
        if covered.contains_key(&(r.gw.clone(), r.lane.clone(), r.hour_ms)) {
            *received_in_reported
                .entry(unit(&r.community, &r.street))
                .or_default() += counted(&r.counts);
        }
    }
    let people = |c: &Counts, dir: &str| -> i64 {
        ["residents", "visitors", "others"]
            .iter()
            .map(|w| c[col(&format!("{w}_{dir}"))])
            .sum()
    };
    let mut rows = Vec::new();
    let mut total = [0i64; 9];
    for (name, (c, stats_n)) in &by {
        let gap = stats_n - received_in_reported.get(name).copied().unwrap_or(0);
        let values = [
            people(c, "in"),
            people(c, "out"),
            c[col("vehicles_in")],
            c[col("vehicles_out")],
            c[col("denied")],
            c[col("screened")],
            c[col("fevers")],
            *stats_n,
            gap,
        ];
        for (t, v) in total.iter_mut().zip(values) {
            *t += v;
        }
        let mut row = vec![Cell::text(name)];
        row.extend(values.iter().map(|v| Cell::Int(*v)));
        rows.push(row);
    }
    let mut last = vec![Cell::text("合计")];
    last.extend(total.iter().map(|v| Cell::Int(*v)));
    rows.push(last);
    let (unit_header, what) = match scope {
        Scope::District(d) => ("街道", format!("区 {d}")),
        Scope::Street(s) => ("社区", format!("街道 {s}")),
        Scope::Community(c) => ("社区", format!("社区 {c}")),
    };
    Ok(Form {
        title: "出入及体温汇总".into(),
        subtitle: format!("{what}  日期 {}", dates(from, to)),
        headers: vec![
            unit_header,
            "人员进",
            "人员出",
            "车辆进",
            "车辆出",
            "拒绝",
            "测温",
            "发热",
            "网关统计",
            "差额",
        ],
        rows,
        notes: vec!["差额只计网关已上报统计的时段：网关统计 − 已收到的记录数。".into()],
    })
}

/// The reason codes (DESIGN.md §5) as the forms say them.
pub fn reason_zh(code: &str) -> String {
    match code {
        "fever" => "发热".into(),
        "invalid_reading" => "体温无效".into(),
        "no_temperature" => "未测温".into(),
        "unknown_subject" => "非登记人员".into(),
        "expired" => "已过期".into(),
        "quarantined" => "隔离中".into(),
        "quota_exceeded" => "超出外出限额".into(),
        "lockdown" => "封控".into(),
        "blacklisted" => "黑名单".into(),
        "low_confidence" => "车牌识别置信度低".into(),
        "anti_passback" => "防反潜回".into(),
        "fire_mode" => "消防模式".into(),
        "device_fault" => "设备故障".into(),
        "stale_event" => "过期事件".into(),
        "clock_unsynced" => "网关时钟未同步".into(),
        other => other.to_string(),
    }
}
