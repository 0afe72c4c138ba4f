//! The device endpoint, tried as an attacker on the gate LAN would (each attack must fail to open
//! a gate, read an event, take over a session, stop a lane or grow memory), and spoken to by
//! a raw MQTT 3.1.1 client for what the libraries hide (CONNACK codes, SUBACK codes, sessions,
//! keep-alive).
use crate::common::*;
use bytes::BytesMut;
use gatehouse::device::Unit;
use gatehouse::metrics::Metrics;
use gatehouse::mqtt_client::BrokerUrl;
use gatehouse::proto::v1;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A bare MQTT 3.1.1 client on one socket.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// A TCP connection from `from` (a loopback address) to the endpoint.
    async fn open_from(url: &BrokerUrl, from: [u8; 4]) -> std::io::Result<Raw> {
        let socket = TcpSocket::new_v4()?;
        socket.bind((from, 0).into())?;
        let s = socket
            .connect(format!("{}:{}", url.host, url.port).parse().unwrap())
            .await?;
        s.set_nodelay(true)?;
        Ok(Raw {
            s,
            buf: BytesMut::new(),
        })
    }

    async fn open(url: &BrokerUrl) -> Raw {
        Self::open_from(url, [127, 0, 0, 1]).await.unwrap()
    }

    async fn send(&mut self, p: Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        self.send_bytes(&b).await;
    }

    async fn send_bytes(&mut self, b: &[u8]) {
        // The endpoint may have closed on us; what it answered is read afterwards.
        let _ = self.s.write_all(b).await;
    }

    /// The next packet, or `None` when the endpoint closed the connection (or nothing came for
    /// `patience`).
    async fn recv_within(&mut self, patience: Duration) -> Option<Packet> {
        let deadline = Instant::now() + patience;
        loop {
            match Packet::read(&mut self.buf, 16 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the endpoint: {e}"),
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(LONG).await
    }

    /// CONNECT and its CONNACK.
    async fn connect(
        url: &BrokerUrl,
        client_id: &str,
        login: Option<(&str, &str)>,
        clean: bool,
    ) -> (Raw, Option<ConnAck>) {
        let mut r = Raw::open(url).await;
        let ack = r.hello(client_id, login, clean, 30).await;
        (r, ack)
    }

    async fn hello(
        &mut self,
        client_id: &str,
        login: Option<(&str, &str)>,
        clean: bool,
        keep_alive: u16,
    ) -> Option<ConnAck> {
        let mut c = Connect::new(client_id);
        c.keep_alive = keep_alive;
        c.clean_session = clean;
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        self.send(Packet::Connect(c)).await;
        match self.recv().await {
            Some(Packet::ConnAck(a)) => Some(a),
            Some(other) => panic!("expected CONNACK, got {other:?}"),
            None => None,
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, retain: bool, payload: &[u8]) {
        let mut p = Publish::new(topic, qos, payload.to_vec());
        p.pkid = pkid;
        p.retain = retain;
        self.send(Packet::Publish(p)).await;
    }

    async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
        let mut s = Subscribe::new(filter, QoS::AtLeastOnce);
        s.pkid = 7;
        self.send(Packet::Subscribe(s)).await;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(a)) => return a.return_codes,
                Some(_) => continue,
                None => panic!("no SUBACK"),
            }
        }
    }

    /// Whether the endpoint closed the connection within `patience`.
    async fn closed_within(&mut self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => self.buf.clear(),
                Err(_) => return false,
            }
        }
    }
}

fn face(serial: u64, who: &str) -> Vec<u8> {
    gatehouse::tools::sim::hikvision::acs_event(serial, Some(who), 36.6, Unit::Celsius).into_bytes()
}

/// The harness's simulated gate stops at its next disconnect (a raw client taking over the
/// gate's session), so it does not take the session back.
fn retire_the_simulated_gate(h: &mut Harness) {
    h.gate = tokio::sync::mpsc::channel(1).1;
}

