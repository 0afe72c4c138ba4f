//! Terminals and cameras that push over HTTP (issue 15): a Hikvision terminal in listening mode
//! and in arming mode, a Zhenshi camera whose reply is the gate command — each as a real one
//! behaves, and each hostile push an attacker on the LAN would try.
use crate::common::*;
use gatehouse::device::Unit;
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use gatehouse::tools::sim::http_push::{hikvision_multipart, zhenshi_plate, Pusher};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A resident's card, in the lists the HTTP lanes use.
pub(crate) const CARD: &str = "3123456789";

/// Lists with cards and plates, in `dir`; the config lines that import them.
pub(crate) fn lists(dir: &std::path::Path) -> String {
    let mut csv = String::from("person_id,household,status,valid_until,cards\n");
    for i in 0..100 {
        let cards = if i == 2 { CARD } else { "" };
        csv.push_str(&format!("R{i:06},H{:03},active,,{cards}\n", i / 4));
    }
    std::fs::write(dir.join("http-residents.csv"), csv).unwrap();
    std::fs::write(
        dir.join("http-plates.csv"),
        "plate,kind,household,valid_until,lockdown_allowed\n浙A12345,resident,H001,,false\n",
    )
    .unwrap();
    format!(
        "import = \"{}\"\nplates = \"{}\"",
        dir.join("http-residents.csv").display(),
        dir.join("http-plates.csv").display()
    )
}

/// The test gateway's config with the HTTP lanes added: `hik-1` (terminal-h pushing over HTTP,
/// gate-2 an MQTT turnstile) and `cars-1` (cam-z, a Zhenshi camera over HTTP that is its own
/// barrier), the listener on `http_port` with short deadlines; `more` appended.
/// A child daemon's config in `dir`: the test gate's devices on the endpoint, the uplink on
/// `broker`, the lists, and the HTTP listener on a free port with the HTTP lanes and `more`.
/// The config file, the device side and the HTTP port.
pub(crate) fn http_child_config(
    dir: &std::path::Path,
    broker: &gatehouse::mqtt_client::BrokerUrl,
    more: &str,
) -> (std::path::PathBuf, DeviceSide, u16) {
    let devices = DeviceSide::endpoint();
    let port = gatehouse_company::broker::free_port().unwrap();
    let imports = lists(dir);
    let text = with_http_lanes(config_text(dir, &devices, broker), &imports, port, more);
    (write_config_text(dir, &text), devices, port)
}

fn with_http_lanes(text: String, lists: &str, http_port: u16, more: &str) -> String {
    text.replace("import = \"residents.csv\"", lists)
        + &format!(
            r#"
[device_http]
listen = "127.0.0.1:{http_port}"
header_timeout_ms = 500
body_timeout_ms = 1000
max_body_kib = 12288

[[lanes]]
id = "hik-1"

[[lanes.devices]]
id = "terminal-h"
role = "thermal"
profile = "hikvision-isapi"

[[lanes.devices]]
id = "gate-2"
role = "turnstile"
profile = "generic-gate-mqtt"

[[lanes]]
id = "cars-1"

[[lanes.devices]]
id = "cam-z"
role = "plate_camera"
profile = "zhenshi-ivs-http"
{more}"#
        )
}

pub(crate) struct HttpGate {
    pub(crate) h: Harness,
    pub(crate) http: String,
    gate2: tokio::sync::mpsc::Receiver<Result<sim::gate::GateCommand, String>>,
    _lists: tempfile::TempDir,
}

impl HttpGate {
    pub(crate) async fn start(more: &str) -> HttpGate {
        Self::start_with(|_| more.to_string()).await
    }

    /// With `more(listener port)` appended to the config.
    pub(crate) async fn start_with(more: impl FnOnce(u16) -> String) -> HttpGate {
        Self::start_edited(more, |t| t).await
    }

