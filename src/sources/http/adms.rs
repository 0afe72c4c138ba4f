//! ZKTeco's push protocol (ADMS, "iclock"), served on the HTTP device listener: the terminal
//! polls gatehouse rather than the other way round.
//! - `GET /iclock/cdata?SN=…` — the handshake: answered with the device's options (`Delay`, how
//!   often it polls for commands, `Realtime=1`: records uploaded as they happen, …);
//! - `POST /iclock/cdata?SN=…&table=ATTLOG` — tab-separated records (PIN, time, status, verify
//!   mode, work code), each decided like any event; `OK: n` once all n are durable;
//! - `GET /iclock/getrequest?SN=…` — the poll: the door-open command waiting for the device, if
//!   any (`C:ID:CONTROL DEVICE 01010105`), so a door opens on the next poll, at most `Delay` s on;
//! - `POST /iclock/devicecmd?SN=…` — a command's result (`ID=…&Return=0&CMD=…`).
//!
//! ADMS has no authentication beyond the serial number: a device is served only if configured
//! (`adms_sn`, with `adms_open = true` as the explicit opt-in) and only from its `from` address.
//! Every other request is refused and counted like any HTTP refusal.
use super::{answer, refused, Answer, HttpDevice, Shared};
use crate::metrics::{worth_logging, Metrics};
use crate::sources::{checked, Input, SourceEvent};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::warn;

/// How often the device polls for commands (s): the door-open latency is at most this (and a
/// request's round trip).
pub const POLL_DELAY_S: u64 = 1;
/// A door command not collected within this is dropped: a late open is for whoever stands there.
const COMMAND_MAX_AGE: Duration = Duration::from_millis(POLL_DELAY_S * 1000 + 1000);
/// Commands waiting for one device's poll.
const QUEUE: usize = 4;

/// Door commands waiting for a device's next poll.
#[derive(Default)]
pub struct Polls {
    queue: Mutex<VecDeque<(Instant, u64, String)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Polls {
    /// Queues `payload` (the profile's command, `{"cmd":"CONTROL DEVICE 01010105"}`); false when
    /// the queue is full (the command is dropped).
    pub fn push(&self, since: Instant, payload: &[u8]) -> bool {
        let cmd = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("cmd")?.as_str().map(str::to_string));
        let Some(cmd) = cmd else { return false };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= QUEUE {
            return false;
        }
        q.push_back((since, id, cmd));
        true
    }

    /// What the device's poll takes: every command still fresh.
    fn take(&self) -> Vec<(u64, String)> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.drain(..)
            .filter(|(at, _, _)| at.elapsed() <= COMMAND_MAX_AGE)
            .map(|(_, id, cmd)| (id, cmd))
            .collect()
    }
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.eq_ignore_ascii_case(key).then_some(v)
    })
}

pub(super) async fn handle(shared: &Shared, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let sn = query_value(&query, "SN").unwrap_or("");
    let Some(dev) = shared.by_sn.get(sn).and_then(|id| shared.by_id.get(id)) else {
        let what = "ADMS request from an unknown serial number";
        return refused(shared, None, peer, StatusCode::NOT_FOUND, what);
    };
    if dev.from != Some(peer.ip()) {
        let what = "ADMS request from an address not the device's";
        return refused(shared, Some(dev), peer, StatusCode::FORBIDDEN, what);
    }
    // Every request is a sign of life (the poll every `Delay` s most of all).
    dev.live.heard();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/iclock/cdata") => answer(StatusCode::OK, options(sn)),
        (Method::POST, "/iclock/cdata") => {
            let table = query_value(&query, "table").unwrap_or("");
            let body = match read(shared, req).await {
                Ok(b) => b,
                Err((status, what)) => return refused(shared, Some(dev), peer, status, what),
            };
            if !table.eq_ignore_ascii_case("ATTLOG") {
                // Operation logs, user lists, photos: not events; taken and dropped.
                return answer(StatusCode::OK, "OK");
            }
            attlog(shared, dev, &body).await
        }
        (Method::GET, "/iclock/getrequest") => {
            let commands = dev.polls.as_ref().map(|p| p.take()).unwrap_or_default();
            if commands.is_empty() {
                return answer(StatusCode::OK, "OK");
            }
            let text: String = commands
                .iter()
                .map(|(id, cmd)| format!("C:{id}:{cmd}\n"))
                .collect();
            answer(StatusCode::OK, text)
        }
        (Method::POST, "/iclock/devicecmd") => {
            let body = match read(shared, req).await {
                Ok(b) => b,
                Err((status, what)) => return refused(shared, Some(dev), peer, status, what),
            };
            for line in String::from_utf8_lossy(&body).lines() {
                let code = line
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Return="))
                    .and_then(|r| r.trim().parse::<i64>().ok());
                if let Some(code) = code {
                    let _ = shared.events.try_send(SourceEvent::Ack {
                        device: dev.device,
                        code: code.unsigned_abs(),
                    });
                }
            }
            answer(StatusCode::OK, "OK")
        }
        _ => refused(
            shared,
            Some(dev),
            peer,
            StatusCode::NOT_FOUND,
            "no such ADMS path",
        ),
    }
}

