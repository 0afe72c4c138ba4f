//! The forms' pages: a community's day (its forms, and its figures beside its street's — what
//! never came back down before), a street's and a district's communities side by side, and
//! every form's XLSX/CSV download (audited).
use super::auth::{self, permit_community, permit_district, permit_street};
use super::who::{Role, Who};
use super::{chart, layout, store, App, Failure};
use crate::db::Scope;
use crate::forms::{self, export, Cell, Form, Kind};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Days, NaiveDate};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The longest span a page or an export covers (a quarter).
const MAX_DAYS: u64 = 93;
/// A form as built, when, and as of what time.
type Built = (Instant, Arc<Form>, i64);

/// Forms built in the last `App::cache_for`, by what they are. Each has a lock of its own, held
/// while it is built: a hundred people asking at once when it has just expired wait for one
/// build instead of making a hundred.
#[derive(Default)]
pub struct FormCache(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Built>>>>>);

#[derive(Deserialize, Default)]
pub struct Dates {
    date: Option<String>,
    to: Option<String>,
    format: Option<String>,
    page: Option<usize>,
}

impl Dates {
    /// The local days asked for (today by default), checked.
    fn span(&self, app: &App) -> Result<(NaiveDate, NaiveDate), Failure> {
        let today = chrono::Utc::now().with_timezone(&app.tz).date_naive();
        let parse = |s: &Option<String>, default: NaiveDate| match s.as_deref() {
            None | Some("") => Ok(default),
            Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| Failure::BadRequest(format!("not a date: {s:?}"))),
        };
        let from = parse(&self.date, today)?;
        let to = parse(&self.to, from)?;
        if to < from || (to - from).num_days() as u64 >= MAX_DAYS {
            return Err(Failure::BadRequest(format!(
                "{from}..{to}: at most {MAX_DAYS} days, in order"
            )));
        }
        // A day the zone cannot place (year 262143, and the like), and the week before it.
        let week_before = from.checked_sub_days(chrono::Days::new(7)).unwrap_or(from);
        forms::span(app.tz, week_before, to)
            .map_err(|e| Failure::BadRequest(format!("{from}..{to}: {e}")))?;
        Ok((from, to))
    }

    fn query(from: NaiveDate, to: NaiveDate) -> String {
        if from == to {
            format!("?date={from}")
        } else {
            format!("?date={from}&to={to}")
        }
    }
}

fn community_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "entry" => Kind::Entry,
        "temperature" => Kind::Temperature,
        "visitor" => Kind::Visitor,
        "vehicle" => Kind::Vehicle,
        "outings" => Kind::Outings,
        "health" => Kind::Health,
        _ => return None,
    })
}

pub(crate) const COMMUNITY_FORMS: [(&str, &str); 6] = [
    ("entry", "form_entry"),
    ("temperature", "form_temperature"),
    ("visitor", "form_visitor"),
    ("vehicle", "form_vehicle"),
    ("outings", "form_outings"),
    ("health", "form_health"),
];

/// A form, from the cache when it was built within `CACHE_FOR`; with the time it was built.
async fn form(
    app: &App,
    kind: Kind,
    scope: &Scope,
    (from, to): (NaiveDate, NaiveDate),
) -> Result<(Arc<Form>, i64), Failure> {
    let build = || async {
        let now = auth::now_ms();
        let f = forms::build(app.db(), kind, scope, app.tz, (from, to), now).await?;
        Ok::<_, Failure>((Arc::new(f), now))
    };
    // Only a day's forms are kept (what many read at once); a range is built for who asks.
    if app.cache_for.is_zero() || from != to {
        return build().await;
    }
    let key = format!("{kind:?}|{scope:?}|{from}|{to}");
    let slot = {
        let mut c = app
            .cache
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("the form cache's lock is poisoned"))?;
        if c.len() > 200 {
            // Forgotten: entries no one is waiting on and that are out of date.
            c.retain(|_, slot| {
                slot.try_lock()
                    .is_ok_and(|b| b.as_ref().is_some_and(|b| b.0.elapsed() < app.cache_for))
            });
        }
        // Full of fresh forms (someone walking through every day): built, not kept.
        (c.len() <= 2000 || c.contains_key(&key)).then(|| c.entry(key).or_default().clone())
    };
    let Some(slot) = slot else {
        return build().await;
    };
    let mut slot = slot.lock().await;
    if let Some((at, f, made)) = slot.as_ref() {
        if at.elapsed() < app.cache_for {
            return Ok((f.clone(), *made));
        }
    }
    let (f, made) = build().await?;
    *slot = Some((Instant::now(), f.clone(), made));
    Ok((f, made))
}

