//! The operator's pages: every gateway (online, offline by its will, or stale — a status older
//! than its period is never shown as fresh), the alarms that need someone with a way to
//! acknowledge them (audited; the same acknowledgement record the gate's console writes), and
//! the orders issued with what became of them.
use super::auth::{self, check_csrf, permit_company};
use super::pages::pager;
use super::store::{self, ALARM_DAYS};
use super::who::Who;
use super::{chart, layout, App, Failure};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;

fn ago(app: &App, now: i64, then: i64) -> String {
    let s = ((now - then) / 1000).max(0);
    if then <= 0 {
        app.t("never").to_string()
    } else if s < 120 {
        format!("{s} {}", app.t("seconds_ago"))
    } else if s < 7200 {
        format!("{} {}", s / 60, app.t("minutes_ago"))
    } else {
        format!("{} {}", s / 3600, app.t("hours_ago"))
    }
}

fn local(app: &App, ms: i64) -> String {
    use chrono::TimeZone;
    app.tz
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A gateway's state as the page shows it: online, offline (its will, or a clean stop), stale
/// (no status within its period), or never heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Online,
    Offline,
    Stale,
    Unknown,
}

pub fn shown(s: Option<&store::GatewayStatus>, now: i64) -> Shown {
    match s {
        None => Shown::Unknown,
        Some(s) if !s.online => Shown::Offline,
        Some(s) if s.stale(now) => Shown::Stale,
        Some(_) => Shown::Online,
    }
}

/// Gateways on one page of the fleet (a company runs hundreds; the page stays light).
const PAGE_GATEWAYS: usize = 200;

#[derive(Deserialize)]
pub struct Page {
    page: Option<usize>,
}

pub async fn gateways(
    State(app): State<Arc<App>>,
    who: Who,
    Query(q): Query<Page>,
) -> Result<Response, Failure> {
    permit_company(&who)?;
    let now = auth::now_ms();
    let mut rows = store::fleet(app.db(), now - ALARM_DAYS * DAY_MS).await?;
    // What needs someone first: offline, stale, never heard, then open alarms, then the rest.
    rows.sort_by_key(|r| {
        (
            shown(r.status.as_ref(), now) == Shown::Online,
            r.open_alarms == 0 && r.devices_offline == 0,
        )
    });
    let count = |want: Shown| {
        rows.iter()
            .filter(|r| shown(r.status.as_ref(), now) == want)
            .count() as i64
    };
    let states = [
        (app.t("online").to_string(), count(Shown::Online)),
        (
            app.t("offline").to_string(),
            count(Shown::Offline) + count(Shown::Unknown),
        ),
        (app.t("stale").to_string(), count(Shown::Stale)),
    ];
    let given_up = super::notify::given_up(app.db()).await?;
    let pages = rows.len().div_ceil(PAGE_GATEWAYS).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let body = html! {
        h1 { (app.t("fleet")) }
        @if given_up > 0 {
            p.bad role="alert" { (app.t("notifications_failed")) ": " (given_up) }
        }
        (chart::bars(app.t("chart_gateways"), &states, "#2f6db3"))
        (pager(&app, page, pages, &|p| format!("/fleet?page={p}")))
        div.wrap { table {
            thead { tr {
                th { (app.t("gateway")) } th { (app.t("street")) } th { (app.t("community")) }
                th { (app.t("state")) } th { (app.t("mode")) } th { (app.t("outbox")) } th { (app.t("registry_version")) }
                th { (app.t("devices_offline")) } th { (app.t("open_alarms")) } th { (app.t("last_status")) }
            } }
            tbody { @for r in rows.iter().skip((page - 1) * PAGE_GATEWAYS).take(PAGE_GATEWAYS) {
                @let st = r.status.as_ref();
                tr {
                    td { (r.gw.rsplit('/').next().unwrap_or(&r.gw)) }
                    td { a href=(format!("/s/{}", r.street)) { (r.street) } }
                    td { a href=(format!("/c/{}", r.community)) { (r.community) } }
                    @match shown(st, now) {
                        Shown::Online => td.ok { (app.t("online")) },
                        Shown::Offline => td.bad { (app.t("offline")) },
                        Shown::Stale => td.warn { (app.t("stale")) },
                        Shown::Unknown => td.bad { (app.t("never")) },
                    }
                    td {
                        (st.map_or("", |s| s.mode.as_str()))
                        @if st.is_some_and(|s| s.clock_unsynced) { " " span.warn { (app.t("clock_unsynced")) } }
                        @if st.is_some_and(|s| s.store_degraded) { " " span.bad { (app.t("store_degraded")) } }
                    }
                    td.n { (st.map_or(0, |s| s.outbox_depth)) }
                    td.n { (st.map_or(0, |s| s.registry_version)) }
                    @if r.devices_offline > 0 { td.n.bad { (r.devices_offline) } } @else { td.n { "0" } }
                    @if r.open_alarms > 0 { td.n.bad { a href="/fleet/alarms" { (r.open_alarms) } } } @else { td.n { "0" } }
                    td { (ago(&app, now, st.map_or(0, |s| s.received_ms))) }
                }
            } }
        } }
    };
    Ok(layout::page(&app, &who, app.t("fleet"), body).into_response())
}

