//! What the demo prints: one line per decision as it arrives upstream, beside what the
//! simulated turnstile received, and a tally by reason at the end.
use gatehouse::mqtt_client::{self, BrokerUrl};
use gatehouse::proto::v1;
use gatehouse_contract::topics::{Channel, Topics};
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

pub(super) type GateSeen =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

/// Subscribes to the uplink like the property company would and prints each decision.
pub(super) async fn watch_uplink(
    url: BrokerUrl,
    topics: Topics,
    gate: GateSeen,
    mut stop: watch::Receiver<bool>,
) -> BTreeMap<String, u64> {
    let (client, mut el) = AsyncClient::new(
        mqtt_client::options(&url, "demo-watcher", Duration::from_secs(15)),
        64,
    );
    el.set_network_options(mqtt_client::network_options());
    let mut tally = BTreeMap::new();
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            _ = stop.changed() => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.try_subscribe(topics.channel(&Channel::Events), QoS::AtLeastOnce);
                let _ = client.try_subscribe(topics.channel(&Channel::Alarms), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/events") => {
                let Ok(batch) = v1::EventBatch::decode(p.payload.as_ref()) else {
                    continue;
                };
                for e in batch.events {
                    match &e.body {
                        Some(v1::event::Body::CommandOutcome(o)) => println!(
                            "{:<8} {:<10} {} ← {} {}{}",
                            clock(e.gateway_time_ms),
                            e.lane,
                            e.device,
                            o.command,
                            o.outcome,
                            if o.detail.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", o.detail)
                            }
                        ),
                        Some(v1::event::Body::DeviceState(s)) => println!(
                            "{:<8} {:<10} {} arm {}{}{}",
                            clock(e.gateway_time_ms),
                            e.lane,
                            e.device,
                            s.arm,
                            if s.arming_loop { ", car waiting" } else { "" },
                            if s.safety_loop {
                                ", car under the arm"
                            } else {
                                ""
                            }
                        ),
                        _ => {}
                    }
                    if let Some(v1::event::Body::Passage(d)) = e.body {
                        *tally.entry(d.reason.clone()).or_insert(0) += 1;
                        let cause = d.cause.first().cloned().unwrap_or_default();
                        let got = gate
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&cause);
                        println!(
                            "{}",
                            line(
                                &e.gateway_time_ms,
                                &e.lane,
                                &d,
                                got.as_deref().unwrap_or("—")
                            )
                        );
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/alarms") => {
                let Ok(batch) = v1::AlarmBatch::decode(p.payload.as_ref()) else {
                    continue;
                };
                for a in batch.alarms {
                    println!(
                        "{:<8} {:<10} ALARM {:?}: {}",
                        clock(a.gateway_time_ms),
                        a.lane,
                        a.kind(),
                        a.detail
                    );
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    tally
}

pub(super) fn clock(ms: i64) -> String {
    // China Standard Time, where the gates are.
    let s = (ms / 1000 + 8 * 3600).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn line(ms: &i64, lane: &str, d: &v1::PassageDecision, gate: &str) -> String {
    let who = if d.subject_id.is_empty() {
        "stranger"
    } else {
        d.subject_id.as_str()
    };
    let temp = d
        .temperature_c
        .map_or("—".to_string(), |t| format!("{t:.1} °C"));
    let verdict = if d.verdict() == v1::Verdict::Allow {
        "ALLOW"
    } else {
        "DENY"
    };
    format!(
        "{:<8} {:<10} {:<9} {:>8}  {:<6} {:<16} {:>6.2} ms  {}",
        clock(*ms),
        lane,
        who,
        temp,
        verdict,
        d.reason,
        f64::from(d.decision_latency_us) / 1000.0,
        gate
    )
}
