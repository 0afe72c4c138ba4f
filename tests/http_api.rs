//! Terminals gatehouse speaks to over their own HTTP API rather than waiting for their pushes: a
//! Hikvision terminal's alertStream (arming mode, catch-up, httpHosts, door), a Dahua terminal's
//! event stream and door, a ZKTeco terminal polling on ADMS. The gate and its lists are
//! `http_intake`'s.
use crate::common::*;
use crate::http_intake::{hik_event, http_child_config, HttpGate, CARD};
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use std::time::Duration;

/// Lane `lane`: Hikvision terminal `device` at `address` in arming mode, its door driven over
/// ISAPI; `more`: further `api` keys.
fn armed(lane: &str, device: &str, address: &str, more: &str) -> String {
    format!(
        r#"
[[lanes]]
id = "{lane}"

[[lanes.devices]]
id = "{device}"
role = "thermal"
profile = "hikvision-isapi"
api = {{ address = "{address}", username = "admin", password = "hik-12345", mode = "arming", door = 1{more} }}
"#
    )
}

/// Lane `door-1`: terminal `terminal-a` at `addr` in arming mode, told to push to this box's
/// HTTP `port`.
fn armed_lane(addr: std::net::SocketAddr, port: u16) -> String {
    let push_to = format!(", push_to = \"http://127.0.0.1:{port}\"");
    armed("door-1", "terminal-a", &addr.to_string(), &push_to)
}

/// Until gatehouse holds `term`'s event stream open.
async fn stream_open(term: &sim::isapi_terminal::Terminal, what: &str) {
    within(what, LONG, async {
        while term.open_streams() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A terminal whose catch-up answer holds items that are not events (a number, a string, a
/// list): each is skipped as outside data that does not decode, the events around it are still
/// recorded, and the terminal's stream keeps opening its door. Before, assigning into such an item panicked the
/// catch-up task (a release build aborts: a crash loop, as catch-up runs again at every start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_answer_with_items_that_are_not_events_is_survived() {
    let (term, mut doors) = sim::isapi_terminal::Terminal::start("admin", "hik-12345")
        .await
        .unwrap();
    let before = gatehouse::now_ms() - 300_000;
    let stored = |serial: u64, who: &str| {
        serde_json::json!({"major": 5, "minor": 75, "serialNo": serial,
            "time": gatehouse::timefmt::rfc3339(before), "employeeNoString": who,
            "currTemperature": 36.4})
    };
    term.store(stored(901, "R000011"));
    for junk in [
        serde_json::json!(7),
        serde_json::json!("not an event"),
        serde_json::json!([1, 2]),
    ] {
        term.store(junk);
    }
    term.store(stored(902, "R000012"));
    let g = HttpGate::start_with(|port| armed_lane(term.addr, port)).await;
    let mut h = g.h;
    stream_open(&term, "the stream to open").await;
    // Heard live: the door opens, and what the terminal stored is fetched.
    term.send_event(&hik_event(
        3,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5}),
        gatehouse::now_ms(),
    ));
    let (door, _) = within("the door command", LONG, doors.recv())
        .await
        .unwrap();
    assert_eq!(door, 1);
    let (_, d) = h.uplink.passage_from("terminal-a").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000001")
    );
    let mut recorded = Vec::new();
    for _ in 0..2 {
        let (_, d) = h.uplink.passage_from("terminal-a").await;
        assert_eq!(d.reason, "stale_event");
        recorded.push(d.subject_id);
    }
    recorded.sort();
    assert_eq!(recorded, ["R000011", "R000012"]);
    let decided = Metrics::get(&h.daemon.metrics.decisions);
    assert_eq!(decided, 3, "the junk is no passage");
    // The terminal still opens its door for the next one.
    term.send_event(&hik_event(
        4,
        serde_json::json!({"employeeNoString": "R000002", "currTemperature": 36.5}),
        gatehouse::now_ms(),
    ));
    let (door, _) = within("the next door command", LONG, doors.recv())
        .await
        .unwrap();
    assert_eq!(door, 1);
    h.daemon.stop().await;
}

