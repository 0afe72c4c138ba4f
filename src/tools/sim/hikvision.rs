//! Simulated Hikvision face + temperature terminal (`hikvision-acs-event`): publishes
//! `AccessControllerEvent` JSON as the real terminal does, names and picture URL included (the
//! decoder must drop them).
use super::Rng;
use crate::device::Unit;
use crate::mqtt_client;
use crate::mqtt_client::DeviceLink;
use rumqttc::{AsyncClient, QoS};
use std::time::Duration;

/// One terminal event. `subject` None is a stranger (no employee number).
pub fn acs_event(serial: u64, subject: Option<&str>, temperature_c: f64, unit: Unit) -> String {
    let (value, unit_name) = match unit {
        Unit::Celsius => (temperature_c, "celsius"),
        Unit::Fahrenheit => (temperature_c * 9.0 / 5.0 + 32.0, "fahrenheit"),
        Unit::Kelvin => (temperature_c + 273.15, "kelvin"),
    };
    let mut ev = serde_json::json!({
        "deviceName": "DS-K1T671TM-3XF",
        "majorEventType": 5,
        "subEventType": if subject.is_some() { 75 } else { 76 },
        "serialNo": serial,
        "currentVerifyMode": "cardOrFace",
        "mask": "yes",
        "thermometryUnit": unit_name,
        "currTemperature": (value * 10.0).round() / 10.0,
        "isAbnomalTemperature": temperature_c >= 37.3,
        "name": "张三",
        "pictureURL": "http://192.168.1.64/picture/face.jpg",
    });
    if let Some(s) = subject {
        ev["employeeNoString"] = serde_json::Value::from(s);
    }
    serde_json::json!({
        "ipAddress": "192.168.1.64",
        "portNo": 80,
        "protocol": "HTTP",
        // A real terminal stamps the event with its (synced) clock.
        "dateTime": crate::timefmt::rfc3339(crate::now_ms()),
        "eventType": "AccessControllerEvent",
        "AccessControllerEvent": ev,
    })
    .to_string()
}

/// A QR code (or a card) read at the terminal, as a Hikvision face + temperature terminal with a
/// QR module reports it: the code's content as `cardNo`, no employee number (the terminal's own
/// list does not hold gatehouse's passes: minor event 9, "card not found"), the temperature it
/// took meanwhile. Gatehouse, not the terminal, decides.
pub fn qr_read(serial: u64, code: &str, temperature_c: f64) -> String {
    let mut ev: serde_json::Value =
        serde_json::from_str(&acs_event(serial, None, temperature_c, Unit::Celsius))
            .expect("our own JSON");
    let acs = &mut ev["AccessControllerEvent"];
    acs["subEventType"] = 9.into();
    acs["cardNo"] = code.into();
    acs["cardType"] = 1.into();
    acs["currentVerifyMode"] = "cardOrFaceOrQR".into();
    ev.to_string()
}

/// What a simulated terminal sends.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    pub link: DeviceLink,
    pub topic: String,
    /// Events per second.
    pub rate: f64,
    /// Stop after this many events (0: run until stopped).
    pub count: u64,
    /// Share of people with a fever (37.6–39.0 °C).
    pub fever_share: f64,
    /// Share of strangers (no employee number).
    pub stranger_share: f64,
    /// Residents are `R000000` … up to this count; ids past it are unknown to the gateway.
    pub residents: u64,
    pub unit: Unit,
    pub seed: u64,
}

/// One generated identification, for callers that check decisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub serial: u64,
    pub subject: Option<String>,
    pub temperature_c: f64,
}

/// Generates the `n`th event of a run.
pub fn generate(rng: &mut Rng, o: &TerminalOptions, serial: u64) -> Sent {
    let stranger = rng.unit() < o.stranger_share;
    let fever = rng.unit() < o.fever_share;
    let temperature_c = if fever {
        37.6 + rng.unit() * 1.4
    } else {
        36.0 + rng.unit() * 1.0
    };
    let subject = (!stranger).then(|| format!("R{:06}", rng.next_u64() % o.residents.max(1)));
    Sent {
        serial,
        subject,
        temperature_c: (temperature_c * 10.0).round() / 10.0,
    }
}

/// Publishes events at the rate until `count` is reached or `stop` fires; calls `on_sent` for
/// each. Returns how many were published.
pub async fn run_terminal(
    o: TerminalOptions,
    mut on_sent: impl FnMut(&Sent),
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let opts = o.link.options(
        &format!("sim-terminal-{}", std::process::id() ^ o.seed as u32),
        Duration::from_secs(15),
    );
    let (client, mut el) = AsyncClient::new(opts, 1024);
    el.set_network_options(mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let mut rng = Rng::new(o.seed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.001)));
    let mut serial = 0;
    while o.count == 0 || serial < o.count {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        serial += 1;
        let s = generate(&mut rng, &o, serial);
        let body = acs_event(serial, s.subject.as_deref(), s.temperature_c, o.unit);
        if client
            .publish(o.topic.as_str(), QoS::AtLeastOnce, false, body)
            .await
            .is_err()
        {
            break;
        }
        on_sent(&s);
    }
    // Let the last publishes leave before the connection goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    poller.abort();
    serial
}
