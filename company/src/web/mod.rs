//! The company service's web pages, served by the same binary (`gatehouse-company serve`): each
//! person sees their own level — a community worker their community's forms beside the street's
//! figures, a street officer or a district their communities side by side, the company's
//! operator the fleet, its alarms and its orders.
//!
//! `ROUTES` is the one list of what is served and who may ask for it; the router is built from
//! it, and the tests walk it to ask every route as someone who must be refused. Pages are
//! rendered on the server (maud: escaped at compile time), charts are inline SVG, there is no
//! JavaScript.
pub mod acks_down;
pub mod auth;
mod chart;
pub mod fleet;
pub mod labels;
mod layout;
pub mod notify;
mod pages;
pub mod store;
pub mod users;
pub mod who;

use crate::db::Db;
use auth::Limiter;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use chrono_tz::Tz;
use labels::Labels;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Who may ask for a route: anyone, anyone signed in, or someone whose scope holds the place
/// the path names (`:community`, `:street`, `:district`), or the company alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Signed,
    Community,
    Street,
    District,
    Company,
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// Everything served. A POST needs the session's CSRF token (the login form its own).
pub const ROUTES: &[Route] = &[
    route("GET", "/login", Access::Public),
    route("POST", "/login", Access::Public),
    route("POST", "/logout", Access::Signed),
    route("GET", "/", Access::Signed),
    route("GET", "/c/:community", Access::Community),
    route("GET", "/c/:community/forms/:kind", Access::Community),
    route("GET", "/c/:community/forms/:kind/export", Access::Community),
    route("GET", "/s/:street", Access::Street),
    route("GET", "/s/:street/export", Access::Street),
    route("GET", "/d/:district", Access::District),
    route("GET", "/d/:district/export", Access::District),
    route("GET", "/fleet", Access::Company),
    route("GET", "/fleet/alarms", Access::Company),
    route("POST", "/fleet/alarms/ack", Access::Company),
    route("GET", "/fleet/orders", Access::Company),
];

fn handler(r: &Route) -> MethodRouter<Arc<App>> {
    use axum::routing::{get, post};
    match (r.method, r.path) {
        ("GET", "/login") => get(auth::login_page),
        ("POST", "/login") => post(auth::login),
        ("POST", "/logout") => post(auth::logout),
        ("GET", "/") => get(pages::home),
        ("GET", "/c/:community") => get(pages::community),
        ("GET", "/c/:community/forms/:kind") => get(pages::community_form),
        ("GET", "/c/:community/forms/:kind/export") => get(pages::community_export),
        ("GET", "/s/:street") => get(pages::street),
        ("GET", "/s/:street/export") => get(pages::street_export),
        ("GET", "/d/:district") => get(pages::district),
        ("GET", "/d/:district/export") => get(pages::district_export),
        ("GET", "/fleet") => get(fleet::gateways),
        ("GET", "/fleet/alarms") => get(fleet::alarms),
        ("POST", "/fleet/alarms/ack") => post(fleet::acknowledge),
        ("GET", "/fleet/orders") => get(fleet::orders),
        // A route in the table with no handler is a bug found by the first test that builds
        // the router.
        _ => unreachable!("no handler for {} {}", r.method, r.path),
    }
}

/// What every handler shares.
pub struct App {
    /// A few connections, used in turn: pages are read while the ingest writes.
    dbs: Vec<Db>,
    next: AtomicUsize,
    pub tz: Tz,
    pub labels: Labels,
    /// Cookies marked `Secure` and HSTS sent (served over TLS, here or by the proxy).
    pub secure: bool,
    /// The company's TLS proxy in front (plain HTTP on loopback): its `X-Forwarded-For` names
    /// the client.
    pub trusted_proxy: Option<std::net::IpAddr>,
    pub limiter: Limiter,
    cache: pages::FormCache,
    /// How long a built form is served again (0: never): a street's day is read by many at
    /// once, and each page says when its form was made.
    pub cache_for: std::time::Duration,
    /// Acknowledgements sent down to the gateways (`[web.orders]`).
    pub acks_down: Option<Arc<acks_down::AcksDown>>,
}

