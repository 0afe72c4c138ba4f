//! The guard's console: a web page the daemon serves on the booth's LAN (`[console]`), for the
//! booth's PC or a tablet. Every lane live, the alarms until acknowledged, each device's state,
//! the mode and the clock; a lane opened with a reason; the mode changed by a supervisor. Fire
//! shows, its reset stays at the box (`gatehouse fire-reset`).
//!
//! Off the decision path by construction: it reads a copy of the records (the writer's tap) and
//! the status the uplink reports, and asks the decision loop through the same control channel
//! as the CLI; acknowledgements and its own audit records go straight to the outbox writer.
//!
//! `ROUTES` is every path served and who may ask; `auth.rs` who is asking; `live.rs` what is
//! shown; `page.rs` the pages; `users.rs` the logins file.
pub mod auth;
pub mod live;
mod page;
pub mod users;
mod visitors;

use super::control::Control;
use crate::decision::{Mode, Origin};
use crate::proto::v1;
use crate::store::outbox::{Append, Record};
use anyhow::Context;
use auth::{Auth, Session};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use live::View;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{info, warn};
use users::Role;

/// Connections at once, and from one address: a booth has a PC and a tablet; more is someone
/// else.
const CONNECTIONS: usize = 64;
const PER_ADDRESS: usize = 32;
/// Live streams at once (each a browser tab).
const STREAMS: usize = 32;
/// A request's headers (and a TLS handshake) must arrive within this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A form is a few short fields.
const FORM_MAX: usize = 4096;
/// Passwords hashed at once (argon2id: 19 MiB and ~0.1 s each on the box).
const HASHING: usize = 1;

/// Who may ask for a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    Guard,
    Supervisor,
}

/// Every path served: the router is this table. The browser tests walk it.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/login", Access::Anyone),
    ("POST", "/login", Access::Anyone),
    ("GET", "/static/console.css", Access::Anyone),
    ("GET", "/static/console.js", Access::Anyone),
    ("GET", "/", Access::Guard),
    ("GET", "/live", Access::Guard),
    ("POST", "/logout", Access::Guard),
    ("POST", "/open", Access::Guard),
    ("POST", "/ack", Access::Guard),
    ("POST", "/visitor", Access::Guard),
    ("GET", "/pass", Access::Guard),
    ("POST", "/withdraw", Access::Guard),
    ("POST", "/mode", Access::Supervisor),
];

pub struct Console {
    pub gateway: String,
    auth: Auth,
    hashing: Arc<Semaphore>,
    /// Login attempts refused by the limiter, for the log's 1st, 10th, 100th…
    limited: std::sync::atomic::AtomicU64,
    streams: Arc<Semaphore>,
    to_core: mpsc::Sender<Control>,
    appends: mpsc::Sender<Append>,
    pub view: Arc<View>,
    clock: Arc<crate::clock::ClockWatch>,
    /// Served over TLS: cookies `Secure`, HSTS.
    secure: bool,
    audit: audit::Audit,
    store: crate::store::Store,
}

pub struct Start {
    pub listen: SocketAddr,
    pub tls: Option<rumqttc::tokio_rustls::TlsAcceptor>,
    pub users: std::path::PathBuf,
    /// The booth's screens: connections of their own (`[console] booth`).
    pub booth: Vec<IpAddr>,
    pub store_dir: std::path::PathBuf,
    pub to_core: mpsc::Sender<Control>,
    pub appends: mpsc::Sender<Append>,
    pub view: Arc<View>,
    pub clock: Arc<crate::clock::ClockWatch>,
    pub gateway: String,
    pub store: crate::store::Store,
    pub visitor_retention_days: u32,
}