pub async fn alarms(State(app): State<Arc<App>>, who: Who) -> Result<Response, Failure> {
    permit_company(&who)?;
    let now = auth::now_ms();
    let rows = store::alarms(app.db(), now - ALARM_DAYS * DAY_MS, 300).await?;
    let kind = |k: &str| {
        let key = format!("alarm_{k}");
        let label = app.t(&key);
        if label == key {
            k.to_string()
        } else {
            label.to_string()
        }
    };
    let body = html! {
        h1 { (app.t("alarms")) }
        div.wrap { table {
            thead { tr {
                th { (app.t("alarm_time")) } th { (app.t("alarm_kind")) } th { (app.t("community")) }
                th { (app.t("gateway")) } th { (app.t("lane")) } th { (app.t("device")) }
                th { (app.t("detail")) } th { (app.t("acknowledged_by")) }
            } }
            tbody { @for a in &rows { tr {
                td { (local(&app, a.at_ms)) }
                @if a.acked.is_none() { td.bad { (kind(&a.kind)) } } @else { td { (kind(&a.kind)) } }
                td { (a.community) }
                td { (a.gw.rsplit('/').next().unwrap_or(&a.gw)) }
                td { (a.lane) } td { (a.device) } td { (a.detail) }
                td {
                    @if let Some((by, at, source)) = &a.acked {
                        (by) " (" (source) ") " (local(&app, *at))
                    } @else {
                        form method="post" action="/fleet/alarms/ack" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            input type="hidden" name="gw" value=(a.gw);
                            input type="hidden" name="seq" value=(a.seq);
                            input type="hidden" name="at_ms" value=(a.at_ms);
                            button type="submit" { (app.t("acknowledge")) }
                        }
                    }
                }
            } } }
        } }
    };
    Ok(layout::page(&app, &who, app.t("alarms"), body).into_response())
}

#[derive(Deserialize)]
pub struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    gw: String,
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    at_ms: i64,
}

pub async fn acknowledge(
    State(app): State<Arc<App>>,
    who: Who,
    Form(f): Form<AckForm>,
) -> Result<Response, Failure> {
    check_csrf(&who, &f.csrf)?;
    permit_company(&who)?;
    let now = auth::now_ms();
    let new =
        store::acknowledge(app.db(), (&f.gw, f.seq, f.at_ms), &who.name, "company", now).await?;
    if new {
        store::audit(
            app.db(),
            &who.name,
            &who.address,
            "alarm_ack",
            &format!("{} {} {}", f.gw, f.seq, f.at_ms),
        )
        .await?;
        // Down to the gate too: its guard's console closes the alarm.
        if let Some(down) = &app.acks_down {
            down.send(&f.gw, f.seq, f.at_ms, &who.name, now);
        }
    }
    Ok(Redirect::to("/fleet/alarms").into_response())
}

pub async fn orders(State(app): State<Arc<App>>, who: Who) -> Result<Response, Failure> {
    permit_company(&who)?;
    let now = auth::now_ms();
    let rows = store::orders(app.db(), 300).await?;
    let body = html! {
        h1 { (app.t("orders")) }
        div.wrap { table {
            thead { tr {
                th { (app.t("issued")) } th { (app.t("order_target")) } th { (app.t("order_id")) }
                th { (app.t("order_kind")) } th { (app.t("result")) } th { (app.t("detail")) }
            } }
            tbody { @for o in &rows { tr {
                td { @if o.issued_ms > 0 { (local(&app, o.issued_ms)) } }
                td { (o.target) }
                td { (o.command_id) }
                td { (o.kind) }
                @if o.refused > 0 {
                    td.bad { (app.t("refused")) " " (o.refused) ": " (o.why)
                        @if o.applied > 0 { "; " (app.t("applied")) " " (o.applied) } }
                } @else if o.applied > 0 {
                    td.ok { (app.t("applied")) " " (o.applied) }
                } @else if o.expires_ms > 0 && now > o.expires_ms {
                    td.bad { (app.t("expired")) }
                } @else {
                    td.warn { (app.t("pending")) }
                }
                td { (o.detail) }
            } } }
        } }
    };
    Ok(layout::page(&app, &who, app.t("orders"), body).into_response())
}
