//! What a pushing device does over HTTP: POSTs on one keep-alive connection (reopened when it
//! fails), and the bodies Hikvision terminals and Zhenshi cameras push.
use base64::Engine;
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
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
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
        let req = Request::post(path)
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
    let license = base64::engine::general_purpose::STANDARD.encode(plate.as_bytes());
    serde_json::json!({
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "serialno": "e5ad4f1c-3c6f0a10",
            "result": {
                "PlateResult": {
                    "license": license,
                    "colorType": 1,
                    "confidence": confidence,
                    "direction": direction,
                    "triggerType": 8,
                    "plateid": plateid,
                    "isoffline": u8::from(offline),
                    "timeStamp": { "Timeval": { "sec": device_s, "usec": 0 } }
                }
            }
        }
    })
    .to_string()
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
