//! The company side's tests: one conformance suite run on both databases (SQLite always, a real
//! PostgreSQL started here when it is installed), the forms and their exports, and the ingest
//! against a real mosquitto. A test that needs a missing system package prints why and passes,
//! or fails under `GATEHOUSE_NO_SKIP=1` (CI installs them).
mod browser;
mod conformance;
mod ingest;
mod notify;
pub mod pg;
mod web;
mod web_queries;

use gatehouse_contract::proto::v1;
use prost::Message;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Says why a test does nothing here, or fails it where nothing may be skipped.
pub fn skip(why: &str) {
    if std::env::var_os("GATEHOUSE_NO_SKIP").is_some() {
        panic!("GATEHOUSE_NO_SKIP is set and {why}");
    }
    eprintln!("skipped: {why}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("nothing listens on {port}");
}

/// A mosquitto of the test's own, stopped when dropped; `None` (skipped) where there is none.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Option<Mosquitto> {
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(bin) = bin else {
            skip("mosquitto is not installed (apt-get install mosquitto)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 0\nmax_queued_messages 100000\n"
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        Some(Mosquitto {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const STREET: &str = "330106001";

/// The topic of a gateway's channel in community `community` of the test street.
pub fn topic(community: &str, gateway: &str, channel: &str) -> String {
    format!("gh/v1/3301/330106/{STREET}/{community}/{gateway}/{channel}")
}

/// 2026-12-07 09:00 in Asia/Shanghai (01:00 UTC).
pub const NINE_AM: i64 = 1_796_605_200_000;
pub const HOUR: i64 = 3_600_000;

/// A resident let in (by face), seq `seq`, at `at_ms`.
pub fn resident_in(seq: u64, at_ms: i64) -> v1::Event {
    passage(
        seq,
        at_ms,
        v1::SubjectKind::Resident,
        "R000001",
        "H001",
        true,
        "ok",
    )
}

pub fn passage(
    seq: u64,
    at_ms: i64,
    kind: v1::SubjectKind,
    subject: &str,
    household: &str,
    allow: bool,
    reason: &str,
) -> v1::Event {
    v1::Event {
        event_id: format!("gw-1:{seq}"),
        seq,
        gateway_time_ms: at_ms,
        lane: "east".into(),
        device: "thermal-1".into(),
        body: Some(v1::event::Body::Passage(v1::PassageDecision {
            subject_kind: kind as i32,
            subject_id: subject.into(),
            household: household.into(),
            verdict: if allow {
                v1::Verdict::Allow
            } else {
                v1::Verdict::Deny
            } as i32,
            reason: reason.into(),
            direction: v1::Direction::In as i32,
            medium: v1::Medium::Person as i32,
            mode: "normal".into(),
            temperature_c: Some(36.5),
            fever_threshold_c: Some(37.3),
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn events(events: Vec<v1::Event>) -> Vec<u8> {
    v1::EventBatch { events }.encode_to_vec()
}

/// One hour's statistics of lane `east`: `entries` people in.
pub fn stats(seq: u64, hour_start: i64, entries: u32, denials: &[(&str, u32)]) -> Vec<u8> {
    v1::StatsBatch {
        gateway: "gw-1".into(),
        seq,
        stats: vec![v1::LaneStats {
            lane: "east".into(),
            period_start_ms: hour_start,
            period_end_ms: hour_start + HOUR,
            entries,
            denials: denials.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