/// Binds and serves until shutdown.
pub async fn serve(
    s: Start,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("console on {}", s.listen))?;
    let addr = listener.local_addr()?;
    let console = Arc::new(Console {
        gateway: s.gateway,
        auth: Auth::new(s.users),
        hashing: Arc::new(Semaphore::new(HASHING)),
        limited: Default::default(),
        streams: Arc::new(Semaphore::new(STREAMS)),
        to_core: s.to_core,
        appends: s.appends,
        view: s.view,
        clock: s.clock,
        secure: s.tls.is_some(),
        audit: audit::Audit::new(&s.store_dir),
        store: s.store,
    });
    // Visitor data goes when retention says, checked hourly.
    let (purging, days, mut stop) = (console.clone(), s.visitor_retention_days, shutdown.clone());
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = hourly.tick() => purging.purge(days).await,
                _ = stop.changed() => break,
            }
        }
    });
    info!(listen = %addr, tls = console.secure, "Guard's console up.");
    // Other hosts share CONNECTIONS; the booth's screens are never crowded out by them.
    let booth = s.booth.iter().copied().collect();
    let slots = crate::sources::slots::Slots::new(CONNECTIONS, PER_ADDRESS, booth);
    let tls = s.tls;
    let join = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.changed() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "Console: accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.take(peer.ip()) else {
                continue;
            };
            let (console, tls, stop) = (console.clone(), tls.clone(), shutdown.clone());
            tokio::spawn(async move {
                let _slot = slot;
                match tls {
                    None => connection(tcp, peer, console, stop).await,
                    Some(tls) => {
                        let accepted = tokio::time::timeout(CLIENT_TIMEOUT, tls.accept(tcp));
                        if let Ok(Ok(stream)) = accepted.await {
                            connection(stream, peer, console, stop).await;
                        }
                    }
                }
            });
        }
    });
    Ok((addr, join))
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    console: Arc<Console>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let console = console.clone();
        async move { Ok::<_, Infallible>(console.handle(peer.ip(), req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = stop.changed() => {}
    }
}

type Body = BoxBody<Bytes, Infallible>;
type Answer = Response<Body>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn see_other(to: &str) -> Answer {
    let mut r = answer(StatusCode::SEE_OTHER, "text/plain", "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn html(m: maud::Markup) -> Answer {
    answer(StatusCode::OK, "text/html; charset=utf-8", m.into_string())
}

fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

const SESSION_COOKIE: &str = "gh_console";
const LOGIN_COOKIE: &str = "gh_login";

impl Console {
    fn set_cookie(&self, r: &mut Answer, name: &str, value: &str, max_age: u64) {
        let secure = if self.secure { "; Secure" } else { "" };
        let c =
            format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    async fn handle(self: &Arc<Self>, from: IpAddr, req: Request<Incoming>) -> Answer {
        let mut r = self.route(from, req).await;
        harden(&mut r, self.secure);
        r
    }

    async fn route(self: &Arc<Self>, from: IpAddr, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let Some(&(_, _, access)) = ROUTES
            .iter()
            .find(|(m, p, _)| *p == path && *m == method.as_str())
        else {
            return answer(StatusCode::NOT_FOUND, "text/plain", "not found\n");
        };
        if access == Access::Anyone {
            return match (method, path.as_str()) {
                (Method::GET, "/login") => self.login_page(None),
                (Method::POST, "/login") => self.login(from, req).await,
                (_, "/static/console.css") => answer(StatusCode::OK, "text/css", page::STYLESHEET),
                _ => answer(StatusCode::OK, "text/javascript", page::SCRIPT),
            };
        }
        let token = cookie(&req, SESSION_COOKIE).unwrap_or_default();
        let Some(session) = self
            .auth
            .session(&token, method == Method::GET && path == "/")
        else {
            return match method {
                Method::GET if path == "/" => see_other("/login"),
                _ => answer(StatusCode::UNAUTHORIZED, "text/plain", "log in first\n"),
            };
        };
        if access == Access::Supervisor && session.role != Role::Supervisor {
            self.audit.write(&session.user, "refused", &path);
            return answer(StatusCode::FORBIDDEN, "text/plain", "a supervisor's\n");
        }
        if method == Method::POST {
            // The form must come from our own page: the session's token, and — where the
            // browser says — our own origin.
            if !same_origin(&req) {
                return answer(StatusCode::FORBIDDEN, "text/plain", "cross-site\n");
            }
            let form = match read_form(req).await {
                Ok(f) => f,
                Err(e) => return answer(StatusCode::BAD_REQUEST, "text/plain", e),
            };
            let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
            if !auth::same(csrf, &session.csrf) {
                self.audit.write(&session.user, "refused", "csrf");
                return answer(StatusCode::FORBIDDEN, "text/plain", "stale form\n");
            }
            let said = match path.as_str() {
                "/logout" => {
                    self.auth.end(&token);
                    self.audit.write(&session.user, "logout", "");
                    let mut r = see_other("/login");
                    self.set_cookie(&mut r, SESSION_COOKIE, "", 0);
                    return r;
                }
                "/open" => self.open(&session, &form).await,
                "/visitor" => match self.register(&session, &form).await {
                    Ok(id) => return see_other(&format!("/pass?id={id}")),
                    Err(why) => format!("访客未登记：{why}"),
                },
                "/withdraw" => self.withdraw(&session, &form).await,
                "/ack" => self.ack(&session, &form).await,
                _ => self.mode(&session, &form).await,
            };
            self.auth.set_flash(&token, said);
            return see_other("/");
        }
        match path.as_str() {
            "/live" => self.live(token),
            "/pass" => {
                let id = req.uri().query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "id")
                        .map(|(_, v)| v.into_owned())
                });
                let pass = self
                    .passes()
                    .await
                    .into_iter()
                    .find(|p| Some(&p.id) == id.as_ref());
                match pass {
                    Some(p) => html(page::pass(&p, &session)),
                    None => answer(StatusCode::NOT_FOUND, "text/plain", "no such pass\n"),
                }
            }
            _ => {
                let now = self.clock.now();
                let mut passes = self.passes().await;
                passes.retain(|p| p.valid_until_ms > now);
                html(page::console(self, &session, &passes))
            }
        }
    }

    fn login_page(&self, said: Option<&str>) -> Answer {
        let token = auth::new_token();
        let mut r = answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::login(&self.gateway, &token, said).into_string(),
        );
        self.set_cookie(&mut r, LOGIN_COOKIE, &token, 3600);
        r
    }

    async fn login(self: &Arc<Self>, from: IpAddr, req: Request<Incoming>) -> Answer {
        let bound = cookie(&req, LOGIN_COOKIE).unwrap_or_default();
        if !same_origin(&req) {
            return answer(StatusCode::FORBIDDEN, "text/plain", "cross-site\n");
        }
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(e) => return answer(StatusCode::BAD_REQUEST, "text/plain", e),
        };
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        let (name, password) = (field("user"), field("password"));
        if bound.is_empty() || !auth::same(&field("csrf"), &bound) {
            return self.login_page(Some("表单已过期，请重试。"));
        }
        // No such name can exist: refused unhashed, uncounted (and never logged as typed).
        if !users::name_ok(&name) || password.len() > 1024 {
            return self.login_page(Some("用户名或密码不对。"));
        }
        if let Err(why) = self.auth.attempt(&name, from) {
            // A flood of these is counted, not written line by line (the audit keeps room for
            // what people did).
            let n = self
                .limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            if crate::metrics::worth_logging(n) {
                warn!(user = %name, %from, refused = n, "Console: {why}.");
                self.audit
                    .write(&name, "login_limited", &format!("{from} ({n} so far)"));
            }
            return self.login_page(Some("尝试次数过多，请 15 分钟后再试。"));
        }
        let Ok(permit) = self.hashing.clone().acquire_owned().await else {
            return self.login_page(None);
        };
        let (me, n) = (self.clone(), name.clone());
        // The permit goes with the hash: a client that hangs up does not free it early.
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            me.auth.login(&n, &password)
        })
        .await;
        let Ok(Some((token, session))) = done else {
            self.audit.write(&name, "login_failed", &from.to_string());
            return self.login_page(Some("用户名或密码不对。"));
        };
        self.audit.write(
            &session.user,
            "login",
            &format!("{} {from}", session.role.as_str()),
        );
        let mut r = see_other("/");
        self.set_cookie(
            &mut r,
            SESSION_COOKIE,
            &token,
            auth::SESSION_LIFETIME.as_secs(),
        );
        self.set_cookie(&mut r, LOGIN_COOKIE, "", 0);
        r
    }

    /// A lane opened with a reason: through the decision loop, as every open.
    async fn open(&self, s: &Session, form: &Form) -> String {
        let lane = form.get("lane").cloned().unwrap_or_default();
        let reason = form.get("reason").map(|r| r.trim()).unwrap_or("");
        if reason.is_empty() || reason.chars().count() > 100 {
            return "开闸需填写原因（100 字以内）。".into();
        }
        let result = self
            .ask(|reply| Control::Open {
                lane: lane.clone(),
                by: s.user.clone(),
                reason: reason.to_string(),
                reply,
            })
            .await;
        self.audit
            .write(&s.user, "open", &format!("{lane} {reason} → {result:?}"));
        match result {
            Ok(()) => format!("{lane}：开闸指令已发出。"),
            Err(why) => format!("{lane}：未开闸 — {why}"),
        }
    }

    /// An alarm acknowledged: one record, up with the alarms; every console closes it.
    async fn ack(&self, s: &Session, form: &Form) -> String {
        let by = format!("console:{}", s.user);
        let seq = form.get("seq").and_then(|v| v.parse::<u64>().ok());
        // Claimed before it is written: two clicks, or the booth's two screens, make one.
        let Some(alarm) = seq.and_then(|seq| self.view.claim(seq, &by)) else {
            return "该报警已确认或不存在。".into();
        };
        let ack = v1::AlarmAck {
            alarm_seq: alarm.seq,
            alarm_time_ms: alarm.gateway_time_ms,
            by,
            acked_at_ms: self.clock.now(),
        };
        self.audit.write(&s.user, "ack", &alarm.alarm_id);
        match self.append(Record::AlarmAck(ack)).await {
            Ok(()) => "报警已确认。".into(),
            Err(e) => {
                self.view.unclaim(alarm);
                format!("未能记录确认：{e}")
            }
        }
    }

    /// The mode, by a supervisor; fire's end stays at the box.
    async fn mode(&self, s: &Session, form: &Form) -> String {
        let Some(mode) = form.get("mode").and_then(|m| Mode::parse(m)) else {
            return "未知模式。".into();
        };
        let result = self
            .ask(|reply| Control::SetMode(mode, Origin::Local, reply))
            .await;
        self.audit.write(
            &s.user,
            "set_mode",
            &format!("{} → {result:?}", mode.as_str()),
        );
        if result.is_ok() {
            info!(mode = mode.as_str(), by = %s.user, "Mode changed at the console.");
            let e = v1::Event {
                gateway_time_ms: self.clock.now(),
                body: Some(v1::event::Body::OperatorAction(v1::OperatorAction {
                    by: s.user.clone(),
                    role: s.role.as_str().into(),
                    action: "set_mode".into(),
                    detail: mode.as_str().into(),
                })),
                ..Default::default()
            };
            let _ = self.append(Record::Event(e)).await;
        }
        match result {
            Ok(()) => format!("模式已改为 {}。", mode.as_str()),
            Err(why) => format!("模式未改：{why}"),
        }
    }

    /// A request to the decision loop, as the CLI's go; its answer.
    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Control,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        if self.to_core.send(make(tx)).await.is_err() {
            return Err("the daemon is stopping".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the daemon is stopping".into()))
    }

    /// One record straight to the outbox writer; back once it is durable.
    async fn append(&self, r: Record) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let a = Append {
            records: vec![r],
            state: Vec::new(),
            ack: Some(Box::new(move || {
                let _ = tx.send(());
            })),
        };
        self.appends
            .send(a)
            .await
            .map_err(|_| "the daemon is stopping".to_string())?;
        rx.await.map_err(|_| "the daemon is stopping".to_string())
    }

    /// The live stream: the whole picture, then the changes, until the session ends.
    fn live(self: &Arc<Self>, token: String) -> Answer {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "too many live pages\n",
            );
        };
        let (hello, rx) = self.view.subscribe();
        let stream = Stream {
            rx,
            console: self.clone(),
            token,
            checked: std::time::Instant::now(),
            _permit: permit,
        };
        use futures_util::StreamExt;
        let first = async move { Ok::<_, Infallible>(Frame::data(hello)) };
        let stream = futures_util::stream::once(first)
            .chain(futures_util::stream::unfold(stream, Stream::next));
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r
    }
}