/// Arming mode: gatehouse holds the terminal's alertStream open (Digest), reads events out of
/// it past garbage, reconnects when it drops, writes its own httpHosts entry, fetches what the
/// terminal stored before it was heard (recorded, never acted on), and opens the terminal's door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_terminal_streams_is_caught_up_configured_and_its_door_opened() {
    let (term, mut doors) = sim::isapi_terminal::Terminal::start("admin", "hik-12345")
        .await
        .unwrap();
    let now = gatehouse::now_ms();
    // What it stored while gatehouse could not hear it, 5 minutes ago.
    term.store(serde_json::json!({"major": 5, "minor": 75, "serialNo": 900,
        "time": gatehouse::timefmt::rfc3339(now - 300_000), "employeeNoString": "R000007",
        "currTemperature": 36.4}));
    let g = HttpGate::start_with(|port| armed_lane(term.addr, port)).await;
    let port = g.http.rsplit(':').next().unwrap().to_string();
    let mut h = g.h;
    stream_open(&term, "the stream to open").await;
    // A live event in the stream, behind some garbage: the door opens over ISAPI.
    term.send_raw(b"\r\nthis is not a part\r\n".to_vec());
    term.send_event(&hik_event(
        1,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5}),
        gatehouse::now_ms(),
    ));
    let (door, body) = within("the door command", LONG, doors.recv())
        .await
        .unwrap();
    assert_eq!(
        (door, body.as_str()),
        (1, r#"{"RemoteControlDoor":{"cmd":"open"}}"#)
    );
    let (_, d) = h.uplink.passage_from("terminal-a").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000001")
    );
    // Heard: the stored event is fetched and recorded as stale, its door never opened.
    let (_, d) = h.uplink.passage_from("terminal-a").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str(), d.not_actuated),
        ("stale_event", "R000007", true)
    );
    assert!(term.searches() >= 1);
    // Its httpHosts entry points at this box, with the device's path.
    within("httpHosts written", LONG, async {
        while term
            .hosts()
            .is_none_or(|x| !x.contains("/push/terminal-a/"))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(term
        .hosts()
        .unwrap()
        .contains(&format!("<portNo>{port}</portNo>")));
    // The stream drops (as they do every ~40 s): gatehouse is back on it, and deciding.
    term.drop_streams();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream_open(&term, "the stream to reopen").await;
    term.send_event(&hik_event(
        2,
        serde_json::json!({"employeeNoString": "R000009", "currTemperature": 38.5}),
        gatehouse::now_ms(),
    ));
    let (_, d) = h.uplink.passage_from("terminal-a").await;
    assert_eq!(d.reason, "fever");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), doors.recv())
            .await
            .is_err(),
        "a denial opens no door"
    );
    assert_eq!(term.refused(), 0, "Digest answered right every time");
}

/// A Dahua access terminal: gatehouse holds its eventManager stream open (Digest), reads the
/// `Code=AccessControl;…;data={…}` parts past garbage and heartbeats, opens its door over CGI,
/// and is back on the stream when it drops (a reboot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dahua_terminals_stream_is_read_and_its_door_opened() {
    let (term, mut doors) = sim::isapi_terminal::Terminal::start("admin", "dh-12345")
        .await
        .unwrap();
    let lane = format!(
        r#"
[[lanes]]
id = "dahua-1"

[[lanes.devices]]
id = "dahua-t"
role = "identifier"
profile = "dahua-access"
api = {{ address = "{}", username = "admin", password = "dh-12345", door = 1 }}
"#,
        term.addr
    );
    let g = HttpGate::start(&lane).await;
    let mut h = g.h;
    stream_open(&term, "the stream to open").await;
    term.send_raw(b"noise between parts\r\n".to_vec());
    term.send_dahua("Heartbeat");
    term.send_dahua(r#"Code=AccessControl;action=Pulse;index=0;data={"UserID":"R000001","CardNo":"","Method":15,"Status":1,"Type":"Entry","RecNo":101,"UTC":1795928400,"Similarity":92}"#);
    let (door, query) = within("the door command", LONG, doors.recv())
        .await
        .unwrap();
    assert_eq!((door, query.as_str()), (1, "action=openDoor&channel=1"));
    let (_, d) = h.uplink.passage_from("dahua-t").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000001")
    );
    // A card swipe by the card alone; the same record again is not decided twice.
    let card = format!(
        r#"Code=AccessControl;action=Pulse;index=0;data={{"UserID":"","CardNo":"{CARD}","Method":1,"RecNo":102}}"#
    );
    term.send_dahua(&card);
    term.send_dahua(&card);
    let (_, d) = h.uplink.passage_from("dahua-t").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000002")
    );
    assert!(within("one door", LONG, doors.recv()).await.is_some());
    assert!(
        tokio::time::timeout(Duration::from_millis(700), doors.recv())
            .await
            .is_err(),
        "the repeat opens nothing"
    );
    // Rebooted: the stream drops, gatehouse is back on it.
    term.drop_streams();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream_open(&term, "the stream to reopen").await;
    // As terminals write it, over many lines (issue 27 §2: only the first line was read, and the
    // event was never decided).
    term.send_dahua_access(
        &serde_json::json!({"UserID": "R000999", "RecNo": 103, "UTC": 1795928500}),
    );
    let (_, d) = h.uplink.passage_from("dahua-t").await;
    assert_eq!(d.reason, "unknown_subject");
    // Its record numbers restarted with the reboot: record 101 again, a new event by its time
    // (issue 27 §3: dropped as a replay before).
    term.send_dahua_access(
        &serde_json::json!({"UserID": "R000001", "Method": 15, "RecNo": 101, "UTC": 1795928600}),
    );
    let (_, d) = h.uplink.passage_from("dahua-t").await;
    assert_eq!(
        (d.reason.as_str(), d.subject_id.as_str()),
        ("ok", "R000001")
    );
    assert!(within("the door again", LONG, doors.recv()).await.is_some());
    assert_eq!(term.refused(), 0);
}