    /// [`HttpGate::start_with`], the whole config then changed by `edit`.
    async fn start_edited(
        more: impl FnOnce(u16) -> String,
        edit: impl FnOnce(String) -> String,
    ) -> HttpGate {
        let lists_dir = tempfile::tempdir().unwrap();
        let imports = lists(lists_dir.path());
        let port = gatehouse_company::broker::free_port().unwrap();
        let broker = start_broker();
        let more = more(port);
        let h = Harness::start_with(broker.clone(), broker, |t| {
            edit(with_http_lanes(t, &imports, port, &more))
        })
        .await;
        let gate2 = gate_sim_on(&h.link("gate-2"), "devices/gate-2/cmd");
        tokio::time::sleep(Duration::from_millis(200)).await;
        HttpGate {
            h,
            http: format!("127.0.0.1:{port}"),
            gate2,
            _lists: lists_dir,
        }
    }

    async fn gate2(&mut self) -> sim::gate::GateCommand {
        within("a command to gate-2", LONG, self.gate2.recv())
            .await
            .unwrap()
            .unwrap()
    }

    async fn no_command_on_gate2(&mut self) {
        let none = tokio::time::timeout(Duration::from_millis(700), self.gate2.recv()).await;
        assert!(none.is_err(), "no command expected: {none:?}");
    }
}

/// Where `id` pushes, with its secret in the path.
fn path(id: &str) -> String {
    format!("/push/{id}/{}", device_password(id))
}

/// A terminal event as a Hikvision terminal posts it, at `device_ms` by its clock.
pub(crate) fn hik_event(serial: u64, fields: serde_json::Value, device_ms: i64) -> String {
    let mut ev = serde_json::json!({"deviceName": "DS-K1T671TM", "majorEventType": 5,
        "subEventType": 75, "serialNo": serial, "name": "张三"});
    for (k, v) in fields.as_object().unwrap() {
        ev[k] = v.clone();
    }
    serde_json::json!({"ipAddress": "192.168.1.64", "eventType": "AccessControllerEvent",
        "dateTime": gatehouse::timefmt::rfc3339(device_ms), "AccessControllerEvent": ev})
    .to_string()
}

