//! A simulated access terminal, the side gatehouse calls, with Digest authentication as the
//! terminals ask for it. Hikvision ISAPI: `alertStream` (a `multipart/mixed` stream of events and
//! heartbeats that it drops on demand, as real streams drop after ~40 s and at reboots),
//! `httpHosts`, the `AcsEvent` search over what it stored, `RemoteControl/door`. Dahua CGI:
//! `eventManager.cgi?action=attach` (`multipart/x-mixed-replace`, `Code=…;data={…}` parts) and
//! `accessControl.cgi?action=openDoor`.
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const BOUNDARY: &str = "boundary";
const REALM: &str = "DS-K1T671TM";

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct State {
    username: String,
    password: String,
    streams: Mutex<Vec<mpsc::Sender<Bytes>>>,
    hosts: Mutex<Option<String>>,
    stored: Mutex<Vec<Value>>,
    doors: mpsc::UnboundedSender<(u32, String)>,
    refused: AtomicU64,
    searches: AtomicU64,
    /// Every request served (after TLS, where it is on).
    requests: AtomicU64,
}

/// A running simulated terminal.
#[derive(Clone)]
pub struct Terminal {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Terminal {
    /// Starts one on a free loopback port; door commands come out of the receiver as (door,
    /// body).
    pub async fn start(
        username: &str,
        password: &str,
    ) -> std::io::Result<(Terminal, mpsc::UnboundedReceiver<(u32, String)>)> {
        Self::start_on("127.0.0.1:0", username, password).await
    }

    /// [`Terminal::start`] on `listen`.
    pub async fn start_on(
        listen: &str,
        username: &str,
        password: &str,
    ) -> std::io::Result<(Terminal, mpsc::UnboundedReceiver<(u32, String)>)> {
        Self::start_with(listen, username, password, None).await
    }

    /// [`Terminal::start`] over HTTPS with its own certificate and key (PEM), as terminals
    /// offer it.
    pub async fn start_tls(
        username: &str,
        password: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> std::io::Result<(Terminal, mpsc::UnboundedReceiver<(u32, String)>)> {
        let tls = crate::mqtt_client::tls_acceptor(cert, key, None)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Self::start_with("127.0.0.1:0", username, password, Some(tls)).await
    }

    async fn start_with(
        listen: &str,
        username: &str,
        password: &str,
        tls: Option<rumqttc::tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<(Terminal, mpsc::UnboundedReceiver<(u32, String)>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (doors, doors_rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            username: username.into(),
            password: password.into(),
            streams: Mutex::new(Vec::new()),
            hosts: Mutex::new(None),
            stored: Mutex::new(Vec::new()),
            doors,
            refused: AtomicU64::new(0),
            searches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(&state, req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            http.serve_connection(io, service).await
                        }
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            http.serve_connection(io, service).await
                        }
                    };
                });
            }
        });
        Ok((Terminal { addr, state }, doors_rx))
    }

    /// Sends a part to every open alertStream: `json` as `application/json`.
    pub fn send_event(&self, json: &str) {
        self.send_raw(isapi_part(json));
    }

    /// Sends a Dahua event part (`Code=AccessControl;action=Pulse;index=0;data={json}`, or any
    /// line, such as `Heartbeat`) to every open eventManager stream.
    pub fn send_dahua(&self, line: &str) {
        self.send_raw(dahua_part(line));
    }

    /// Sends an `AccessControl` event with `data` as the terminals write it: over many lines.
    pub fn send_dahua_access(&self, data: &serde_json::Value) {
        self.send_dahua(&dahua_access(data));
    }

    /// Sends bytes as they are (garbage between parts, a broken part).
    pub fn send_raw(&self, bytes: Vec<u8>) {
        let bytes = Bytes::from(bytes);
        let mut streams = self.state.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|s| s.try_send(bytes.clone()).is_ok());
    }

    /// Ends every open alertStream (the ~40 s drop, a reboot).
    pub fn drop_streams(&self) {
        self.state
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// How many alertStreams are open now.
    pub fn open_streams(&self) -> usize {
        let mut streams = self.state.streams.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|s| !s.is_closed());
        streams.len()
    }

    /// An event the terminal stored (offered by the AcsEvent search), in the search's flat form.
    pub fn store(&self, item: Value) {
        self.state
            .stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
    }

    /// The `httpHosts` entry last written, as XML.
    pub fn hosts(&self) -> Option<String> {
        self.state
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests served (after TLS, where it is on).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests refused for their credentials; AcsEvent searches answered.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    pub fn searches(&self) -> u64 {
        self.state.searches.load(Ordering::Relaxed)
    }
}