/// A ZKTeco terminal on ADMS (`zk-t`, serial CKJ1234567890), its door opened on its polls.
pub(crate) const ZK_LANE: &str = r#"
[[lanes]]
id = "zk-1"

[[lanes.devices]]
id = "zk-t"
role = "identifier"
profile = "zkteco-adms"
adms_sn = "CKJ1234567890"
adms_open = true
from = "127.0.0.1"
"#;

/// A ZKTeco terminal on ADMS: served only under its configured serial number and from its
/// address; its records decided (a stored batch recorded, never opening; a repeat not decided
/// again; a malformed line skipped); its door opened on its next poll; its command results read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zkteco_terminal_on_adms_is_served_by_serial_and_address_and_polled_for_its_door() {
    use sim::adms::{attlog, Terminal};
    let g = HttpGate::start(ZK_LANE).await;
    let addr = g.http.clone();
    let mut h = g.h;
    // An unknown serial number gets nothing.
    let mut stranger = Terminal::new(&addr, "NOTMINE");
    assert_eq!(stranger.handshake().await.unwrap().0, 404);
    let mut t = Terminal::new(&addr, "CKJ1234567890");
    let (status, options) = t.handshake().await.unwrap();
    assert_eq!(status, 200);
    assert!(
        options.contains("Delay=1") && options.contains("Realtime=1"),
        "{options}"
    );
    // A live record, a malformed line, and one stored 10 minutes ago, in one upload.
    let now = gatehouse::now_ms();
    let lines = vec![
        attlog("R000001", now),
        "garbage without tabs".to_string(),
        attlog("R000003", now - 600_000),
    ];
    let t0 = std::time::Instant::now();
    assert_eq!(t.upload(&lines).await.unwrap(), (200, "OK: 2".to_string()));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (_, d) = h.uplink.passage_from("zk-t").await;
        seen.push((d.subject_id.clone(), d.reason.clone()));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("R000001".into(), "ok".into()),
            ("R000003".into(), "stale_event".into())
        ]
    );
    // The door opens on the next poll: one command, for the live record only.
    let cmds = t.poll().await.unwrap();
    let waited = t0.elapsed();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(cmds[0].1, "CONTROL DEVICE 01010105");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(t.result(cmds[0].0, 0, &cmds[0].1).await.unwrap().0, 200);
    // The same record uploaded again (a terminal resending after a lost answer): no new open.
    assert_eq!(
        t.upload(&[attlog("R000001", now)]).await.unwrap(),
        (200, "OK: 1".to_string())
    );
    // Its OK came after the commit, and a command before the record: nothing more is coming.
    assert!(t.poll().await.unwrap().is_empty());
    assert_eq!(
        Metrics::get(&h.daemon.metrics.decisions),
        2,
        "not decided again"
    );
    // 10,000 lines is over the body limit: refused, and the next upload is decided.
    let many: Vec<String> = (0..10_000)
        .map(|i| attlog(&format!("R{:06}", i % 100), now))
        .collect();
    assert_eq!(t.upload(&many).await.unwrap().0, 413);
    assert_eq!(
        t.upload(&[attlog("R000005", gatehouse::now_ms())])
            .await
            .unwrap(),
        (200, "OK: 1".to_string())
    );
    assert_eq!(t.poll().await.unwrap().len(), 1);
}