async fn push(p: &mut Pusher, id: &str, event: &str, picture: usize) -> (u16, String) {
    let (ct, body) = hikvision_multipart(event, picture);
    let (status, body) = within("an HTTP answer", LONG, p.post(&path(id), &ct, body))
        .await
        .unwrap();
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_pushing_multipart_opens_its_gate_and_its_picture_is_never_read() {
    let mut g = HttpGate::start("").await;
    let mut p = Pusher::new(&g.http);
    let now = gatehouse::now_ms();
    let ev = sim::hikvision::acs_event(1, Some("R000001"), 36.5, Unit::Celsius);
    assert_eq!(push(&mut p, "terminal-h", &ev, 100_000).await.0, 200);
    assert_eq!(g.gate2().await.action, "open");
    let (e, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000001")
    );
    assert_eq!(e.lane, "hik-1");
    // A 10 MB picture is streamed past, not held: the event is decided all the same.
    let ev = hik_event(
        2,
        serde_json::json!({"employeeNoString": "R000003", "currTemperature": 36.4}),
        now,
    );
    assert_eq!(push(&mut p, "terminal-h", &ev, 10 << 20).await.0, 200);
    assert_eq!(g.gate2().await.action, "open");
    // Plain JSON and XML bodies are events too.
    let ev = hik_event(3, serde_json::json!({"employeeNoString": "R000004"}), now);
    let (s, _) = p
        .post(&path("terminal-h"), "application/json", ev.into_bytes())
        .await
        .unwrap();
    assert_eq!(s.as_u16(), 200);
    assert_eq!(g.gate2().await.action, "open");
    let xml = format!("<EventNotificationAlert><dateTime>{}</dateTime><eventType>AccessControllerEvent</eventType>\
        <AccessControllerEvent><serialNo>4</serialNo><employeeNoString>R000005</employeeNoString>\
        <currTemperature>36.6</currTemperature></AccessControllerEvent></EventNotificationAlert>",
        gatehouse::timefmt::rfc3339(now));
    let (s, _) = p
        .post(&path("terminal-h"), "application/xml", xml.into_bytes())
        .await
        .unwrap();
    assert_eq!(s.as_u16(), 200);
    assert_eq!(g.gate2().await.action, "open");
}

/// The four traces of a real terminal the issue found mishandled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_terminals_traces_get_the_right_answers() {
    let mut g = HttpGate::start("").await;
    let mut p = Pusher::new(&g.http);
    let now = gatehouse::now_ms();
    // A card swipe names the card: the resident holding it passes.
    let swipe = hik_event(
        2032,
        serde_json::json!({"subEventType": 9, "cardNo": CARD,
        "currentVerifyMode": "card", "currTemperature": 36.5}),
        now,
    );
    assert_eq!(push(&mut p, "terminal-h", &swipe, 0).await.0, 200);
    assert_eq!(g.gate2().await.action, "open");
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000002")
    );
    // The same event again (same serial number, same time): answered, not decided again.
    assert_eq!(push(&mut p, "terminal-h", &swipe, 0).await.0, 200);
    g.no_command_on_gate2().await;
    // An event stored 3 h ago and uploaded now: recorded, never opens.
    let old = hik_event(
        2033,
        serde_json::json!({"employeeNoString": "R000001",
        "currTemperature": 36.5}),
        now - 3 * 3_600_000,
    );
    assert_eq!(push(&mut p, "terminal-h", &old, 0).await.0, 200);
    g.no_command_on_gate2().await;
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(d.reason, "stale_event");
    assert!(d.not_actuated);
    // The terminal's own marker says stored, whatever the time.
    let marked = hik_event(
        2034,
        serde_json::json!({"employeeNoString": "R000001",
        "currentEvent": false}),
        now,
    );
    assert_eq!(push(&mut p, "terminal-h", &marked, 0).await.0, 200);
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(d.reason, "stale_event");
    // A quoted temperature in "Celsius": a fever, denied, alarmed.
    let hot = hik_event(
        2035,
        serde_json::json!({"employeeNoString": "R000001",
        "currTemperature": "38.2", "thermometryUnit": "Celsius"}),
        now,
    );
    assert_eq!(push(&mut p, "terminal-h", &hot, 0).await.0, 200);
    assert_eq!(g.gate2().await.action, "deny");
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(d.reason, "fever");
    let a = g.h.uplink.alarm_of(v1::AlarmKind::Fever).await;
    assert_eq!(a.device, "terminal-h");
    // A temperature that is no number: the person is told to measure again.
    let bad = hik_event(
        2036,
        serde_json::json!({"employeeNoString": "R000001",
        "currTemperature": "warm"}),
        now,
    );
    assert_eq!(push(&mut p, "terminal-h", &bad, 0).await.0, 200);
    assert_eq!(g.gate2().await.action, "deny");
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(d.reason, "invalid_reading");
    // The terminal unlocks its own door (its lane's gate is the turnstile): reported as such.
    let locked = hik_event(2037, serde_json::json!({"subEventType": 22}), now);
    assert_eq!(push(&mut p, "terminal-h", &locked, 0).await.0, 200);
    let unlocked = hik_event(2038, serde_json::json!({"subEventType": 21}), now);
    assert_eq!(push(&mut p, "terminal-h", &unlocked, 0).await.0, 200);
    let a = g.h.uplink.alarm_of(v1::AlarmKind::Tamper).await;
    assert_eq!(a.device, "terminal-h");
    assert!(a.detail.contains("unexpected_open"), "{}", a.detail);
}

