//! What a pushing device does over HTTP: POSTs on one keep-alive connection (reopened when it
//! fails), and the bodies Hikvision terminals and Zhenshi cameras push.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use std::time::Duration;

/// A device's connection to gatehouse's HTTP listener.
pub struct Pusher {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Pusher {
    /// `addr`: `host:port` of the listener.
    pub fn new(addr: &str) -> Pusher {
        Pusher {
            addr: addr.to_string(),
            sender: None,
        }
    }

    /// POSTs `body` to `path`; the answer's status and body.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), String> {
        self.request(hyper::Method::POST, path, content_type, body)
            .await
    }

    /// GETs `path`; the answer's status and body.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        self.request(hyper::Method::GET, path, "text/plain", Vec::new())
            .await
    }

    async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), String> {
        // A connection the listener closed (after a refusal it sent `Connection: close`) is not
        // used again: the next request opens a new one, as a terminal does.
        if let Some(s) = self.sender.as_mut() {
            if s.is_closed() || s.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err("no connection".into());
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.addr)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(Duration::from_secs(35), sender.send_request(req))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| {
                self.sender = None;
                e.to_string()
            })?;
        let status = answer.status();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// The boundary of the simulated terminal's multipart bodies.
pub const BOUNDARY: &str = "MIME_boundary_gatehouse_sim";