/// The handshake's answer: the options the device runs with.
fn options(sn: &str) -> String {
    format!(
        "GET OPTION FROM: {sn}\nATTLOGStamp=None\nOPERLOGStamp=9999\nATTPHOTOStamp=None\n\
         ErrorDelay=30\nDelay={POLL_DELAY_S}\nTransTimes=00:00;14:05\nTransInterval=1\n\
         TransFlag=TransData AttLog\nTimeZone=8\nRealtime=1\nEncrypt=None\n"
    )
}

async fn read(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<bytes::Bytes, (StatusCode, &'static str)> {
    let body = Limited::new(req.into_body(), crate::device::MAX_PAYLOAD).collect();
    match tokio::time::timeout(shared.limits.body_timeout, body).await {
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body not complete in time")),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "ADMS body over the size limit",
        )),
        Ok(Ok(b)) => Ok(b.to_bytes()),
    }
}

/// One upload of attendance records: each line decided as an event, the answer (`OK: n`) once
/// all are durable. A malformed line is counted and skipped; the others go on.
async fn attlog(shared: &Shared, dev: &HttpDevice, body: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(body);
    let mut durable = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        Metrics::inc(&shared.metrics.events_received);
        let Some(doc) = attlog_line(line) else {
            dev.live.bad_messages.fetch_add(1, Ordering::Relaxed);
            let n = shared.metrics.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %dev.device_id, bad_messages = n, "ADMS record line malformed; skipped.");
            }
            continue;
        };
        let decoded = dev.profile.decode_value(&doc);
        let Some(decoded) = checked(
            decoded,
            &dev.device_id,
            &dev.profile.name,
            &dev.live,
            &shared.metrics,
        ) else {
            continue;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let input = Input {
            device: dev.device,
            decoded: Some(decoded),
            received: Instant::now(),
            redelivered: false,
            ack: Box::new(move || {
                let _ = tx.send(());
            }),
            reply: None,
        };
        if shared.input.send(input).await.is_err() {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
        }
        durable.push(rx);
    }
    let n = durable.len();
    for rx in durable {
        // A dropped ack (the writer gone, a commit abandoned) is no more "stored" than a timeout.
        if !matches!(
            tokio::time::timeout(super::DURABLE_WAIT, rx).await,
            Ok(Ok(()))
        ) {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "not recorded in time\n");
        }
    }
    answer(StatusCode::OK, format!("OK: {n}"))
}

/// `PIN\ttime\tstatus\tverify\tworkcode…` as JSON; `None` for a line without a PIN and a time.
pub fn attlog_line(line: &str) -> Option<serde_json::Value> {
    let mut f = line.split('\t').map(str::trim);
    let pin = f.next().filter(|p| !p.is_empty() && p.len() <= 64)?;
    let time = f
        .next()
        .filter(|t| crate::timefmt::parse_time_ms(t).is_some())?;
    let status = f.next().unwrap_or("");
    let verify = f.next().unwrap_or("");
    let workcode = f.next().unwrap_or("");
    Some(
        json!({"PIN": pin, "time": time, "status": status, "verify": verify, "workcode": workcode}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attendance_lines_read_and_garbage_does_not() {
        let v = attlog_line("R000001\t2026-11-29 13:00:00\t0\t15\t0\t0").unwrap();
        assert_eq!(v["PIN"], "R000001");
        assert_eq!(v["verify"], "15");
        assert!(attlog_line("").is_none());
        assert!(attlog_line("R1\tyesterday").is_none());
        assert!(attlog_line(&"x".repeat(100)).is_none());
    }

    #[test]
    fn a_poll_takes_fresh_commands_only_and_the_queue_is_bounded() {
        let p = Polls::default();
        for _ in 0..QUEUE {
            assert!(p.push(Instant::now(), br#"{"cmd":"CONTROL DEVICE 01010105"}"#));
        }
        assert!(
            !p.push(Instant::now(), br#"{"cmd":"CONTROL DEVICE 01010105"}"#),
            "full"
        );
        assert_eq!(p.take().len(), QUEUE);
        assert!(p.take().is_empty());
        assert!(!p.push(Instant::now(), b"not json"));
        // A command whose event is older than a poll and a second is never handed out.
        assert!(p.push(
            Instant::now() - COMMAND_MAX_AGE - Duration::from_millis(1),
            br#"{"cmd":"x"}"#
        ));
        assert!(p.take().is_empty());
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/adms_body.rs`.
        #[test]
        fn any_line_never_panics(line in "\\PC{0,200}") {
            let _ = attlog_line(&line);
        }
    }
}
