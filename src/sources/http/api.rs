//! A terminal's own API, gatehouse's side of it: what gatehouse asks of a terminal rather than
//! waits for. Dahua (CGI): its `eventManager.cgi` event stream (Digest, `Code=…;data={…}` parts,
//! a heartbeat part every 5 s) and `accessControl.cgi?action=openDoor`. Hikvision ISAPI, per
//! terminal with `api = { … }`:
//! - **arming**: hold `GET /ISAPI/Event/notification/alertStream` open (Digest) and read its
//!   multipart stream; reconnect with backoff (streams drop after ~40 s and at reboots);
//! - **self-configuration**: write gatehouse's own `httpHosts` entry into the terminal and
//!   re-check it every `recheck_s` (terminals forget it, other software overwrites it);
//! - **catch-up**: when the terminal is heard again after a silence (and at start), fetch what it
//!   stored (`POST /ISAPI/AccessControl/AcsEvent?format=json`); those events are recorded as
//!   stored — never actuated — and any already decided live are recognised as duplicates;
//! - **the door**: `PUT /ISAPI/AccessControl/RemoteControl/door/{n}?format=json` where the
//!   terminal drives it. Never retried, never sent late (> 1 s waiting → dropped).
use super::client::{ApiError, DeviceApi};
use super::multipart::{Item, PartStream};
use crate::backoff::Backoff;
use crate::config::DeviceApiSection;
use crate::config::PushMode;
use crate::device::profile::Api;
use crate::device::{Profile, MAX_PAYLOAD};
use crate::metrics::{worth_logging, Metrics};
use crate::sources::{checked, DeviceLive, Input, LinkChange, SourceEvent};
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// A door command that waited longer than this is for whoever stood there then: dropped.
const DOOR_MAX_AGE: Duration = Duration::from_secs(1);
/// Silence after which the terminal counts as unheard; heard again → catch-up.
const SILENCE_MS: i64 = 60_000;
/// At start, what the terminal stored this long before is fetched (duplicates are recognised).
const START_WINDOW_MS: i64 = 10 * 60_000;
/// A catch-up stops this long before now: the terminal pushes what is newer as live events.
const LIVE_MARGIN_MS: i64 = 30_000;
/// A catch-up fetches at most this many pages of 30.
const MAX_PAGES: usize = 100;
/// An arming stream that sends nothing (not even its heartbeat) this long is dead.
const STREAM_IDLE: Duration = Duration::from_secs(90);

/// A terminal whose API gatehouse speaks.
pub struct ApiDevice {
    pub device: usize,
    pub device_id: String,
    pub profile: Arc<Profile>,
    pub api: DeviceApiSection,
    /// Door commands from the actuators (when it was decided, payload).
    pub doors: mpsc::Receiver<(Instant, Vec<u8>)>,
    pub live: Arc<DeviceLive>,
}

