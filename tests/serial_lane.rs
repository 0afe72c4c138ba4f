//! A pedestrian lane on RS-485 (pty pairs): a face-id reader, two Wiegand card readers (entry and
//! exit, one shared line), an EB turnstile, and a separate MQTT thermal station whose readings
//! join the identifications. Modes, fire, line noise and an unplugged adapter, end to end.
use crate::common::*;
use gatehouse::daemon::control;
use gatehouse::device::Unit;
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use gatehouse::tools::sim::serial::{run_turnstile, Line, Pty, Reader, TurnstileCommand as Tc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

const FACE: u8 = 0x21;
const QR: u8 = 0x22;
const STRANGER: u8 = 0x20;

struct SerialLane {
    h: Harness,
    face_line: Line,
    card_line: Line,
    face: Reader,
    card_in: Reader,
    card_out: Reader,
    turnstile: mpsc::Receiver<Tc>,
    /// The daemon opens the face reader and the turnstile through these links, so the test can
    /// "replug" them.
    face_link: PathBuf,
    gate_link: PathBuf,
    /// The simulated turnstile's task (aborted: its adapter is pulled out).
    gate_sim: tokio::task::JoinHandle<u64>,
    _files: tempfile::TempDir,
}

/// Residents R000000–R000009 (household H3 quarantined), cards `10:100N` for R00000N, a visitor
/// pass (QR-777, one use). `mode`: the mode at start; `ber`: line noise on the card line and on
/// the turnstile's receiver.
async fn start(mode: &str, ber: f64) -> SerialLane {
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let mut residents = String::from("person_id,household,status,valid_until,cards\n");
    for i in 0..10 {
        residents.push_str(&format!("R{i:06},H{i},active,,10:{}\n", 1000 + i));
    }
    std::fs::write(dir.join("residents.csv"), residents).unwrap();
    std::fs::write(
        dir.join("passes.csv"),
        "pass_id,host_household,credentials,valid_from,valid_until,uses\nP1,H1,QR-777,,2099-01-01,1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("households.csv"),
        "household,status\nH3,quarantined\n",
    )
    .unwrap();
    let face_pty = Pty::new().unwrap();
    let card_pty = Pty::new().unwrap();
    let gate_pty = Pty::new().unwrap();
    let face_link = dir.join("ttyFACE");
    std::os::unix::fs::symlink(&face_pty.path, &face_link).unwrap();
    let gate_link = dir.join("ttyGATE");
    std::os::unix::fs::symlink(&gate_pty.path, &gate_link).unwrap();
    let lane = format!(
        r#"
[[lanes]]
id = "north-1"
anti_passback = true

[[lanes.devices]]
id = "thermal-2"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "face-2"
role = "identifier"
profile = "rs485-face-id"
address = 1
serial = {{ path = "{face}", baud = 9600 }}

[[lanes.devices]]
id = "card-in"
role = "identifier"
profile = "rs485-wiegand-reader"
address = 2
serial = {{ path = "{cards}", baud = 19200, parity = "even" }}

[[lanes.devices]]
id = "card-out"
role = "identifier"
profile = "rs485-wiegand-reader"
address = 3
direction = "out"
serial = {{ path = "{cards}", baud = 19200, parity = "even" }}

[[lanes.devices]]
id = "turnstile-2"
role = "turnstile"
profile = "rs485-turnstile-eb"
address = 1
serial = {{ path = "{gate}" }}
"#,
        face = face_link.display(),
        cards = card_pty.path.display(),
        gate = gate_link.display(),
    );
    let lists = format!(
        "import = \"{}\"\npasses = \"{}\"\nhouseholds = \"{}\"\n\n[rules]\nmode = \"{mode}\"",
        dir.join("residents.csv").display(),
        dir.join("passes.csv").display(),
        dir.join("households.csv").display()
    );
    let broker = start_broker();
    let h = Harness::start_with(broker.clone(), broker, move |t| {
        t.replace("import = \"residents.csv\"", &lists) + &lane
    })
    .await;
    let (tx, turnstile) = mpsc::channel(4096);
    let gate_sim = tokio::spawn(run_turnstile(gate_pty, ber, 7, tx));
    // Let the daemon open its ports before the readers speak.
    tokio::time::sleep(Duration::from_millis(300)).await;
    SerialLane {
        h,
        face_line: Line::new(face_pty, 0.0, 1),
        card_line: Line::new(card_pty, ber, 2),
        face: Reader::new("rs485-face-id", 1),
        card_in: Reader::new("rs485-wiegand-reader", 2),
        card_out: Reader::new("rs485-wiegand-reader", 3),
        turnstile,
        face_link,
        gate_link,
        gate_sim,
        _files: files,
    }
}

impl SerialLane {
    async fn face(&mut self, cmd: u8, id: &str) {
        let f = self.face.id(cmd, id);
        self.face_line.send(f).await.unwrap();
    }

    async fn card(&mut self, out: bool, facility: u32, card: u16) {
        let f = if out {
            self.card_out.wiegand(26, facility, card)
        } else {
            self.card_in.wiegand(26, facility, card)
        };
        self.card_line.send(f).await.unwrap();
    }

    async fn command(&mut self) -> Tc {
        within("a turnstile frame", LONG, self.turnstile.recv())
            .await
            .unwrap()
    }

    /// The turnstile frame and the uplink's record of the decision on `device`.
    async fn decided(&mut self, device: &str) -> (Tc, v1::PassageDecision) {
        let c = self.command().await;
        let (_, d) = self.h.uplink.passage_from(device).await;
        (c, d)
    }

    async fn reading(&self, serial: u64, t: f64) {
        let body = gatehouse::tools::sim::hikvision::acs_event(serial, None, t, Unit::Celsius);
        self.h
            .publish_as("thermal-2", "devices/thermal-2/event", body.into_bytes())
            .await;
    }

    fn store(&self) -> PathBuf {
        self.h.dir.path().join("store")
    }
}

fn reason(d: &v1::PassageDecision) -> (&str, v1::Verdict, v1::Direction) {
    (d.reason.as_str(), d.verdict(), d.direction())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faces_cards_qr_and_strangers_drive_the_turnstile_with_anti_passback() {
    use v1::{Direction::*, Verdict::*};
    let mut l = start("normal", 0.0).await;
    l.face(FACE, "R000001").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!((c.addr, c.cmd), (1, Tc::OPEN_LEFT));
    assert_eq!(reason(&d), ("ok", Allow, In));
    assert_eq!(d.subject_id, "R000001");
    // The card is the same person's non-face way in: already inside, so anti-passback refuses.
    l.card(false, 10, 1001).await;
    let (c, d) = l.decided("card-in").await;
    assert_eq!(c.cmd, Tc::BAN);
    assert_eq!(reason(&d), ("anti_passback", Deny, In));
    // Out through the exit reader (opens the other way), then in again by card.
    l.card(true, 10, 1001).await;
    let (c, d) = l.decided("card-out").await;
    assert_eq!(c.cmd, Tc::OPEN_RIGHT);
    assert_eq!(reason(&d), ("ok", Allow, Out));
    l.card(false, 10, 1001).await;
    let (c, d) = l.decided("card-in").await;
    assert_eq!((c.cmd, d.subject_id.as_str()), (Tc::OPEN_LEFT, "R000001"));
    // A visitor's QR at the face reader: one use.
    l.face(QR, "QR-777").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!(c.cmd, Tc::OPEN_LEFT);
    assert_eq!(
        (d.subject_kind(), d.subject_id.as_str()),
        (v1::SubjectKind::Visitor, "P1")
    );
    l.face(QR, "QR-777").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!(
        (c.cmd, d.reason.as_str()),
        (Tc::BAN, "expired"),
        "its one use is spent"
    );
    // Strangers, an unknown card, a quarantined household.
    l.face(STRANGER, "").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!(
        (c.cmd, d.reason.as_str(), d.subject_id.as_str()),
        (Tc::BAN, "unknown_subject", "")
    );
    l.card(false, 99, 4242).await;
    let (c, d) = l.decided("card-in").await;
    assert_eq!((c.cmd, d.reason.as_str()), (Tc::BAN, "unknown_subject"));
    l.card(true, 10, 1003).await;
    let (c, d) = l.decided("card-out").await;
    assert_eq!((c.cmd, d.reason.as_str()), (Tc::BAN, "quarantined"));
    let a = l.h.uplink.alarm_of(v1::AlarmKind::QuarantineExit).await;
    assert_eq!(a.subject_id, "R000003");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epidemic_mode_joins_the_thermal_stations_reading_both_ways_and_times_out() {
    use v1::Verdict::*;
    let mut l = start("epidemic", 0.0).await;
    // Reading first, then the face.
    l.reading(501, 36.5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    l.face(FACE, "R000004").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!((c.cmd, d.reason.as_str()), (Tc::OPEN_LEFT, "ok"));
    assert_eq!(d.temperature_c, Some(36.5));
    assert_eq!(
        d.cause.len(),
        2,
        "the identification and the reading: {:?}",
        d.cause
    );
    assert_eq!(d.cause[1], "501");
    // Face first, then a fever reading inside the window.
    l.face(FACE, "R000005").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    l.reading(502, 38.2).await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!(
        (c.cmd, d.reason.as_str(), d.verdict()),
        (Tc::BAN, "fever", Deny)
    );
    assert_eq!(
        l.h.uplink.alarm_of(v1::AlarmKind::Fever).await.subject_id,
        "R000005"
    );
    // No reading at all: the decision waits out the window (1.5 s), then denies.
    let asked = std::time::Instant::now();
    l.face(FACE, "R000006").await;
    let (c, d) = l.decided("face-2").await;
    let waited = asked.elapsed();
    assert_eq!((c.cmd, d.reason.as_str()), (Tc::BAN, "no_temperature"));
    assert!(
        waited >= Duration::from_millis(1400),
        "decided after {waited:?}"
    );
    assert_eq!(d.mode, "epidemic");
    // A card with no reading: the same rule, whoever it is.
    l.card(false, 10, 1007).await;
    let (_, d) = l.decided("card-in").await;
    assert_eq!(d.reason, "no_temperature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_mode_opens_every_gate_and_only_a_local_reset_ends_it() {
    let mut l = start("normal", 0.0).await;
    let reply = control::send(&l.store(), "mode fire").await.unwrap();
    assert_eq!(reply, "ok");
    assert_eq!(l.command().await.cmd, Tc::HOLD_OPEN);
    let mqtt_gate = l.h.next_command().await;
    assert_eq!(mqtt_gate.action, "hold_open");
    assert_eq!(
        l.h.uplink.alarm_of(v1::AlarmKind::FireMode).await.kind(),
        v1::AlarmKind::FireMode
    );
    // Everyone may leave, known or not.
    l.face(STRANGER, "").await;
    let (c, d) = l.decided("face-2").await;
    assert_eq!(
        (c.cmd, d.reason.as_str(), d.verdict()),
        (Tc::OPEN_LEFT, "fire_mode", v1::Verdict::Allow)
    );
    // Nothing but the fire reset closes it.
    let reply = control::send(&l.store(), "mode normal").await.unwrap();
    assert!(reply.starts_with("refused:"), "{reply}");
    let reply = control::send(&l.store(), "fire-reset").await.unwrap();
    assert_eq!(reply, "ok");
    // The turnstile is released (a hold-open re-assert may come first).
    loop {
        let c = l.command().await;
        if c.cmd == Tc::RELEASE {
            break;
        }
        assert_eq!(c.cmd, Tc::HOLD_OPEN);
    }
    l.face(FACE, "R000002").await;
    let (_, d) = l.decided("face-2").await;
    assert_eq!(d.reason, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_noise_at_ber_1e3_never_opens_for_a_stranger_and_is_counted() {
    let mut l = start("normal", 1e-3).await;
    // 300 strangers' cards and 60 residents' (each in and out again), interleaved.
    let mut residents_sent = 0;
    // Card 10:100N belongs to R00000N: how many times each resident's card was presented.
    let mut presented: std::collections::HashMap<String, usize> = Default::default();
    for i in 0..300u16 {
        l.card(false, 99, i).await;
        if i % 5 == 0 {
            let r = 1000 + (i / 5) % 10;
            l.card(false, 10, r).await;
            l.card(true, 10, r).await;
            residents_sent += 2;
            *presented.entry(format!("R{:06}", r - 1000)).or_default() += 2;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Count what the uplink says was decided, and what the turnstile opened for.
    let m = l.h.daemon.metrics.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut allowed = 0;
    let mut strangers_allowed = 0;
    // Every allowance is matched to a presentation of that resident's own card: a flipped bit
    // that turned a stranger's card (or another resident's) into this one would show here.
    let mut unmatched = Vec::new();
    let decisions = Metrics::get(&m.decisions);
    let mut seen = 0;
    while seen < decisions {
        for e in l.h.uplink.batch().await {
            if let Some(v1::event::Body::Passage(d)) = e.body {
                seen += 1;
                if d.verdict() == v1::Verdict::Allow {
                    allowed += 1;
                    strangers_allowed += usize::from(!d.subject_id.starts_with('R'));
                    match presented.get_mut(&d.subject_id) {
                        Some(n) if *n > 0 => *n -= 1,
                        _ => unmatched.push(d.subject_id.clone()),
                    }
                }
            }
        }
    }
    let mut opens = 0;
    while let Ok(c) = l.turnstile.try_recv() {
        opens += usize::from(c.opens());
    }
    let errors = Metrics::get(&m.frame_checksum_errors) + Metrics::get(&m.frame_malformed);
    println!(
        "BER 1e-3: {} bits flipped, {decisions} decided of {} frames sent, {errors} frames rejected, {allowed} allowed, {opens} turnstile opens",
        l.card_line.flipped,
        300 + residents_sent
    );
    assert_eq!(strangers_allowed, 0);
    assert!(
        unmatched.is_empty(),
        "allowed with no card of theirs presented: {unmatched:?}"
    );
    assert!(
        opens <= allowed,
        "{opens} opens for {allowed} allowed decisions"
    );
    assert!(
        l.card_line.flipped > 0 && errors > 0,
        "noise was injected and caught"
    );
    assert!(decisions >= 300, "most frames got through: {decisions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_reader_is_reported_offline_and_comes_back_when_replugged() {
    let mut l = start("normal", 0.0).await;
    l.face(FACE, "R000001").await;
    l.decided("face-2").await;
    // Pull the adapter: the pty disappears.
    let link = l.face_link.clone();
    drop(std::mem::replace(
        &mut l.face_line,
        Line::new(Pty::new().unwrap(), 0.0, 1),
    ));
    let a = l.h.uplink.alarm_of(v1::AlarmKind::DeviceOffline).await;
    assert_eq!(a.device, "face-2");
    // The rest of the gate keeps deciding meanwhile.
    l.card(false, 10, 1002).await;
    assert_eq!(l.decided("card-in").await.1.reason, "ok");
    // Plug it back in (a new pty under the same name).
    replug(&link, l.face_line.path());
    let a = l.h.uplink.alarm_of(v1::AlarmKind::DeviceOnline).await;
    assert_eq!(a.device, "face-2");
    l.face(FACE, "R000004").await;
    assert_eq!(l.decided("face-2").await.1.subject_id, "R000004");
    assert!(Metrics::get(&l.h.daemon.metrics.serial_link_errors) >= 1);
}

fn replug(link: &Path, to: &Path) {
    let tmp = link.with_extension("new");
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// The turnstile's adapter is pulled; a resident is identified meanwhile (denied the gate: it is
/// down); the adapter goes back in. The open decided while it was out must never reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_decided_while_the_turnstile_is_unplugged_never_reaches_it_when_replugged() {
    let mut l = start("normal", 0.0).await;
    l.face(FACE, "R000001").await;
    assert_eq!(l.decided("face-2").await.1.reason, "ok");
    l.gate_sim.abort();
    let a = l.h.uplink.alarm_of(v1::AlarmKind::DeviceOffline).await;
    assert_eq!(a.device, "turnstile-2");
    // Decided while the port is down, then the adapter goes straight back in (within the
    // port's retry sleep).
    l.face(FACE, "R000002").await;
    let (_, d) = l.h.uplink.passage_from("face-2").await;
    assert_eq!(d.subject_id, "R000002");
    let pty = Pty::new().unwrap();
    replug(&l.gate_link, &pty.path);
    let (tx, mut frames) = mpsc::channel(16);
    tokio::spawn(run_turnstile(pty, 0.0, 9, tx));
    let a = l.h.uplink.alarm_of(v1::AlarmKind::DeviceOnline).await;
    assert_eq!(a.device, "turnstile-2");
    let stale = tokio::time::timeout(Duration::from_millis(1500), frames.recv()).await;
    assert!(
        stale.is_err(),
        "a stale frame reached the turnstile: {stale:?}"
    );
    assert!(
        Metrics::get(&l.h.daemon.metrics.command_errors) >= 1,
        "counted as not sent"
    );
    // The next identification opens it as usual.
    l.face(FACE, "R000004").await;
    let f = within("a fresh open", LONG, frames.recv()).await.unwrap();
    assert!(f.opens(), "{f:?}");
}