fn local_time(app: &App, ms: i64) -> String {
    use chrono::TimeZone;
    app.tz
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn dates_form(app: &App, from: NaiveDate, to: NaiveDate) -> Markup {
    html! {
        form.q method="get" {
            label { (app.t("date")) " " input type="date" name="date" value=(from); }
            label { (app.t("to")) " " input type="date" name="to" value=(to); }
            button type="submit" { (app.t("show")) }
        }
    }
}

/// A form as an HTML table; `link` makes a first-column code a link (drill-down).
/// The comparison's figures, in `store::Totals`' order (their labels).
pub(crate) const FIGURES: [&str; 5] = ["entries", "exits", "vehicles", "screened", "denials"];

/// Rows of a form on one page: a day's vehicle list at a large estate runs to thousands, and no
/// page may weigh over 300 KB (the downloads have every row).
pub const PAGE_ROWS: usize = 500;

/// The rows of page `page` (from 1), the totals row (its first cell 合计) kept on every page;
/// and how many pages there are.
pub fn page_of(rows: &[Vec<Cell>], page: usize, per: usize) -> (Vec<&Vec<Cell>>, usize) {
    let total = rows
        .last()
        .filter(|r| matches!(r.first(), Some(Cell::Text(t)) if t == "合计"));
    let body = &rows[..rows.len() - total.is_some() as usize];
    let pages = body.len().div_ceil(per).max(1);
    let page = page.clamp(1, pages);
    let mut out: Vec<&Vec<Cell>> = body.iter().skip((page - 1) * per).take(per).collect();
    out.extend(total);
    (out, pages)
}

/// Links to the other pages of a long list.
pub fn pager(app: &App, page: usize, pages: usize, href: &dyn Fn(usize) -> String) -> Markup {
    html! {
        @if pages > 1 {
            p.pager {
                @if page > 1 { a href=(href(page - 1)) { (app.t("prev")) } " " }
                (app.t("page")) " " (page) " / " (pages)
                @if page < pages { " " a href=(href(page + 1)) { (app.t("next")) } }
            }
        }
    }
}

/// A first-column code's drill-down link, if it has one.
type Link<'a> = &'a dyn Fn(&str) -> Option<String>;

fn form_table(
    app: &App,
    f: &Form,
    link: Option<Link>,
    (page, href): (usize, &dyn Fn(usize) -> String),
) -> Markup {
    let (rows, pages) = page_of(&f.rows, page, PAGE_ROWS);
    let page = page.clamp(1, pages);
    html! {
        h2 { (f.title) }
        p.sub { (f.subtitle) }
        @if f.rows.is_empty() {
            p { (app.t("no_rows")) }
        } @else {
            (pager(app, page, pages, href))
            div.wrap { table {
                thead { tr { @for h in &f.headers { th { (h) } } } }
                tbody { @for row in rows { tr {
                    @for (i, c) in row.iter().enumerate() {
                        @match c {
                            Cell::Text(s) => {
                                @if let Some(href) = link.filter(|_| i == 0).and_then(|l| l(s)) {
                                    td { a href=(href) { (s) } }
                                } @else {
                                    td { (s) }
                                }
                            }
                            Cell::Int(n) => td.n { (n) },
                            Cell::Num(x) => td.n { (format!("{x:.2}")) },
                            Cell::Empty => td {},
                        }
                    }
                } } }
            } }
            (pager(app, page, pages, href))
        }
        @if !f.notes.is_empty() {
            ul.notes { @for n in &f.notes { li { (n) } } }
        }
    }
}

fn downloads(app: &App, base: &str, q: &str) -> Markup {
    html! {
        p {
            a.btn href=(format!("{base}{q}&format=xlsx")) { (app.t("download_xlsx")) }
            " "
            a.btn href=(format!("{base}{q}&format=csv")) { (app.t("download_csv")) }
        }
    }
}

/// A path segment as it may appear in a file name.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A form's download, audited.
async fn download(
    app: &App,
    who: &Who,
    (f, kind, code): (&Arc<Form>, &str, &str),
    (from, to): (NaiveDate, NaiveDate),
    format: Option<&str>,
) -> Result<Response, Failure> {
    // Writing a quarter's list takes a while: off the threads that answer everyone else.
    let off = |xlsx: bool| {
        let f = f.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                if xlsx {
                    export::xlsx(&f)
                } else {
                    Ok(export::csv(&f))
                }
            })
            .await
            .map_err(anyhow::Error::from)?
        }
    };
    let (body, mime, ext) = match format {
        Some("xlsx") => (
            off(true).await?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        Some("csv") => (off(false).await?, "text/csv; charset=utf-8", "csv"),
        other => {
            return Err(Failure::BadRequest(format!(
                "format {other:?}: xlsx or csv"
            )))
        }
    };
    let name = format!("{kind}-{}-{from}-{to}.{ext}", file_part(code));
    store::audit(
        app.db(),
        &who.name,
        &who.address,
        "export",
        &format!("{kind} {code} {from}..{to} {ext}"),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn home(who: Who) -> Redirect {
    Redirect::to(&who.home())
}

fn ratio(part: i64, whole: i64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.2}%", 100.0 * part as f64 / whole as f64)
    }
}