/// What the terminal's tasks send to and watch.
#[derive(Clone)]
pub struct Context {
    pub input: mpsc::Sender<Input>,
    pub events: mpsc::Sender<SourceEvent>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the terminal's tasks: its door, its upkeep (self-configuration, catch-up) and, in
/// arming mode, its stream. `push_secret`: the password the terminal pushes with, written into
/// its `httpHosts` entry.
pub fn spawn(
    dev: ApiDevice,
    push_secret: Option<String>,
    ctx: Context,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let password = dev
        .api
        .read_password()
        .map_err(|e| anyhow::anyhow!("device {}: {e}", dev.device_id))?;
    let pin = dev
        .api
        .fingerprint()
        .map_err(|e| anyhow::anyhow!("device {}: {e}", dev.device_id))?;
    let tls = match pin.filter(|_| dev.api.https()) {
        Some(pin) => Some(super::client::pinned(pin)?),
        None => None,
    };
    let api = DeviceApi {
        host: dev.api.host(),
        username: dev.api.username.clone(),
        password,
        timeout: Duration::from_millis(dev.api.timeout_ms),
        auth: dev.api.auth,
        tls,
    };
    let vendor = dev
        .profile
        .http
        .as_ref()
        .and_then(|h| h.api)
        .unwrap_or(Api::Isapi);
    let me = Arc::new(Terminal {
        vendor,
        device: dev.device,
        device_id: dev.device_id,
        profile: dev.profile,
        live: dev.live,
        api,
        ctx,
    });
    let mut joins = vec![tokio::spawn(me.clone().doors(dev.doors, dev.api.door))];
    // A Dahua terminal has only its stream; ISAPI also has httpHosts and the AcsEvent search.
    if vendor == Api::Isapi {
        joins.push(tokio::spawn(me.clone().upkeep(
            dev.api.push_to.clone(),
            push_secret,
            Duration::from_secs(dev.api.recheck_s.max(10)),
            dev.api.catch_up,
        )));
    }
    if dev.api.mode == PushMode::Arming || vendor == Api::Dahua {
        joins.push(tokio::spawn(me.arming()));
    }
    Ok(joins)
}

struct Terminal {
    vendor: Api,
    device: usize,
    device_id: String,
    profile: Arc<Profile>,
    live: Arc<DeviceLive>,
    api: DeviceApi,
    ctx: Context,
}

impl Terminal {
    async fn doors(
        self: Arc<Self>,
        mut doors: mpsc::Receiver<(Instant, Vec<u8>)>,
        door: Option<u32>,
    ) {
        let Some(door) = door else { return };
        let mut stop = self.ctx.shutdown.clone();
        loop {
            let (at, payload) = tokio::select! {
                _ = stop.changed() => return,
                c = doors.recv() => match c { Some(c) => c, None => return },
            };
            let outcome = if at.elapsed() > DOOR_MAX_AGE {
                Err("waited too long: dropped, the door stays shut".to_string())
            } else {
                let call = match self.vendor {
                    Api::Isapi => {
                        let path =
                            format!("/ISAPI/AccessControl/RemoteControl/door/{door}?format=json");
                        let body = Some(("application/json", payload));
                        self.api.call(Method::PUT, &path, body).await
                    }
                    // ADMS devices poll for their commands; they have no API task.
                    Api::Adms => return,
                    Api::Dahua => {
                        // The profile's command names the CGI action (`openDoor`).
                        let action = serde_json::from_slice::<Value>(&payload)
                            .ok()
                            .and_then(|v| v.get("action")?.as_str().map(str::to_string))
                            .unwrap_or_else(|| "openDoor".into());
                        let path =
                            format!("/cgi-bin/accessControl.cgi?action={action}&channel={door}");
                        self.api.call(Method::GET, &path, None).await
                    }
                };
                call.map(|_| ()).map_err(|e| e.to_string())
            };
            if let Err(e) = outcome {
                let n = self
                    .ctx
                    .metrics
                    .command_errors
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if worth_logging(n) {
                    warn!(device = %self.device_id, door, error = %e, failures = n, "Door command not carried out.");
                }
            }
        }
    }

    /// Self-configuration and catch-up, every 5 s.
    async fn upkeep(
        self: Arc<Self>,
        push_to: Option<String>,
        push_secret: Option<String>,
        recheck: Duration,
        catch_up: bool,
    ) {
        let mut stop = self.ctx.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut checked_at: Option<Instant> = None;
        // Unheard since (gatehouse ms): at start, as if silent for the start window.
        let mut unheard_since = Some(crate::now_ms() - START_WINDOW_MS);
        let mut catch_up = catch_up;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            if let Some(url) = &push_to {
                if checked_at.is_none_or(|t| t.elapsed() >= recheck) {
                    checked_at = Some(Instant::now());
                    let checked = tokio::select! {
                        _ = stop.changed() => return,
                        r = self.check_hosts(url, push_secret.as_deref()) => r,
                    };
                    if let Err(e) = checked {
                        warn!(device = %self.device_id, error = %e, "Terminal's httpHosts entry not checked; tried again later.");
                    }
                }
            }
            let now = crate::now_ms();
            let last = self.live.last_seen.load(Ordering::Relaxed);
            match unheard_since {
                Some(since) if last > since.max(now - SILENCE_MS) && catch_up => {
                    // Up to a little before now: what happened since, the terminal pushes live
                    // (fetching it here would record a live event as stored).
                    let fetched = tokio::select! {
                        _ = stop.changed() => return,
                        r = self.catch_up(since - SILENCE_MS, now - LIVE_MARGIN_MS) => r,
                    };
                    match fetched {
                        Ok(n) => {
                            if n > 0 {
                                info!(device = %self.device_id, events = n, "Caught up with what the terminal stored while unheard (recorded, not acted on).");
                            }
                            unheard_since = None;
                        }
                        Err(ApiError::Status(s)) if s.is_client_error() => {
                            warn!(device = %self.device_id, status = %s, "Terminal does not offer AcsEvent search: no catch-up.");
                            catch_up = false;
                        }
                        Err(e) => {
                            warn!(device = %self.device_id, error = %e, "Catch-up failed; tried again.");
                        }
                    }
                }
                None if now - last > SILENCE_MS => {
                    unheard_since = Some(last.max(now - START_WINDOW_MS))
                }
                _ => {}
            }
        }
    }