/// Nothing reaches the gate for a while.
async fn gate_quiet(h: &mut Harness) {
    if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(600), h.gate.recv()).await {
        panic!("the gate got a command: {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_lan_can_neither_connect_nor_open_the_gate() {
    let mut h = Harness::start().await;
    let url = h.devices.url();
    let m = h.daemon.metrics.clone();
    let decisions = || Metrics::get(&m.decisions);
    let before = decisions();

    // Anonymous, an unknown name, a wrong password, a resident's id as username: refused at
    // CONNECT, and the connection closed.
    for (login, code) in [
        (None, ConnectReturnCode::NotAuthorized),
        (
            Some(("intruder", "x")),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            Some(("thermal-1", "guess")),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (Some(("gate-1", "")), ConnectReturnCode::BadUserNamePassword),
    ] {
        let (mut r, ack) = Raw::connect(&url, "gatehouse-local", login, true).await;
        assert_eq!(ack.map(|a| a.code), Some(code), "{login:?}");
        // Whatever it sends next goes nowhere.
        r.publish(
            "devices/thermal-1/event",
            QoS::AtLeastOnce,
            1,
            false,
            &face(666_001, "R000078"),
        )
        .await;
        assert!(r.closed_within(LONG).await, "{login:?}: connection closed");
    }
    // MQTT 5 is refused with its own code, not misread.
    let mut r = Raw::open(&url).await;
    r.send_bytes(&[
        0x10, 0x12, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 0, 0, 5, b'e', b'v', b'i', b'l',
        0,
    ])
    .await;
    match r.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::RefusedProtocolVersion),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // As a real MQTT 5 client sends it: properties (a session expiry), a username and password.
    let mut r = Raw::open(&url).await;
    let mut v5 = vec![0x10, 37, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xC2, 0, 60];
    v5.extend_from_slice(&[5, 0x11, 0, 0, 0, 10]);
    v5.extend_from_slice(&[0, 4, b'd', b'e', b'v', b'5']);
    v5.extend_from_slice(&[0, 9]);
    v5.extend_from_slice(b"thermal-1");
    v5.extend_from_slice(&[0, 2, b'p', b'w']);
    r.send_bytes(&v5).await;
    match r.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::RefusedProtocolVersion),
        other => panic!("expected a refusal of MQTT 5 with properties, got {other:?}"),
    }
    gate_quiet(&mut h).await;
    assert_eq!(decisions(), before, "nothing was decided");
    let refused = Metrics::get(&h.daemon.metrics.device_refusals);
    assert!(refused >= 5, "every refusal counted: {refused}");
    // The guard and the company hear of it: the address the attempts came from.
    let alarm = h.uplink.alarm_of(v1::AlarmKind::DeviceMisbehaving).await;
    assert!(alarm.detail.contains("127.0.0.1"), "{}", alarm.detail);
    assert_eq!(alarm.device, "", "never authenticated");

    // The lane still works for its own devices.
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    assert_eq!(h.next_command().await.action, "open");
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_bound_to_its_own_topics() {
    let mut h = Harness::start().await;
    retire_the_simulated_gate(&mut h);
    let url = h.devices.url();
    let before = Metrics::get(&h.daemon.metrics.decisions);
    // The gate's credentials (read off a gate controller) publish a fake face on the terminal's
    // topic, and "open" on its own command topic: acked (MQTT 3.1.1 has no refusal), decided
    // never, and the gate gets nothing.
    let pw = device_password("gate-1");
    let (mut gate_creds, ack) = Raw::connect(&url, "x", Some(("gate-1", &pw)), true).await;
    assert_eq!(ack.unwrap().code, ConnectReturnCode::Success);
    gate_creds
        .publish(
            "devices/thermal-1/event",
            QoS::AtLeastOnce,
            11,
            false,
            &face(666_001, "R000078"),
        )
        .await;
    assert_eq!(
        gate_creds.recv().await,
        Some(Packet::PubAck(PubAck::new(11)))
    );
    gate_creds
        .publish(
            "devices/gate-1/cmd",
            QoS::AtLeastOnce,
            12,
            true,
            br#"{"action":"hold_open"}"#,
        )
        .await;
    assert_eq!(
        gate_creds.recv().await,
        Some(Packet::PubAck(PubAck::new(12)))
    );
    // … and it is the gate now, so its session took over the simulated gate's: only the
    // device's own credentials can do that. Reading everything is refused.
    for filter in ["#", "devices/+/cmd", "devices/thermal-1/event", "+/+/+"] {
        assert_eq!(
            gate_creds.subscribe(filter).await,
            vec![SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    // The terminal's credentials can't read the gate's commands either.
    let pw = device_password("thermal-1");
    h.terminal.stop();
    let (mut terminal_creds, _) = Raw::connect(&url, "y", Some(("thermal-1", &pw)), true).await;
    assert_eq!(
        terminal_creds.subscribe("devices/gate-1/cmd").await,
        vec![SubscribeReasonCode::Failure]
    );
    // A real identification now: its command goes to the gate's own subscription only, and
    // neither wildcard reader saw a thing.
    assert_eq!(
        gate_creds.subscribe("devices/gate-1/cmd").await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    terminal_creds
        .publish(
            "devices/thermal-1/event",
            QoS::AtLeastOnce,
            5,
            false,
            &face(2, "R000002"),
        )
        .await;
    let mut got = Vec::new();
    while let Some(p) = gate_creds.recv_within(Duration::from_secs(2)).await {
        if let Packet::Publish(p) = p {
            got.push(String::from_utf8_lossy(&p.payload).to_string());
        }
    }
    assert_eq!(
        got.len(),
        1,
        "one command, for the one real identification: {got:?}"
    );
    assert!(got[0].contains("\"cause\":\"2\""), "{}", got[0]);
    while let Some(p) = terminal_creds.recv_within(Duration::from_millis(300)).await {
        assert!(!matches!(p, Packet::Publish(_)), "the terminal read {p:?}");
    }
    assert_eq!(
        Metrics::get(&h.daemon.metrics.decisions),
        before + 1,
        "only the real identification was decided"
    );
    let alarm = h.uplink.alarm_of(v1::AlarmKind::DeviceMisbehaving).await;
    assert_eq!(alarm.device, "gate-1", "{}", alarm.detail);
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_lock_the_devices_out() {
    let h = Harness::start_with(start_broker(), start_broker(), |t| {
        t.replace(
            "[device_broker]\n",
            "[device_broker]\nconnect_timeout_ms = 1500\n",
        )
    })
    .await;
    let url = h.devices.url();
    raise_open_files_limit();
    // 999 sockets from one address that never send CONNECT.
    let mut idle = Vec::new();
    for _ in 0..999 {
        if let Ok(r) = Raw::open_from(&url, [127, 0, 0, 1]).await {
            idle.push(r);
        }
    }
    // A device on another address connects at once.
    let started = Instant::now();
    let mut r = Raw::open_from(&url, [127, 0, 0, 2]).await.unwrap();
    let pw = device_password("thermal-1");
    h.terminal.stop();
    let ack = r.hello("t", Some(("thermal-1", &pw)), false, 30).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Success));
    println!(
        "device connected {:?} after 999 idle sockets",
        started.elapsed()
    );
    // Past the per-address limit they were closed at once, and the rest at the CONNECT deadline.
    let mut closed = 0;
    for s in &mut idle {
        if s.closed_within(Duration::from_millis(10)).await {
            closed += 1;
        }
    }
    assert!(closed >= 999 - 8, "closed at once: {closed}");
    let mut late = 0;
    for s in &mut idle {
        if s.closed_within(Duration::from_secs(3)).await {
            late += 1;
        }
    }
    assert_eq!(late, idle.len(), "every idle socket closed by the deadline");
    h.daemon.stop().await;
}

/// Issue 27 §6: sockets that never send CONNECT, 8 each from 9 addresses — past the 64 not yet
/// logged in — locked every reconnecting device out. An MQTT device's `from` address has slots
/// of its own; and it may log in from there only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_own_address_gets_in_past_idle_sockets_from_many_strangers() {
    let h = Harness::start_with(start_broker(), start_broker(), |t| {
        t.replace(
            "[device_broker]\n",
            "[device_broker]\nconnect_timeout_ms = 3000\n",
        )
        .replace(
            "id = \"thermal-1\"\n",
            "id = \"thermal-1\"\nfrom = \"127.0.0.1\"\n",
        )
    })
    .await;
    let url = h.devices.url();
    let pw = device_password("thermal-1");
    h.terminal.stop();
    let mut elsewhere = Raw::open_from(&url, [127, 0, 0, 7]).await.unwrap();
    let ack = elsewhere
        .hello("t", Some(("thermal-1", &pw)), false, 30)
        .await;
    assert_eq!(
        ack.map(|a| a.code),
        Some(ConnectReturnCode::NotAuthorized),
        "not its address"
    );
    let mut idle = Vec::new();
    for host in 10..19 {
        for _ in 0..8 {
            idle.extend(Raw::open_from(&url, [127, 0, 0, host]).await.ok());
        }
    }
    let mut stranger = Raw::open_from(&url, [127, 0, 0, 30]).await.unwrap();
    assert!(
        stranger.closed_within(Duration::from_millis(500)).await,
        "the strangers' share is full"
    );
    let mut own = Raw::open_from(&url, [127, 0, 0, 1]).await.unwrap();
    let ack = own.hello("t", Some(("thermal-1", &pw)), false, 30).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Success));
    drop(idle);
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_retained_message_is_acked_and_counted_and_the_lane_keeps_deciding() {
    let mut h = Harness::start().await;
    let url = h.devices.url();
    let pw = device_password("thermal-1");
    h.terminal.stop();
    let (mut t, _) = Raw::connect(&url, "t", Some(("thermal-1", &pw)), false).await;
    // 2 MiB at QoS 1: skipped unread, acknowledged (never redelivered forever), counted.
    let errors = Metrics::get(&h.daemon.metrics.decode_errors);
    t.publish(
        "devices/thermal-1/event",
        QoS::AtLeastOnce,
        1,
        false,
        &vec![b'x'; 2 << 20],
    )
    .await;
    assert_eq!(t.recv().await, Some(Packet::PubAck(PubAck::new(1))));
    assert!(Metrics::get(&h.daemon.metrics.decode_errors) > errors);
    // The same connection, and the lane, keep deciding.
    let started = Instant::now();
    t.publish(
        "devices/thermal-1/event",
        QoS::AtLeastOnce,
        2,
        false,
        &face(3, "R000003"),
    )
    .await;
    assert_eq!(h.next_command().await.cause, "3");
    println!(
        "next decision {:?} after the oversized message",
        started.elapsed()
    );
    assert_eq!(t.recv().await, Some(Packet::PubAck(PubAck::new(2))));

    // Retained publishes are taken as plain: decided like any other, counted, never kept for
    // the next subscriber.
    let refusals = Metrics::get(&h.daemon.metrics.device_refusals);
    let decisions = Metrics::get(&h.daemon.metrics.decisions);
    for k in 0..200u16 {
        t.publish(
            "devices/thermal-1/event",
            QoS::AtMostOnce,
            0,
            true,
            &face(1000 + u64::from(k), "R000004"),
        )
        .await;
    }
    // Each decided (its command may be dropped as stale on a loaded machine: a late open must
    // not reach a gate, so decisions are what is counted here).
    within("200 decisions", LONG, async {
        while Metrics::get(&h.daemon.metrics.decisions) < decisions + 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    h.next_command().await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), h.gate.recv()).await {}
    assert!(Metrics::get(&h.daemon.metrics.device_refusals) >= refusals + 200);
    let pw = device_password("gate-1");
    let (mut g, _) = Raw::connect(&url, "g", Some(("gate-1", &pw)), true).await;
    g.subscribe("devices/gate-1/cmd").await;
    assert_eq!(
        g.recv_within(Duration::from_millis(500)).await,
        None,
        "nothing retained"
    );
    // An oversized publish that is malformed besides (QoS 3) is a violation: the connection ends,
    // counted, and the lane goes on.
    let pw = device_password("thermal-1");
    h.terminal.stop();
    let (mut bad, _) = Raw::connect(&url, "t2", Some(("thermal-1", &pw)), false).await;
    let refusals = Metrics::get(&h.daemon.metrics.device_refusals);
    // PUBLISH, QoS 3, remaining length 2 MiB (0x80 0x80 0x80 0x01), topic "x", packet id 1.
    bad.send_bytes(&[0x36, 0x80, 0x80, 0x80, 0x01, 0, 1, b'x', 0, 1])
        .await;
    assert!(
        bad.closed_within(LONG).await,
        "a malformed packet ends the connection"
    );
    assert!(Metrics::get(&h.daemon.metrics.device_refusals) > refusals);
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_subscriptions_only_and_silent_devices_are_dropped_at_keep_alive() {
    let mut h = Harness::start().await;
    retire_the_simulated_gate(&mut h);
    let url = h.devices.url();
    let pw = device_password("gate-1");
    // A persistent session: subscribed once, the subscription outlives the connection.
    let (mut g, ack) = Raw::connect(&url, "gate", Some(("gate-1", &pw)), false).await;
    assert_eq!(ack.unwrap().code, ConnectReturnCode::Success);
    g.subscribe("devices/gate-1/cmd").await;
    drop(g);
    // While it is away a command is dropped, never queued for later.
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.uplink.passage_from("thermal-1").await;
    let (mut g, ack) = Raw::connect(&url, "gate", Some(("gate-1", &pw)), false).await;
    assert!(ack.unwrap().session_present);
    assert_eq!(
        g.recv_within(Duration::from_millis(500)).await,
        None,
        "no stale command"
    );
    h.identify(2, Some("R000002"), 36.5, Unit::Celsius).await;
    match g.recv().await {
        Some(Packet::Publish(p)) => {
            assert!(String::from_utf8_lossy(&p.payload).contains("\"cause\":\"2\""))
        }
        other => panic!("expected the command, got {other:?}"),
    }
    drop(g);
    // A clean session starts with nothing.
    let (mut g, ack) = Raw::connect(&url, "gate", Some(("gate-1", &pw)), true).await;
    assert!(!ack.unwrap().session_present);
    h.identify(3, Some("R000003"), 36.5, Unit::Celsius).await;
    h.uplink.passage_from("thermal-1").await;
    assert_eq!(g.recv_within(Duration::from_millis(500)).await, None);
    // Keep-alive 1 s and then silence: closed after 1.5 s.
    let mut silent = Raw::open(&url).await;
    let started = Instant::now();
    silent.hello("gate", Some(("gate-1", &pw)), true, 1).await;
    assert!(silent.closed_within(LONG).await);
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1400),
        "not before 1.5 × keep-alive: {after:?}"
    );
    h.daemon.stop().await;
}