/// One alertStream part holding `json`, as a Hikvision terminal writes it.
pub fn isapi_part(json: &str) -> Vec<u8> {
    format!(
        "--{BOUNDARY}\r\nContent-Type: application/json; charset=\"UTF-8\"\r\n\
         Content-Length: {}\r\n\r\n{json}\r\n",
        json.len()
    )
    .into_bytes()
}

/// One eventManager part holding `line` (boundary `myboundary`), as a Dahua terminal writes it.
pub fn dahua_part(line: &str) -> Vec<u8> {
    format!(
        "--myboundary\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{line}\r\n",
        line.len() + 2
    )
    .into_bytes()
}

/// A Dahua `AccessControl` event with `data` over many lines, as terminals write it.
pub fn dahua_access(data: &Value) -> String {
    let pretty = serde_json::to_string_pretty(data).unwrap_or_default();
    format!(
        "Code=AccessControl;action=Pulse;index=0;data={}",
        pretty.replace('\n', "\r\n")
    )
}

/// A page of the `AcsEvent` search's answer: `status` MORE, OK or NO MATCH.
pub fn acs_event_answer(page: &[Value], status: &str, total: usize) -> String {
    json!({"AcsEvent": {"searchID": "x", "responseStatusStrg": status,
        "numOfMatches": page.len(), "totalMatches": total, "InfoList": page}})
    .to_string()
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

/// Whether the request carries a correct Digest answer for our password.
fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(h) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(given) = digest_auth::AuthorizationHeader::parse(h) else {
        return false;
    };
    if given.username != state.username || given.realm != REALM {
        return false;
    }
    let context = digest_auth::AuthContext::new_with_method(
        state.username.as_str(),
        state.password.as_str(),
        given.uri.as_str(),
        Option::<&[u8]>::None,
        digest_auth::HttpMethod::from(req.method().as_str()),
    );
    let mut expected = given.clone();
    expected.digest(&context);
    expected.response == given.response
}

async fn serve(state: &State, req: Request<Incoming>) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if !authorized(state, &req) {
        if req.headers().contains_key(AUTHORIZATION) {
            state.refused.fetch_add(1, Ordering::Relaxed);
        }
        let mut r = full(StatusCode::UNAUTHORIZED, "");
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            format!(
                "Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"4e6f6e6365{}\", algorithm=MD5",
                crate::now_ms()
            )
            .parse()
            .expect("a valid header"),
        );
        return r;
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match (method, path.as_str()) {
        (Method::GET, "/ISAPI/Event/notification/alertStream")
        | (Method::GET, "/cgi-bin/eventManager.cgi") => {
            let boundary = if path.starts_with("/cgi-bin") {
                "multipart/x-mixed-replace; boundary=myboundary"
            } else {
                "multipart/mixed; boundary=boundary"
            };
            let (tx, rx) = mpsc::channel::<Bytes>(1024);
            state
                .streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(tx);
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            let mut r = Response::new(StreamBody::new(frames).boxed());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(boundary));
            r
        }
        (Method::GET, "/cgi-bin/accessControl.cgi") => {
            let channel = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("channel="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let _ = state.doors.send((channel, query.clone()));
            full(StatusCode::OK, "OK\r\n")
        }
        (Method::GET, "/ISAPI/Event/notification/httpHosts/1") => {
            match state
                .hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                Some(xml) => full(StatusCode::OK, xml),
                None => full(
                    StatusCode::OK,
                    "<HttpHostNotification><id>1</id><url>/other</url><ipAddress>10.0.0.9</ipAddress><portNo>80</portNo></HttpHostNotification>",
                ),
            }
        }
        (Method::PUT, "/ISAPI/Event/notification/httpHosts/1") => {
            *state.hosts.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(String::from_utf8_lossy(&body).into_owned());
            full(
                StatusCode::OK,
                "<ResponseStatus><statusCode>1</statusCode></ResponseStatus>",
            )
        }
        (Method::POST, "/ISAPI/AccessControl/AcsEvent") => {
            state.searches.fetch_add(1, Ordering::Relaxed);
            let cond: Value = serde_json::from_slice(&body).unwrap_or_default();
            let position = cond
                .pointer("/AcsEventCond/searchResultPosition")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            let max = cond
                .pointer("/AcsEventCond/maxResults")
                .and_then(Value::as_u64)
                .unwrap_or(30) as usize;
            let stored = state
                .stored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let page: Vec<Value> = stored.iter().skip(position).take(max).cloned().collect();
            let more = position + page.len() < stored.len();
            let status = match (page.is_empty(), more) {
                (true, _) => "NO MATCH",
                (false, true) => "MORE",
                (false, false) => "OK",
            };
            full(
                StatusCode::OK,
                acs_event_answer(&page, status, stored.len()),
            )
        }
        (Method::PUT, p) if p.starts_with("/ISAPI/AccessControl/RemoteControl/door/") => {
            let door = p
                .rsplit('/')
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let _ = state
                .doors
                .send((door, String::from_utf8_lossy(&body).into_owned()));
            full(StatusCode::OK, "{\"statusCode\":1,\"statusString\":\"OK\"}")
        }
        _ => full(StatusCode::NOT_FOUND, ""),
    }
}

