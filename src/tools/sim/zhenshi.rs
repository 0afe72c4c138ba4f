//! Simulated Zhenshi IVS plate camera (`zhenshi-ivs`): builds its `ivs_result` payloads and, as
//! `gatehouse simulate zhenshi-ivs`, publishes them with its keep-alive.
use base64::Engine;

/// One plate read as the camera publishes it on `device/{sn}/message/up/ivs_result`.
/// `direction`: 4 towards the camera, 3 away, 0 unknown.
pub fn ivs_result(plateid: u64, plate: &str, confidence: u8, direction: u8) -> String {
    let license = base64::engine::general_purpose::STANDARD.encode(plate.as_bytes());
    serde_json::json!({
        "id": plateid,
        "sn": "e5ad4f1c-3c6f0a10",
        "name": "ivs_result",
        "payload": {
            "AlarmInfoPlate": {
                "channel": 0,
                "deviceName": "IVS",
                "serialno": "e5ad4f1c-3c6f0a10",
                "result": {
                    "PlateResult": {
                        "license": license,
                        "colorType": 1,
                        "confidence": confidence,
                        "direction": direction,
                        "triggerType": 8,
                        "plateid": plateid,
                        "timeStamp": { "Timeval": { "sec": 1_764_300_000u64, "usec": 0 } }
                    }
                }
            }
        }
    })
    .to_string()
}

/// Publishes plate reads at `rate` (resident plates 粤B1xxxx of every third household, one in
/// five unknown) and a keep-alive every 30 s; with `replay` each read goes twice, as the camera's
/// offline replay sends it. Prints what it sent.
pub async fn run(
    link: crate::mqtt_client::DeviceLink,
    device: &str,
    rate: f64,
    households: u64,
    replay: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use rumqttc::{AsyncClient, QoS};
    let opts = link.options(&format!("sim-{device}"), std::time::Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(opts, 256);
    el.set_network_options(crate::mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    });
    let mut rng = super::Rng::new(crate::now_ms() as u64);
    let mut reads = tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / rate.max(0.01)));
    let mut alive = tokio::time::interval(std::time::Duration::from_secs(30));
    let (events, keep) = (
        format!("device/{device}/message/up/ivs_result"),
        format!("device/{device}/message/up/keep_alive"),
    );
    let mut id = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = alive.tick() => {
                let _ = client.publish(keep.as_str(), QoS::AtLeastOnce, false, b"{}".to_vec()).await;
            }
            _ = reads.tick() => {
                id += 1;
                let h = (rng.next_u64() % households.max(1)) / 3 * 3;
                let plate = if rng.unit() < 0.2 { format!("沪C{:05}", id) } else { format!("粤B1{h:04}") };
                let body = ivs_result(id, &plate, 90 + (rng.next_u64() % 10) as u8, 4);
                for _ in 0..(1 + u8::from(replay)) {
                    let _ = client.publish(events.as_str(), QoS::AtLeastOnce, false, body.clone()).await;
                }
                println!("read {id}: {plate}");
            }
        }
    }
    poller.abort();
}
