//! The web pages as an attacker tries them: every route of `web::ROUTES` asked by each role for
//! places inside and outside its scope, without a session, without the CSRF token; device
//! strings carrying markup and formulas; logins guessed; a proxy's word on the client. (The
//! pages' queries on both databases: `web_queries.rs`.)
use super::conformance::put;
use super::*;
use crate::db::Db;
use crate::web::auth;
use crate::web::labels::Labels;
use crate::web::who::Role;
use crate::web::{self, Access, App};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub(super) const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// A place: community, street, district.
pub(super) type Place = (&'static str, &'static str, &'static str);
pub(super) const A: Place = ("330106001001", "330106001", "330106");
pub(super) const B: Place = ("330106001002", "330106001", "330106");
pub(super) const C: Place = ("330106002001", "330106002", "330106");
pub(super) const D: Place = ("330107001001", "330107001", "330107");

pub(super) fn topic_of(p: Place, gw: &str, channel: &str) -> String {
    format!("gh/v1/3301/{}/{}/{}/{gw}/{channel}", p.2, p.1, p.0)
}

fn alarm(seq: u64, at_ms: i64, kind: v1::AlarmKind, device: &str, detail: &str) -> Vec<u8> {
    v1::AlarmBatch {
        alarms: vec![v1::Alarm {
            seq,
            gateway_time_ms: at_ms,
            kind: kind as i32,
            lane: "east".into(),
            device: device.into(),
            detail: detail.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

fn status(online: bool, seq: u64, period_ms: u64) -> Vec<u8> {
    v1::Status {
        gateway: "gw-1".into(),
        state: if online {
            v1::GatewayState::Online
        } else {
            v1::GatewayState::Offline
        } as i32,
        mode: "normal".into(),
        registry_version: 42,
        outbox_depth: 7,
        boot: 1,
        seq,
        status_period_ms: period_ms,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Every place has a gateway with a day of records; `now` is when they arrived.
pub(super) async fn seed(db: &Db, now: i64) {
    for (i, p) in [A, B, C, D].into_iter().enumerate() {
        let evs: Vec<v1::Event> = (1..=5)
            .map(|s| resident_in(s, now - 60_000 + s as i64))
            .collect();
        put(db, &topic_of(p, "gw-1", "events"), &events(evs), now).await;
        put(
            db,
            &topic_of(p, "gw-1", "status"),
            &status(true, 1, 60_000),
            now,
        )
        .await;
        put(
            db,
            &topic_of(p, "gw-1", "alarms"),
            &alarm(
                100 + i as u64,
                now - 1000,
                v1::AlarmKind::Fever,
                "thermal-1",
                "38.2",
            ),
            now,
        )
        .await;
    }
}

struct Site {
    router: axum::Router,
    db: Db,
    _dir: tempfile::TempDir,
}

/// A session cookie for a new user of `role` and `scope` (made directly: the login itself is
/// tested on its own).
async fn session_for(db: &Db, name: &str, role: Role, scope: &str) -> (String, String) {
    crate::web::users::add(db, name, role, scope, "a long password 1")
        .await
        .unwrap();
    let (token, csrf) = (format!("token-{name}"), format!("csrf-{name}"));
    let now = auth::now_ms();
    web::store::open_session(
        db,
        &auth::token_hash(&token),
        name,
        &csrf,
        now,
        now + 3_600_000,
    )
    .await
    .unwrap();
    (format!("gh_session={token}"), csrf)
}

async fn site() -> Site {
    site_with(None).await
}

async fn site_with(acks_down: Option<Arc<web::acks_down::AcksDown>>) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("records.db").display());
    let db = Db::open(&url, TZ).await.unwrap();
    let pages = Db::open(&url, TZ).await.unwrap();
    let mut app = App::new(vec![pages], TZ, Labels::builtin(), false).unwrap();
    app.acks_down = acks_down;
    let app = Arc::new(app);
    Site {
        router: web::router(app),
        db,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn ask(
    router: &axum::Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<String>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let mut req = req.body(Body::from(form.unwrap_or_default())).unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            [192, 0, 2, 7],
            40000,
        ))));
    let r = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = r.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20).await.unwrap().to_vec();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn fill(path: &str, p: Place) -> String {
    path.replace(":community", p.0)
        .replace(":street", p.1)
        .replace(":district", p.2)
        .replace(":kind", "entry")
}

/// Whether `role` with `scope` may see route access `access` at place `p`: the rule the test
/// holds the code to, written apart from it.
fn may(role: Role, scope: &str, access: Access, p: Place) -> bool {
    let mine = |level: usize| {
        let codes = [p.0, p.1, p.2];
        codes[level] == scope
    };
    match (access, role) {
        (Access::Public | Access::Signed, _) | (_, Role::Company) => true,
        (Access::Company, _) => false,
        (Access::Community, Role::Community) => mine(0),
        (Access::Community, Role::Street) => mine(1),
        (Access::Community, Role::District) => mine(2),
        (Access::Street, Role::Street) => mine(1),
        (Access::Street, Role::District) => mine(2),
        (Access::District, Role::District) => mine(2),
        _ => false,
    }
}

#[tokio::test]
async fn every_route_refuses_whoever_is_outside_its_scope() {
    let s = site().await;
    let now = auth::now_ms();
    seed(&s.db, now).await;
    let people = [
        ("worker-a", Role::Community, A.0),
        ("officer-s1", Role::Street, A.1),
        ("district-d", Role::District, A.2),
        ("operator", Role::Company, ""),
    ];
    let mut cookies = Vec::new();
    for (name, role, scope) in people {
        cookies.push((role, scope, session_for(&s.db, name, role, scope).await));
    }
    let mut asked = 0;
    for r in web::ROUTES.iter().filter(|r| r.access != Access::Public) {
        for p in [A, B, C, D] {
            let path = fill(r.path, p);
            // No session: only the login page.
            let none = ask(
                &s.router,
                r.method,
                &format!("{path}?format=csv"),
                None,
                None,
            )
            .await;
            assert_eq!(
                none.status,
                StatusCode::SEE_OTHER,
                "{} {path} without a session",
                r.method
            );
            assert_eq!(none.headers[header::LOCATION], "/login");
            for (role, scope, (cookie, csrf)) in &cookies {
                let allowed = may(*role, scope, r.access, p);
                let a = if r.method == "POST" {
                    let form = format!("csrf={csrf}&gw=x&seq=1&at_ms=1");
                    ask(&s.router, "POST", &path, Some(cookie), Some(form)).await
                } else {
                    ask(
                        &s.router,
                        "GET",
                        &format!("{path}?format=csv"),
                        Some(cookie),
                        None,
                    )
                    .await
                };
                asked += 1;
                if allowed {
                    // A redirect, but never to the login page (the session was taken) — but
                    // for logging out, which goes there.
                    assert!(
                        r.path == "/logout"
                            || a.headers
                                .get(header::LOCATION)
                                .is_none_or(|l| l != "/login"),
                        "{} {path} as {role:?} {scope}: sent to log in",
                        r.method
                    );
                    assert!(
                        a.status == StatusCode::OK || a.status == StatusCode::SEE_OTHER,
                        "{} {path} as {role:?} {scope}: {} {}",
                        r.method,
                        a.status,
                        a.text()
                    );
                } else {
                    assert_eq!(
                        a.status,
                        StatusCode::FORBIDDEN,
                        "{} {path} as {role:?} {scope} must be refused",
                        r.method
                    );
                }
                // Logging out ends the session: sign in again for the next route.
                if r.path == "/logout" && allowed {
                    let name = people.iter().find(|x| x.1 == *role).unwrap().0;
                    let token = format!("token-{name}");
                    web::store::open_session(
                        &s.db,
                        &auth::token_hash(&token),
                        name,
                        csrf,
                        now,
                        now + 3_600_000,
                    )
                    .await
                    .unwrap();
                }
            }
        }
    }
    assert!(asked > 150, "{asked} requests");
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused() {
    let s = site().await;
    let now = auth::now_ms();
    seed(&s.db, now).await;
    let (op, csrf) = session_for(&s.db, "operator", Role::Company, "").await;
    let (_, other_csrf) = session_for(&s.db, "operator-2", Role::Company, "").await;
    let alarms = web::store::alarms(&s.db, 0, 10).await.unwrap();
    let a = &alarms[0];
    let form = |token: &str| format!("csrf={token}&gw={}&seq={}&at_ms={}", a.gw, a.seq, a.at_ms);
    for (token, why) in [
        ("", "no token"),
        (other_csrf.as_str(), "another session's token"),
    ] {
        let r = ask(
            &s.router,
            "POST",
            "/fleet/alarms/ack",
            Some(&op),
            Some(form(token)),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}");
    }
    let r = ask(
        &s.router,
        "POST",
        "/logout",
        Some(&op),
        Some("csrf=".into()),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(web::store::alarms(&s.db, 0, 10).await.unwrap()[0]
        .acked
        .is_none());
    // With it: acknowledged once, audited, shown with who.
    let r = ask(
        &s.router,
        "POST",
        "/fleet/alarms/ack",
        Some(&op),
        Some(form(&csrf)),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let again = ask(
        &s.router,
        "POST",
        "/fleet/alarms/ack",
        Some(&op),
        Some(form(&csrf)),
    )
    .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let acked: Vec<_> = web::store::alarms(&s.db, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.acked.is_some())
        .collect();
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0].acked.as_ref().unwrap().0, "operator");
    let trail = web::store::audit_trail(&s.db, 10).await.unwrap();
    assert_eq!(
        trail.iter().filter(|t| t.2 == "alarm_ack").count(),
        1,
        "{trail:?}"
    );
    let page = ask(&s.router, "GET", "/fleet/alarms", Some(&op), None)
        .await
        .text();
    assert!(page.contains("operator (company)"), "{page}");
}

#[tokio::test]
async fn logins_are_checked_limited_and_audited() {
    let s = site().await;
    crate::web::users::add(&s.db, "worker", Role::Community, A.0, "the right password")
        .await
        .unwrap();
    let login_page = ask(&s.router, "GET", "/login", None, None).await;
    let set = login_page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let pre = set.split(';').next().unwrap().to_string();
    let token = pre.split('=').nth(1).unwrap().to_string();
    // A login post as `worker`, with the login form's cookie or without.
    let try_login = |with_cookie: bool, password: &str| {
        let form = format!("name=worker&password={password}&csrf={token}");
        ask(
            &s.router,
            "POST",
            "/login",
            with_cookie.then_some(pre.as_str()),
            Some(form),
        )
    };
    // Without the login form's own token: refused before anything is checked.
    let r = try_login(false, "the+right+password").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right password: a session cookie, HttpOnly and SameSite=Strict, and the home page.
    let r = try_login(true, "the+right+password").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("gh_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let session = cookie.split(';').next().unwrap().to_string();
    let home = ask(&s.router, "GET", "/", Some(&session), None).await;
    assert_eq!(home.headers[header::LOCATION], format!("/c/{}", A.0));
    // Five wrong guesses, then even the right password is refused for a while.
    for _ in 0..5 {
        let r = try_login(true, "guess").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = try_login(true, "the+right+password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let trail = web::store::audit_trail(&s.db, 20).await.unwrap();
    assert_eq!(trail.iter().filter(|t| t.2 == "login_failed").count(), 5);
    assert_eq!(trail.iter().filter(|t| t.2 == "login_limited").count(), 1);
    assert_eq!(trail.iter().filter(|t| t.2 == "login").count(), 1);
    // Disabled: the open session ends at once.
    web::store::set_disabled(&s.db, "worker", true)
        .await
        .unwrap();
    let r = ask(
        &s.router,
        "GET",
        &format!("/c/{}", A.0),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn device_strings_render_inert_in_pages_and_exports() {
    let s = site().await;
    let now = auth::now_ms();
    let script = "<script>alert(1)</script>";
    let formula = "=HYPERLINK(\"http://evil.example/\",\"click\")";
    // A plate and a device name from a hostile LAN: a vehicle passage and an alarm.
    let mut e = passage(
        1,
        now - 5000,
        v1::SubjectKind::Resident,
        formula,
        "H1",
        true,
        "ok",
    );
    e.device = script.into();
    e.lane = script.into();
    if let Some(v1::event::Body::Passage(p)) = &mut e.body {
        p.medium = v1::Medium::Plate as i32;
        p.temperature_c = None;
    }
    put(&s.db, &topic_of(A, "gw-1", "events"), &events(vec![e]), now).await;
    put(
        &s.db,
        &topic_of(A, "gw-1", "alarms"),
        &alarm(
            1,
            now - 4000,
            v1::AlarmKind::DeviceMisbehaving,
            script,
            formula,
        ),
        now,
    )
    .await;
    put(
        &s.db,
        &topic_of(A, "gw-1", "status"),
        &status(true, 1, 60_000),
        now,
    )
    .await;
    let (op, _) = session_for(&s.db, "operator", Role::Company, "").await;
    let (worker, _) = session_for(&s.db, "worker", Role::Community, A.0).await;
    let mut pages = vec![
        ask(&s.router, "GET", "/fleet/alarms", Some(&op), None).await,
        ask(&s.router, "GET", "/fleet", Some(&op), None).await,
    ];
    for kind in ["vehicle", "entry", "health"] {
        pages.push(
            ask(
                &s.router,
                "GET",
                &format!("/c/{}/forms/{kind}", A.0),
                Some(&worker),
                None,
            )
            .await,
        );
    }
    for p in &pages {
        assert_eq!(p.status, StatusCode::OK);
        let t = p.text();
        assert!(!t.contains("<script"), "{t}");
        let csp = p.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("script-src"),
            "{csp}"
        );
    }
    assert!(
        pages[0].text().contains("&lt;script&gt;"),
        "the alarm's device is shown, as text"
    );
    let vehicles = pages[2].text();
    assert!(
        vehicles.contains("=HYPERLINK"),
        "the plate is shown as it is on the page"
    );
    // In the exports the formula is text: a leading apostrophe, never evaluated.
    let csv = ask(
        &s.router,
        "GET",
        &format!("/c/{}/forms/vehicle/export?format=csv", A.0),
        Some(&worker),
        None,
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    let csv = csv.text();
    assert!(csv.contains("'=HYPERLINK"), "{csv}");
    assert!(
        !csv.contains(",=HYPERLINK") && !csv.contains(",\"=HYPERLINK"),
        "{csv}"
    );
    let xlsx = ask(
        &s.router,
        "GET",
        &format!("/c/{}/forms/vehicle/export?format=xlsx", A.0),
        Some(&worker),
        None,
    )
    .await;
    assert_eq!(xlsx.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.xlsx");
    std::fs::write(&path, &xlsx.body).unwrap();
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(&path).unwrap();
    let sheet = book.worksheet_range_at(0).unwrap().unwrap();
    let cells: Vec<String> = sheet.cells().map(|(_, _, c)| c.to_string()).collect();
    assert!(
        cells.iter().any(|c| c.starts_with("'=HYPERLINK")),
        "{cells:?}"
    );
    assert!(!cells.iter().any(|c| c.starts_with("=HYPERLINK")));
    let formulas = book
        .worksheet_formula(&book.sheet_names()[0].clone())
        .unwrap();
    assert!(
        formulas.cells().all(|(_, _, f)| f.is_empty()),
        "no formula in the export"
    );
    // Every export is audited: who, what.
    let trail = web::store::audit_trail(&s.db, 10).await.unwrap();
    assert_eq!(
        trail
            .iter()
            .filter(|t| t.1 == "worker" && t.2 == "export")
            .count(),
        2,
        "{trail:?}"
    );
}

#[tokio::test]
async fn a_silent_gateway_shows_stale_and_a_will_shows_offline() {
    let s = site().await;
    let now = auth::now_ms();
    put(
        &s.db,
        &topic_of(A, "gw-1", "status"),
        &status(true, 1, 30_000),
        now - 10 * 60_000,
    )
    .await;
    put(
        &s.db,
        &topic_of(B, "gw-1", "status"),
        &status(true, 1, 30_000),
        now,
    )
    .await;
    put(
        &s.db,
        &topic_of(C, "gw-1", "status"),
        &status(false, u32::MAX as u64, 30_000),
        now,
    )
    .await;
    let (op, _) = session_for(&s.db, "operator", Role::Company, "").await;
    let page = ask(&s.router, "GET", "/fleet", Some(&op), None)
        .await
        .text();
    let row = |community: &str| {
        page.split("<tr>")
            .find(|r| r.contains(&format!(">{community}<")))
            .unwrap_or_else(|| panic!("no row for {community}: {page}"))
            .to_string()
    };
    assert!(row(A.0).contains("状态过期"), "{}", row(A.0));
    assert!(row(B.0).contains("在线"), "{}", row(B.0));
    assert!(row(C.0).contains("离线"), "{}", row(C.0));
}

/// Behind the company's TLS proxy every peer is the proxy: the client is the last address it
/// vouches for in `X-Forwarded-For`; from anyone else that header is ignored.
#[tokio::test]
async fn the_client_address_is_the_proxys_word_only_when_the_peer_is_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite:{}", dir.path().join("r.db").display()), TZ)
        .await
        .unwrap();
    let mut app = App::new(vec![db], TZ, Labels::builtin(), true).unwrap();
    app.trusted_proxy = Some("127.0.0.1".parse().unwrap());
    let mut h = axum::http::HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        "203.0.113.9, 198.51.100.7".parse().unwrap(),
    );
    let proxy = SocketAddr::from(([127, 0, 0, 1], 50000));
    let other = SocketAddr::from(([192, 0, 2, 5], 50000));
    assert_eq!(auth::client_address(&app, proxy, &h), "198.51.100.7");
    assert_eq!(auth::client_address(&app, other, &h), "192.0.2.5");
    assert_eq!(
        auth::client_address(&app, proxy, &axum::http::HeaderMap::new()),
        "127.0.0.1"
    );
    // Served as secure: the session cookie says Secure, and HSTS goes with every answer.
    let router = web::router(Arc::new(app));
    let page = ask(&router, "GET", "/login", None, None).await;
    assert!(page.headers[header::STRICT_TRANSPORT_SECURITY]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
    assert!(page.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

/// With `[web.orders]`, an acknowledgement goes down to its gateway as an order signed with the
/// pages' key, once.
#[tokio::test]
async fn an_acknowledgement_goes_down_to_its_gateway_as_a_signed_order() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let port = crate::broker::free_port().unwrap();
    crate::broker::start(([127, 0, 0, 1], port).into()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let key_file = dir.path().join("web.key");
    std::fs::write(&key_file, gatehouse_contract::hex::to_hex(&[7; 32])).unwrap();
    let broker: crate::config::Broker = toml::from_str(&format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"pages\""
    ))
    .unwrap();
    let orders = crate::config::WebOrders {
        key: key_file,
        key_id: "company-web".into(),
    };
    let down = Arc::new(web::acks_down::AcksDown::new(&broker, &orders).unwrap());
    let s = site_with(Some(down)).await;
    let now = auth::now_ms();
    seed(&s.db, now).await;
    let (op, csrf) = session_for(&s.db, "operator", Role::Company, "").await;

    // The gateway's side of the broker: its command topics.
    let (gw, mut el) = AsyncClient::new(MqttOptions::new("gw", "127.0.0.1", port), 16);
    gw.subscribe("gh/v1/+/+/+/+/+/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(None).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(Some((p.topic, p.payload.to_vec()))).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
    assert!(rx.recv().await.unwrap().is_none(), "subscribed");

    let a = web::store::alarms(&s.db, 0, 10).await.unwrap().remove(0);
    let form = format!("csrf={csrf}&gw={}&seq={}&at_ms={}", a.gw, a.seq, a.at_ms);
    for _ in 0..2 {
        let r = ask(
            &s.router,
            "POST",
            "/fleet/alarms/ack",
            Some(&op),
            Some(form.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
    }
    let wait = std::time::Duration::from_secs(10);
    let (topic, payload) = tokio::time::timeout(wait, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(topic, format!("gh/v1/{}/cmd", a.gw));
    let signed: v1::SignedCommand = prost::Message::decode(payload.as_slice()).unwrap();
    assert_eq!(signed.key_id, "company-web");
    let c: v1::Command = prost::Message::decode(signed.command.as_slice()).unwrap();
    let Some(v1::command::Payload::AckAlarm(ack)) = c.payload else {
        panic!("{c:?}")
    };
    assert_eq!(
        (ack.alarm_seq as i64, ack.alarm_time_ms, ack.by.as_str()),
        (a.seq, a.at_ms, "operator")
    );
    use ed25519_dalek::Verifier;
    let sig = ed25519_dalek::Signature::from_slice(&signed.signature).unwrap();
    assert!(key.verifying_key().verify(&signed.command, &sig).is_ok());
    // The second click acknowledged nothing new: nothing more goes down.
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), rx.recv()).await;
    assert!(more.is_err(), "{more:?}");
}
