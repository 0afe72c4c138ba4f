//! The day's lists: the visitor register, the vehicle register, lockdown outings and device
//! health. Each reads one community's records of the day by their index (community, time).
use super::{local, Cell, Form};
use crate::db::{Db, Which};
use chrono_tz::Tz;
use std::collections::BTreeMap;

/// 访客登记: passes used, by host household.
pub async fn visitors(
    db: &Db,
    community: &str,
    tz: Tz,
    span: (i64, i64),
    days: String,
) -> anyhow::Result<Form> {
    let rows = db
        .passages(community, span.0, span.1, Which::Visitors)
        .await?;
    // (host household, pass) → (entries, first, last, lanes)
    type Uses = (i64, i64, i64, Vec<String>);
    let mut by: BTreeMap<(String, String), Uses> = BTreeMap::new();
    for p in &rows {
        let e = by
            .entry((p.household.clone(), p.subject_id.clone()))
            .or_insert((0, i64::MAX, i64::MIN, Vec::new()));
        e.0 += 1;
        e.1 = e.1.min(p.at_ms);
        e.2 = e.2.max(p.at_ms);
        if !e.3.contains(&p.lane) {
            e.3.push(p.lane.clone());
        }
    }
    let total: i64 = by.values().map(|v| v.0).sum();
    let mut out: Vec<Vec<Cell>> = by
        .into_iter()
        .map(|((household, pass), (n, first, last, lanes))| {
            vec![
                Cell::text(household),
                Cell::text(pass),
                Cell::Int(n),
                Cell::text(local(tz, first, "%H:%M")),
                Cell::text(local(tz, last, "%H:%M")),
                Cell::text(lanes.join("、")),
            ]
        })
        .collect();
    out.push(vec![
        Cell::text("合计"),
        Cell::Empty,
        Cell::Int(total),
        Cell::Empty,
        Cell::Empty,
        Cell::Empty,
    ]);
    Ok(Form {
        title: "访客登记".into(),
        subtitle: format!("社区 {community}  日期 {days}"),
        headers: vec!["被访户号", "通行证", "进入次数", "首次", "末次", "通道"],
        rows: out,
        notes: vec!["只计已开闸放行的访客进入（含访客车辆）。".into()],
    })
}

/// 车辆登记: every vehicle in and out, resident or visitor, with the dwell time on the way out.
pub async fn vehicles(
    db: &Db,
    community: &str,
    tz: Tz,
    span: (i64, i64),
    days: String,
) -> anyhow::Result<Form> {
    let rows = db
        .passages(community, span.0, span.1, Which::Vehicles)
        .await?;
    let mut entered: BTreeMap<String, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let (mut ins, mut outs, mut denied) = (0, 0, 0);
    for p in &rows {
        let id = if p.subject_id.is_empty() {
            "未登记车辆".to_string()
        } else {
            p.subject_id.clone()
        };
        let mut dwell = Cell::Empty;
        // Unregistered vehicles leave no id (privacy): they are counted, never paired.
        let known = !p.subject_id.is_empty();
        if p.allowed {
            if p.inbound {
                ins += 1;
                if known {
                    entered.insert(id.clone(), p.at_ms);
                }
            } else {
                outs += 1;
                if let Some(t) = entered.remove(&id) {
                    dwell = Cell::Int((p.at_ms - t) / 60_000);
                }
            }
        } else {
            denied += 1;
        }
        out.push(vec![
            Cell::text(local(tz, p.at_ms, "%Y-%m-%d %H:%M:%S")),
            Cell::text(&p.lane),
            Cell::text(if p.inbound { "进" } else { "出" }),
            Cell::text(id),
            Cell::text(match p.who.as_str() {
                "resident" => "居民",
                "visitor" => "访客",
                _ => "其他",
            }),
            Cell::text(&p.household),
            Cell::text(if p.allowed {
                "放行".to_string()
            } else {
                format!("拒绝（{}）", super::reason_zh(&p.reason))
            }),
            dwell,
        ]);
    }
    Ok(Form {
        title: "车辆登记".into(),
        subtitle: format!("社区 {community}  日期 {days}"),
        headers: vec!["时间", "通道", "方向", "车牌/通行证", "类别", "户号", "结果", "停留(分钟)"],
        rows: out,
        notes: vec![
            format!("进 {ins} 辆次，出 {outs} 辆次，拒绝 {denied} 辆次。在场车辆：{} 辆（本期进入未出）。", entered.len()),
            "访客车辆以通行证号登记；未登记车辆不记录车牌（隐私）。".into(),
        ],
    })
}

