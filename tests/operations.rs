//! What the operations team sees: `/metrics` (Prometheus text) with the pipeline's counters,
//! `/health`, `gatehouse status` over the control socket; and what the endpoint refuses.
use crate::commands::{command, company, keys_toml, send};
use crate::common::*;
use gatehouse::config::Config;
use gatehouse::daemon::control;
use gatehouse::device::Unit;
use gatehouse::orders::sign;
use gatehouse::proto::v1;
use std::net::SocketAddr;

/// The value of the sample whose line starts with `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get(addr, &path))
        .await
        .unwrap()
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_by_lane_reason_device_and_order_result_and_status_tells_the_same() {
    let broker = start_broker();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let keys = keys_toml();
    let mut h = Harness::start_with(broker.clone(), broker.clone(), |t| {
        t + &keys + &format!("\n[metrics]\nlisten = \"{addr}\"\n")
    })
    .await;
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.identify(2, Some("R000002"), 38.4, Unit::Celsius).await;
    h.identify(3, None, 36.5, Unit::Celsius).await;
    for _ in 0..3 {
        h.next_command().await;
    }
    h.terminal
        .publish("devices/thermal-1/event", b"{not json".to_vec())
        .await;
    let admin = Client::connect(&broker, "company-admin").await;
    let ping = v1::command::Payload::Ping(v1::Ping {});
    let order = command("ping-1", v1::Level::Gateway, GATEWAY_PATH, ping);
    send(
        &admin,
        &format!("{BASE}/cmd"),
        &sign(&order, "company", &company()),
    )
    .await;
    assert!(h.uplink.result().await.applied);
    let text = within("the counts", LONG, async {
        loop {
            let (code, text) = get(addr, "/metrics").await;
            assert_eq!(code, 200);
            let bad = r#"gatehouse_device_bad_messages_total{device="thermal-1",lane="east-1"}"#;
            if sample(&text, bad) == Some(1.0) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    for (series, want) in [
        (
            r#"gatehouse_decisions_total{lane="east-1",reason="ok"}"#,
            1.0,
        ),
        (
            r#"gatehouse_decisions_total{lane="east-1",reason="fever"}"#,
            1.0,
        ),
        (
            r#"gatehouse_decisions_total{lane="east-1",reason="unknown_subject"}"#,
            1.0,
        ),
        (
            r#"gatehouse_decisions_total{lane="east-1",reason="quarantined"}"#,
            0.0,
        ),
        ("gatehouse_decision_latency_seconds_count", 3.0),
        (r#"gatehouse_orders_total{result="applied"}"#, 1.0),
        (
            r#"gatehouse_device_online{device="gate-1",lane="east-1"}"#,
            1.0,
        ),
        ("gatehouse_uplink_connected", 1.0),
        ("gatehouse_clock_synced", 1.0),
        ("gatehouse_bad_messages_total", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    for series in [
        "gatehouse_outbox_records",
        "gatehouse_outbox_bytes",
        "gatehouse_outbox_evicted_total",
        "gatehouse_serial_checksum_errors_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(sample(&text, series).is_some(), "{series} in\n{text}");
    }
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text");

    let (code, body) = get(addr, "/health").await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ok"], true);
    assert_eq!(health["loops"]["decision loop"]["ok"], true);
    assert_eq!(get(addr, "/anything").await.0, 404);

    // `gatehouse status`, from the same daemon over its control socket.
    let config = Config::load(&h.dir.path().join("gatehouse.toml")).unwrap();
    let reply = control::send(&config.store.dir, "status").await.unwrap();
    let s: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        (s["mode"].as_str(), s["decisions"].as_u64()),
        (Some("normal"), Some(3))
    );
    assert_eq!(s["uplink"]["connected"], true);
    let thermal = s["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "thermal-1")
        .unwrap();
    assert!(thermal["last_seen_ms"].as_i64().unwrap() > 0, "{thermal}");
    let table = gatehouse::tools::status::render(&s, gatehouse::now_ms());
    assert!(
        table.contains("east-1") && table.contains("thermal-1"),
        "{table}"
    );
    h.daemon.stop().await;
}

#[test]
fn a_metrics_endpoint_off_the_box_must_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let broker = gatehouse::mqtt_client::BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: 1,
    };
    let base = config_text(dir.path(), &DeviceSide::endpoint(), &broker);
    let path = write_config_text(
        dir.path(),
        &(base.clone() + "\n[metrics]\nlisten = \"0.0.0.0:9464\"\n"),
    );
    let err = gatehouse::run::load_checked(&path, Default::default(), false).unwrap_err();
    assert!(err.to_string().contains("metrics.listen"), "{err}");
    let path = write_config_text(
        dir.path(),
        &(base + "\n[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n"),
    );
    assert!(gatehouse::run::load_checked(&path, Default::default(), false).is_ok());
}
