//! Simulated gate controller (`generic-gate-mqtt`): subscribes to its command topic and reports
//! every command it receives.
use crate::mqtt_client;
use crate::mqtt_client::DeviceLink;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;

/// A command as the gate received it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GateCommand {
    pub action: String,
    pub reason: String,
    pub cause: String,
    pub lane: String,
    pub ts: i64,
}

/// Runs until the receiver of `out` is dropped. A payload that is not a valid command is
/// reported as `Err` with its text.
pub async fn run_gate(
    link: DeviceLink,
    topic: String,
    out: mpsc::Sender<Result<GateCommand, String>>,
) {
    run_gate_with(link, topic, out, Duration::from_millis(200), None).await
}

/// [`run_gate`], reconnecting `retry` after a lost connection, and counting in `subscribed` each
/// time it is on its command topic again (a test waits for the gate to be back before a device
/// sends again).
pub async fn run_gate_with(
    link: DeviceLink,
    topic: String,
    out: mpsc::Sender<Result<GateCommand, String>>,
    retry: Duration,
    subscribed: Option<tokio::sync::watch::Sender<u64>>,
) {
    let opts = link.options(
        &format!(
            "sim-gate-{}-{}",
            topic.replace('/', "_"),
            std::process::id()
        ),
        Duration::from_secs(15),
    );
    let (client, mut el) = AsyncClient::new(opts, 64);
    el.set_network_options(mqtt_client::network_options());
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let cmd = serde_json::from_slice::<GateCommand>(&p.payload)
                    .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&p.payload)));
                if out.send(cmd).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(s) = &subscribed {
                    s.send_modify(|n| *n += 1);
                }
            }
            Ok(_) => {}
            Err(_) => {
                if out.is_closed() {
                    return;
                }
                tokio::time::sleep(retry).await;
            }
        }
    }
}