/// One browser's live stream after its first event.
struct Stream {
    rx: tokio::sync::broadcast::Receiver<Bytes>,
    console: Arc<Console>,
    token: String,
    /// When its session was last found good.
    checked: std::time::Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Stream)> {
        use tokio::sync::broadcast::error::RecvError;
        let next = match self.rx.recv().await {
            Ok(e) => e,
            // Fell behind: the whole picture again.
            Err(RecvError::Lagged(_)) => self.console.view.hello(),
            Err(RecvError::Closed) => return None,
        };
        // A session that ended (logout, a disabled user, a new password) ends its stream,
        // found within a second.
        if self.checked.elapsed() >= Duration::from_secs(1) {
            self.console.auth.session(&self.token, false)?;
            self.checked = std::time::Instant::now();
        }
        Some((Ok(Frame::data(next)), self))
    }
}

type Form = std::collections::HashMap<String, String>;

async fn read_form(req: Request<Incoming>) -> Result<Form, &'static str> {
    let body = Limited::new(req.into_body(), FORM_MAX).collect();
    // A body trickled in a byte at a time holds no connection past this.
    let body = tokio::time::timeout(CLIENT_TIMEOUT, body)
        .await
        .map_err(|_| "form too slow\n")?
        .map_err(|_| "form too large or cut short\n")?
        .to_bytes();
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

