//! The HTTP device listener: terminals and cameras that push their events over HTTP (Hikvision
//! ISAPI "listening mode", Zhenshi HTTP push) POST them here, to `/push/{device id}/{secret}` or
//! to `/push/{device id}` with Basic authentication. Each push is one event (or heartbeat): its
//! body — `multipart/form-data` with the event in the profile's part, pictures skipped unread, or
//! plain JSON or XML — decodes with the device's profile like any other transport's, and goes to
//! the decision loop as an [`Input`].
//!
//! The answer is the ack. A terminal's 200 goes once the decision is durable, like a PUBACK. A
//! camera whose reply *is* the gate command (`reply = "command"`) is answered with the command the
//! moment the decision loop sends it (the gate before the record), and with the profile's
//! non-actuating `ack_body` once durable when nothing opens (a duplicate, a stored record, a
//! heartbeat) — so a camera replaying its offline store moves on only when each record is stored.
//!
//! Bounded everywhere: connections, header and body deadlines (408), the body (413), the event
//! part (413); every refusal is counted (`device_refusals`), logged at the 1st, 10th, 100th…, and
//! raised upstream as `device_misbehaving` (at most one a minute per device).
pub mod adms;
pub mod api;
pub mod client;
pub mod multipart;

use crate::config::secrets::Secret;
use crate::device::profile::Reply;
use crate::device::{Profile, MAX_PAYLOAD};
use crate::metrics::Metrics;
use crate::sources::slots::Slots;
use crate::sources::{checked, DeviceLive, Input, PendingReply, Refusals};
use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// A connection's read buffer, at most.
const READ_BUFFER: usize = 32 * 1024;

/// How long a push waits for its decision to be durable before it is answered 503 (the device
/// sends it again; the second one is recognised as a duplicate).
const DURABLE_WAIT: Duration = Duration::from_secs(30);

/// One device that pushes over HTTP.
pub struct HttpDevice {
    pub device: usize,
    pub device_id: String,
    pub profile: Arc<Profile>,
    /// What the push must prove (the device's password: in the path or by Basic auth).
    pub secret: Secret,
    /// Only pushes from this address are taken, where set.
    pub from: Option<IpAddr>,
    pub live: Arc<DeviceLive>,
    /// The address its last accepted push came from (logged when it changes).
    pub seen_from: std::sync::Mutex<Option<IpAddr>>,
    /// A ZKTeco ADMS device: its serial number, and its door commands waiting for its poll.
    pub adms_sn: Option<String>,
    pub polls: Option<Arc<adms::Polls>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections from addresses no device has, in all…
    pub connections: usize,
    /// …and from one address (a device's `from` has as many of its own).
    pub per_address: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_body: usize,
}