pub async fn community(
    State(app): State<Arc<App>>,
    who: Who,
    Path(community): Path<String>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_community(&app, &who, &community).await?;
    let (from, to) = q.span(&app)?;
    let span = forms::span(app.tz, from, to)?;
    let week = Days::new(7);
    let before = forms::span(
        app.tz,
        from.checked_sub_days(week).unwrap_or(from),
        to.checked_sub_days(week).unwrap_or(to),
    )?;
    let db = app.db();
    let mine = store::totals(db, Role::Community, &community, span).await?;
    let last_week = store::totals(db, Role::Community, &community, before).await?;
    let parents = store::community_parents(db, &community).await?;
    let (street_total, street_denials) = match &parents {
        Some((street, _)) => (
            store::totals(db, Role::Street, street, span).await?,
            store::denials_by_reason(db, Role::Street, street, span).await?,
        ),
        None => Default::default(),
    };
    let my_denials = store::denials_by_reason(db, Role::Community, &community, span).await?;
    let per = street_total.communities.max(1);
    let avg = |v: i64| format!("{:.1}", v as f64 / per as f64);
    // People in per hour of the span (a day: 24 bars), and fevers per day over the last 14.
    let hourly = store::hourly(db, &community, span).await?;
    let mut per_hour = [0i64; 24];
    for (hour_ms, n, _) in &hourly {
        let h = local_time(&app, *hour_ms)
            .get(11..13)
            .and_then(|h| h.parse::<usize>().ok());
        if let Some(h) = h.filter(|h| *h < 24) {
            per_hour[h] += n;
        }
    }
    let fortnight_from = to.checked_sub_days(Days::new(13)).unwrap_or(to);
    let fortnight = store::hourly(db, &community, forms::span(app.tz, fortnight_from, to)?).await?;
    let mut per_day: Vec<(String, i64)> = (0..14)
        .filter_map(|d| fortnight_from.checked_add_days(Days::new(d)))
        .map(|d| (d.format("%m-%d").to_string(), 0))
        .collect();
    for (hour_ms, _, fevers) in &fortnight {
        let day = local_time(&app, *hour_ms)
            .get(5..10)
            .unwrap_or("")
            .to_string();
        if let Some(e) = per_day.iter_mut().find(|(d, _)| *d == day) {
            e.1 += fevers;
        }
    }
    let q = Dates::query(from, to);
    let values = |t: &store::Totals| [t.entries, t.exits, t.vehicles, t.screened, t.denied];
    let figures: Vec<(&str, i64, String, i64)> = FIGURES
        .iter()
        .zip(values(&mine))
        .zip(values(&street_total))
        .zip(values(&last_week))
        .map(|(((label, v), s), w)| (*label, v, avg(s), w))
        .collect();
    let mut reasons: Vec<&str> = my_denials
        .iter()
        .chain(&street_denials)
        .map(|(r, _)| r.as_str())
        .collect();
    reasons.sort();
    reasons.dedup();
    let n_of = |v: &[(String, i64)], r: &str| v.iter().find(|(x, _)| x == r).map_or(0, |x| x.1);
    let body = html! {
        h1 { (app.t("community")) " " (community) }
        @if let Some((street, _)) = &parents {
            p.sub { (app.t("street")) " " (street) }
        }
        (dates_form(&app, from, to))
        h2 { (app.t("forms")) }
        div.tiles {
            @for (kind, label) in COMMUNITY_FORMS {
                a href=(format!("/c/{community}/forms/{kind}{q}")) { (app.t(label)) }
            }
        }
        h2 { (app.t("compare_title")) }
        div.wrap { table {
            thead { tr {
                th { (app.t("figure")) } th { (app.t("this_community")) }
                th { (app.t("street_average")) } th { (app.t("previous_week")) }
            } }
            tbody {
                @for (label, v, a, w) in &figures {
                    tr { td { (app.t(label)) } td.n { (v) } td.n { (a) } td.n { (w) } }
                }
                tr {
                    td { (app.t("fever_rate")) }
                    td.n { (ratio(mine.fevers, mine.screened)) }
                    td.n { (ratio(street_total.fevers, street_total.screened)) }
                    td.n { (ratio(last_week.fevers, last_week.screened)) }
                }
            }
        } }
        h2 { (app.t("denials_by_reason")) }
        @if reasons.is_empty() {
            p { (app.t("no_rows")) }
        } @else {
            div.wrap { table {
                thead { tr { th { (app.t("reason")) } th { (app.t("this_community")) } th { (app.t("street_average")) } } }
                tbody { @for r in &reasons { tr {
                    td { (forms::reason_zh(r)) }
                    td.n { (n_of(&my_denials, r)) }
                    td.n { (avg(n_of(&street_denials, r))) }
                } } }
            } }
        }
        h2 { (app.t("chart_entries_per_hour")) }
        (chart::bars(app.t("chart_entries_per_hour"),
            &per_hour.iter().enumerate().map(|(h, n)| (format!("{h}"), *n)).collect::<Vec<_>>(),
            "#2f6db3"))
        h2 { (app.t("chart_fevers_per_day")) }
        (chart::bars(app.t("chart_fevers_per_day"), &per_day, "#b3261e"))
    };
    Ok(layout::page(
        &app,
        &who,
        &format!("{} {community}", app.t("community")),
        body,
    )
    .into_response())
}

