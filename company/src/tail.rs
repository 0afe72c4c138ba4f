//! `gatehouse-company tail`: what gateways send upstream, as JSON lines — the company engineers'
//! `mosquitto_sub` for this protocol. Each line is one record: the topic, the gateway's path, the
//! channel, and the decoded record (events and alarms one per line, not per batch).
use gatehouse_contract::mqtt as mqtt_client;
use gatehouse_contract::proto::v1;
use gatehouse_contract::topics::{self, Channel, GatewayPath};
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    gateway: &'a GatewayPath,
    channel: &'a str,
    record: serde_json::Value,
}

/// The records of one message, as JSON lines; `None` for a topic that is not a gateway channel.
pub fn lines(topic: &str, payload: &[u8]) -> Option<Vec<String>> {
    let (gateway, channel) = topics::parse(topic)?;
    let name = channel.name();
    let line = |record: serde_json::Value| {
        serde_json::to_string(&Line {
            topic,
            gateway: &gateway,
            channel: &name,
            record,
        })
        .unwrap_or_default()
    };
    let bad = |e: prost::DecodeError| vec![line(format!("undecodable: {e}").into())];
    Some(match channel {
        Channel::Events => match v1::EventBatch::decode(payload) {
            Ok(b) => b.events.iter().map(|e| line(json(e))).collect(),
            Err(e) => bad(e),
        },
        Channel::Alarms => match v1::AlarmBatch::decode(payload) {
            Ok(b) => b.alarms.iter().map(|a| line(json(a))).collect(),
            Err(e) => bad(e),
        },
        Channel::Status => v1::Status::decode(payload).map_or_else(bad, |s| vec![line(json(&s))]),
        Channel::Stats => {
            v1::StatsBatch::decode(payload).map_or_else(bad, |s| vec![line(json(&s))])
        }
        Channel::CmdResult => {
            v1::CommandResult::decode(payload).map_or_else(bad, |r| vec![line(json(&r))])
        }
        Channel::Cmd => match v1::SignedCommand::decode(payload)
            .and_then(|s| v1::Command::decode(s.command.as_slice()).map(|c| (s.key_id, c)))
        {
            Ok(kc) => vec![line(json(&kc))],
            Err(e) => bad(e),
        },
        Channel::Twin(_) => {
            v1::DeviceTwin::decode(payload).map_or_else(bad, |t| vec![line(json(&t))])
        }
    })
}

fn json(record: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or_default()
}

/// Hands every record under `filter` to `out`, a JSON line each, until `stop`.
pub async fn run(
    mut opts: rumqttc::MqttOptions,
    filter: &str,
    mut stop: watch::Receiver<bool>,
    mut out: impl FnMut(String),
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
                    out(line);
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(filter, QoS::AtLeastOnce).await?;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("gatehouse-company tail: {e}; reconnecting");
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
        assert_eq!(v["gateway"]["gateway"], "gw-1");
        assert_eq!(v["gateway"]["street"], "330106001");
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