/// ADMS across a crash: a record answered `OK` is decided once, also when the terminal uploads
/// it again to the restarted daemon (the answer was lost), and its door is not opened again; and
/// `OK` comes only once the record is durable — with the writer stalled, no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adms_record_is_answered_once_durable_and_decided_once_across_a_restart() {
    use sim::adms::{attlog, Terminal};
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let (config, _, port) = http_child_config(dir.path(), &broker, ZK_LANE);
    let mut company = Uplink::connect(&broker).await;
    let addr = format!("127.0.0.1:{port}");
    let now = gatehouse::now_ms();
    let record = attlog("R000001", now);

    let mut child = gatehouse_run(&config).spawn().unwrap();
    company.status(v1::GatewayState::Online).await;
    let mut t = Terminal::new(&addr, "CKJ1234567890");
    assert_eq!(t.handshake().await.unwrap().0, 200);
    assert_eq!(
        t.upload(std::slice::from_ref(&record)).await.unwrap(),
        (200, "OK: 1".to_string())
    );
    assert_eq!(t.poll().await.unwrap().len(), 1, "the door, once");
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted (its writer stalls 2.5 s after the start): the same record again, then a marker.
    let mut child = gatehouse_run(&config)
        .env("GATEHOUSE_TEST_STALL_WRITER_AFTER_MS", "2500")
        .spawn()
        .unwrap();
    let mut t = Terminal::new(&addr, "CKJ1234567890");
    within("the restarted daemon", LONG, async {
        while !t.handshake().await.is_ok_and(|(s, _)| s == 200) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        t.upload(std::slice::from_ref(&record)).await.unwrap(),
        (200, "OK: 1".to_string())
    );
    assert!(t.poll().await.unwrap().is_empty(), "not opened again");
    let marker = attlog("R000002", gatehouse::now_ms());
    assert_eq!(
        t.upload(&[marker]).await.unwrap(),
        (200, "OK: 1".to_string())
    );
    // Passages by event id (the uplink may carry a record twice across the crash: the same id).
    let mut passages = std::collections::BTreeMap::new();
    while !passages.values().any(|s| s == "R000002") {
        let (e, d) = company.passage_from("zk-t").await;
        passages.insert(e.seq, d.subject_id);
    }
    let subjects: Vec<_> = passages.values().map(String::as_str).collect();
    assert_eq!(subjects, ["R000001", "R000002"], "R000001 decided once");

    // The writer stalls: a new record is decided (its door command is queued at once) but
    // not answered, so the terminal keeps it and sends it again.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let fresh = attlog("R000003", gatehouse::now_ms());
    let answer = tokio::time::timeout(Duration::from_secs(2), t.upload(&[fresh])).await;
    assert!(
        answer.is_err(),
        "no OK before the record is durable: {answer:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Issue 27 §8: a host answering at the terminal's address with `401 Basic` used to be sent
/// `Basic admin:<password>`. Digest is the default: the password never crosses the wire, and a
/// Basic-only host gets nothing (its device is reported as not reachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_asking_for_basic_gets_no_password() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = impostor.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = impostor.accept().await {
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = seen.send(String::from_utf8_lossy(&got).into_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"DS-K1T671TM\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let g = HttpGate::start_with(|port| armed_lane(addr, port)).await;
    let mut requests = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), seen.recv()).await {
            requests.push(r);
        }
    }
    assert!(!requests.is_empty(), "gatehouse asked the impostor");
    let basic: Vec<_> = requests
        .iter()
        .filter(|r| r.to_ascii_lowercase().contains("authorization: basic"))
        .collect();
    assert!(basic.is_empty(), "the password went out: {basic:?}");
    drop(g);
}

/// Issue 27 §8: a terminal reached over `https://` with its certificate pinned streams as
/// before; an impostor with another certificate at a terminal's address is not even asked
/// (no request, no login, no events that open gates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_only_the_pinned_certificate_is_spoken_to() {
    if !have("openssl") {
        skip(
            "over_https_only_the_pinned_certificate_is_spoken_to",
            "openssl is not installed (apt-get install openssl)",
        );
        return;
    }
    let (real, fake) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    crate::interop::make_certs(real.path());
    crate::interop::make_certs(fake.path());
    let cert = |dir: &std::path::Path| (dir.join("server.pem"), dir.join("server.key"));
    let (c, k) = cert(real.path());
    let (term, mut doors) = sim::isapi_terminal::Terminal::start_tls("admin", "hik-12345", &c, &k)
        .await
        .unwrap();
    let (c2, k2) = cert(fake.path());
    let (impostor, _) = sim::isapi_terminal::Terminal::start_tls("admin", "hik-12345", &c2, &k2)
        .await
        .unwrap();
    let pin = {
        use sha2::Digest;
        let pem = std::fs::read(&c).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        gatehouse::hex::to_hex(&sha2::Sha256::digest(der.as_ref()))
    };
    let lanes = |port: u16| {
        let pinned = format!(", tls_fingerprint = \"{pin}\"");
        let https = |addr| format!("https://{addr}");
        let push_to = format!("{pinned}, push_to = \"http://127.0.0.1:{port}\"");
        armed("door-1", "terminal-a", &https(term.addr), &push_to)
            + &armed("door-2", "terminal-b", &https(impostor.addr), &pinned)
    };
    let g = HttpGate::start_with(lanes).await;
    let mut h = g.h;
    stream_open(&term, "the stream to open").await;
    term.send_event(&hik_event(
        1,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5}),
        gatehouse::now_ms(),
    ));
    assert!(within("the door", LONG, doors.recv()).await.is_some());
    let (_, d) = h.uplink.passage_from("terminal-a").await;
    assert_eq!(d.reason, "ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        impostor.open_streams(),
        0,
        "the impostor's stream was opened"
    );
    assert_eq!(impostor.requests(), 0, "the impostor was asked");
}
