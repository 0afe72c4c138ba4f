//! Simulated Zhenshi IVS plate camera (`zhenshi-ivs`): builds its `ivs_result` payloads and, as
//! `gatehouse simulate zhenshi-ivs`, publishes them with its keep-alive.
use base64::Engine;

/// One plate read as the camera publishes it on `device/{sn}/message/up/ivs_result`, live and
/// stamped now. `direction`: 4 towards the camera, 3 away, 0 unknown.
pub fn ivs_result(plateid: u64, plate: &str, confidence: u8, direction: u8) -> String {
    let read = PlateRead::live(plateid, plate, confidence, direction);
    ivs_result_of(&read)
}

/// [`ivs_result`] of any read: one from the camera's offline store, or stamped by its clock.
pub fn ivs_result_of(read: &PlateRead) -> String {
    serde_json::json!({
        "id": read.plateid,
        "sn": SERIAL,
        "name": "ivs_result",
        "payload": read.alarm_info_plate(base64_of(&read.plate)),
    })
    .to_string()
}

const SERIAL: &str = "e5ad4f1c-3c6f0a10";

/// A plate read, as both of the camera's pushes (MQTT and HTTP) carry it.
#[derive(Debug, Clone)]
pub struct PlateRead {
    pub plateid: u64,
    pub plate: String,
    pub confidence: u8,
    /// 4 towards the camera, 3 away, 0 unknown.
    pub direction: u8,
    /// Replayed from the camera's offline store (`isoffline`).
    pub offline: bool,
    /// The camera's clock when it read the plate (unix s).
    pub device_s: i64,
}

impl PlateRead {
    pub fn live(plateid: u64, plate: &str, confidence: u8, direction: u8) -> PlateRead {
        PlateRead {
            plateid,
            plate: plate.into(),
            confidence,
            direction,
            offline: false,
            device_s: crate::now_ms() / 1000,
        }
    }

    /// `{"AlarmInfoPlate": …}` with the plate written as `license`.
    pub fn alarm_info_plate(&self, license: String) -> serde_json::Value {
        serde_json::json!({
            "AlarmInfoPlate": {
                "channel": 0,
                "deviceName": "IVS",
                "ipaddr": "192.168.1.100",
                "serialno": SERIAL,
                "result": {
                    "PlateResult": {
                        "license": license,
                        "colorType": 1,
                        "confidence": self.confidence,
                        "direction": self.direction,
                        "triggerType": 8,
                        "plateid": self.plateid,
                        "isoffline": u8::from(self.offline),
                        "timeStamp": { "Timeval": { "sec": self.device_s, "usec": 0 } }
                    }
                }
            }
        })
    }
}

/// How the MQTT push writes a plate: base64 of its UTF-8.
pub fn base64_of(plate: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(plate.as_bytes())
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
