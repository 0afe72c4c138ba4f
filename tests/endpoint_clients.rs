//! The device endpoint with the MQTT clients devices really run: libmosquitto (`mosquitto_pub`,
//! `mosquitto_sub`), Eclipse Paho (Python), MQTT.js (Node) and rumqttc (the simulators). Each
//! connects with a device's credentials, publishes at QoS 0 and 1 or takes the gate's commands;
//! Paho also sends again, with DUP, what was not acknowledged before a reconnect. A missing
//! client is skipped with its reason (`.ci/run` installs them all, and there a skip fails).
use crate::common::*;
use gatehouse::device::Unit;
use gatehouse::metrics::Metrics;
use std::process::{Command, Stdio};
use std::time::Duration;

fn body(serial: u64, who: &str) -> String {
    gatehouse::tools::sim::hikvision::acs_event(serial, Some(who), 36.6, Unit::Celsius)
}

/// Debian's Python with Debian's paho (`python3-paho-mqtt`), whatever `python3` is first on PATH.
fn paho() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import paho.mqtt.client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Node with Debian's MQTT.js (`node-mqtt`, under /usr/share/nodejs).
fn node_mqtt() -> bool {
    Command::new("node")
        .args(["-e", "require('mqtt')"])
        .env("NODE_PATH", "/usr/share/nodejs")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a client to completion (it must exit 0 within `LONG`), returning its stdout.
async fn run(mut c: Command, what: &str) -> String {
    let out = within(
        what,
        LONG,
        tokio::task::spawn_blocking(move || c.output().unwrap()),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmosquitto_clients_publish_and_take_commands() {
    if !have("mosquitto_pub") || !have("mosquitto_sub") {
        return skip(
            "libmosquitto_clients_publish_and_take_commands",
            "mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)",
        );
    }
    let mut h = Harness::start().await;
    let port = h.devices.url().port.to_string();
    // The terminal: QoS 1 (mosquitto_pub waits for the PUBACK: exit 0) and QoS 0.
    for (serial, qos) in [(1, "1"), (2, "0")] {
        let mut c = Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311"])
            .args(["-u", "thermal-1", "-P", &device_password("thermal-1")])
            .args([
                "-i",
                "hik-terminal",
                "-q",
                qos,
                "-t",
                "devices/thermal-1/event",
            ])
            .args(["-m", &body(serial, "R000001")]);
        run(c, "mosquitto_pub").await;
        assert_eq!(h.next_command().await.cause, serial.to_string());
    }
    // A wrong password: refused (exit non-zero), nothing decided.
    let decided = Metrics::get(&h.daemon.metrics.decisions);
    let refused = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "thermal-1",
            "-P",
            "guess",
        ])
        .args([
            "-q",
            "1",
            "-t",
            "devices/thermal-1/event",
            "-m",
            &body(3, "R000001"),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    // The gate on mosquitto_sub, a persistent session (-c) with its client id.
    h.gate = tokio::sync::mpsc::channel(1).1; // the simulated gate steps aside
    let mut sub = Command::new("mosquitto_sub");
    sub.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-c"])
        .args(["-u", "gate-1", "-P", &device_password("gate-1")])
        .args([
            "-i",
            "gate-controller",
            "-q",
            "1",
            "-t",
            "devices/gate-1/cmd",
        ])
        .args(["-C", "1", "-W", "10"]);
    let waiting = tokio::spawn(run(sub, "mosquitto_sub"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.identify(4, Some("R000004"), 36.5, Unit::Celsius).await;
    let got = within("mosquitto_sub", LONG, waiting).await.unwrap();
    assert!(got.contains("\"cause\":\"4\""), "{got}");
    assert_eq!(Metrics::get(&h.daemon.metrics.decisions), decided + 1);
    h.daemon.stop().await;
}

/// Paho: publishes QoS 1 through a link that loses the endpoint's PUBACKs, so after the link is
/// cut and back it sends the message again (DUP, persistent session); the endpoint acks it
/// without deciding twice. Then the gate's side on Paho takes a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_sends_again_after_a_reconnect_and_is_decided_once() {
    let Some(python) = paho() else {
        return skip(
            "paho_sends_again_after_a_reconnect_and_is_decided_once",
            "Python paho-mqtt not installed (apt-get install python3-paho-mqtt)",
        );
    };
    let mut h = Harness::start().await;
    let proxy = Proxy::start(h.devices.url()).await;
    proxy.set(Link::DropPubAcks);
    let script = r#"
import sys, time, paho.mqtt.client as mqtt
port, pw, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = mqtt.Client(client_id="paho-terminal", clean_session=False, protocol=mqtt.MQTTv311)
c.username_pw_set("thermal-1", pw)
c.reconnect_delay_set(0.1, 0.5)
c.connect("127.0.0.1", port, keepalive=5)
c.loop_start()
info = c.publish("devices/thermal-1/event", payload, qos=1)
info.wait_for_publish(20)
print("acked" if info.is_published() else "not acked", flush=True)
c.disconnect()
c.loop_stop()
"#;
    let mut c = Command::new(python);
    c.args(["-c", script])
        .arg(proxy.url.port.to_string())
        .arg(device_password("thermal-1"))
        .arg(body(7, "R000007"));
    let paho_run = tokio::spawn(run(c, "paho terminal"));
    // The first delivery is decided; its PUBACK is lost on the way back.
    assert_eq!(h.next_command().await.cause, "7");
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    let out = within("paho's PUBACK", LONG, paho_run).await.unwrap();
    assert_eq!(out.trim(), "acked", "sent again and acknowledged");
    assert!(
        Metrics::get(&h.daemon.metrics.device_redeliveries) >= 1,
        "sent again with DUP"
    );
    // Decided once, opened once.
    if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(500), h.gate.recv()).await {
        panic!("a second command for one event: {c:?}");
    }
    assert_eq!(Metrics::get(&h.daemon.metrics.decisions), 1);

    // The gate on Paho.
    h.gate = tokio::sync::mpsc::channel(1).1;
    let gate = r#"
import sys, paho.mqtt.client as mqtt
port, pw = int(sys.argv[1]), sys.argv[2]
def on_connect(c, u, f, rc):
    c.subscribe("devices/gate-1/cmd", qos=1)
def on_subscribe(c, u, mid, granted):
    print("subscribed", flush=True)
def on_message(c, u, m):
    print(m.payload.decode(), flush=True)
    c.disconnect()
c = mqtt.Client(client_id="paho-gate", clean_session=True, protocol=mqtt.MQTTv311)
c.username_pw_set("gate-1", pw)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port, keepalive=5)
c.loop_forever()
"#;
    let mut c = Command::new(python);
    c.args(["-c", gate])
        .arg(h.devices.url().port.to_string())
        .arg(device_password("gate-1"));
    let gate_run = tokio::spawn(run(c, "paho gate"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.identify(8, Some("R000008"), 36.5, Unit::Celsius).await;
    let out = within("paho gate", LONG, gate_run).await.unwrap();
    assert!(out.contains("\"cause\":\"8\""), "{out}");
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_publishes_and_takes_commands() {
    if !node_mqtt() {
        return skip(
            "mqtt_js_publishes_and_takes_commands",
            "Node with MQTT.js not installed (apt-get install node-mqtt)",
        );
    }
    let mut h = Harness::start().await;
    h.gate = tokio::sync::mpsc::channel(1).1;
    let port = h.devices.url().port.to_string();
    let gate = r#"
const mqtt = require('mqtt');
const [port, pw] = process.argv.slice(1);
const c = mqtt.connect({ host: '127.0.0.1', port: +port, protocolVersion: 4, clean: false,
  clientId: 'js-gate', username: 'gate-1', password: pw });
c.on('connect', () => c.subscribe('devices/gate-1/cmd', { qos: 1 }, () => console.log('subscribed')));
c.on('message', (t, m) => { console.log(m.toString()); c.end(); });
c.on('error', (e) => { console.error(e.message); process.exit(1); });
"#;
    let mut g = Command::new("node");
    g.env("NODE_PATH", "/usr/share/nodejs")
        .args(["-e", gate, &port, &device_password("gate-1")]);
    let gate_run = tokio::spawn(run(g, "MQTT.js gate"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let terminal = r#"
const mqtt = require('mqtt');
const [port, pw, body, qos] = process.argv.slice(1);
const c = mqtt.connect({ host: '127.0.0.1', port: +port, protocolVersion: 4, clean: false,
  clientId: 'js-terminal', username: 'thermal-1', password: pw });
c.on('connect', () => c.publish('devices/thermal-1/event', body, { qos: +qos }, (e) => {
  if (e) { console.error(e.message); process.exit(1); }
  c.end();
}));
c.on('error', (e) => { console.error(e.message); process.exit(1); });
"#;
    let publish = |serial: u64, qos: &str| {
        let mut t = Command::new("node");
        t.env("NODE_PATH", "/usr/share/nodejs").args([
            "-e",
            terminal,
            &port,
            &device_password("thermal-1"),
            &body(serial, &format!("R{serial:06}")),
            qos,
        ]);
        t
    };
    run(publish(9, "1"), "MQTT.js terminal").await;
    let out = within("MQTT.js gate", LONG, gate_run).await.unwrap();
    assert!(out.contains("\"cause\":\"9\""), "{out}");
    // QoS 0 too.
    run(publish(10, "0"), "MQTT.js terminal, QoS 0").await;
    let m = h.daemon.metrics.clone();
    within("the QoS 0 event decided", LONG, async {
        while Metrics::get(&m.decisions) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    h.daemon.stop().await;
}
