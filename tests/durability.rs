//! "Ack after durable", proven on the wire: the daemon runs under strace, a terminal on the
//! endpoint (MQTT QoS 1), a Hikvision terminal pushing over HTTP and a ZKTeco terminal uploading
//! over ADMS send their events, and the trace is read back. Every PUBACK, every HTTP 200 to an
//! event push and every ADMS `OK` must be written after an fsync/fdatasync that finished after
//! the event was read — the commit that holds it. A flag counted in the daemon could be set
//! without the call; SIGKILL keeps the page cache: only the order of the system calls shows it.
use crate::common::*;
use crate::http_api::ZK_LANE;
use crate::http_intake::http_child_config;
use bytes::BytesMut;
use gatehouse::device::Unit;
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MQTT_EVENTS: u16 = 1000;
const HTTP_PUSHES: u64 = 40;
const ADMS_UPLOADS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_of_a_record_follows_the_fsync_of_its_commit() {
    if !have("strace") {
        skip(
            "durability",
            "strace is not installed (Debian package strace)",
        );
        return;
    }
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let (config, devices, port) = http_child_config(dir.path(), &broker, ZK_LANE);
    let trace = dir.path().join("strace.log");
    let mut company = Uplink::connect(&broker).await;
    let run = gatehouse_run(&config);
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-qq", "-ttt", "-T", "-xx", "-s", "65536", "-e"])
        .arg("trace=read,recvfrom,fsync,fdatasync,sendto,sendmsg,write,writev")
        .arg("-o")
        .arg(&trace)
        .arg(run.get_program())
        .args(run.get_args())
        .envs(run.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    within("the traced daemon online", Duration::from_secs(30), async {
        company.status(v1::GatewayState::Online).await
    })
    .await;

    let http = format!("127.0.0.1:{port}");
    let mqtt = tokio::spawn(mqtt_terminal(devices.clone()));
    let pushes = tokio::spawn(async move {
        let mut p = sim::http_push::Pusher::new(&http);
        let mut t = sim::adms::Terminal::new(&http, "CKJ1234567890");
        assert_eq!(t.handshake().await.unwrap().0, 200);
        let path = format!("/push/terminal-h/{}", device_password("terminal-h"));
        for n in 0..HTTP_PUSHES.max(ADMS_UPLOADS) {
            if n < HTTP_PUSHES {
                let ev =
                    sim::hikvision::acs_event(10_000 + n, Some("R000001"), 36.5, Unit::Celsius);
                let (ct, body) = sim::http_push::hikvision_multipart(&ev, 0);
                assert_eq!(p.post(&path, &ct, body).await.unwrap().0.as_u16(), 200);
            }
            if n < ADMS_UPLOADS {
                let line =
                    sim::adms::attlog(&format!("R{:06}", n % 90), gatehouse::now_ms() - n as i64);
                assert_eq!(t.upload(&[line]).await.unwrap().0, 200);
            }
        }
    });
    within("the MQTT terminal's acks", LONG, async {
        mqtt.await.unwrap()
    })
    .await;
    within("the pushes answered", LONG, async { pushes.await.unwrap() }).await;
    // SIGTERM to the daemon itself (strace's child): strace ends when it does.
    let daemon = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .unwrap_or_default();
    let daemon = daemon
        .split_whitespace()
        .next()
        .expect("the traced daemon")
        .to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &daemon])
        .status();
    assert!(sent.unwrap().success(), "kill -TERM");
    let status = within("strace to end with the daemon", LONG, async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        status.success(),
        "the daemon exits cleanly under strace: {status:?}"
    );

    let text = std::fs::read_to_string(&trace).unwrap();
    let report = check(&parse(&text));
    println!(
        "durability: {} PUBACKs, {} HTTP 200, {} ADMS OK, {} unfollowed",
        report.pubacks,
        report.http_oks,
        report.adms_oks,
        report.unfollowed.len()
    );
    assert!(
        report.unfollowed.is_empty(),
        "acks before their fsync (the first 10 of {}): {:?}",
        report.unfollowed.len(),
        &report.unfollowed[..report.unfollowed.len().min(10)]
    );
    assert_eq!(
        report.pubacks,
        usize::from(MQTT_EVENTS),
        "every PUBACK seen in the trace"
    );
    assert_eq!(
        report.http_oks, HTTP_PUSHES as usize,
        "every push's 200 seen in the trace"
    );
    assert_eq!(
        report.adms_oks, ADMS_UPLOADS as usize,
        "every ADMS OK seen in the trace"
    );
    assert!(report.pubacks + report.http_oks + report.adms_oks >= 1000);
}

