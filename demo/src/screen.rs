//! What the demo prints: one line per decision as it arrives upstream, beside what that lane's
//! simulated actuator really did (as the simulator saw it, never the box's own account), and a
//! tally by reason at the end.
use gatehouse::mqtt_client::{self, BrokerUrl};
use gatehouse::proto::v1;
use gatehouse_contract::topics::{Channel, Topics};
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the simulated actuators did, for the decision lines' `gate` column: by the decision's
/// cause where the gate's command names it (the MQTT turnstile), else in order per lane (the EB
/// turnstile's frames, the ISAPI door, the barrier's OPEN coil).
#[derive(Clone, Default)]
pub(super) struct GateSeen(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    by_cause: HashMap<String, String>,
    by_lane: HashMap<&'static str, VecDeque<(Instant, bool, String)>>,
}

impl GateSeen {
    /// The gate got `action` for the decision on `cause`.
    pub(super) fn caused(&self, cause: String, action: String) {
        self.with(|s| {
            // Commands whose record is never shown (a hold in fire mode) must not pile up.
            if s.by_cause.len() >= 1024 {
                s.by_cause.clear();
            }
            s.by_cause.insert(cause, action)
        });
    }

    /// `lane`'s actuator did `action` (`opens`: it let someone through).
    pub(super) fn did(&self, lane: &'static str, opens: bool, action: impl Into<String>) {
        self.with(|s| {
            let q = s.by_lane.entry(lane).or_default();
            // Nobody reads a lane the uplink is slow to report: keep the last few.
            if q.len() >= 64 {
                q.pop_front();
            }
            q.push_back((Instant::now(), opens, action.into()));
        });
    }

    /// What the actuator did for this decision: its cause's command, or the lane's next action of
    /// the same kind (an open for an allow, a refusal for a deny). The record usually arrives
    /// after the actuator moved (the command goes first); an allow waits a moment for it, never
    /// long enough to keep the watcher from its connection.
    async fn take(&self, lane: &str, cause: &str, allowed: bool) -> Option<String> {
        for _ in 0..3 {
            let found = self.with(|s| {
                if let Some(a) = s.by_cause.remove(cause) {
                    return Some(a);
                }
                let q = s.by_lane.get_mut(lane)?;
                // What is older than a few seconds answered something not shown: forget it.
                q.retain(|(at, _, _)| at.elapsed() < Duration::from_secs(5));
                let at = q.iter().position(|(_, opens, _)| *opens == allowed)?;
                q.remove(at).map(|(_, _, a)| a)
            });
            if found.is_some() || !allowed {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        None
    }

    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

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
                        let allowed = d.verdict() == v1::Verdict::Allow;
                        let got = match d.not_actuated {
                            true => None,
                            false => gate.take(&e.lane, &cause, allowed).await,
                        };
                        let got = got.as_deref().unwrap_or("—");
                        println!("{}", line(&e.gateway_time_ms, &e.lane, &d, got));
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
    let (verdict, reason) = if d.not_actuated {
        // A record the device stored and uploaded late (or a redelivery): recorded, never acted
        // on, whatever the verdict says.
        ("stored", "recorded, not actuated")
    } else if d.verdict() == v1::Verdict::Allow {
        ("ALLOW", d.reason.as_str())
    } else {
        ("DENY", d.reason.as_str())
    };
    format!(
        "{:<8} {:<10} {:<9} {:>8}  {:<6} {:<22} {:>6.2} ms  {}",
        clock(*ms),
        lane,
        who,
        temp,
        verdict,
        reason,
        f64::from(d.decision_latency_us) / 1000.0,
        gate
    )
}
