//! The gateway's clock as a power cut or a bad time server leaves it: a box that booted without
//! a synced clock, then a step of ten years either way. The clock is moved through the debug
//! builds' control hooks (`test-clock-synced`, `test-clock-step`), the daemon's own clock only.
use crate::commands::{command, company, keys_toml, send};
use crate::common::*;
use gatehouse::config::Config;
use gatehouse::daemon::control;
use gatehouse::device::Unit;
use gatehouse::orders::sign;
use gatehouse::proto::v1;
use std::time::Duration;

const YEARS_10_MS: i64 = 10 * 365 * 86_400_000;

async fn ctl(h: &Harness, request: &str) -> String {
    let config = Config::load(&h.dir.path().join("gatehouse.toml")).unwrap();
    control::send(&config.store.dir, request).await.unwrap()
}

/// The daemon's status, once `ok` accepts it (the decision loop reads the sync state each second).
async fn status_when(h: &Harness, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    within("the status", LONG, async {
        loop {
            let s: serde_json::Value = serde_json::from_str(&ctl(h, "status").await).unwrap();
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A card at the terminal (a visitor's pass card, or a resident's).
async fn card(h: &Harness, serial: u64, card: &str) {
    let mut ev: serde_json::Value = serde_json::from_str(
        &gatehouse::tools::sim::hikvision::acs_event(serial, None, 36.5, Unit::Celsius),
    )
    .unwrap();
    ev["AccessControllerEvent"]["cardNo"] = card.into();
    ev["AccessControllerEvent"]["subEventType"] = 1.into();
    h.terminal
        .publish("devices/thermal-1/event", ev.to_string().into_bytes())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_clock_refuses_what_needs_the_time_and_a_ten_year_jump_is_reported() {
    let broker = start_broker();
    let keys = keys_toml();
    let mut h = Harness::start_with(broker.clone(), broker.clone(), |t| {
        t.replace("trusted = true", "trusted = false") + &keys
    })
    .await;
    let admin = Client::connect(&broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let order = |id: &str, p| {
        sign(
            &command(id, v1::Level::Gateway, GATEWAY_PATH, p),
            "company",
            &company(),
        )
    };
    // Synced: a visitor's pass for the hour around now, and a resident, arrive by list sync.
    assert_eq!(ctl(&h, "test-clock-synced true").await, "ok");
    status_when(&h, |s| s["clock"]["synced"] == true).await;
    let now = gatehouse::now_ms();
    let lists = v1::RegistrySnapshot {
        version: 3,
        residents: vec![v1::ResidentEntry {
            person_id: "S000001".into(),
            household: "H1".into(),
            cards: vec!["C-100".into()],
            ..Default::default()
        }],
        passes: vec![v1::PassEntry {
            pass_id: "P-1".into(),
            host_household: "H1".into(),
            credentials: vec!["C-777".into()],
            valid_from_ms: now - 3_600_000,
            valid_until_ms: now + 3_600_000,
            uses: 5,
            ..Default::default()
        }],
        ..Default::default()
    };
    let snap = v1::command::Payload::RegistrySnapshot(lists);
    send(&admin, &own, &order("lists", snap)).await;
    assert!(h.uplink.result().await.applied);

    // The kernel no longer vouches for the time (a box rebooted after a power cut).
    assert_eq!(ctl(&h, "test-clock-synced false").await, "ok");
    let s = status_when(&h, |s| s["clock"]["synced"] == false).await;
    assert_eq!(s["mode"], "normal", "{s}");
    // The visitor waits; the resident passes; both records say the time is unknown.
    card(&h, 1, "C-777").await;
    let (e, d) = h.uplink.passage_from("thermal-1").await;
    assert_eq!(
        (d.verdict(), d.reason.as_str()),
        (v1::Verdict::Deny, "clock_unsynced")
    );
    assert!(e.clock_unsynced, "{e:?}");
    card(&h, 2, "C-100").await;
    let (e, d) = h.uplink.passage_from("thermal-1").await;
    assert_eq!((d.verdict(), d.reason.as_str()), (v1::Verdict::Allow, "ok"));
    assert!(e.clock_unsynced);
    // A remote open, captured and replayed or fresh: its validity cannot be read on this clock.
    let open = v1::command::Payload::RemoteOpen(v1::RemoteOpen {
        lane: "east-1".into(),
        operator_id: "op-1".into(),
        reason: "test".into(),
    });
    send(&admin, &own, &order("open-1", open)).await;
    let r = h.uplink.result().await;
    assert_eq!(r.refused, "clock_unsynced", "{r:?}");

    // Synced again: the visitor passes, and the record's time is trusted.
    assert_eq!(ctl(&h, "test-clock-synced true").await, "ok");
    status_when(&h, |s| s["clock"]["synced"] == true).await;
    card(&h, 3, "C-777").await;
    let (e, d) = h.uplink.passage_from("thermal-1").await;
    assert_eq!((d.verdict(), d.reason.as_str()), (v1::Verdict::Allow, "ok"));
    assert!(!e.clock_unsynced);

    // Ten years forwards, then back: each step reported, and the gate keeps deciding.
    for (serial, step, way) in [(4, YEARS_10_MS, "forwards"), (5, -YEARS_10_MS, "back")] {
        assert_eq!(ctl(&h, &format!("test-clock-step {step}")).await, "ok");
        let a = h.uplink.alarm_of(v1::AlarmKind::ClockJump).await;
        assert!(
            a.detail.contains(way) && a.detail.contains("3650 days"),
            "{a:?}"
        );
        card(&h, serial, "C-100").await;
        let (_, d) = h.uplink.passage_from("thermal-1").await;
        assert_eq!(d.reason, "ok");
    }
    let s = status_when(&h, |s| s["clock"]["jumps"] == 2).await;
    assert_eq!(s["outbox"]["evicted"], 0, "nothing dropped for age: {s}");
    h.daemon.stop().await;
}