/// A terminal on the endpoint: `MQTT_EVENTS` QoS 1 events in bursts of 50, every PUBACK awaited.
async fn mqtt_terminal(devices: DeviceSide) {
    let link = devices.link("thermal-1");
    let mut s = tokio::net::TcpStream::connect((link.url.host.as_str(), link.url.port))
        .await
        .unwrap();
    let mut c = Connect::new("thermal-1");
    let (user, password) = link.login.clone().unwrap();
    c.set_login(user, password);
    let mut out = BytesMut::new();
    Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut acked = 0u16;
    let mut sent = 0u16;
    loop {
        while sent < MQTT_EVENTS && sent < acked + 50 {
            sent += 1;
            let ev =
                sim::hikvision::acs_event(u64::from(sent), Some("R000002"), 36.5, Unit::Celsius);
            let mut p = Publish::new("devices/thermal-1/event", QoS::AtLeastOnce, ev);
            p.pkid = sent;
            let mut out = BytesMut::new();
            Packet::Publish(p).write(&mut out, usize::MAX).unwrap();
            s.write_all(&out).await.unwrap();
        }
        if acked == MQTT_EVENTS {
            return;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0, "endpoint closed");
        while let Ok(p) = Packet::read(&mut buf, 1 << 20) {
            if let Packet::PubAck(_) = p {
                acked += 1;
            }
        }
    }
}

/// One system call as strace saw it.
#[derive(Debug)]
struct Call {
    name: String,
    fd: i64,
    /// Entry and exit, seconds.
    entry: f64,
    exit: f64,
    data: Vec<u8>,
}

/// Reads strace's `-f -ttt -T -xx` output, joining calls that other threads interrupted.
fn parse(text: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (f64, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        // `PID TIME CALL…`, the pid padded to a width.
        let Some((pid, line)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        let (entry, body, exit) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), (ts, head.to_string()));
            continue;
        } else if rest.starts_with("<... ") {
            let Some((entry, head)) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            (entry, format!("{head}{tail}"), ts)
        } else {
            let took = rest
                .rsplit_once('<')
                .and_then(|(_, d)| d.trim_end_matches('>').parse::<f64>().ok())
                .unwrap_or(0.0);
            (ts, rest.to_string(), ts + took)
        };
        let Some((name, args)) = body.split_once('(') else {
            continue;
        };
        // Failed calls (`= -1 EAGAIN …`) moved nothing. strace pads the result to a column:
        // `fdatasync(9)    = 0 <0.000470>`.
        let Some((_, ret)) = body.rsplit_once(" = ") else {
            continue;
        };
        if ret.starts_with('-') {
            continue;
        }
        let fd = args
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1);
        calls.push(Call {
            name: name.to_string(),
            fd,
            entry,
            exit,
            data: quoted_bytes(args),
        });
    }
    calls.sort_by(|a, b| a.entry.total_cmp(&b.entry));
    calls
}

/// Every `"\x.."` string in a call's arguments, concatenated (writev's buffers in order).
fn quoted_bytes(args: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in args.split('"').enumerate() {
        if i % 2 == 1 {
            for hex in part.split("\\x").skip(1) {
                if let Ok(b) = u8::from_str_radix(&hex[..2.min(hex.len())], 16) {
                    out.push(b);
                }
            }
        }
    }
    out
}

