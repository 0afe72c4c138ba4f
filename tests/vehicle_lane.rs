//! Vehicle lanes end to end: a Zhenshi plate camera over MQTT, a Modbus relay barrier over Modbus
//! TCP (and three on one RTU line on a pty), with the interlock: open on a resident plate, read the
//! arm back, close only after the car has cleared the safety loop.
use crate::common::*;
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use gatehouse::tools::sim::barrier::{serve_rtu, serve_tcp, BarrierSim, Service};
use gatehouse::tools::sim::serial::{run_barrier_5b, BarrierFrame, Line, Pty};
use gatehouse::tools::sim::zhenshi::{ivs_result, ivs_result_of, PlateRead};
use std::time::{Duration, Instant};

const TRAVEL: Duration = Duration::from_millis(700);

struct VehicleGate {
    h: Harness,
    barriers: Vec<BarrierSim>,
    /// The barriers' Modbus TCP server (not on RTU), where anyone on the LAN can reach them.
    modbus: Option<std::net::SocketAddr>,
    /// gatehouse's link to that server (TCP only), which the test can cut.
    link: Option<TcpCut>,
    _files: tempfile::TempDir,
}

/// `lanes` vehicle lanes `car-N` (camera `cam-N`, barrier `barrier-N` unit N), all barriers on
/// one Modbus TCP server (`rtu = false`) or one RTU line on a pty (`rtu = true`).
async fn start(lanes: u8, rtu: bool, mode: &str) -> VehicleGate {
    let files = tempfile::tempdir().unwrap();
    let plates = files.path().join("plates.csv");
    std::fs::write(
        &plates,
        "plate,kind,household,valid_until,lockdown_allowed\n粤B12345,resident,H001,,\n粤B00000,blacklist,,,\n",
    )
    .unwrap();
    let barriers: Vec<BarrierSim> = (0..lanes).map(|_| BarrierSim::new(TRAVEL)).collect();
    let service = Service(
        barriers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u8 + 1, b.clone()))
            .collect(),
    );
    let mut modbus = None;
    let mut cut = None;
    let link = if rtu {
        let pty = Pty::new().unwrap();
        let path = pty.path.display().to_string();
        tokio::spawn(serve_rtu(pty, service));
        format!("serial = {{ path = \"{path}\", baud = 19200 }}")
    } else {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        modbus = Some(addr);
        tokio::spawn(serve_tcp(listener, service));
        let c = TcpCut::start(addr).await;
        let via = c.addr;
        cut = Some(c);
        format!("tcp = \"{via}\"")
    };
    let plates_line = format!(
        "import = \"residents.csv\"\nplates = \"{}\"",
        plates.display()
    );
    let mut extra = format!("\n[rules]\nmode = \"{mode}\"\nbarrier_confirm_ms = 2500\n");
    for n in 1..=lanes {
        extra.push_str(&format!(
            r#"
[[lanes]]
id = "car-{n}"
auto_close = true

[[lanes.devices]]
id = "cam-{n}"
role = "plate_camera"
profile = "zhenshi-ivs"

[[lanes.devices]]
id = "barrier-{n}"
role = "barrier"
profile = "modbus-relay-barrier"
address = {n}
modbus = {{ {link} }}
"#
        ));
    }
    let broker = start_broker();
    let h = Harness::start_with(broker.clone(), broker, move |t| {
        t.replace("import = \"residents.csv\"", &plates_line) + &extra
    })
    .await;
    // Let the first polls land.
    tokio::time::sleep(Duration::from_millis(400)).await;
    VehicleGate {
        h,
        barriers,
        modbus,
        link: cut,
        _files: files,
    }
}

impl VehicleGate {
    async fn plate(&self, lane: u8, plateid: u64, plate: &str, confidence: u8) {
        self.h
            .publish_as(
                &format!("cam-{lane}"),
                &format!("device/cam-{lane}/message/up/ivs_result"),
                ivs_result(plateid, plate, confidence, 4).into_bytes(),
            )
            .await;
    }