/// A Hikvision listening-mode push: the event JSON in part `event_log`, then a `Picture` JPEG of
/// `picture_bytes` (none when 0), each part with its `Content-Length` as the terminals send them.
pub fn hikvision_multipart(event_json: &str, picture_bytes: usize) -> (String, Vec<u8>) {
    let mut body = Vec::with_capacity(event_json.len() + picture_bytes + 512);
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"event_log\"\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            event_json.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(event_json.as_bytes());
    body.extend_from_slice(b"\r\n");
    if picture_bytes > 0 {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"Picture\"; \
                 filename=\"Picture.jpg\"\r\nContent-Type: image/jpeg\r\nContent-Length: \
                 {picture_bytes}\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut jpeg = vec![0x5a; picture_bytes];
        jpeg[..2.min(picture_bytes)].copy_from_slice(&[0xff, 0xd8][..2.min(picture_bytes)]);
        body.extend_from_slice(&jpeg);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// A Hikvision terminal's heartbeat (listening mode), stamped with its clock.
pub fn hikvision_heartbeat(device_ms: i64) -> String {
    serde_json::json!({
        "ipAddress": "192.168.1.64",
        "dateTime": crate::timefmt::rfc3339(device_ms),
        "activePostCount": 1,
        "eventType": "heartBeat",
        "eventState": "active",
        "eventDescription": "heartBeat",
    })
    .to_string()
}

/// A Zhenshi camera's HTTP push of a plate read: `offline` marks a record replayed from its
/// store; `device_s` is its clock (unix s).
pub fn zhenshi_plate(
    plateid: u64,
    plate: &str,
    confidence: u8,
    direction: u8,
    offline: bool,
    device_s: i64,
) -> String {
    let read = super::zhenshi::PlateRead {
        offline,
        device_s,
        ..super::zhenshi::PlateRead::live(plateid, plate, confidence, direction)
    };
    read.alarm_info_plate(plate.to_string()).to_string()
}

/// A Zhenshi camera's "普通心跳" heartbeat as its HTTP push sends it: a multipart form of its
/// registration (content type, body). It carries the camera's web login, which gatehouse
/// never reads.
pub fn zhenshi_heartbeat_form() -> (String, Vec<u8>) {
    let mut body = String::new();
    for (name, value) in [
        ("device_name", "IVS"),
        ("ipaddr", "192.168.1.100"),
        ("port", "80"),
        ("user_name", "admin"),
        ("pass_wd", "admin"),
        ("serialno", "e5ad4f1c-3c6f0a10"),
        ("channel_num", "1"),
    ] {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    (
        format!("multipart/form-data; boundary={BOUNDARY}"),
        body.into_bytes(),
    )
}

/// Whether a Zhenshi camera sends its next stored read after this answer to stored read
/// `plateid`: only on `ContinuePushOffline` naming it with `continue: 1`.
pub fn zhenshi_continues(plateid: u64, status: u16, answer: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(answer) else {
        return false;
    };
    let c = &v["Response_AlarmInfoPlate"]["ContinuePushOffline"];
    status == 200 && c["plateid"].as_u64() == Some(plateid) && c["continue"].as_u64() == Some(1)
}

/// A Zhenshi camera's heartbeat.
pub fn zhenshi_heartbeat(count: u64, device_s: i64) -> String {
    serde_json::json!({
        "heartbeat": {
            "countid": count,
            "serialno": "e5ad4f1c-3c6f0a10",
            "timeStamp": { "Timeval": { "sec": device_s, "usec": 0 } }
        }
    })
    .to_string()
}

/// A pushing device's run: where it pushes and what it sends.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `host:port` of gatehouse's HTTP listener.
    pub addr: String,
    /// `/push/{device}/{password}`.
    pub path: String,
    /// Events per second.
    pub rate: f64,
    /// Stop after this many events (0: until stopped).
    pub count: u64,
    /// A terminal's picture part, bytes (0: none).
    pub picture_bytes: usize,
    /// A heartbeat this often (0: none).
    pub heartbeat_s: u64,
    /// Records stored while "offline", pushed first, marked as such, dated minutes back.
    pub stored: u64,
    /// Residents are `R000000` … this count (terminal), plates `浙A1xxxx` (camera).
    pub residents: u64,
    pub seed: u64,
    /// The device's clock, ahead (+) or behind (−) the true time, ms.
    pub clock_offset_ms: i64,
}

/// What a pushing simulator does with each answer.
pub type OnAnswer<'a> = &'a mut (dyn FnMut(&str, u16, &str) + Send);

/// A Hikvision terminal in listening mode: its stored records first (`currentEvent: false`,
/// dated back), then live events at the rate with a heartbeat now and then. Returns how many
/// events it pushed.
pub async fn run_hikvision(
    o: PushOptions,
    on_answer: OnAnswer<'_>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let clock = move || crate::now_ms() + o.clock_offset_ms;
    let now = clock();
    let mut rng = super::Rng::new(o.seed);
    let body = move |serial: Option<u64>, stored| {
        let who = format!("R{:06}", rng.next_u64() % o.residents.max(1));
        let t = 36.0 + rng.unit() * if rng.unit() < 0.05 { 3.0 } else { 1.0 };
        match serial {
            None => (
                "application/json".into(),
                hikvision_heartbeat(clock()).into_bytes(),
            ),
            Some(serial) => {
                let at = if stored {
                    now - 600_000 + serial as i64 * 1000
                } else {
                    clock()
                };
                let ev = serde_json::json!({"ipAddress": "192.168.1.64", "eventType": "AccessControllerEvent",
                    "dateTime": crate::timefmt::rfc3339(at),
                    "AccessControllerEvent": {"deviceName": "DS-K1T671TM", "majorEventType": 5,
                        "subEventType": 75, "serialNo": serial, "employeeNoString": who,
                        "currTemperature": (t * 10.0).round() / 10.0, "thermometryUnit": "celsius",
                        "currentEvent": !stored, "name": "张三"}})
                .to_string();
                hikvision_multipart(&ev, o.picture_bytes)
            }
        }
    };
    // A terminal sends its next stored record once the last one was taken.
    run(&o, on_answer, stop, body, |_, status, _| status == 200).await
}

/// A Zhenshi camera pushing plate reads: its offline store first (`isoffline`), then live reads
/// at the rate with a heartbeat now and then. Returns how many reads it pushed.
pub async fn run_zhenshi(
    o: PushOptions,
    on_answer: OnAnswer<'_>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let mut rng = super::Rng::new(o.seed);
    let offset = o.clock_offset_ms;
    let body = move |serial: Option<u64>, stored| {
        let now_s = (crate::now_ms() + offset) / 1000;
        let body = match serial {
            None => return zhenshi_heartbeat_form(),
            Some(id) => {
                let plate = format!("浙A1{:04}", rng.next_u64() % o.residents.max(1));
                let at = if stored {
                    now_s - 600 + id as i64
                } else {
                    now_s
                };
                zhenshi_plate(id, &plate, 90 + (rng.next_u64() % 10) as u8, 4, stored, at)
            }
        };
        ("application/json".into(), body.into_bytes())
    };
    run(&o, on_answer, stop, body, zhenshi_continues).await
}

/// The loop both pushers share: `body(Some(serial), stored)` for an event, `body(None, _)` for
/// a heartbeat; `goes_on(serial, status, answer)`: whether the device sends its next stored
/// record after that answer (it stops its replay, as the real ones do, where not).
async fn run(
    o: &PushOptions,
    on_answer: OnAnswer<'_>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut body: impl FnMut(Option<u64>, bool) -> (String, Vec<u8>),
    goes_on: impl Fn(u64, u16, &str) -> bool,
) -> u64 {
    let mut p = Pusher::new(&o.addr);
    let mut send = async |what: &str, (ct, b): (String, Vec<u8>)| {
        let (status, answer) = match p.post(&o.path, &ct, b).await {
            Ok((s, answer)) => (s.as_u16(), String::from_utf8_lossy(&answer).into_owned()),
            Err(e) => (0, e),
        };
        on_answer(what, status, &answer);
        (status, answer)
    };
    let mut serial = 0;
    for _ in 0..o.stored {
        serial += 1;
        let (status, answer) = send(&format!("stored {serial}"), body(Some(serial), true)).await;
        if !goes_on(serial, status, &answer) {
            break;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.001)));
    let beat = Duration::from_secs(o.heartbeat_s.max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    let mut sent = 0;
    while o.count == 0 || sent < o.count {
        tokio::select! {
            _ = stop.changed() => break,
            _ = heartbeat.tick(), if o.heartbeat_s > 0 => {
                send("heartbeat", body(None, false)).await;
            }
            _ = tick.tick() => {
                serial += 1;
                sent += 1;
                send(&format!("event {serial}"), body(Some(serial), false)).await;
            }
        }
    }
    sent
}