pub struct Start {
    pub listen: SocketAddr,
    pub limits: Limits,
    pub devices: Vec<HttpDevice>,
    pub input: mpsc::Sender<Input>,
    pub events: mpsc::Sender<crate::sources::SourceEvent>,
    pub refusals: Arc<Refusals>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

struct Shared {
    by_id: HashMap<String, HttpDevice>,
    /// ADMS devices: serial number → id.
    by_sn: HashMap<String, String>,
    events: mpsc::Sender<crate::sources::SourceEvent>,
    limits: Limits,
    input: mpsc::Sender<Input>,
    refusals: Arc<Refusals>,
    metrics: Arc<Metrics>,
}

/// Binds the listener (a taken port is a start error) and serves until shutdown.
pub async fn start(s: Start) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .map_err(|e| anyhow::anyhow!("device HTTP listener on {}: {e}", s.listen))?;
    let addr = listener.local_addr()?;
    info!(listen = %addr, devices = s.devices.len(), "Device HTTP listener up.");
    let by_sn = s
        .devices
        .iter()
        .filter_map(|d| Some((d.adms_sn.clone()?, d.device_id.clone())))
        .collect();
    let shared = Arc::new(Shared {
        by_id: s
            .devices
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect(),
        by_sn,
        events: s.events,
        limits: s.limits,
        input: s.input,
        refusals: s.refusals,
        metrics: s.metrics,
    });
    let mut shutdown = s.shutdown;
    let known = shared.by_id.values().filter_map(|d| d.from).collect();
    let slots = Slots::new(shared.limits.connections, shared.limits.per_address, known);
    let join = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.changed() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "Device HTTP listener: accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let slot = match slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    shared.refusals.refuse(None, "unknown", peer, why);
                    continue;
                }
            };
            let shared = shared.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(|req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, peer, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(shared.limits.header_timeout)
                    // Pictures stream through a small buffer, not hyper's default ~400 KiB one per
                    // connection (a terminal's headers are far smaller).
                    .max_buf_size(READ_BUFFER)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.changed() => {}
                }
            });
        }
    });
    Ok((addr, join))
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// A refusal: counted, logged, alarmed (rate-limited), answered with `status`.
fn refused(
    shared: &Shared,
    dev: Option<&HttpDevice>,
    peer: SocketAddr,
    status: StatusCode,
    what: &str,
) -> Answer {
    let (index, id) = dev.map_or((None, "unknown"), |d| {
        (Some(d.device), d.device_id.as_str())
    });
    shared.refusals.refuse(index, id, peer, what);
    // Every 401 says the same, whatever was wrong: the log has the reason, the asker does not.
    let said = match status {
        StatusCode::UNAUTHORIZED => "wrong or missing credentials",
        _ => what,
    };
    let mut r = answer(status, format!("{said}\n"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
    }
    // A body too large or too slow is left unread: the connection cannot carry another request,
    // and the device must know before it sends one on it.
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    if path.starts_with("/iclock/") {
        return adms::handle(shared, peer, req).await;
    }
    let Some(rest) = path.strip_prefix("/push/") else {
        return refused(shared, None, peer, StatusCode::NOT_FOUND, "no such path");
    };
    let (id, path_secret) = match rest.split_once('/') {
        Some((id, s)) => (id, Some(s)),
        None => (rest, None),
    };
    // An unknown device is answered as a known one with a wrong secret, and nothing else about
    // a device is said before its secret is right: ids cannot be found by asking.
    let Some(dev) = shared.by_id.get(id) else {
        return refused(
            shared,
            None,
            peer,
            StatusCode::UNAUTHORIZED,
            "unknown device",
        );
    };
    let password = path_secret
        .map(str::to_string)
        .or_else(|| basic_password(&req, &dev.device_id));
    if !dev.secret.admits(password.as_deref()) {
        let what = "wrong or missing credentials";
        return refused(shared, Some(dev), peer, StatusCode::UNAUTHORIZED, what);
    }
    if req.method() != Method::POST {
        let what = "not a POST";
        return refused(
            shared,
            Some(dev),
            peer,
            StatusCode::METHOD_NOT_ALLOWED,
            what,
        );
    }
    if dev
        .from
        .is_some_and(|ip| ip.to_canonical() != peer.ip().to_canonical())
    {
        let what = "push from an address not the device's";
        return refused(shared, Some(dev), peer, StatusCode::FORBIDDEN, what);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.limits.max_body as u64) {
        let what = "body over the size limit";
        return refused(shared, Some(dev), peer, StatusCode::PAYLOAD_TOO_LARGE, what);
    }
    let received = Instant::now();
    let body = tokio::time::timeout(
        shared.limits.body_timeout,
        read_event(req, &dev.profile, shared.limits.max_body),
    )
    .await;
    let pushed = match body {
        Err(_) => {
            let what = "body not complete in time";
            return refused(shared, Some(dev), peer, StatusCode::REQUEST_TIMEOUT, what);
        }
        Ok(Err((status, what))) => return refused(shared, Some(dev), peer, status, what),
        Ok(Ok(p)) => p,
    };
    dev.live.heard();
    {
        let mut seen = dev.seen_from.lock().unwrap_or_else(|p| p.into_inner());
        if *seen != Some(peer.ip()) {
            info!(device = %dev.device_id, from = %peer.ip(), before = ?*seen, "HTTP device pushes from this address.");
            *seen = Some(peer.ip());
        }
    }
    let (value, rest) = match pushed {
        // Nothing to decide: the device is alive, and the answer says nothing to it.
        Pushed::HeartbeatForm => return answer(StatusCode::OK, ""),
        Pushed::Event(value, rest) => (value, rest),
    };
    Metrics::inc(&shared.metrics.events_received);
    let decoded = dev.profile.decode_value(&value);
    let Some(decoded) = checked(
        decoded,
        &dev.device_id,
        &dev.profile.name,
        &dev.live,
        &shared.metrics,
    ) else {
        return answer(StatusCode::BAD_REQUEST, "event does not decode\n");
    };
    let replies = dev.profile.http.as_ref().map(|h| h.reply) == Some(Reply::Command);
    let ack_body = dev.profile.http.as_ref().map_or(String::new(), |h| {
        h.ack_for(&decoded.event_id, decoded.stored == Some(true))
    });
    let (durable_tx, durable_rx) = oneshot::channel();
    let (reply, mut reply_rx) = PendingReply::new(dev.device, received);
    let input = Input {
        device: dev.device,
        decoded: Some(decoded),
        received,
        redelivered: false,
        ack: Box::new(move || {
            let _ = durable_tx.send(());
        }),
        reply: replies.then_some(reply),
    };
    if shared.input.send(input).await.is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // The event is on its way to the gate; the parts after it (a picture) are read past now.
    // If they break off, the event still stands (it may have opened the gate already): the
    // refusal is counted, and the answer is the event's as usual.
    if let Some(rest) = rest {
        let drained = tokio::time::timeout(shared.limits.body_timeout, drain(rest)).await;
        if !matches!(drained, Ok(Ok(()))) {
            let what = "the parts after the event were not read to the end";
            shared
                .refusals
                .refuse(Some(dev.device), &dev.device_id, peer, what);
        }
    }
    let deadline = tokio::time::Instant::now() + DURABLE_WAIT;
    let mut command = None;
    if replies {
        match tokio::time::timeout_at(deadline, &mut reply_rx).await {
            // An open is the point of the answer: the gate before the record.
            Ok(Ok(c)) if c.opens => return answer(StatusCode::OK, c.payload),
            // Anything else ("no") waits for the record: the camera will not send it again.
            Ok(Ok(c)) => command = Some(c.payload),
            // No command for this push (a stored read, recorded only): the ack, once durable.
            Ok(Err(_)) => {}
            Err(_) => return answer(StatusCode::SERVICE_UNAVAILABLE, "not recorded in time\n"),
        }
    }
    match tokio::time::timeout_at(deadline, durable_rx).await {
        // The command goes before the record: if there was one, it is here by now.
        Ok(Ok(())) => match command.or_else(|| reply_rx.try_recv().ok().map(|c| c.payload)) {
            Some(command) => answer(StatusCode::OK, command),
            None => answer(StatusCode::OK, ack_body),
        },
        _ => answer(StatusCode::SERVICE_UNAVAILABLE, "not recorded in time\n"),
    }
}

/// The password of a Basic `Authorization` for `device_id` (the username must name it).
fn basic_password<B>(req: &Request<B>, device_id: &str) -> Option<String> {
    use base64::Engine;
    let h = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = h.strip_prefix("Basic ")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == device_id).then(|| password.to_string())
}