/// 999 sockets each way need more descriptors than a default soft limit of 1,024.
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max.min(8192);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// A device certificate for `id` (its id as a DNS subject alternative name), signed by the CA
/// in `dir` (`ca.pem`/`ca.key`, from `interop::make_certs`) or by `other_ca`.
fn device_cert(dir: &std::path::Path, id: &str, ca: &str) {
    use crate::interop::run;
    use std::process::Command;
    let d = |f: &str| dir.join(f);
    std::fs::write(
        d(&format!("{id}.ext")),
        format!("subjectAltName=DNS:{id}\nextendedKeyUsage=clientAuth\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={id}"))
        .arg("-keyout")
        .arg(d(&format!("{id}.key")))
        .arg("-out")
        .arg(d(&format!("{id}.csr"))));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d(&format!("{id}.csr")))
        .arg("-CA")
        .arg(d(&format!("{ca}.pem")))
        .arg("-CAkey")
        .arg(d(&format!("{ca}.key")))
        .arg("-out")
        .arg(d(&format!("{id}.pem")))
        .arg("-extfile")
        .arg(d(&format!("{id}.ext"))));
}

/// Over the endpoint's TLS listener with a client CA, a device's certificate is its identity:
/// no certificate, one from another CA, or one naming another device gets nowhere; its own
/// certificate lets the terminal in without a password, and its event opens the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_device_certificate_is_its_identity() {
    if !have("openssl") {
        return skip(
            "over_tls_a_device_certificate_is_its_identity",
            "openssl is not installed (apt-get install openssl)",
        );
    }
    use gatehouse::mqtt_client::{tls_transport, DeviceLink};
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path().to_path_buf();
    crate::interop::make_certs(&c);
    for id in ["thermal-1", "gate-1"] {
        device_cert(&c, id, "ca");
    }
    // Another CA, and a certificate for thermal-1 it signed.
    let other = c.join("other");
    std::fs::create_dir(&other).unwrap();
    crate::interop::make_certs(&other);
    device_cert(&other, "thermal-1", "ca");
    let tls_port = gatehouse_company::broker::free_port().unwrap();
    let c2 = c.clone();
    let mut h = Harness::start_with(start_broker(), start_broker(), move |t| {
        t.replace(
            "[device_broker]\n",
            &format!(
                "[device_broker]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{0}/server.pem\"\ntls_key = \"{0}/server.key\"\nclient_ca = \"{0}/ca.pem\"\n",
                c2.display()
            ),
        )
    })
    .await;
    let url = BrokerUrl {
        tls: true,
        host: "localhost".into(),
        port: tls_port,
    };
    // (CA of the client, its certificate) → admitted?
    let attempt = |ca: std::path::PathBuf,
                   cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
                   user: &str| {
        let mut o =
            DeviceLink::new(url.clone(), user, "").options("tls-device", Duration::from_secs(5));
        let client = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        o.set_transport(tls_transport(Some(&ca), client).unwrap());
        o
    };
    let admitted = |o: rumqttc::MqttOptions| async move {
        let (_c, mut el) = rumqttc::AsyncClient::new(o, 4);
        loop {
            match within("a CONNACK or a refusal", LONG, el.poll()).await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    let ca = c.join("ca.pem");
    let own = |id: &str| Some((c.join(format!("{id}.pem")), c.join(format!("{id}.key"))));
    assert!(
        !admitted(attempt(ca.clone(), None, "thermal-1")).await,
        "no certificate"
    );
    let foreign = Some((other.join("thermal-1.pem"), other.join("thermal-1.key")));
    assert!(
        !admitted(attempt(ca.clone(), foreign, "thermal-1")).await,
        "another CA's"
    );
    assert!(
        !admitted(attempt(ca.clone(), own("gate-1"), "thermal-1")).await,
        "the gate's certificate as the terminal"
    );
    // Its own certificate: in, and its event opens the gate.
    let (client, mut el) =
        rumqttc::AsyncClient::new(attempt(ca.clone(), own("thermal-1"), "thermal-1"), 16);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let body = gatehouse::tools::sim::hikvision::acs_event(7, Some("R000007"), 36.6, Unit::Celsius);
    client
        .publish("devices/thermal-1/event", QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    let cmd = h.next_command().await;
    assert_eq!((cmd.action.as_str(), cmd.cause.as_str()), ("open", "7"));
    assert!(Metrics::get(&h.daemon.metrics.device_refusals) >= 3);
    h.daemon.stop().await;
}

/// With the outbox writer stalled (nothing becomes durable, nothing is acked), a device sending
/// ten times its window — by count, then by bytes — is read only up to the window: the rest stays
/// in its socket, not in the box's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_writer_stalled_a_device_is_read_only_up_to_its_window() {
    // By count: 16 events in flight at most, 160 sent (1 KiB each, far under the byte bound).
    let (decided, grew_kib) =
        read_with_a_stalled_writer(16, 4096, 160, 1024, QoS::AtLeastOnce).await;
    assert!(
        (15..=16).contains(&decided),
        "count window: {decided} decided"
    );
    assert!(grew_kib < 16 * 1024, "RSS grew {grew_kib} KiB");
    // QoS 0 is never acked, but each takes its place in the window all the same until durable.
    let (decided, _) = read_with_a_stalled_writer(16, 4096, 160, 1024, QoS::AtMostOnce).await;
    assert!(
        (15..=16).contains(&decided),
        "count window at QoS 0: {decided} decided"
    );
    // By bytes: 1 MiB in flight at most, 160 events of 64 KiB sent (10 MiB).
    let (decided, grew_kib) =
        read_with_a_stalled_writer(256, 1024, 160, 64 * 1024, QoS::AtLeastOnce).await;
    assert!(
        (14..=17).contains(&decided),
        "byte window: {decided} decided"
    );
    assert!(grew_kib < 16 * 1024, "RSS grew {grew_kib} KiB");
}

/// Starts a daemon whose writer stalls once it is up, sends `events` events of about `size`
/// bytes as `thermal-1`, and returns how many were decided and how much its RSS grew.
async fn read_with_a_stalled_writer(
    inflight: usize,
    inflight_kib: usize,
    events: u64,
    size: usize,
    qos: QoS,
) -> (u64, i64) {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let devices = DeviceSide::endpoint();
    let text = config_text(dir.path(), &devices, &broker).replace(
        "[device_broker]\n",
        &format!("[device_broker]\nmax_inflight = {inflight}\nmax_inflight_kib = {inflight_kib}\n"),
    );
    let config = write_config_text(dir.path(), &text);
    let mut watcher = Uplink::connect(&broker).await;
    let mut child = gatehouse_run(&config)
        .env("GATEHOUSE_TEST_STALL_WRITER_AFTER_MS", "1500")
        .spawn()
        .unwrap();
    watcher.status(v1::GatewayState::Online).await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let rss = |pid: u32| -> i64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or("");
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = rss(child.id());
    let url = devices.url();
    let password = device_password("thermal-1");
    let (mut r, ack) = Raw::connect(
        &url,
        "thermal-1",
        Some(("thermal-1", password.as_str())),
        true,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Success));
    let sender = tokio::spawn(async move {
        for n in 1..=events {
            let ev =
                gatehouse::tools::sim::hikvision::acs_event(n, Some("NOBODY"), 36.5, Unit::Celsius);
            let mut v: serde_json::Value = serde_json::from_str(&ev).unwrap();
            v["pad"] = serde_json::Value::String("x".repeat(size));
            let payload = serde_json::to_vec(&v).unwrap();
            let pkid = if qos == QoS::AtMostOnce { 0 } else { n as u16 };
            r.publish("devices/thermal-1/event", qos, pkid, false, &payload)
                .await;
        }
        r
    });
    // Whatever the device could push has been pushed by now (the rest waits in its socket).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let store = dir.path().join("store");
    let status = gatehouse::daemon::control::send(&store, "status")
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let decided = status["decisions"].as_u64().unwrap();
    let grew = rss(child.id()) - before;
    sender.abort();
    child.kill().unwrap();
    child.wait().unwrap();
    (decided, grew)
}