#[derive(Debug, Default)]
struct Report {
    pubacks: usize,
    http_oks: usize,
    adms_oks: usize,
    /// (what, fd) of acks with no fsync finished between reading the event and writing the ack.
    unfollowed: Vec<(String, i64)>,
}

/// Matches every ack to the event it acknowledges and looks for a sync in between.
fn check(calls: &[Call]) -> Report {
    let syncs: Vec<f64> = calls
        .iter()
        .filter(|c| c.name == "fsync" || c.name == "fdatasync")
        .map(|c| c.exit)
        .collect();
    // Whether a sync finished after `read` and before `ack`.
    let synced = |read: f64, ack: f64| syncs.iter().any(|&s| s > read && s < ack);
    let mut report = Report::default();
    // Per fd: the bytes it delivered so far (MQTT) and when each QoS 1 publish was read.
    let mut mqtt_in: HashMap<i64, BytesMut> = HashMap::new();
    let mut mqtt_out: HashMap<i64, BytesMut> = HashMap::new();
    let mut read_at: HashMap<(i64, u16), f64> = HashMap::new();
    // Per fd: the request being answered (an event upload or not) and its last read.
    let mut http: HashMap<i64, (bool, &'static str, f64)> = HashMap::new();
    for c in calls {
        let incoming = matches!(c.name.as_str(), "read" | "recvfrom");
        let outgoing = matches!(c.name.as_str(), "write" | "writev" | "sendto" | "sendmsg");
        if c.data.is_empty() || !(incoming || outgoing) {
            continue;
        }
        if incoming {
            if c.data.starts_with(b"POST ") || c.data.starts_with(b"GET ") {
                let head = String::from_utf8_lossy(&c.data[..c.data.len().min(200)]).into_owned();
                let kind = if head.starts_with("POST /push/terminal-h/") {
                    "http 200"
                } else if head.starts_with("POST /iclock/cdata") && head.contains("ATTLOG") {
                    "adms OK"
                } else {
                    ""
                };
                http.insert(c.fd, (!kind.is_empty(), kind, c.exit));
                continue;
            }
            if let Some(req) = http.get_mut(&c.fd) {
                req.2 = c.exit;
                continue;
            }
            if c.data.first() == Some(&0x10) {
                mqtt_in.insert(c.fd, BytesMut::new());
            }
            if let Some(buf) = mqtt_in.get_mut(&c.fd) {
                buf.extend_from_slice(&c.data);
                while let Ok(p) = Packet::read(buf, 1 << 20) {
                    if let Packet::Publish(p) = p {
                        read_at.insert((c.fd, p.pkid), c.exit);
                    }
                }
            }
            continue;
        }
        if let Some(&(true, kind, read)) = http.get(&c.fd) {
            if c.data.starts_with(b"HTTP/1.1 200") {
                if !synced(read, c.entry) {
                    report.unfollowed.push((kind.to_string(), c.fd));
                }
                match kind {
                    "http 200" => report.http_oks += 1,
                    _ => report.adms_oks += 1,
                }
                http.insert(c.fd, (false, "", c.entry));
            }
            continue;
        }
        if mqtt_in.contains_key(&c.fd) {
            let buf = mqtt_out.entry(c.fd).or_default();
            buf.extend_from_slice(&c.data);
            while let Ok(p) = Packet::read(buf, 1 << 20) {
                if let Packet::PubAck(a) = p {
                    report.pubacks += 1;
                    let read = read_at.get(&(c.fd, a.pkid)).copied().unwrap_or(f64::MAX);
                    if !synced(read, c.entry) {
                        report.unfollowed.push((format!("PUBACK {}", a.pkid), c.fd));
                    }
                }
            }
        }
    }
    report
}