/// 封控外出: in lockdown, each household's outings and returns, quota refusals, overdue returns.
pub async fn outings(
    db: &Db,
    community: &str,
    tz: Tz,
    span: (i64, i64),
    days: String,
) -> anyhow::Result<Form> {
    let rows = db
        .passages(community, span.0, span.1, Which::Lockdown)
        .await?;
    let overdue = db
        .alarms(community, span.0, span.1, &["ALARM_KIND_OUTING_OVERDUE"])
        .await?;
    let mut household_of: BTreeMap<String, String> = BTreeMap::new();
    // household → [outings, returns, quota refusals, overdue]
    let mut by: BTreeMap<String, [i64; 4]> = BTreeMap::new();
    for p in &rows {
        household_of.insert(p.subject_id.clone(), p.household.clone());
        let e = by.entry(p.household.clone()).or_default();
        match (p.allowed, p.inbound, p.reason.as_str()) {
            (true, false, _) => e[0] += 1,
            (true, true, _) => e[1] += 1,
            (false, _, "quota_exceeded") => e[2] += 1,
            _ => {}
        }
    }
    let mut late = Vec::new();
    for a in &overdue {
        let household = household_of.get(&a.subject_id).cloned().unwrap_or_default();
        by.entry(household.clone()).or_default()[3] += 1;
        late.push(format!(
            "超时未归：{} 人员 {} 户 {} — {}",
            local(tz, a.at_ms, "%H:%M"),
            a.subject_id,
            if household.is_empty() {
                "?"
            } else {
                &household
            },
            a.detail
        ));
    }
    let mut out: Vec<Vec<Cell>> = by
        .iter()
        .map(|(h, v)| {
            let mut r = vec![Cell::text(h)];
            r.extend(v.iter().map(|n| Cell::Int(*n)));
            r
        })
        .collect();
    let mut total = vec![Cell::text("合计")];
    total.extend((0..4).map(|i| Cell::Int(by.values().map(|v| v[i]).sum())));
    out.push(total);
    let mut notes = vec!["只计封控模式下居民的通行；超出外出限额的出门申请被拒绝。".to_string()];
    notes.extend(late);
    Ok(Form {
        title: "封控外出登记".into(),
        subtitle: format!("社区 {community}  日期 {days}"),
        headers: vec!["户号", "外出", "返回", "超限拒绝", "超时未归"],
        rows: out,
        notes,
    })
}

/// 设备状况: each device's time offline (from its offline and back-online alarms), each
/// gateway's link and outbox backlog.
pub async fn health(
    db: &Db,
    community: &str,
    tz: Tz,
    span: (i64, i64),
    days: String,
    now_ms: i64,
) -> anyhow::Result<Form> {
    let alarms = db
        .alarms(
            community,
            span.0,
            span.1,
            &["ALARM_KIND_DEVICE_OFFLINE", "ALARM_KIND_DEVICE_ONLINE"],
        )
        .await?;
    let end = span.1.min(now_ms);
    // (gateway, device) → (offline alarms, ms offline, offline since)
    let mut by: BTreeMap<(String, String), (i64, i64, Option<i64>)> = BTreeMap::new();
    for a in &alarms {
        let e = by
            .entry((a.gw.clone(), a.device.clone()))
            .or_insert((0, 0, None));
        if a.kind == "ALARM_KIND_DEVICE_OFFLINE" {
            e.0 += 1;
            e.2.get_or_insert(a.at_ms);
        } else {
            // Back online: offline since the last offline alarm, or since the day began.
            let since = e.2.take().unwrap_or(span.0);
            e.1 += a.at_ms - since;
        }
    }
    let mut rows = Vec::new();
    for ((gw, device), (n, mut ms, since)) in by {
        if let Some(s) = since {
            ms += end - s;
        }
        rows.push(vec![
            Cell::text(gw.rsplit('/').next().unwrap_or(&gw)),
            Cell::text(device),
            Cell::Int(n),
            Cell::Int(ms / 60_000),
            Cell::text(if since.is_some() { "离线" } else { "在线" }),
        ]);
    }
    let mut notes = Vec::new();
    for g in db.gateways(community).await? {
        notes.push(format!(
            "网关 {}：{}，模式 {}，待上传记录 {} 条（{} 收到的状态）",
            g.gw.rsplit('/').next().unwrap_or(&g.gw),
            if g.online { "在线" } else { "离线" },
            g.mode,
            g.outbox_depth,
            local(tz, g.received_ms, "%m-%d %H:%M")
        ));
    }
    if rows.is_empty() {
        notes.insert(0, "本期无设备离线。".into());
    }
    Ok(Form {
        title: "设备状况".into(),
        subtitle: format!("社区 {community}  日期 {days}"),
        headers: vec!["网关", "设备", "离线次数", "离线时长(分钟)", "当前"],
        rows,
        notes,
    })
}
