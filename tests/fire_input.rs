//! The fire alarm panel's input (issue 17 §1): its contact reading fire opens every gate exactly
//! as the local command does; back to normal it is reported but fire mode holds, and the local
//! reset is refused while it still reads fire; a bouncing contact is debounced and counted; a
//! module that stops answering or reports a line fault is "unknown" — an alarm, never "no fire".
use crate::common::*;
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use gatehouse::tools::sim::fire_panel::{serve_tcp, FirePanel};
use rumqttc::QoS;
use std::time::Duration;

async fn reset(h: &Harness) -> String {
    gatehouse::daemon::control::send(&h.dir.path().join("store"), "fire-reset")
        .await
        .unwrap()
}

/// The test gate with a fire alarm panel's contact on a simulated Modbus I/O module.
async fn start() -> (FirePanel, Harness) {
    let panel = FirePanel::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tcp(listener, panel.clone()));
    let broker = start_broker();
    let h = Harness::start_with(broker.clone(), broker, |t| {
        t + &gatehouse::tools::sim::site::fire_panel_lane(addr)
    })
    .await;
    (panel, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fire_panels_contact_opens_every_gate_and_holds_until_the_local_reset() {
    let (panel, mut h) = start().await;
    // A contact bouncing faster than the debounce time: counted, no fire mode.
    for _ in 0..10 {
        panel.set_fire(true);
        tokio::time::sleep(Duration::from_millis(120)).await;
        panel.set_fire(false);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(Metrics::get(&h.daemon.metrics.fire_input_flaps) > 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), h.gate.recv())
            .await
            .is_err(),
        "a bounce opens nothing"
    );
    // Fire: every gate opened and held, the alarm names the panel.
    panel.set_fire(true);
    assert_eq!(h.next_command().await.action, "hold_open");
    let a = h.uplink.alarm_of(v1::AlarmKind::FireMode).await;
    assert_eq!(a.device, "fire-1");
    // The reset is refused while the contact reads fire.
    assert!(
        reset(&h).await.starts_with("refused"),
        "reset refused during fire"
    );
    // Back to normal: reported, fire mode holds; now the local reset works.
    panel.set_fire(false);
    let a = h.uplink.alarm_of(v1::AlarmKind::FireInputCleared).await;
    assert_eq!(a.device, "fire-1");
    h.identify(1, Some("R000001"), 36.5, gatehouse::device::Unit::Celsius)
        .await;
    loop {
        let c = h.next_command().await;
        if c.cause == "1" {
            assert_eq!(c.reason, "fire_mode", "still fire mode");
            break;
        }
    }
    assert_eq!(reset(&h).await.trim(), "ok");
    loop {
        if h.next_command().await.action == "release" {
            break;
        }
    }
    // A line fault, then a module that stops answering: unknown, alarmed, not fire.
    panel.set_line_fault(true);
    let a = h.uplink.alarm_of(v1::AlarmKind::FireInputUnknown).await;
    assert!(a.detail.contains("line fault"), "{}", a.detail);
    panel.set_line_fault(false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    panel.set_dead(true);
    let a = h.uplink.alarm_of(v1::AlarmKind::FireInputUnknown).await;
    assert!(a.detail.contains("does not answer"), "{}", a.detail);
    h.identify(2, Some("R000001"), 36.5, gatehouse::device::Unit::Celsius)
        .await;
    loop {
        let c = h.next_command().await;
        if c.cause == "2" {
            assert_eq!(
                (c.action.as_str(), c.reason.as_str()),
                ("open", "ok"),
                "not fire mode"
            );
            break;
        }
    }
}

/// A module that dies mid-fire (a burnt cable): its input is unknown, and unknown is never "no
/// fire" — the local reset is refused with a reason that says so, and `status` shows what the
/// input reads. Once it reads normal again the reset goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_reset_is_refused_while_the_panels_input_cannot_be_read() {
    let (panel, mut h) = start().await;
    let store = h.dir.path().join("store");
    let status = || async {
        let s = gatehouse::daemon::control::send(&store, "status")
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let fire = v["devices"].as_array().unwrap().iter();
        let reading = fire
            .filter(|d| d["id"] == "fire-1")
            .map(|d| d["fire_input"].clone());
        reading.collect::<Vec<_>>()[0].as_str().unwrap().to_string()
    };
    panel.set_fire(true);
    assert_eq!(h.next_command().await.action, "hold_open");
    assert_eq!(status().await, "fire");
    panel.set_dead(true);
    let a = h.uplink.alarm_of(v1::AlarmKind::FireInputUnknown).await;
    assert!(a.detail.contains("does not answer"), "{}", a.detail);
    let r = reset(&h).await;
    assert!(
        r.starts_with("refused") && r.contains("cannot be read"),
        "reset refused while the input is unknown: {r}"
    );
    assert_eq!(status().await, "unknown");
    // The module back, the panel reset: normal, and now the reset works.
    panel.set_fire(false);
    panel.set_dead(false);
    within("the input read normal", LONG, async {
        while status().await != "normal" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(reset(&h).await.trim(), "ok");
}

/// A second lane whose terminal floods the box: `thermal-9` and its turnstile `gate-9`.
fn flooding_lane(t: String) -> String {
    t + r#"
[[lanes]]
id = "side"

[[lanes.devices]]
id = "thermal-9"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "gate-9"
role = "turnstile"
profile = "generic-gate-mqtt"
"#
}

/// One authenticated terminal flooding the box at QoS 0 as fast as it can send (a compromised or
/// broken terminal): the guard's `mode` is still answered within 1 s, and the fire panel's
/// contact still holds every gate open within 1 s of closing (300 ms of it the debounce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_flood_keeps_neither_fire_nor_the_guard_waiting() {
    let _heavy = HEAVY.lock().await;
    let panel = FirePanel::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tcp(listener, panel.clone()));
    let broker = start_broker();
    let mut h = Harness::start_with(broker.clone(), broker, |t| {
        flooding_lane(t + &gatehouse::tools::sim::site::fire_panel_lane(addr))
    })
    .await;
    let mut gate9 = gate_sim_on(&h.link("gate-9"), "devices/gate-9/cmd");
    let flooder = Client::device(&h.link("thermal-9"), "flooder").await;
    let flood = tokio::spawn(async move {
        for n in 1.. {
            let ev = gatehouse::tools::sim::hikvision::acs_event(
                n,
                Some("NOBODY"),
                36.5,
                gatehouse::device::Unit::Celsius,
            );
            let topic = "devices/thermal-9/event";
            let sent = flooder.client.publish(topic, QoS::AtMostOnce, false, ev);
            if sent.await.is_err() {
                break;
            }
        }
    });
    let decided = || Metrics::get(&h.daemon.metrics.decisions);
    let before = decided();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flooded = decided() - before;
    assert!(
        flooded > 200,
        "the flood reaches the box: {flooded} decided"
    );

    let store = h.dir.path().join("store");
    let asked = std::time::Instant::now();
    let answer = gatehouse::daemon::control::send(&store, "mode epidemic");
    // Starved, it would never be answered: the test fails rather than waits.
    let answer = tokio::time::timeout(Duration::from_secs(5), answer).await;
    let took = asked.elapsed();
    let answer = answer.expect("mode answered at all").unwrap();
    assert_eq!(answer.trim(), "ok");
    assert!(took < Duration::from_secs(1), "mode answered in {took:?}");

    panel.set_fire(true);
    let closed = std::time::Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if h.next_command().await.action == "hold_open" {
                break;
            }
        }
    });
    assert!(first.await.is_ok(), "gate-1 held open within 1 s");
    let second = tokio::time::timeout(
        Duration::from_secs(1).saturating_sub(closed.elapsed()),
        async {
            loop {
                if gate9.recv().await.unwrap().unwrap().action == "hold_open" {
                    break;
                }
            }
        },
    );
    assert!(second.await.is_ok(), "gate-9 held open within 1 s");
    flood.abort();
    println!(
        "QoS 0 flood: {} decisions/s; mode answered in {took:?}; every gate held open {:?} after the contact closed",
        flooded / 2,
        closed.elapsed()
    );
    h.daemon.stop().await;
}