/// The terminal uploads lock reports it stored while gatehouse could not hear it (its own
/// "not current" marker, or dated an hour ago): recorded as stored, never taken as the door's
/// state now — no tamper alarm for an opening that happened long ago, or was ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_lock_reports_are_recorded_as_stored_and_never_raise_a_tamper_alarm() {
    let mut g = HttpGate::start("").await;
    let mut p = Pusher::new(&g.http);
    let now = gatehouse::now_ms();
    let hour_ago = now - 3_600_000;
    let stored = [
        hik_event(
            3001,
            serde_json::json!({"subEventType": 22, "currentEvent": false}),
            now,
        ),
        hik_event(
            3002,
            serde_json::json!({"subEventType": 21, "currentEvent": false}),
            now,
        ),
        hik_event(3003, serde_json::json!({"subEventType": 22}), hour_ago),
        hik_event(3004, serde_json::json!({"subEventType": 21}), hour_ago),
    ];
    for ev in &stored {
        assert_eq!(push(&mut p, "terminal-h", ev, 0).await.0, 200);
    }
    let mut reports = Vec::new();
    within("four stored lock reports", LONG, async {
        while reports.len() < 4 {
            for e in g.h.uplink.batch().await {
                if let (true, Some(v1::event::Body::DeviceState(s))) =
                    (e.device == "terminal-h", e.body)
                {
                    reports.push(s);
                }
            }
        }
    })
    .await;
    assert!(reports.iter().all(|s| s.stored), "{reports:?}");
    assert_eq!(
        reports.iter().map(|s| s.arm.as_str()).collect::<Vec<_>>(),
        ["down", "up", "down", "up"]
    );
    // A live report after them: what the uplink carried by then holds no tamper alarm.
    let live = hik_event(3005, serde_json::json!({"subEventType": 22}), now);
    assert_eq!(push(&mut p, "terminal-h", &live, 0).await.0, 200);
    within("the live lock report", LONG, async {
        loop {
            for e in g.h.uplink.batch().await {
                if let (true, Some(v1::event::Body::DeviceState(s))) =
                    (e.device == "terminal-h", e.body)
                {
                    if !s.stored {
                        return;
                    }
                }
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tamper: Vec<_> =
        g.h.uplink
            .alarms_so_far()
            .into_iter()
            .filter(|a| a.kind() == v1::AlarmKind::Tamper)
            .collect();
    assert!(tamper.is_empty(), "{tamper:?}");
}

/// After a crash that lost a decision, the terminal resends the event minutes later, still marked
/// `currentEvent: true` (HTTP has no redelivery flag). Its heartbeat taught gatehouse its clock,
/// so the event's age gives it away: recorded as `stale_event`, the gate not opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_resent_minutes_later_still_marked_current_is_recorded_and_never_opens() {
    let mut g = HttpGate::start("").await;
    let mut p = Pusher::new(&g.http);
    let now = gatehouse::now_ms();
    let beat = sim::http_push::hikvision_heartbeat(now);
    assert_eq!(push(&mut p, "terminal-h", &beat, 0).await.0, 200);
    let resent = hik_event(
        4001,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5,
            "currentEvent": true}),
        now - 300_000,
    );
    assert_eq!(push(&mut p, "terminal-h", &resent, 0).await.0, 200);
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!(
        (d.reason.as_str(), d.not_actuated),
        ("stale_event", true),
        "{d:?}"
    );
    g.no_command_on_gate2().await;
}

/// The terminal's clock is stepped back two minutes (NTP, a timezone fix): its next heartbeat
/// teaches the new offset at once — a heartbeat is always now, whatever its clock says — so the
/// residents it identifies next are not taken for a replay and locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_whose_clock_steps_back_is_relearned_from_its_next_heartbeat() {
    let mut g = HttpGate::start("").await;
    let mut p = Pusher::new(&g.http);
    let now = gatehouse::now_ms();
    let beat = sim::http_push::hikvision_heartbeat(now);
    assert_eq!(push(&mut p, "terminal-h", &beat, 0).await.0, 200);
    let behind = now - 120_000;
    let beat = sim::http_push::hikvision_heartbeat(behind);
    assert_eq!(push(&mut p, "terminal-h", &beat, 0).await.0, 200);
    let live = hik_event(
        5001,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5,
            "currentEvent": true}),
        behind + 500,
    );
    assert_eq!(push(&mut p, "terminal-h", &live, 0).await.0, 200);
    let (_, d) = g.h.uplink.passage_from("terminal-h").await;
    assert_eq!((d.reason.as_str(), d.not_actuated), ("ok", false), "{d:?}");
    assert_eq!(g.gate2().await.action, "open");
}

