//! A pedestrian lane screened end to end: terminal → decision → gate command → uplink.
use crate::common::*;
use gatehouse::device::Unit;
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use std::collections::HashMap;
use std::time::Duration;

/// serial, who, temperature (°C), unit the terminal reports in, expected action and reason.
type Case = (
    u64,
    Option<&'static str>,
    f64,
    Unit,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identification_gets_one_command_with_the_right_reason() {
    let mut h = Harness::start().await;
    let cases: [Case; 8] = [
        (1, Some("R000001"), 36.5, Unit::Celsius, "open", "ok"),
        (2, Some("R000002"), 37.5, Unit::Fahrenheit, "deny", "fever"),
        (3, Some("R000003"), 37.3, Unit::Celsius, "deny", "fever"),
        (4, None, 36.5, Unit::Celsius, "deny", "unknown_subject"),
        (
            5,
            Some("X000005"),
            36.4,
            Unit::Kelvin,
            "deny",
            "unknown_subject",
        ),
        (
            6,
            Some("R000006"),
            45.0,
            Unit::Celsius,
            "deny",
            "invalid_reading",
        ),
        (7, Some("R000050"), 36.6, Unit::Celsius, "deny", "expired"),
        (
            8,
            Some("R000060"),
            36.6,
            Unit::Celsius,
            "deny",
            "quarantined",
        ),
    ];
    for (serial, who, t, unit, _, _) in cases {
        h.identify(serial, who, t, unit).await;
    }
    let mut got = HashMap::new();
    for _ in cases {
        let c = h.next_command().await;
        assert_eq!(c.lane, "east-1");
        assert!(
            got.insert(c.cause.clone(), c).is_none(),
            "one command per identification"
        );
    }
    for (serial, _, _, _, action, reason) in cases {
        let c = &got[&serial.to_string()];
        assert_eq!(
            (c.action.as_str(), c.reason.as_str()),
            (action, reason),
            "serial {serial}"
        );
    }
    // No second command for anything.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), h.gate.recv())
            .await
            .is_err()
    );
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_reaches_the_uplink_as_protobuf_with_its_event_id() {
    let mut h = Harness::start().await;
    h.identify(11, Some("R000011"), 36.6, Unit::Celsius).await;
    h.identify(12, Some("R000012"), 38.2, Unit::Celsius).await;
    h.identify(13, None, 36.9, Unit::Celsius).await;
    let events = h.uplink.events(3).await;
    let by_cause: HashMap<String, &v1::Event> = events
        .iter()
        .map(|e| {
            let Some(v1::event::Body::Passage(p)) = &e.body else {
                panic!("passage expected")
            };
            (p.cause[0].clone(), e)
        })
        .collect();
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.dedup();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs in order: {seqs:?}"
    );
    for e in &events {
        assert_eq!(e.event_id, format!("{GATEWAY}:{}", e.seq));
        assert_eq!(
            (e.lane.as_str(), e.device.as_str()),
            ("east-1", "thermal-1")
        );
        assert!(e.gateway_time_ms > 1_700_000_000_000);
    }
    let passage = |cause: &str| match &by_cause[cause].body {
        Some(v1::event::Body::Passage(p)) => p.clone(),
        _ => unreachable!(),
    };
    let ok = passage("11");
    assert_eq!(
        (ok.verdict(), ok.reason.as_str(), ok.rule.as_str()),
        (v1::Verdict::Allow, "ok", "resident")
    );
    assert_eq!(
        (ok.subject_kind(), ok.subject_id.as_str()),
        (v1::SubjectKind::Resident, "R000011")
    );
    assert_eq!(ok.temperature_c, Some(36.6));
    assert!(ok.decision_latency_us > 0);
    // What the company's forms need, said by the record (issue 29): a person, of which household,
    // screened against which threshold, and the verdict on the temperature.
    assert_eq!(
        (ok.medium(), ok.household.as_str()),
        (v1::Medium::Person, "H002")
    );
    assert_eq!((ok.fever_threshold_c, ok.fever), (Some(37.3), false));
    let fever = passage("12");
    assert_eq!(
        (fever.verdict(), fever.reason.as_str()),
        (v1::Verdict::Deny, "fever")
    );
    assert_eq!((fever.fever_threshold_c, fever.fever), (Some(37.3), true));
    assert_eq!(fever.household, "H003");
    let stranger = passage("13");
    assert_eq!(
        (stranger.subject_kind(), stranger.subject_id.as_str()),
        (v1::SubjectKind::Unknown, "")
    );
    assert_eq!(
        (stranger.medium(), stranger.household.as_str()),
        (v1::Medium::Person, "")
    );

    let alarm = h.uplink.alarm().await;
    assert_eq!(alarm.kind(), v1::AlarmKind::Fever);
    assert_eq!(
        (
            alarm.cause[0].as_str(),
            alarm.subject_id.as_str(),
            alarm.temperature_c
        ),
        ("12", "R000012", Some(38.2))
    );
    assert_eq!(alarm.alarm_id, format!("{GATEWAY}:{}", alarm.seq));
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_pictures_never_leave_the_gateway() {
    let mut h = Harness::start().await;
    // The simulated terminal puts a name and a picture URL in every event, as the real one does.
    h.identify(21, Some("R000021"), 36.6, Unit::Celsius).await;
    let events = h.uplink.events(1).await;
    let bytes = prost::Message::encode_to_vec(&v1::EventBatch { events });
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("张三") && !text.contains("picture") && !text.contains("http"),
        "{text}"
    );
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_and_the_lane_keeps_deciding() {
    let mut h = Harness::start().await;
    let topic = "devices/thermal-1/event";
    // A decision waiting for its commit, then garbage behind it: both are handled and the
    // connection stays up (the garbage's ack queues behind the decision's: MQTT wants acks in
    // the order the messages came).
    h.identify(30, Some("R000030"), 36.5, Unit::Celsius).await;
    h.terminal.publish(topic, b"{not json".to_vec()).await;
    h.terminal
        .publish(
            topic,
            br#"{"AccessControllerEvent":{"serialNo":1,"currTemperature":"hot"}}"#.to_vec(),
        )
        .await;
    h.terminal
        .publish(
            topic,
            br#"{"AccessControllerEvent":{"serialNo":{"x":1},"currTemperature":36.5}}"#.to_vec(),
        )
        .await;
    h.terminal.publish(topic, br#"{"AccessControllerEvent":{"serialNo":2,"currTemperature":36.5,"thermometryUnit":"rankine"}}"#.to_vec()).await;
    // Past the decoder's limit, within the broker's.
    h.terminal
        .publish(topic, vec![b' '; gatehouse::device::MAX_PAYLOAD + 1000])
        .await;
    // A heartbeat-like event: nothing to decide.
    h.terminal
        .publish(topic, br#"{"eventType":"heartBeat"}"#.to_vec())
        .await;
    h.identify(31, Some("R000031"), 36.5, Unit::Celsius).await;
    for cause in ["30", "31"] {
        let c = h.next_command().await;
        assert_eq!((c.cause.as_str(), c.action.as_str()), (cause, "open"));
    }
    within("decode errors counted", LONG, async {
        while Metrics::get(&h.daemon.metrics.decode_errors) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(Metrics::get(&h.daemon.metrics.decisions), 2);
    assert_eq!(
        Metrics::get(&h.daemon.metrics.device_connects),
        2,
        "the terminal and the gate connected once each: never dropped"
    );
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gate_decides_on_the_device_endpoint() {
    use gatehouse::tools::sim::hikvision::{run_terminal, TerminalOptions};
    let dir = tempfile::tempdir().unwrap();
    gatehouse::tools::sim::site::write_residents(&dir.path().join("residents.csv"), 100).unwrap();
    let port = gatehouse_company::broker::free_port().unwrap();
    let company_broker = start_broker();
    let demo = gatehouse::tools::sim::site::DemoConfig::new(dir.path(), port, company_broker.port);
    let path = demo.write().unwrap();
    let config = gatehouse::config::Config::load(&path).unwrap();
    let base = gatehouse_contract::topics::Topics::new(&config.gateway.path())
        .base()
        .to_string();
    let daemon = within(
        "start",
        LONG,
        gatehouse::daemon::Daemon::start(config, gatehouse::device::Profiles::builtin()),
    )
    .await
    .unwrap();
    assert_eq!(daemon.device_broker.port, port);
    let mut company = Uplink::connect_to(&company_broker, &base).await;
    let mut gate = gate_sim(&demo.link("gate-1"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let o = TerminalOptions {
        link: demo.link("thermal-1"),
        topic: "devices/thermal-1/event".into(),
        rate: 200.0,
        count: 20,
        fever_share: 0.2,
        stranger_share: 0.2,
        residents: 120,
        unit: Unit::Fahrenheit,
        seed: 7,
    };
    assert_eq!(
        within("terminal", LONG, run_terminal(o, |_| {}, stop_rx)).await,
        20
    );
    let mut actions = HashMap::new();
    for _ in 0..20 {
        let c = within("command", LONG, gate.recv()).await.unwrap().unwrap();
        actions.insert(c.cause, c.action);
    }
    for e in company.events(20).await {
        let Some(v1::event::Body::Passage(p)) = e.body else {
            continue;
        };
        let expected = if p.verdict() == v1::Verdict::Allow {
            "open"
        } else {
            "deny"
        };
        assert_eq!(
            actions[&p.cause[0]], expected,
            "the gate did what the record says"
        );
    }
    daemon.stop().await;
}