/// Which terminal [`run`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Hikvision: JSON `AccessControllerEvent` parts, a `videoloss` heartbeat every 10 s.
    Isapi,
    /// Dahua: `Code=AccessControl;…;data={…}` parts (one in ten by card alone), a `Heartbeat`
    /// every 5 s.
    Dahua,
}

/// The terminal as `gatehouse simulate hikvision-isapi-terminal | dahua-access` runs it: events
/// into every open stream at `rate` (residents `R000000`…), its heartbeat, the stream dropped
/// every `drop_every_s` (0: never) as real ones drop (every ~40 s, at reboots); prints each door
/// command.
pub async fn run(
    vendor: Vendor,
    listen: &str,
    username: &str,
    password: &str,
    rate: f64,
    drop_every_s: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (t, mut doors) = Terminal::start_on(listen, username, password).await?;
    println!("{vendor:?} terminal on {} (user {username})", t.addr);
    let mut rng = super::Rng::new(crate::now_ms() as u64);
    let secs = std::time::Duration::from_secs;
    let mut events =
        tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut beat = tokio::time::interval(secs(if vendor == Vendor::Dahua { 5 } else { 10 }));
    let every = secs(drop_every_s.max(1));
    let mut drops = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut serial = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            Some((door, what)) = doors.recv() => println!("door {door}: {what}"),
            _ = drops.tick(), if drop_every_s > 0 => t.drop_streams(),
            _ = beat.tick() => match vendor {
                Vendor::Isapi => t.send_event(&json!({"eventType": "videoloss", "eventState": "inactive",
                    "dateTime": crate::timefmt::rfc3339(crate::now_ms())}).to_string()),
                Vendor::Dahua => t.send_dahua("Heartbeat"),
            },
            _ = events.tick() => {
                serial += 1;
                let who = format!("R{:06}", rng.next_u64() % 1000);
                let card = rng.unit() < 0.1;
                match vendor {
                    Vendor::Isapi => t.send_event(&json!({"eventType": "AccessControllerEvent",
                        "dateTime": crate::timefmt::rfc3339(crate::now_ms()),
                        "AccessControllerEvent": {"serialNo": serial, "employeeNoString": who,
                            "currTemperature": 36.5, "currentEvent": true}}).to_string()),
                    Vendor::Dahua => {
                        let data = if card {
                            json!({"UserID": "", "CardNo": format!("10:{}", 1000 + rng.next_u64() % 1000), "Method": 1, "Status": 1, "RecNo": serial, "UTC": crate::now_ms() / 1000})
                        } else {
                            json!({"UserID": who, "Method": 15, "Status": 1, "Similarity": 90, "RecNo": serial, "UTC": crate::now_ms() / 1000})
                        };
                        t.send_dahua_access(&data);
                    }
                }
            }
        }
    }
}