/// Sends raw bytes on a fresh connection and reads the answer's status (0: closed without one).
async fn raw(http: &str, bytes: &[u8], then_wait: Duration) -> u16 {
    let text = raw_answer(http, bytes, then_wait).await;
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The whole answer, without its `date` header (the only line that differs between two).
async fn raw_answer(http: &str, bytes: &[u8], then_wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(then_wait, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    let lines = text
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"));
    lines.collect::<Vec<_>>().join("\r\n")
}

/// Issue 27 §6: the listener's 64 slots were one pool: 64 idle sockets from one LAN host locked
/// every terminal out. Now one address holds at most 8, strangers share 64, and a terminal's
/// `from` address has slots of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_strangers_never_lock_a_terminal_out() {
    let mut g = HttpGate::start_edited(
        |_| String::new(),
        |t| {
            t.replace(
                "id = \"terminal-h\"\n",
                "id = \"terminal-h\"\nfrom = \"127.0.0.1\"\n",
            )
        },
    )
    .await;
    let addr: std::net::SocketAddr = g.http.parse().unwrap();
    let idle_from = |host: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, host], 0).into()).unwrap();
        socket.connect(addr).await
    };
    // 64 from one host, then 8 each from eight more: the strangers' 64 are all taken.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.extend(idle_from(2).await.ok());
    }
    for host in 3..11 {
        for _ in 0..8 {
            idle.extend(idle_from(host).await.ok());
        }
    }
    let now = gatehouse::now_ms();
    let ev = hik_event(31, serde_json::json!({"employeeNoString": "R000001"}), now);
    let (ct, body) = hikvision_multipart(&ev, 0);
    let mut p = Pusher::new(&g.http);
    let answer = within(
        "the terminal's answer",
        LONG,
        p.post(&path("terminal-h"), &ct, body),
    )
    .await;
    assert_eq!(answer.map(|(s, _)| s.as_u16()), Ok(200));
    assert_eq!(g.gate2().await.action, "open");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pushes_are_refused_counted_alarmed_and_the_lane_keeps_deciding() {
    let mut g = HttpGate::start("").await;
    let http = g.http.clone();
    let now = gatehouse::now_ms();
    let ev = hik_event(1, serde_json::json!({"employeeNoString": "R000001"}), now);
    let (ct, body) = hikvision_multipart(&ev, 0);
    let req = |path: &str, extra: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let wait = Duration::from_secs(3);
    // Wrong secret, no secret, another device's secret, the wrong Basic password.
    assert_eq!(
        raw(&http, &req("/push/terminal-h/guess", "", &body), wait).await,
        401
    );
    assert_eq!(
        raw(&http, &req("/push/terminal-h", "", &body), wait).await,
        401
    );
    assert_eq!(
        raw(
            &http,
            &req(
                &format!("/push/terminal-h/{}", device_password("cam-z")),
                "",
                &body
            ),
            wait
        )
        .await,
        401
    );
    let basic = |pw: &str| {
        use base64::Engine;
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("terminal-h:{pw}"))
        )
    };
    assert_eq!(
        raw(&http, &req("/push/terminal-h", &basic("nope"), &body), wait).await,
        401
    );
    // An unknown device gets the very answer a known one with a wrong secret gets: device ids
    // cannot be found by asking.
    let unknown = raw_answer(&http, &req("/push/nobody/x", "", &body), wait).await;
    let wrong = raw_answer(&http, &req("/push/terminal-h/x", "", &body), wait).await;
    assert!(unknown.starts_with("HTTP/1.1 401"), "{unknown}");
    assert_eq!(unknown, wrong);
    // Unknown path, not a POST.
    assert_eq!(
        raw(&http, &req("/ISAPI/whatever", "", &body), wait).await,
        404
    );
    let get = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        path("terminal-h")
    );
    assert_eq!(raw(&http, get.as_bytes(), wait).await, 405);
    // Over the body limit by its length; an event part over 256 KiB; a picture's type; garbage.
    let huge = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: 99999999999\r\n\r\n",
        path("terminal-h")
    );
    assert_eq!(raw(&http, huge.as_bytes(), wait).await, 413);
    let big_event = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    let (_, big) = hikvision_multipart(&big_event, 0);
    assert_eq!(
        raw(&http, &req(&path("terminal-h"), "", &big), wait).await,
        413
    );
    // Issue 27 §5: any JSON part is capped, not only the one named `event_log` (a part named
    // otherwise was read whole, up to the 16 MiB body limit: 64 of them passed MemoryMax).
    let unnamed = format!(
        "--MIME_boundary_gatehouse_sim\r\nContent-Disposition: form-data; name=\"other\"\r\n\
         Content-Type: application/json\r\n\r\n{{\"pad\":\"{}\"}}\r\n--MIME_boundary_gatehouse_sim--\r\n",
        "x".repeat(1 << 20)
    );
    assert_eq!(
        raw(
            &http,
            &req(&path("terminal-h"), "", unnamed.as_bytes()),
            wait
        )
        .await,
        413
    );
    let png = format!("POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 4\r\nConnection: close\r\n\r\nPNG!", path("terminal-h"));
    assert_eq!(raw(&http, png.as_bytes(), wait).await, 415);
    let broken = b"--MIME_boundary_gatehouse_sim\r\nContent-Disposition: form-data; name=\"event_log\"\r\n\r\n{\"AccessCon";
    assert_eq!(
        raw(&http, &req(&path("terminal-h"), "", broken), wait).await,
        400
    );
    let not_json = b"{\"AccessControllerEvent\":";
    let r = format!("POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", path("terminal-h"), not_json.len());
    assert_eq!(
        raw(&http, &[r.as_bytes(), not_json].concat(), wait).await,
        400
    );
    // Slow loris: headers that never end are cut off at the header deadline (500 ms here).
    let t = std::time::Instant::now();
    let status = raw(
        &http,
        b"POST /push/terminal-h/x HTTP/1.1\r\nHost: x\r\n",
        wait,
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    assert!(status == 408 || status == 0, "{status}");
    // A body that never finishes: 408 at the body deadline (1 s here).
    let slow = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        path("terminal-h"),
        body.len()
    );
    let mut partial = slow.into_bytes();
    partial.extend_from_slice(&body[..body.len() / 2]);
    assert_eq!(raw(&http, &partial, wait).await, 408);
    // Counted, and raised upstream with the address.
    assert!(gatehouse::metrics::Metrics::get(&g.h.daemon.metrics.device_refusals) >= 13);
    let a = g.h.uplink.alarm_of(v1::AlarmKind::DeviceMisbehaving).await;
    assert!(a.detail.contains("127.0.0.1"), "{}", a.detail);
    // And the lane still decides.
    let mut p = Pusher::new(&http);
    assert_eq!(push(&mut p, "terminal-h", &ev, 0).await.0, 200);
    assert_eq!(g.gate2().await.action, "open");
    // Basic authentication with the device's own password works as well as the path.
    let ev = hik_event(
        2,
        serde_json::json!({"employeeNoString": "R000001"}),
        now + 1000,
    );
    let (ct, body) = hikvision_multipart(&ev, 0);
    let ok = format!("POST /push/terminal-h HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n", body.len(), basic(&device_password("terminal-h")));
    assert_eq!(
        raw(&http, &[ok.as_bytes(), &body].concat(), wait).await,
        200
    );
    assert_eq!(g.gate2().await.action, "open");
}