/// The browser's `Origin` (or, without it, `Referer`), where given, names the host asked.
fn same_origin(req: &Request<Incoming>) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let from = req
        .headers()
        .get(header::ORIGIN)
        .or_else(|| req.headers().get(header::REFERER))
        .and_then(|h| h.to_str().ok());
    match from {
        None => true,
        Some(o) => {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            rest.split('/').next() == Some(host)
        }
    }
}

/// What every answer carries: no framing, no sniffing, nothing cached, only our own scripts.
fn harden(r: &mut Answer, secure: bool) {
    let h = r.headers_mut();
    let set = |h: &mut hyper::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    if secure {
        set(h, "strict-transport-security", "max-age=31536000");
    }
}

mod audit {
    //! Every console action, in the store's directory: one JSON line each
    //! (`console-audit.log`, the one before in `.1`, 1 MiB each). The actions that change the
    //! gate also go upstream as records.
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::Mutex;

    const MAX_BYTES: u64 = 1 << 20;

    pub struct Audit {
        path: PathBuf,
        lock: Mutex<()>,
    }

    impl Audit {
        pub fn new(dir: &std::path::Path) -> Audit {
            Audit {
                path: dir.join("console-audit.log"),
                lock: Mutex::new(()),
            }
        }

        pub fn write(&self, user: &str, action: &str, detail: &str) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
                let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
            }
            let line = serde_json::json!({
                "at_ms": crate::now_ms(), "user": user, "action": action, "detail": detail,
            });
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::warn!(error = %e, "Console: audit line not written.");
            }
            tracing::info!(user, action, detail, "Console action.");
        }
    }
}