    async fn read(&self, lane: u8, read: &PlateRead) {
        self.h
            .publish_as(
                &format!("cam-{lane}"),
                &format!("device/cam-{lane}/message/up/ivs_result"),
                ivs_result_of(read).into_bytes(),
            )
            .await;
    }

    async fn decision(&mut self, lane: u8) -> v1::PassageDecision {
        self.h.uplink.passage_from(&format!("cam-{lane}")).await.1
    }

    /// The next command outcome of `barrier-N`.
    async fn outcome(&mut self, lane: u8) -> v1::CommandOutcome {
        let device = format!("barrier-{lane}");
        loop {
            for e in self.h.uplink.batch().await {
                if let (true, Some(v1::event::Body::CommandOutcome(o))) =
                    (e.device == device, e.body)
                {
                    return o;
                }
            }
        }
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, LONG, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_plate_opens_the_barrier_and_it_closes_only_after_the_car_cleared_the_loop() {
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    let asked = Instant::now();
    let read = PlateRead::live(1001, "粤B12345", 96, 4);
    g.read(1, &read).await;
    let d = g.decision(1).await;
    assert_eq!((d.reason.as_str(), d.verdict()), ("ok", v1::Verdict::Allow));
    assert_eq!(
        (d.subject_kind(), d.subject_id.as_str()),
        (v1::SubjectKind::Plate, "粤B12345")
    );
    // A vehicle, of household H001, says the record itself (issue 29).
    assert_eq!(
        (d.medium(), d.household.as_str(), d.fever_threshold_c),
        (v1::Medium::Plate, "H001", None)
    );
    assert_eq!(g.outcome(1).await.outcome, "sent");
    wait_for("the arm up", || b.is_up()).await;
    assert_eq!(g.outcome(1).await.outcome, "confirmed");
    let t = g.h.uplink.twin("barrier-1", |t| t.arm == "up").await;
    assert!(t.online && t.last_seen_ms > 0);
    // The controller's fault register shows in the twin.
    b.set_fault(7);
    g.h.uplink.twin("barrier-1", |t| t.fault_code == 7).await;
    b.set_fault(0);
    println!("plate read → arm up: {:?}", asked.elapsed());
    // Up and waiting: nothing closes until the car has been over the safety loop and left it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.counts(), (1, 0, 0));
    assert!(b.car_passes(LONG).await);
    wait_for("the arm down", || b.is_down()).await;
    assert_eq!(b.counts(), (1, 1, 0));

    // The camera replays the same read after a reconnect: decided once, no second open.
    g.read(1, &read).await;
    // Unknown, blacklisted, unsure, garbled: denied, and the barrier is not touched.
    g.plate(1, 1002, "粤Z77777", 95).await;
    assert_eq!(g.decision(1).await.reason, "unknown_subject");
    g.plate(1, 1003, "粤B00000", 95).await;
    assert_eq!(g.decision(1).await.reason, "blacklisted");
    g.plate(1, 1004, "粤B12345", 40).await;
    assert_eq!(g.decision(1).await.reason, "low_confidence");
    let a = g.h.uplink.alarm_of(v1::AlarmKind::LowConfidence).await;
    assert_eq!(a.device, "cam-1");
    let garbled = ivs_result(1005, "x", 95, 4).replace("\"eA==\"", "\"%%not base64%%\"");
    g.h.publish_as(
        "cam-1",
        "device/cam-1/message/up/ivs_result",
        garbled.into_bytes(),
    )
    .await;
    let m = g.h.daemon.metrics.clone();
    wait_for("the garbled read counted", || {
        Metrics::get(&m.decode_errors) >= 1
    })
    .await;
    assert_eq!(
        Metrics::get(&m.decisions),
        4,
        "the replayed read was not decided again"
    );
    assert_eq!(b.counts(), (1, 1, 0));
}

/// Issue 27 §3: over MQTT too, a read the camera kept while offline (`isoffline`) is recorded
/// and never lifts the arm (it was decided live and opened); and a read's identity carries the
/// camera's time, so after the camera restarts its plateid count its live reads are decided
/// (they were dropped as replays: no decision, no record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_a_stored_read_never_opens_and_a_restarted_plateid_count_still_opens() {
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    let now_s = gatehouse::now_ms() / 1000;
    let first = PlateRead {
        device_s: now_s - 5,
        ..PlateRead::live(7, "粤B12345", 96, 4)
    };
    g.read(1, &first).await;
    assert_eq!(g.decision(1).await.reason, "ok");
    wait_for("the arm up", || b.is_up()).await;
    assert!(b.car_passes(LONG).await);
    wait_for("the arm down", || b.is_down()).await;

    let stored = PlateRead {
        offline: true,
        device_s: now_s - 600,
        ..PlateRead::live(8, "粤B12345", 96, 4)
    };
    g.read(1, &stored).await;
    let d = g.decision(1).await;
    assert_eq!(
        (d.reason.as_str(), d.not_actuated),
        ("stale_event", true),
        "{d:?}"
    );

    // The camera restarted: plateid 7 again, a new read.
    let again = PlateRead::live(7, "粤B12345", 96, 4);
    g.read(1, &again).await;
    let d = g.decision(1).await;
    assert_eq!((d.reason.as_str(), d.not_actuated), ("ok", false), "{d:?}");
    wait_for("the arm up again", || b.is_up()).await;
    assert_eq!(
        b.counts().0,
        2,
        "one open for each live read, none for the stored one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_parked_on_the_safety_loop_blocks_every_close_and_an_unconfirmed_open_is_uncertain() {
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    g.plate(1, 1, "粤B12345", 96).await;
    wait_for("the arm up", || b.is_up()).await;
    // The car drives onto the safety loop and stops there.
    b.set_safety_loop(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.counts().1, 0, "no close while a car is under the arm");
    b.set_safety_loop(false);
    wait_for("the arm down after the car left", || b.is_down()).await;
    assert_eq!(b.counts(), (1, 1, 0));

    // A jammed arm: the open is accepted but the limit switch never comes.
    b.set_jammed(true);
    g.plate(1, 2, "粤B12345", 96).await;
    let a =
        g.h.uplink
            .alarm_of(v1::AlarmKind::CommandOutcomeUncertain)
            .await;
    assert_eq!(a.device, "barrier-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.counts().0, 2, "the open is never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_rtu_line_a_dead_slave_is_reported_and_never_stalls_the_others() {
    let mut g = start(3, true, "normal").await;
    let m = g.h.daemon.metrics.clone();
    g.barriers[1].set_dead(true);
    let a = g.h.uplink.alarm_of(v1::AlarmKind::DeviceOffline).await;
    assert_eq!(a.device, "barrier-2");
    // Its twin (retained) says so: offline, the arm's position unknown.
    g.h.uplink
        .twin("barrier-2", |t| !t.online && t.arm == "unknown")
        .await;
    // What it costs the live neighbour on the line, counted over 6 s (it is still tried now and
    // then, with backoff): every 100 ms poll of barrier 1 comes, and no gap between two is longer
    // than a poll plus the dead slave's 150 ms timeout (with room for a busy machine) — a slave
    // that stalled the line for longer would show as missed polls and a long gap.
    g.barriers[0].take_logs();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let polls = g.barriers[0].take_logs().0;
    let longest = polls
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default();
    println!(
        "dead slave on the line: {} polls of barrier 1 in 6 s, longest gap {longest:?}",
        polls.len()
    );
    assert!(polls.len() >= 40, "polls missed: {} in 6 s", polls.len());
    assert!(longest < Duration::from_millis(600), "a gap of {longest:?}");
    // The others still open at once.
    let asked = Instant::now();
    g.plate(1, 1, "粤B12345", 96).await;
    wait_for("barrier 1 up", || g.barriers[0].is_up()).await;
    let took = asked.elapsed();
    println!("with a dead slave on the line: plate → barrier 1 up in {took:?} (travel {TRAVEL:?})");
    assert!(took < TRAVEL + Duration::from_millis(1500), "{took:?}");
    // The car crosses; the arm comes down only once it has left the safety loop.
    assert!(g.barriers[0].car_passes(LONG).await);
    wait_for("barrier 1 down", || g.barriers[0].is_down()).await;
    assert_eq!(g.barriers[0].counts(), (1, 1, 0));
    // An exception answer is counted; the slave's state is unknown meanwhile.
    g.barriers[2].set_exception(true);
    wait_for("an exception counted", || {
        Metrics::get(&m.modbus_exceptions) >= 1
    })
    .await;
    g.barriers[2].set_exception(false);
    // Back from the dead.
    g.barriers[1].set_dead(false);
    let a = g.h.uplink.alarm_of(v1::AlarmKind::DeviceOnline).await;
    assert_eq!(a.device, "barrier-2");
    g.plate(2, 2, "粤B12345", 96).await;
    wait_for("barrier 2 up", || g.barriers[1].is_up()).await;
    assert!(Metrics::get(&m.modbus_timeouts) >= 3);
}

/// A lane whose barrier is an RS-485 "5B" controller on a pty, with `ber` noise both ways.
async fn start_5b(
    ber: f64,
) -> (
    Harness,
    tokio::sync::mpsc::Receiver<BarrierFrame>,
    Line,
    tempfile::TempDir,
) {
    let files = tempfile::tempdir().unwrap();
    let plates = files.path().join("plates.csv");
    std::fs::write(&plates, "plate,household\n粤B12345,H001\n").unwrap();
    let pty = Pty::new().unwrap();
    let path = pty.path.clone();
    // Garbage goes onto the same line through a second writer: the controller's own end.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let noise_pty = Pty::new().unwrap();
    let noise_path = noise_pty.path.clone();
    tokio::spawn(run_barrier_5b(pty, ber, 5, tx));
    let lane = format!(
        r#"
[[lanes]]
id = "car-5"

[[lanes.devices]]
id = "cam-5"
role = "plate_camera"
profile = "zhenshi-ivs"

[[lanes.devices]]
id = "barrier-5"
role = "barrier"
profile = "rs485-barrier-5b"
serial = {{ path = "{}" }}

[[lanes]]
id = "noise"

[[lanes.devices]]
id = "reader-noise"
role = "identifier"
profile = "rs485-wiegand-reader"
serial = {{ path = "{}" }}

[[lanes.devices]]
id = "gate-noise"
role = "turnstile"
profile = "generic-gate-mqtt"
"#,
        path.display(),
        noise_path.display()
    );
    let plates_line = format!(
        "import = \"residents.csv\"\nplates = \"{}\"",
        plates.display()
    );
    let broker = start_broker();
    let h = Harness::start_with(broker.clone(), broker, move |t| {
        t.replace("import = \"residents.csv\"", &plates_line) + &lane
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (h, rx, Line::new(noise_pty, 0.0, 9), files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5b_serial_barrier_opens_for_a_resident_and_its_ack_is_reported_as_accepted() {
    let (mut h, mut frames, _noise, _files) = start_5b(0.0).await;
    h.publish_as(
        "cam-5",
        "device/cam-5/message/up/ivs_result",
        ivs_result(1, "粤B12345", 97, 4).into_bytes(),
    )
    .await;
    let f = within("the open frame", LONG, frames.recv()).await.unwrap();
    assert_eq!((f.cmd, f.param), (0xB2, 0x01));
    loop {
        let batch = h.uplink.batch().await;
        if let Some(o) = batch.iter().find_map(|e| match &e.body {
            Some(v1::event::Body::CommandOutcome(o)) if e.device == "barrier-5" => Some(o.clone()),
            _ => None,
        }) {
            assert_eq!(
                (o.command.as_str(), o.outcome.as_str()),
                ("open", "accepted")
            );
            break;
        }
    }
    // A denied plate sends the barrier nothing.
    h.publish_as(
        "cam-5",
        "device/cam-5/message/up/ivs_result",
        ivs_result(2, "粤Z00001", 97, 4).into_bytes(),
    )
    .await;
    assert_eq!(
        h.uplink.passage_from("cam-5").await.1.reason,
        "unknown_subject"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(frames.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xor_errors_and_random_noise_on_serial_lines_open_nothing_and_are_counted() {
    let (h, mut frames, mut noise, _files) = start_5b(1e-3).await;
    let m = h.daemon.metrics.clone();
    // Random bytes on a reader's line, with the frames' header bytes in them now and then.
    let mut rng = gatehouse::tools::sim::Rng::new(42);
    for _ in 0..200 {
        let mut chunk: Vec<u8> = (0..32).map(|_| rng.next_u64() as u8).collect();
        chunk[(rng.next_u64() % 32) as usize] = 0x02;
        noise.send(chunk).await.unwrap();
    }
    // And resident plates through a noisy barrier line: every open that arrives is one we sent.
    for i in 0..100 {
        h.publish_as(
            "cam-5",
            "device/cam-5/message/up/ivs_result",
            ivs_result(100 + i, "粤B12345", 97, 4).into_bytes(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut opens = 0;
    while let Ok(f) = frames.try_recv() {
        assert_eq!((f.cmd, f.param), (0xB2, 0x01), "only opens, intact");
        opens += 1;
    }
    let rejected = Metrics::get(&m.frame_checksum_errors) + Metrics::get(&m.frame_malformed);
    println!(
        "noise: {opens} opens decoded by the barrier of 100 sent, {rejected} frames rejected, {} noise bytes skipped, {} decisions",
        Metrics::get(&m.frame_noise_bytes),
        Metrics::get(&m.decisions)
    );
    assert!(opens <= 100);
    assert_eq!(Metrics::get(&m.decisions), 100, "noise decided nothing");
    assert!(Metrics::get(&m.frame_noise_bytes) > 1000);
}

/// A camera that lifts the barrier from its own output: `gpio_out` pulse, its reply and the
/// barrier status it reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_driven_barrier_gets_a_gpio_pulse_and_its_reply_and_status_are_recorded() {
    let files = tempfile::tempdir().unwrap();
    let plates = files.path().join("plates.csv");
    std::fs::write(&plates, "plate,household\n粤B12345,H001\n").unwrap();
    let plates_line = format!(
        "import = \"residents.csv\"\nplates = \"{}\"",
        plates.display()
    );
    let lane = "\n[[lanes]]\nid = \"car-9\"\n\n[[lanes.devices]]\nid = \"cam-9\"\nrole = \"plate_camera\"\nprofile = \"zhenshi-ivs\"\n";
    let broker = start_broker();
    let mut h = Harness::start_with(broker.clone(), broker.clone(), move |t| {
        t.replace("import = \"residents.csv\"", &plates_line)
            + lane
            + "\n[rules]\nbarrier_confirm_ms = 300\n"
    })
    .await;
    // The camera: one connection that reads plates and takes its output's pulses.
    let (cam, mut orx) = Client::subscriber(
        &h.link("cam-9"),
        "cam-9",
        Some("device/cam-9/message/down/gpio_out"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cam.publish(
        "device/cam-9/message/up/ivs_result",
        ivs_result(7, "粤B12345", 95, 4).into_bytes(),
    )
    .await;
    let pulse = within("the gpio pulse", LONG, orx.recv()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&pulse).unwrap();
    assert_eq!(v, serde_json::json!({"io": 0, "value": 2, "delay": 1500}));
    cam.publish(
        "device/cam-9/message/down/gpio_out/reply",
        br#"{"payload":{"result":0}}"#.to_vec(),
    )
    .await;
    cam.publish(
        "device/cam-9/message/up/barr_gate_status",
        br#"{"payload":{"gate_status":1}}"#.to_vec(),
    )
    .await;
    cam.publish(
        "device/cam-9/message/up/barr_gate_status",
        br#"{"payload":{"gate_status":7}}"#.to_vec(),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        for e in h.uplink.batch().await {
            match e.body {
                Some(v1::event::Body::CommandOutcome(o)) => {
                    seen.push(format!("{} {}", o.command, o.outcome))
                }
                Some(v1::event::Body::DeviceState(s)) => seen.push(format!("arm {}", s.arm)),
                _ => {}
            }
        }
    }
    assert_eq!(seen, vec!["open accepted", "arm up", "arm unknown"]);

    // Down, and later up with no open of ours (a key switch, someone on the camera's own web
    // page): the tamper alarm, once — the arm going up after our open raised none.
    let status = |s: u8| format!(r#"{{"payload":{{"gate_status":{s}}}}}"#).into_bytes();
    cam.publish("device/cam-9/message/up/barr_gate_status", status(0))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cam.publish("device/cam-9/message/up/barr_gate_status", status(1))
        .await;
    let a = h.uplink.alarm_of(v1::AlarmKind::Tamper).await;
    assert_eq!(a.device, "cam-9");
    assert!(a.detail.contains("unexpected_open"), "{}", a.detail);
    let another = tokio::time::timeout(
        Duration::from_millis(800),
        h.uplink.alarm_of(v1::AlarmKind::Tamper),
    )
    .await;
    assert!(
        another.is_err(),
        "one tamper alarm, for the unexplained rise only"
    );
}

/// Someone on the gate LAN writes the barrier module's OPEN coil directly: the arm goes up with
/// no open from gatehouse, and the company hears of it as tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coil_written_by_someone_else_on_the_lan_raises_a_tamper_alarm() {
    use tokio_modbus::prelude::*;
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    wait_for("the arm down and read", || b.is_down()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = g.modbus.expect("a Modbus TCP barrier");
    let mut intruder = tokio_modbus::client::tcp::connect_slave(addr, Slave(1))
        .await
        .unwrap();
    intruder.write_single_coil(0, true).await.unwrap().unwrap();
    let a = g.h.uplink.alarm_of(v1::AlarmKind::Tamper).await;
    assert_eq!(a.device, "barrier-1");
    assert!(a.detail.contains("unexpected_open"), "{}", a.detail);
    assert!(
        b.is_up() || b.counts().0 == 0,
        "the intruder's open, not ours"
    );
}

/// The barrier's link is cut long enough for the bus's reconnect backoff to reach its longest
/// pause; a resident's plate is read meanwhile and allowed. The open is refused at once (recorded,
/// an alarm for the guard: the car may be waiting) and never written when the link comes back —
/// seconds later the arm would lift for whoever stands there then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plate_read_while_the_barrier_link_is_down_never_lifts_the_arm_after_it_is_back() {
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    g.h.uplink.twin("barrier-1", |t| t.arm == "down").await;
    let link = g.link.take().expect("a TCP barrier");
    link.cut();
    // 5 s backoff plus 25 % jitter: the bus is asleep in its longest pause.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    g.plate(1, 1, "粤B12345", 96).await;
    let d = g.decision(1).await;
    assert_eq!((d.reason.as_str(), d.verdict()), ("ok", v1::Verdict::Allow));
    link.restore();
    // Back: polled again (the twin says online), and a second longer for any queued write.
    b.take_logs();
    wait_for("the barrier polled again", || !b.take_logs().0.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        b.counts(),
        (0, 0, 0),
        "no coil written after the link came back"
    );
    let refused = within("the open refused", LONG, async {
        loop {
            for e in g.h.uplink.batch().await {
                if let Some(v1::event::Body::CommandOutcome(o)) = e.body {
                    if e.device == "barrier-1" && o.outcome == "refused" {
                        return o;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(refused.command, "open");
    assert!(refused.detail.contains("link"), "{}", refused.detail);
    let a = g.h.uplink.alarm_of(v1::AlarmKind::CommandNotSent).await;
    assert_eq!(a.device, "barrier-1");
    assert!(b.is_down());
}

/// A controller that answers an input read with fewer bits than asked for: the missing bits are
/// unknown, never "clear". A car on the safety loop is never taken for gone, so nothing closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_modbus_answer_is_unknown_and_never_lets_the_arm_close_onto_a_car() {
    let mut g = start(1, false, "normal").await;
    let b = g.barriers[0].clone();
    g.plate(1, 1, "粤B12345", 96).await;
    wait_for("the arm up", || b.is_up()).await;
    b.set_safety_loop(true);
    g.h.uplink.twin("barrier-1", |t| t.safety_loop).await;
    // The car is still there; the controller starts answering short.
    b.set_short_answers(true);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(b.counts().1, 0, "no close on a short answer");
    let t = g.h.uplink.twin("barrier-1", |t| t.arm == "unknown").await;
    assert!(!t.online);
    let m = g.h.daemon.metrics.clone();
    assert!(Metrics::get(&m.modbus_exceptions) >= 1);
}

/// The Modbus bus on its own, as the interlock drives it: a CLOSE is judged again on a fresh read
/// at the moment it is written (a car that rolled under the arm since is never under a falling
/// arm), one sent while the link is down is never written when it comes back, and one older than
/// the bus's bound is dropped. Each one not written goes back as `NotWritten`, with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_rejudges_a_close_when_it_writes_it_and_never_writes_a_command_from_before_a_cut() {
    use gatehouse::decision::barrier::BarrierCommand;
    use gatehouse::device::Profiles;
    use gatehouse::sources::modbus::{self, Bus, BusCommand, ModbusDevice, ModbusLink};
    use gatehouse::sources::SourceEvent;
    use tokio::time::Instant as TokioInstant;

    let b = BarrierSim::new(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = listener.local_addr().unwrap();
    tokio::spawn(serve_tcp(listener, Service([(1, b.clone())].into())));
    let link = TcpCut::start(sim).await;
    let profiles = Profiles::builtin();
    let spec = profiles
        .get("modbus-relay-barrier")
        .unwrap()
        .modbus
        .clone()
        .unwrap();
    let bus = Bus {
        link: ModbusLink::Tcp(link.addr.to_string()),
        devices: vec![ModbusDevice {
            device: 7,
            device_id: "barrier-7".into(),
            unit: 1,
            spec,
            live: Default::default(),
        }],
        poll: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
    };
    let (reports, mut reports_rx) = tokio::sync::mpsc::channel(64);
    let (links, mut links_rx) = tokio::sync::mpsc::channel(64);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let metrics = std::sync::Arc::new(Metrics::default());
    let (commands, _join) = modbus::spawn(bus, reports, links, metrics, shutdown);
    tokio::spawn(async move { while reports_rx.recv().await.is_some() {} });
    let send = |command, age: Duration| {
        let c = BusCommand {
            device: 7,
            command,
            at: TokioInstant::now() - age,
        };
        commands.try_send(c).unwrap();
    };
    async fn not_written(
        rx: &mut tokio::sync::mpsc::Receiver<SourceEvent>,
    ) -> (&'static str, &'static str) {
        within("a NotWritten", LONG, async {
            loop {
                match rx.recv().await {
                    Some(SourceEvent::NotWritten {
                        device: 7,
                        command,
                        why,
                    }) => return (command, why),
                    Some(_) => {}
                    None => panic!("bus gone"),
                }
            }
        })
        .await
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    send(BarrierCommand::Open, Duration::ZERO);
    wait_for("the arm up", || b.is_up()).await;
    // A car rolls under the arm after the interlock decided to close.
    b.set_safety_loop(true);
    send(BarrierCommand::Close, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.counts(), (1, 0, 0), "no close onto the car");
    let (command, why) = not_written(&mut links_rx).await;
    assert_eq!((command, why), ("close", "safety loop occupied"));
    b.set_safety_loop(false);

    // A command older than the bus's bound.
    send(BarrierCommand::Close, Duration::from_millis(1500));
    let (command, why) = not_written(&mut links_rx).await;
    assert_eq!(command, "close");
    assert!(why.contains("bound"), "{why}");

    // The link is cut; the interlock's close comes while it is down; then a car under the arm
    // and the link back. The close is never written.
    link.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(BarrierCommand::Close, Duration::ZERO);
    b.set_safety_loop(true);
    link.restore();
    b.take_logs();
    wait_for("the barrier polled again", || !b.take_logs().0.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.counts(),
        (1, 0, 0),
        "nothing written after the link came back"
    );
    let (command, why) = not_written(&mut links_rx).await;
    assert_eq!(command, "close");
    assert!(why.contains("link"), "{why}");

    // A close, and at once a reversal (the interlock reopening for a car): the close's pulse is
    // switched off before the open's, and both are released — no coil left on.
    b.set_safety_loop(false);
    send(BarrierCommand::Close, Duration::ZERO);
    send(BarrierCommand::Open, Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.coils_held(), Vec::<u16>::new(), "every pulse released");
}