/// Why a push is refused: its answer's status, and what to log.
pub type Refusal = (StatusCode, &'static str);

/// A multipart body after its event part.
pub type Rest = multer::Multipart<'static>;

/// What a push carried.
pub enum Pushed {
    /// The event (or a heartbeat the profile decodes), and the multipart parts after it.
    Event(Value, Option<Rest>),
    /// A multipart heartbeat form (the profile's `heartbeat_field`), read to its end.
    HeartbeatForm,
}

/// Reads the event out of a push: the profile's part of a multipart body — the rest (pictures)
/// comes back to be read past once the event is on its way —, or the whole body as JSON or XML.
/// Every part read is capped at [`MAX_PAYLOAD`]; files are skipped unread.
async fn read_event(
    req: Request<Incoming>,
    profile: &Profile,
    max_body: usize,
) -> Result<Pushed, Refusal> {
    let header = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Matched without regard to case; the boundary keeps its own.
    let content_type = header.to_ascii_lowercase();
    let http = profile.http.as_ref();
    let forced = http.and_then(|h| h.charset.as_deref());
    let body = req.into_body();
    if content_type.starts_with("multipart/") {
        return read_form(BodyDataStream::new(body), &header, profile, max_body).await;
    }
    let known = content_type.is_empty()
        || ["json", "xml", "text/plain", "x-www-form-urlencoded"]
            .iter()
            .any(|k| content_type.contains(k));
    if !known {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type not an event",
        ));
    }
    let bytes = Limited::new(body, MAX_PAYLOAD)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "event body over the size limit",
                )
            } else {
                (StatusCode::BAD_REQUEST, "body not readable")
            }
        })?
        .to_bytes();
    let declared = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("charset="))
        .map(|c| c.trim_matches('"'));
    let text = in_utf8(&bytes, forced.or(declared))?;
    Ok(Pushed::Event(parse(&text, &content_type)?, None))
}