impl App {
    pub fn new(dbs: Vec<Db>, tz: Tz, labels: Labels, secure: bool) -> anyhow::Result<App> {
        anyhow::ensure!(!dbs.is_empty(), "no database connection");
        Ok(App {
            dbs,
            next: AtomicUsize::new(0),
            tz,
            labels,
            secure,
            trusted_proxy: None,
            limiter: Limiter::default(),
            cache: Default::default(),
            cache_for: std::time::Duration::from_secs(10),
            acks_down: None,
        })
    }

    pub fn db(&self) -> &Db {
        &self.dbs[self.next.fetch_add(1, Ordering::Relaxed) % self.dbs.len()]
    }

    pub fn t<'a>(&'a self, key: &'a str) -> &'a str {
        self.labels.get(key)
    }
}

pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new();
    for route in ROUTES {
        r = r.route(route.path, handler(route));
    }
    r.fallback(|| async { Failure::NotFound })
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            harden,
        ))
        .with_state(app)
}

/// Headers every answer carries: no framing (clickjacking), no sniffing, no scripts at all
/// (the pages have none, so an injected one cannot run even if escaping ever failed), and
/// pages with someone's data are not cached by a shared browser.
async fn harden(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    mut r: Response,
) -> Response {
    let h = r.headers_mut();
    if app.secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, axum::http::HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    r
}

/// Why a request was not answered with its page.
#[derive(Debug)]
pub enum Failure {
    /// No session: to the login page.
    SignIn,
    Forbidden,
    NotFound,
    BadRequest(String),
    Csrf,
    Server(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Server(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (code, what) = match self {
            Failure::SignIn => {
                return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
            }
            Failure::Forbidden => (StatusCode::FORBIDDEN, "403 forbidden".to_string()),
            Failure::NotFound => (StatusCode::NOT_FOUND, "404 not found".to_string()),
            Failure::BadRequest(why) => (StatusCode::BAD_REQUEST, format!("400 {why}")),
            Failure::Csrf => (StatusCode::FORBIDDEN, "403 csrf".to_string()),
            Failure::Server(e) => {
                // A database gone answers every request so: logged at the 1st, 10th, 100th….
                static FAILED: AtomicU64 = AtomicU64::new(0);
                let n = FAILED.fetch_add(1, Ordering::Relaxed) + 1;
                if crate::ingest::worth_logging(n) {
                    tracing::warn!("web: {e:#} ({n} requests failed so far)");
                }
                (StatusCode::SERVICE_UNAVAILABLE, "503".to_string())
            }
        };
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            what,
        )
            .into_response()
    }
}

/// Connections served at once; more wait in the kernel's backlog, then are refused.
const MAX_CONNECTIONS: usize = 1024;
/// A client has this long to send a request's headers (a slow or idle one is let go) and a TLS
/// handshake.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves until `stop`, over TLS when `tls` is given.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let service = router(app);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, never spin.
                    tracing::warn!("web: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (tls, service) = (tls.clone(), service.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(tcp, peer, service).await,
                Some(tls) => {
                    // A client that never finishes its handshake is dropped.
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(CLIENT_TIMEOUT, tls.accept(tcp)).await
                    {
                        connection(stream, peer, service).await
                    }
                }
            }
        });
    }
}

/// One client's connection, HTTP/1.1, its address given to the handlers.
async fn connection<S>(stream: S, peer: SocketAddr, service: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let mut s = service.clone();
        async move {
            use tower::Service;
            s.call(req.map(axum::body::Body::new)).await
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT);
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// Until `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// A TLS acceptor from a certificate chain and key (PEM files).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| cert.display().to_string())?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| cert.display().to_string())?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| key.display().to_string())?,
    ))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