pub async fn community_form(
    State(app): State<Arc<App>>,
    who: Who,
    Path((community, kind)): Path<(String, String)>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_community(&app, &who, &community).await?;
    let k = community_kind(&kind).ok_or(Failure::NotFound)?;
    let (from, to) = q.span(&app)?;
    let (f, made) = form(&app, k, &Scope::Community(community.clone()), (from, to)).await?;
    let query = Dates::query(from, to);
    let body = html! {
        p { a href=(format!("/c/{community}{query}")) { "← " (app.t("community")) " " (community) } }
        (dates_form(&app, from, to))
        (form_table(&app, &f, None, (q.page.unwrap_or(1), &|p| {
            format!("/c/{community}/forms/{kind}{query}&page={p}")
        })))
        p.sub { (app.t("as_of")) " " (local_time(&app, made)) }
        (downloads(&app, &format!("/c/{community}/forms/{kind}/export"), &query))
    };
    Ok(layout::page(&app, &who, &f.title, body).into_response())
}

pub async fn community_export(
    State(app): State<Arc<App>>,
    who: Who,
    Path((community, kind)): Path<(String, String)>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_community(&app, &who, &community).await?;
    let k = community_kind(&kind).ok_or(Failure::NotFound)?;
    let span = q.span(&app)?;
    let (f, _) = form(&app, k, &Scope::Community(community.clone()), span).await?;
    download(
        &app,
        &who,
        (&f, &kind, &community),
        span,
        q.format.as_deref(),
    )
    .await
}