    /// Makes the terminal's `httpHosts` entry 1 point at this box.
    async fn check_hosts(&self, push_to: &str, secret: Option<&str>) -> Result<(), ApiError> {
        let rest = push_to.trim_start_matches("http://").trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "80"));
        let url = match secret {
            Some(s) => format!("/push/{}/{s}", self.device_id),
            None => format!("/push/{}", self.device_id),
        };
        let path = "/ISAPI/Event/notification/httpHosts/1";
        let current = self.api.call(Method::GET, path, None).await.ok();
        let current = current.and_then(|b| crate::device::xml::to_json(&b));
        let text = |v: &Option<Value>, k: &str| {
            v.as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if text(&current, "url").as_deref() == Some(url.as_str())
            && text(&current, "ipAddress").as_deref() == Some(host)
            && text(&current, "portNo").as_deref() == Some(port)
        {
            return Ok(());
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<HttpHostNotification version=\"2.0\" \
             xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><id>1</id><url>{}</url>\
             <protocolType>HTTP</protocolType><parameterFormatType>JSON</parameterFormatType>\
             <addressingFormatType>ipaddress</addressingFormatType><ipAddress>{}</ipAddress>\
             <portNo>{}</portNo><httpAuthenticationMethod>none</httpAuthenticationMethod>\
             </HttpHostNotification>",
            xml_text(&url),
            xml_text(host),
            xml_text(port)
        );
        self.api
            .call(
                Method::PUT,
                path,
                Some(("application/xml", xml.into_bytes())),
            )
            .await?;
        info!(device = %self.device_id, push_to, "Terminal's httpHosts entry written: it pushes to this box.");
        Ok(())
    }

    /// Fetches the access events the terminal stored between `from_ms` and `to_ms` and passes
    /// them on as stored. Returns how many.
    async fn catch_up(&self, from_ms: i64, to_ms: i64) -> Result<usize, ApiError> {
        let path = "/ISAPI/AccessControl/AcsEvent?format=json";
        let mut position = 0;
        let mut total = 0;
        for _ in 0..MAX_PAGES {
            let cond = json!({"AcsEventCond": {
                "searchID": format!("gatehouse-{from_ms}"),
                "searchResultPosition": position,
                "maxResults": 30,
                "major": 5,
                "minor": 0,
                "startTime": crate::timefmt::rfc3339(from_ms),
                "endTime": crate::timefmt::rfc3339(to_ms),
            }});
            let body = Some(("application/json", cond.to_string().into_bytes()));
            let answer = self.api.call(Method::POST, path, body).await?;
            let (docs, more) = catch_up_page(&answer).map_err(ApiError::Http)?;
            for doc in &docs {
                self.pass_on(doc, Some(true)).await;
            }
            total += docs.len();
            position += docs.len();
            if !more || docs.is_empty() {
                break;
            }
        }
        Ok(total)
    }

    /// Decodes one event document and hands it to the decision loop (no ack to give: the
    /// terminal is not waiting for one).
    async fn pass_on(&self, doc: &Value, stored: Option<bool>) {
        self.live.heard();
        Metrics::inc(&self.ctx.metrics.events_received);
        let decoded = self.profile.decode_value(doc);
        let Some(mut decoded) = checked(
            decoded,
            &self.device_id,
            &self.profile.name,
            &self.live,
            &self.ctx.metrics,
        ) else {
            return;
        };
        if stored.is_some() {
            decoded.stored = stored;
        }
        let _ = self
            .ctx
            .input
            .send(Input {
                device: self.device,
                decoded: Some(decoded),
                received: Instant::now(),
                redelivered: false,
                ack: Box::new(|| {}),
                reply: None,
            })
            .await;
    }

    /// Holds the terminal's alertStream open, reconnecting with backoff.
    async fn arming(self: Arc<Self>) {
        let mut stop = self.ctx.shutdown.clone();
        let mut backoff = Backoff::device_link();
        let mut online: Option<bool> = None;
        loop {
            let mut opened = false;
            let result = tokio::select! {
                _ = stop.changed() => return,
                r = self.stream(&mut online, &mut opened) => r,
            };
            let detail = match result {
                Ok(()) => "alertStream ended".to_string(),
                Err(e) => e,
            };
            if opened {
                // A stream that was open and ended is normal (they drop every ~40 s): reconnect
                // at once. One that could not be opened backs off further each time.
                backoff.reset();
            }
            let delay = backoff.next_delay();
            if online != Some(false) && delay > Duration::from_secs(2) {
                online = Some(false);
                self.link(false, &detail);
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One alertStream connection, read until it ends.
    async fn stream(&self, online: &mut Option<bool>, opened: &mut bool) -> Result<(), String> {
        let path = match self.vendor {
            Api::Isapi => "/ISAPI/Event/notification/alertStream",
            // A heartbeat part every 5 s: silence longer than the profile's limit is a dead stream.
            Api::Dahua => {
                "/cgi-bin/eventManager.cgi?action=attach&codes=[AccessControl]&heartbeat=5"
            }
            Api::Adms => return Ok(()),
        };
        let answer = self
            .api
            .request(Method::GET, path, None)
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            return Err(format!("alertStream answered {}", answer.status()));
        }
        let boundary = answer
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| {
                t.split(';')
                    .find_map(|p| p.trim().strip_prefix("boundary="))
            })
            .unwrap_or("boundary")
            .to_string();
        *opened = true;
        // Online is news only after offline was.
        if *online == Some(false) {
            self.link(true, "alertStream open again");
        }
        *online = Some(true);
        let mut parts = PartStream::new(&boundary, MAX_PAYLOAD);
        let mut body = answer.into_body();
        let mut items = Vec::new();
        loop {
            let frame = tokio::time::timeout(STREAM_IDLE, body.frame())
                .await
                .map_err(|_| "alertStream silent too long".to_string())?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| e.to_string())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            parts.feed(&data, &mut items);
            for item in items.drain(..) {
                match item {
                    Item::Part { content_type, body } => {
                        match stream_part(self.vendor, &content_type, &body) {
                            Ok(docs) => {
                                for doc in docs {
                                    self.pass_on(&doc, None).await;
                                }
                            }
                            Err(what) => self.bad(what),
                        }
                    }
                    // A picture: never read.
                    Item::Skipped { .. } => {}
                    Item::Garbage(_) => self.bad("garbage between parts of the alertStream"),
                }
            }
        }
    }

    fn bad(&self, what: &str) {
        self.live.bad_messages.fetch_add(1, Ordering::Relaxed);
        let n = self
            .ctx
            .metrics
            .decode_errors
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if worth_logging(n) {
            warn!(device = %self.device_id, bad_messages = n, "Terminal stream: {what}; dropped.");
        }
    }

    fn link(&self, online: bool, detail: &str) {
        let _ = self.ctx.events.try_send(SourceEvent::Link(LinkChange {
            devices: vec![self.device],
            online,
            detail: detail.to_string(),
        }));
    }
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One page of a catch-up search's answer (`AcsEvent`): each stored event as the document a
/// live one is, marked stored (`currentEvent: false`), and whether more pages follow. An item
/// that is not an object is passed on as it is — outside data that does not decode, counted as
/// such —, never indexed into.
pub fn catch_up_page(answer: &[u8]) -> Result<(Vec<Value>, bool), String> {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("AcsEvent answer not JSON: {e}"))?;
    let list = v.pointer("/AcsEvent/InfoList").and_then(Value::as_array);
    let docs = list
        .into_iter()
        .flatten()
        .map(|item| {
            // The search gives the event's fields flat, with its time.
            let mut event = item.clone();
            if let Some(fields) = event.as_object_mut() {
                fields.insert("currentEvent".into(), Value::Bool(false));
            }
            json!({"dateTime": item.get("time"), "AccessControllerEvent": event})
        })
        .collect();
    let more = v
        .pointer("/AcsEvent/responseStatusStrg")
        .and_then(Value::as_str)
        == Some("MORE");
    Ok((docs, more))
}

