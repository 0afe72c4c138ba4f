//! An alarm acknowledged on these pages goes down to its gateway as a signed order
//! (`AckAlarm`), so the guard's console closes it too: one acknowledgement, wherever it was
//! made. Configured by `[web.orders]` — a signing key the gateways trust for `ack_alarm` at the
//! gateway level — and sent over the company broker of `[broker]`; without it the
//! acknowledgement stays on these pages.
use crate::connect::BrokerArgs;
use gatehouse_contract::mqtt::BrokerUrl;
use gatehouse_contract::proto::v1;
use gatehouse_contract::topics::{self, Topics};
use std::sync::Arc;

/// An order lives this long: a gateway offline longer gets none (its guard acknowledges
/// there). A minute: what any gateway's `max_lifetime_s` allows.
const LIFETIME_MS: i64 = 60 * 1000;

pub struct AcksDown {
    url: BrokerUrl,
    tls: BrokerArgs,
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl AcksDown {
    pub fn new(
        broker: &crate::config::Broker,
        orders: &crate::config::WebOrders,
    ) -> anyhow::Result<AcksDown> {
        Ok(AcksDown {
            url: BrokerUrl::parse(&broker.url).map_err(|e| anyhow::anyhow!("broker.url: {e}"))?,
            tls: BrokerArgs {
                ca: broker.ca.clone(),
                client_cert: broker.client_cert.clone(),
                client_key: broker.client_key.clone(),
                username: broker.username.clone(),
                password_file: broker.password_file.clone(),
            },
            key: crate::connect::read_key(&orders.key)?,
            key_id: orders.key_id.clone(),
        })
    }

    /// Signs and publishes, off the request: the acknowledgement is stored already; a broker
    /// that cannot be reached is logged (the gateway's guard acknowledges at the gate then).
    pub fn send(self: &Arc<Self>, gw: &str, seq: i64, at_ms: i64, by: &str, now_ms: i64) {
        let made = order(gw, (seq, at_ms), by, now_ms, &self.key_id, &self.key);
        let (topic, signed) = match made {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(gw, seq, "acknowledgement not sent down: {e:#}");
                return;
            }
        };
        let me = self.clone();
        let payload = prost::Message::encode_to_vec(&signed);
        tokio::spawn(async move {
            if let Err(e) = crate::connect::publish_all(&me.url, &me.tls, &topic, &[payload]).await
            {
                tracing::warn!(topic, "acknowledgement not sent down: {e:#}");
            }
        });
    }
}

/// The signed order that acknowledges alarm (`seq`, `at_ms`) of gateway `gw`
/// (`city/district/street/community/gateway`, as the records are keyed), and its topic.
pub fn order(
    gw: &str,
    (seq, at_ms): (i64, i64),
    by: &str,
    now_ms: i64,
    key_id: &str,
    key: &ed25519_dalek::SigningKey,
) -> anyhow::Result<(String, v1::SignedCommand)> {
    let (place, _) = topics::parse(&format!("gh/v1/{gw}/alarms"))
        .ok_or_else(|| anyhow::anyhow!("{gw:?} is not a gateway's path"))?;
    let seq = u64::try_from(seq).map_err(|_| anyhow::anyhow!("seq {seq}"))?;
    let command = v1::Command {
        // One order per alarm: the gateway applies an id once.
        // (After a lost store a gateway's seqs start again: the time tells two alarms apart.)
        id: format!("ack:{}:{seq}:{at_ms}", place.gateway),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + LIFETIME_MS,
        target: Some(v1::Scope {
            level: v1::Level::Gateway as i32,
            code: format!("{}/{}", place.community, place.gateway),
        }),
        payload: Some(v1::command::Payload::AckAlarm(v1::AckAlarm {
            alarm_seq: seq,
            alarm_time_ms: at_ms,
            by: by.to_string(),
        })),
    };
    let topic = format!("{}/cmd", Topics::new(&place).base());
    Ok((
        topic,
        gatehouse_contract::orders::sign(&command, key_id, key),
    ))
}