/// A street's or a district's page: its summary, each row a way down.
async fn summary_page(app: &App, who: &Who, scope: Scope, q: &Dates) -> Result<Response, Failure> {
    let (from, to) = q.span(app)?;
    let (f, made) = form(app, Kind::Summary, &scope, (from, to)).await?;
    let query = Dates::query(from, to);
    let (level, code, down, base) = match &scope {
        Scope::Street(s) => (app.t("street"), s.clone(), "/c/", format!("/s/{s}/export")),
        Scope::District(d) => (
            app.t("district"),
            d.clone(),
            "/s/",
            format!("/d/{d}/export"),
        ),
        Scope::Community(c) => (app.t("community"), c.clone(), "/c/", String::new()),
    };
    let total = app.t("total").to_string();
    let link =
        move |code: &str| (code != total && code != "合计").then(|| format!("{down}{code}{query}"));
    let query = Dates::query(from, to);
    let body = html! {
        h1 { (level) " " (code) }
        (dates_form(app, from, to))
        (form_table(app, &f, Some(&link), (q.page.unwrap_or(1), &|p| format!("{query}&page={p}"))))
        p.sub { (app.t("as_of")) " " (local_time(app, made)) }
        (downloads(app, &base, &query))
    };
    Ok(layout::page(app, who, &format!("{level} {code}"), body).into_response())
}

pub async fn street(
    State(app): State<Arc<App>>,
    who: Who,
    Path(street): Path<String>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_street(&app, &who, &street).await?;
    summary_page(&app, &who, Scope::Street(street), &q).await
}

pub async fn street_export(
    State(app): State<Arc<App>>,
    who: Who,
    Path(street): Path<String>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_street(&app, &who, &street).await?;
    summary_export(&app, &who, Scope::Street(street), &q).await
}

/// A street's or a district's summary as a download.
async fn summary_export(
    app: &App,
    who: &Who,
    scope: Scope,
    q: &Dates,
) -> Result<Response, Failure> {
    let span = q.span(app)?;
    let (f, _) = form(app, Kind::Summary, &scope, span).await?;
    let (level, code) = match &scope {
        Scope::Street(s) => ("street", s),
        Scope::District(d) => ("district", d),
        Scope::Community(c) => ("community", c),
    };
    download(app, who, (&f, level, code), span, q.format.as_deref()).await
}

pub async fn district(
    State(app): State<Arc<App>>,
    who: Who,
    Path(district): Path<String>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_district(&who, &district)?;
    summary_page(&app, &who, Scope::District(district), &q).await
}

pub async fn district_export(
    State(app): State<Arc<App>>,
    who: Who,
    Path(district): Path<String>,
    Query(q): Query<Dates>,
) -> Result<Response, Failure> {
    permit_district(&who, &district)?;
    summary_export(&app, &who, Scope::District(district), &q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_paged_and_its_totals_row_is_on_every_page() {
        let mut rows: Vec<Vec<Cell>> = (0..1201).map(|i| vec![Cell::Int(i)]).collect();
        rows.push(vec![Cell::text("合计"), Cell::Int(1201)]);
        let (first, pages) = page_of(&rows, 1, PAGE_ROWS);
        assert_eq!(pages, 3);
        assert_eq!(first.len(), PAGE_ROWS + 1);
        assert_eq!(first[0][0], Cell::Int(0));
        let (last, _) = page_of(&rows, 3, PAGE_ROWS);
        assert_eq!(last.len(), 201 + 1);
        assert_eq!(last[0][0], Cell::Int(1000));
        assert_eq!(last.last().unwrap()[0], Cell::text("合计"));
        // Out of range: the nearest page.
        assert_eq!(page_of(&rows, 99, PAGE_ROWS).0[0][0], Cell::Int(1000));
        assert_eq!(page_of(&rows, 0, PAGE_ROWS).0[0][0], Cell::Int(0));
        assert_eq!(page_of(&[], 1, PAGE_ROWS), (vec![], 1));
    }
}