/// The event documents in one part of a terminal's event stream, or why there are none.
pub fn stream_part(
    vendor: Api,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<Value>, &'static str> {
    match vendor {
        Api::Isapi => super::parse(body, content_type)
            .map(|doc| vec![doc])
            .map_err(|(_, what)| what),
        Api::Dahua => {
            let docs = dahua_events(body);
            if docs.is_empty() {
                return Err("a Dahua part with no event");
            }
            Ok(docs)
        }
        Api::Adms => Ok(Vec::new()),
    }
}

/// The events of one Dahua stream part: `Code=AccessControl;action=Pulse;index=0;data={…}`
/// becomes `{"Code":…,"action":…,"index":…,"data":{…}}`; the keep-alive part (`Heartbeat`)
/// becomes `{"Heartbeat":true}`. An event starts on a line of its own with `Code=`, and its
/// `data=` JSON runs to the next such line or the part's end: terminals write it over many lines
/// (and it may hold `;`). Anything else is left out.
pub fn dahua_events(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut events: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.eq_ignore_ascii_case("heartbeat") {
            out.push(json!({"Heartbeat": true}));
        } else if trimmed
            .get(..5)
            .is_some_and(|c| c.eq_ignore_ascii_case("code="))
        {
            events.push(trimmed.to_string());
        } else if let Some(event) = events.last_mut() {
            event.push('\n');
            event.push_str(line);
        }
    }
    out.extend(events.iter().filter_map(|e| dahua_event(e)));
    out
}

