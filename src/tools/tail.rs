//! `gatehouse tail`: what gateways send upstream, as JSON lines — the company engineers'
//! `mosquitto_sub` for this protocol. Each line is one record: the topic, the gateway's path, the
//! channel, and the decoded record (events and alarms one per line, not per batch).
use crate::mqtt_client;
use crate::proto::v1;
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    topic: &'a str,
    channel: &'a str,
    record: T,
}

/// The records of one message, as JSON lines; `None` for a topic that is not a gateway channel.
pub fn lines(topic: &str, payload: &[u8]) -> Option<Vec<String>> {
    // gh/v1/{city}/{district}/{street}/{community}/{gateway}/{channel…}
    let parts: Vec<&str> = topic.splitn(8, '/').collect();
    let channel = *parts.get(7)?;
    fn one<T: Serialize>(topic: &str, channel: &str, record: T) -> String {
        serde_json::to_string(&Line {
            topic,
            channel,
            record,
        })
        .unwrap_or_default()
    }
    let bad = |e: prost::DecodeError| vec![one(topic, channel, format!("undecodable: {e}"))];
    Some(match channel {
        "events" => match v1::EventBatch::decode(payload) {
            Ok(b) => b
                .events
                .into_iter()
                .map(|e| one(topic, channel, e))
                .collect(),
            Err(e) => bad(e),
        },
        "alarms" => match v1::AlarmBatch::decode(payload) {
            Ok(b) => b
                .alarms
                .into_iter()
                .map(|a| one(topic, channel, a))
                .collect(),
            Err(e) => bad(e),
        },
        "status" => match v1::Status::decode(payload) {
            Ok(s) => vec![one(topic, channel, s)],
            Err(e) => bad(e),
        },
        "stats" => match v1::StatsBatch::decode(payload) {
            Ok(s) => vec![one(topic, channel, s)],
            Err(e) => bad(e),
        },
        "cmd/result" => match v1::CommandResult::decode(payload) {
            Ok(r) => vec![one(topic, channel, r)],
            Err(e) => bad(e),
        },
        "cmd" => match v1::SignedCommand::decode(payload)
            .and_then(|s| v1::Command::decode(s.command.as_slice()).map(|c| (s.key_id, c)))
        {
            Ok((key_id, c)) => vec![one(topic, channel, (key_id, c))],
            Err(e) => bad(e),
        },
        c if c.starts_with("twin/") => match v1::DeviceTwin::decode(payload) {
            Ok(t) => vec![one(topic, channel, t)],
            Err(e) => bad(e),
        },
        _ => return None,
    })
}

/// Prints every record under `filter` until `stop`.
pub async fn run(
    mut opts: rumqttc::MqttOptions,
    filter: &str,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    opts.set_max_packet_size(32 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 16);
    el.set_network_options(mqtt_client::network_options());
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    loop {
        let ev = tokio::select! {
            _ = stop.changed() => return Ok(()),
            ev = el.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                for line in lines(&p.topic, &p.payload).unwrap_or_default() {
                    println!("{line}");
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(filter, QoS::AtLeastOnce).await?;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("gatehouse tail: {e}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_becomes_one_json_line_per_record() {
        let base = "gh/v1/3301/330106/330106001/330106001001/gw-1";
        let batch = v1::EventBatch {
            events: vec![
                v1::Event {
                    event_id: "gw-1:1".into(),
                    ..Default::default()
                },
                v1::Event {
                    event_id: "gw-1:2".into(),
                    ..Default::default()
                },
            ],
        };
        let events = lines(&format!("{base}/events"), &batch.encode_to_vec()).unwrap();
        assert_eq!(events.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(v["channel"], "events");
        assert_eq!(v["record"]["event_id"], "gw-1:2");
        let r = v1::CommandResult {
            command_id: "snap-7".into(),
            applied: true,
            ..Default::default()
        };
        let l = lines(&format!("{base}/cmd/result"), &r.encode_to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
        assert_eq!(v["record"]["command_id"], "snap-7");
        assert!(lines("gh/v1/3301/330106/_all/cmd", b"").is_none());
        assert!(lines(&format!("{base}/status"), b"\xff").unwrap()[0].contains("undecodable"));
    }
}