/// Zhenshi's HTTP push as the vendor documents it (issue 27 §1): the plate as text — UTF-8, or
/// GB2312 where the body says so (read as base64 before: every real read was refused 400) —,
/// every answer naming the read's `plateid`, a stored read answered with `ContinuePushOffline`
/// (the camera sends the next one only then), and its multipart heartbeat form taken as a sign
/// of life (refused 400 before, so a camera sending only heartbeats went offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zhenshi_camera_is_answered_with_the_gate_command_and_its_replay_never_opens() {
    let g = HttpGate::start("").await;
    let now_s = gatehouse::now_ms() / 1000;
    let post_as = |content_type: String, body: Vec<u8>| {
        let (http, path) = (g.http.clone(), path("cam-z"));
        async move {
            let mut p = Pusher::new(&http);
            let (s, b) = p.post(&path, &content_type, body).await.unwrap();
            (s.as_u16(), String::from_utf8_lossy(&b).into_owned())
        }
    };
    let post = |body: String| post_as("application/json".into(), body.into_bytes());
    let ok = |id: u64| format!(r#"{{"Response_AlarmInfoPlate":{{"info":"ok","plateid":{id}}}}}"#);
    let no = |id: u64| format!(r#"{{"Response_AlarmInfoPlate":{{"info":"no","plateid":{id}}}}}"#);
    assert_eq!(
        post(zhenshi_plate(1, "浙A12345", 96, 4, false, now_s)).await,
        (200, ok(1)),
        "a resident's car: the reply lifts the barrier"
    );
    assert_eq!(
        post(zhenshi_plate(2, "沪C11111", 96, 4, false, now_s)).await,
        (200, no(2)),
        "unknown plate"
    );
    assert_eq!(
        post(zhenshi_plate(1, "浙A12345", 96, 4, false, now_s)).await,
        (200, no(1)),
        "the same read again"
    );
    assert_eq!(
        post(zhenshi_plate(3, "浙A12345", 96, 4, true, now_s - 600)).await,
        (
            200,
            r#"{"Response_AlarmInfoPlate":{"ContinuePushOffline":{"plateid":3,"continue":1}}}"#
                .into()
        ),
        "a replayed offline record: go on with the next"
    );
    assert_eq!(
        post(sim::http_push::zhenshi_heartbeat(1, now_s)).await,
        (200, String::new()),
        "a heartbeat"
    );
    let (ct, form) = sim::http_push::zhenshi_heartbeat_form();
    assert_eq!(
        post_as(ct, form).await,
        (200, String::new()),
        "its heartbeat form"
    );
    let text = zhenshi_plate(4, "浙A12345", 96, 4, false, now_s);
    let (gb, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    assert_ne!(&gb[..], text.as_bytes());
    let gb2312 = "application/json; charset=GB2312".to_string();
    assert_eq!(
        post_as(gb2312, gb.into_owned()).await,
        (200, ok(4)),
        "GB2312"
    );
    let mut h = g.h;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (_, d) = h.uplink.passage_from("cam-z").await;
        seen.push((d.reason.clone(), d.subject_id.clone(), d.not_actuated));
    }
    assert_eq!(
        seen,
        vec![
            ("ok".into(), "浙A12345".into(), false),
            ("unknown_subject".into(), String::new(), false),
            ("stale_event".into(), "浙A12345".into(), true),
            ("ok".into(), "浙A12345".into(), false),
        ]
    );
}

/// The gate before the record, the ack after it: with the outbox writer stalled, the gate still
/// opens at once, but the terminal's 200 — and the camera's answer to a replayed record — wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_waits_for_the_record_but_the_gate_does_not() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let (config, devices, port) = http_child_config(dir.path(), &broker, "");
    let mut watcher = Uplink::connect(&broker).await;
    let mut child = gatehouse_run(&config)
        .env("GATEHOUSE_TEST_STALL_WRITER_AFTER_MS", "2500")
        .spawn()
        .unwrap();
    watcher.status(v1::GatewayState::Online).await;
    let mut gate2 = gate_sim_on(&devices.link("gate-2"), "devices/gate-2/cmd");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let http = format!("127.0.0.1:{port}");
    let now = gatehouse::now_ms();
    let ev = hik_event(7, serde_json::json!({"employeeNoString": "R000001"}), now);
    let (ct, body) = hikvision_multipart(&ev, 0);
    let mut p = Pusher::new(&http);
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        p.post(&path("terminal-h"), &ct, body),
    )
    .await;
    assert!(
        answer.is_err(),
        "no 200 before the decision is durable: {answer:?}"
    );
    let cmd = within("the gate command", LONG, gate2.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cmd.action, "open");
    // The camera: a live read is answered at once, a replayed one only once stored.
    let mut cam = Pusher::new(&http);
    let live = zhenshi_plate(1, "浙A12345", 96, 4, false, now / 1000);
    let (s, b) = within(
        "the camera's answer",
        Duration::from_secs(2),
        cam.post(&path("cam-z"), "application/json", live.into_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        (s.as_u16(), &b[..]),
        (
            200,
            &br#"{"Response_AlarmInfoPlate":{"info":"ok","plateid":1}}"#[..]
        )
    );
    let replay = zhenshi_plate(2, "浙A12345", 96, 4, true, now / 1000 - 600);
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        cam.post(&path("cam-z"), "application/json", replay.into_bytes()),
    )
    .await;
    assert!(
        answer.is_err(),
        "a replayed record is answered once stored: {answer:?}"
    );
    // A live read that is denied: its "no" is no open, so it too waits for the record (the
    // camera will not send it again; a crash before the commit would lose it).
    let mut cam = Pusher::new(&http);
    let stranger = zhenshi_plate(3, "浙Z99999", 96, 4, false, now / 1000);
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        cam.post(&path("cam-z"), "application/json", stranger.into_bytes()),
    )
    .await;
    assert!(
        answer.is_err(),
        "a denial is answered once stored: {answer:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