/// One `Code=…;data=…` event (see [`dahua_events`]).
fn dahua_event(event: &str) -> Option<Value> {
    let (head, data) = match event.find("data=") {
        Some(i) => (&event[..i], Some(&event[i + 5..])),
        None => (event, None),
    };
    let mut doc = serde_json::Map::new();
    for pair in head.split(';').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = pair.split_once('=') {
            doc.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
        }
    }
    if let Some(data) = data {
        doc.insert("data".into(), serde_json::from_str(data.trim()).ok()?);
    }
    Some(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dahua_parts_read_as_json() {
        let part = b"Code=AccessControl;action=Pulse;index=0;data={\"CardNo\":\"3123456789\",\"UserID\":\"R000001\",\"Method\":1,\"Status\":1,\"RecNo\":77,\"UTC\":1795928400,\"Note\":\"a;b\"}\r\n";
        let v = dahua_events(part);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["Code"], "AccessControl");
        assert_eq!(v[0]["index"], "0");
        assert_eq!(v[0]["data"]["UserID"], "R000001");
        assert_eq!(v[0]["data"]["Note"], "a;b");
        assert_eq!(
            dahua_events(b"Heartbeat\r\n"),
            vec![json!({"Heartbeat": true})]
        );
        assert!(dahua_events(b"garbage\r\nCode=X;data={broken").is_empty());
    }

    #[test]
    fn a_dahua_event_whose_data_runs_over_many_lines_is_read_whole() {
        let part = "Code=AccessControl;action=Pulse;index=0;data={\r\n   \"CardNo\" : \"\",\r\n   \"RecNo\" : 12,\r\n   \"UserID\" : \"R000001\"\r\n}\r\nCode=DoorStatus;action=Pulse;index=0;data={\r\n   \"Status\" : \"Open\"\r\n}\r\n";
        let v = dahua_events(part.as_bytes());
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0]["data"]["UserID"], "R000001");
        assert_eq!(v[0]["data"]["RecNo"], 12);
        assert_eq!(v[1]["Code"], "DoorStatus");
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/adms_body.rs` for Dahua parts.
        #[test]
        fn any_part_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = dahua_events(&data);
        }
    }
}