/// A `multipart/form-data` push (`header`: its Content-Type): the profile's event part, or
/// any JSON or XML part, read whole up to [`MAX_PAYLOAD`] — every part is capped, files are
/// skipped unread —, with the parts after it to read past; or the device's heartbeat form.
/// Public for its fuzz target (`fuzz/fuzz_targets/push_form.rs`).
pub async fn read_form<S, E>(
    stream: S,
    header: &str,
    profile: &Profile,
    max_body: usize,
) -> Result<Pushed, Refusal>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let http = profile.http.as_ref();
    let forced = http.and_then(|h| h.charset.as_deref());
    let boundary = multer::parse_boundary(header)
        .map_err(|_| (StatusCode::BAD_REQUEST, "multipart without a boundary"))?;
    let part = http.map_or("event_log", |h| h.event_part.as_str());
    let heartbeat = http.and_then(|h| h.heartbeat_field.as_deref());
    let limits = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(max_body as u64));
    let mut form = multer::Multipart::with_constraints(stream, boundary, limits);
    let mut heartbeat_seen = false;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_refusal(&e)),
        };
        heartbeat_seen |= heartbeat.is_some() && field.name() == heartbeat;
        let mime = field.content_type().cloned();
        let kind = mime.as_ref().map(|m| m.essence_str().to_ascii_lowercase());
        let named = field.name() == Some(part);
        let textual = kind
            .as_deref()
            .is_some_and(|k| k.contains("json") || k.contains("xml"));
        if named || (field.file_name().is_none() && textual) {
            let bytes = read_part(field).await?;
            let declared = mime.as_ref().and_then(|m| m.get_param("charset"));
            let text = in_utf8(&bytes, forced.or(declared.map(|c| c.as_str())))?;
            let event = parse(&text, kind.as_deref().unwrap_or(""))?;
            return Ok(Pushed::Event(event, Some(form)));
        }
        // Any other part (a picture, a form field) is skipped by asking for the next one:
        // never buffered.
    }
    if heartbeat_seen {
        return Ok(Pushed::HeartbeatForm);
    }
    Err((
        StatusCode::BAD_REQUEST,
        "no event part in the multipart body",
    ))
}

/// One multipart part, at most [`MAX_PAYLOAD`] bytes.
async fn read_part(mut field: multer::Field<'static>) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_refusal(&e))? {
        if out.len() + chunk.len() > MAX_PAYLOAD {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "event part over the size limit",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A body in `charset` (UTF-8 when none is said) as UTF-8: a camera set to GB2312 writes its
/// plates so.
fn in_utf8<'a>(
    bytes: &'a [u8],
    charset: Option<&str>,
) -> Result<std::borrow::Cow<'a, [u8]>, Refusal> {
    let encoding = charset
        .and_then(|c| encoding_rs::Encoding::for_label(c.trim().as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    if encoding == encoding_rs::UTF_8 {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    match encoding.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok(std::borrow::Cow::Owned(text.into_owned().into_bytes())),
        None => Err((
            StatusCode::BAD_REQUEST,
            "body not in the character set it says",
        )),
    }
}

/// Reads a multipart body's remaining parts to its end, unread.
async fn drain(mut rest: Rest) -> Result<(), multer::Error> {
    while rest.next_field().await?.is_some() {}
    Ok(())
}

fn multipart_refusal(e: &multer::Error) -> Refusal {
    match e {
        multer::Error::FieldSizeExceeded { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "event part over the size limit",
        ),
        multer::Error::StreamSizeExceeded { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "body over the size limit")
        }
        _ => (StatusCode::BAD_REQUEST, "malformed multipart body"),
    }
}

/// An event body as JSON: XML (by its content type, or by its first character) is turned into
/// the same shape first, so the profile's pointers read both.
fn parse(bytes: &[u8], content_type: &str) -> Result<Value, Refusal> {
    let text = bytes.trim_ascii_start();
    let xml = content_type.contains("xml") || text.first() == Some(&b'<');
    if xml {
        crate::device::xml::to_json(text).ok_or((StatusCode::BAD_REQUEST, "event not XML"))
    } else {
        serde_json::from_slice(text).map_err(|_| (StatusCode::BAD_REQUEST, "event not JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::in_utf8;

    #[test]
    fn a_body_is_read_in_the_charset_said_and_the_profiles_word_wins_over_a_mislabel() {
        let (gbk, _, _) = encoding_rs::GBK.encode(r#"{"license":"浙A12345"}"#);
        let text = in_utf8(&gbk, Some("gb2312")).unwrap();
        assert_eq!(&text[..], r#"{"license":"浙A12345"}"#.as_bytes());
        // Labelled UTF-8 but GBK: read as UTF-8 it is not the plate; the profile's `charset`
        // (passed over the label) reads it right.
        assert_ne!(&in_utf8(&gbk, Some("utf-8")).unwrap()[..], &text[..]);
        assert_eq!(&in_utf8(&gbk, Some("gbk")).unwrap()[..], &text[..]);
        assert!(in_utf8(&[0x81, 0x20], Some("gbk")).is_err());
    }
}
