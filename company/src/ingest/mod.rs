//! The ingest: every gateway's records from the company's broker into the database, at least
//! once in and exactly once stored.
//!
//! - One **shared subscription** per channel (`$share/{group}/gh/v1/+/+/+/+/+/events`, …): N
//!   instances split the stream; one more instance is one more process.
//! - QoS 1, a **persistent session** per instance (its client id fixed, `clean_session` off): a
//!   restarted instance gets what it had not acked.
//! - **Manual acks after the commit**, in the order received: a batch of messages is decoded,
//!   committed in one transaction (`db`), then acked. A crash before the ack means a redelivery,
//!   which the database's keys make a no-op.
//! - A message that cannot be decoded goes to the quarantine table with its topic and error, in
//!   the same commit, and is acked: it never stops the stream. One the database refuses while the
//!   database works (a bug; a value out of range) is quarantined on its own the same way.
//! - The database down: nothing is acked; the batch is retried with backoff (1 s doubling to
//!   30 s). The broker sends no more than its in-flight window of unacked messages meanwhile
//!   (mosquitto `max_inflight_messages`, EMQX `max_inflight`) and queues the rest for the session.
pub mod decode;
pub mod rollup;

use crate::db::{Applied, Batch, Db, Quarantined};
use decode::Decoded;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// MQTT's largest packet (its remaining length is at most 268,435,455 bytes).
const MQTT_MAX_PACKET: usize = 268_435_460;

/// What the ingest keeps, split among the instances of a group (a shared subscription): each
/// gateway's channels, and the orders for a whole street or district (a gateway's own and a
/// whole community's are its `cmd`) — the operator's page shows orders and their results. Each
/// with the name its group is told apart by.
pub const CHANNELS: [(&str, &str); 7] = [
    ("events", "+/+/+/+/+/events"),
    ("alarms", "+/+/+/+/+/alarms"),
    ("stats", "+/+/+/+/+/stats"),
    ("cmd", "+/+/+/+/+/cmd"),
    ("cmd-result", "+/+/+/+/+/cmd/result"),
    ("cmd-street", "+/+/+/_all/cmd"),
    ("cmd-district", "+/+/_all/cmd"),
];

/// The retained channels — a gateway's status (its will when it is gone) and its devices'
/// twins — are taken by every instance on a subscription of its own: a broker sends retained
/// messages to a new subscription but never to a shared one, so an instance started after a
/// gateway connected would otherwise not know it until its next status. Storing one is
/// idempotent (the newest wins), so every instance storing each costs a little, loses nothing.
pub const RETAINED: [&str; 2] = ["status", "twin/+"];

/// The subscription filters of `group`. Each channel's shared subscription has a group name
/// of its own (`gatehouse-ingest-events`, …): MQTT scopes a group to its filter, but rumqttd
/// (the demo's embedded broker) keys a group by its name alone, with one cursor for all its
/// filters — one group over five filters there skipped most alarms.
pub fn filters(group: &str) -> Vec<String> {
    CHANNELS
        .iter()
        .map(|(name, tail)| format!("$share/{group}-{name}/gh/v1/{tail}"))
        .chain(RETAINED.iter().map(|c| format!("gh/v1/+/+/+/+/+/{c}")))
        .collect()
}

/// The filters an instance of an earlier version subscribed to in its session (one group over
/// every channel), from this version's: `$share/{group}-events/…` gives the group.
fn legacy_filters(filters: &[String]) -> Vec<String> {
    let Some(group) = filters
        .first()
        .and_then(|f| f.strip_prefix("$share/"))
        .and_then(|f| f.split('/').next())
        .and_then(|g| g.strip_suffix("-events"))
    else {
        return Vec::new();
    };
    ["events", "alarms", "stats", "status", "twin/+"]
        .iter()
        .map(|c| format!("$share/{group}/gh/v1/+/+/+/+/+/{c}"))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub group: String,
    /// At most this many messages per commit.
    pub batch_max: usize,
    /// A batch commits this long after its first message at the latest.
    pub linger: Duration,
    pub tz: chrono_tz::Tz,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            group: "gatehouse-ingest".into(),
            batch_max: 500,
            linger: Duration::from_millis(20),
            tz: chrono_tz::Asia::Shanghai,
        }
    }
}

/// What the ingest has done since it started.
#[derive(Debug, Default)]
pub struct Counters {
    pub messages: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub quarantined: AtomicU64,
    pub skipped: AtomicU64,
    pub commits: AtomicU64,
    pub db_errors: AtomicU64,
}

impl Counters {
    fn add(&self, a: Applied) {
        self.stored.fetch_add(a.stored, Ordering::Relaxed);
        self.duplicates.fetch_add(a.duplicates, Ordering::Relaxed);
        self.quarantined.fetch_add(a.quarantined, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Logged at the 1st, 10th, 100th… time.
pub(crate) fn worth_logging(n: u64) -> bool {
    n > 0 && 10u64.pow(n.ilog10()) == n
}

/// One message taken: what to ack, on which connection it came, and what it decoded to.
struct Taken {
    publish: Publish,
    connection: u64,
    decoded: Decoded,
}

/// Runs until `stop`: takes messages from the broker, commits them in batches, acks them.
pub async fn run(
    mut opts: MqttOptions,
    settings: Settings,
    db: Arc<Db>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    opts.set_manual_acks(true);
    opts.set_clean_session(false);
    // Any packet MQTT allows: a larger one than the broker should let through is quarantined by
    // `decode`, never refused by the client (a refusal ends the connection, and the persistent
    // session would send the same message again at every reconnect).
    opts.set_max_packet_size(MQTT_MAX_PACKET, 1 << 20);
    // Room for a whole batch's acks at once.
    let (client, el) = AsyncClient::new(opts, settings.batch_max + 64);
    // Unbounded, so the connection's task never waits on this loop: it must go on polling (the
    // acks go out through it, and the keep-alive). What bounds it is the broker's in-flight
    // window: no more unacked messages than that come (README, sizing the broker).
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Publish)>();
    let filters = filters(&settings.group);
    // The connection in use (counted at every CONNACK): a message is acked only on the one it
    // came on. After a reconnect the broker sends again what was not acked, under the same packet
    // ids, and may give an id freed by one of our acks to a new message: an ack of the old copy
    // sent then would ack that new message before it is stored.
    let connection = Arc::new(AtomicU64::new(0));
    let poller = tokio::spawn(poll(el, client.clone(), filters, tx, connection.clone()));
    let result = async {
        let mut warned = 0u64;
        loop {
            // The first message of a batch, then more until full or the linger is over.
            let first = tokio::select! {
                _ = stop.changed() => return Ok(()),
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => anyhow::bail!("the broker connection's task ended"),
                },
            };
            let deadline = tokio::time::Instant::now() + settings.linger;
            let mut taken = vec![take(first, &counters)];
            while taken.len() < settings.batch_max {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => taken.push(take(p, &counters)),
                    _ => break,
                }
            }
            if rx.len() > WINDOW_WARNING {
                warned += 1;
                if worth_logging(warned) {
                    tracing::warn!(
                        "{} messages wait for the database: is the broker's in-flight window bounded?",
                        rx.len()
                    );
                }
            }
            if !commit(&db, &taken, &counters, &mut stop).await {
                return Ok(());
            }
            let now = connection.load(Ordering::Relaxed);
            for t in taken.iter().filter(|t| t.connection == now) {
                client.ack(&t.publish).await?;
            }
        }
    }
    .await;
    poller.abort();
    let _ = client.disconnect().await;
    result
}

fn take((connection, publish): (u64, Publish), counters: &Counters) -> Taken {
    counters.messages.fetch_add(1, Ordering::Relaxed);
    let decoded = decode::decode(&publish.topic, &publish.payload);
    if let Decoded::Quarantine(why) = &decoded {
        let n = counters.quarantined.load(Ordering::Relaxed) + 1;
        if worth_logging(n) {
            tracing::warn!(
                "quarantined a message on {} ({why}); {n} so far",
                publish.topic
            );
        }
    }
    if decoded == Decoded::Skipped {
        counters.skipped.fetch_add(1, Ordering::Relaxed);
    }
    Taken {
        publish,
        connection,
        decoded,
    }
}

fn batch_of<'a>(taken: impl IntoIterator<Item = &'a Taken>, db_error: Option<&str>) -> Batch {
    let mut b = Batch {
        received_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    for t in taken {
        match (&t.decoded, db_error) {
            (Decoded::Rows(rows), None) => b.rows.extend(rows.iter().cloned()),
            (Decoded::Quarantine(error), _) => b.quarantine.push(Quarantined {
                topic: t.publish.topic.clone(),
                error: error.clone(),
                // An oversize message is kept in part: its error says how large it was.
                payload: t.publish.payload[..t.publish.payload.len().min(decode::MAX_MESSAGE)]
                    .to_vec(),
            }),
            (Decoded::Rows(_), Some(e)) => b.quarantine.push(Quarantined {
                topic: t.publish.topic.clone(),
                error: format!("refused by the database: {e}"),
                payload: t.publish.payload.to_vec(),
            }),
            (Decoded::Skipped, _) => {}
        }
    }
    b
}

/// Commits `taken`, retrying while the database is down; `false` if told to stop first. A
/// batch the database refuses for its data (a constraint, a value out of range) is committed
/// message by message, the refused one quarantined; any other error (down, read-only, a
/// deadlock, a timeout) is waited out with backoff and nothing acked.
async fn commit(
    db: &Db,
    taken: &[Taken],
    counters: &Counters,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_secs(1);
    loop {
        let e = match db.apply(&batch_of(taken, None)).await {
            Ok(a) => {
                counters.add(a);
                return true;
            }
            Err(e) => e,
        };
        let n = counters.db_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if crate::db::refused_for_data(&e) && one_by_one(db, taken, counters).await {
            return true;
        }
        if worth_logging(n) {
            tracing::warn!(
                "the database cannot take the batch ({e:#}); nothing is acked, retrying in {backoff:?} ({n} errors so far)"
            );
        }
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Each message on its own, the one refused for its data quarantined; `false` at the first
/// error of another kind (the caller backs off and retries the batch: what went in meanwhile is
/// a duplicate then, which changes nothing).
async fn one_by_one(db: &Db, taken: &[Taken], counters: &Counters) -> bool {
    tracing::warn!("a batch was refused for its data; committing its messages one by one");
    for t in taken {
        let a = match db.apply(&batch_of([t], None)).await {
            Ok(a) => a,
            Err(e) if crate::db::refused_for_data(&e) => {
                match db.apply(&batch_of([t], Some(&format!("{e:#}")))).await {
                    Ok(a) => a,
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        };
        counters.add(a);
    }
    true
}

/// Unacked messages waiting for the database beyond which the broker's in-flight window is
/// surely misconfigured (unbounded): said in the log.
const WINDOW_WARNING: usize = 100_000;

/// Drives the broker connection: (re)subscribes at every CONNACK, hands every publish on. It
/// never waits on anything but the connection itself: a task that waited here for the batch
/// loop, while the batch loop waited for it to send the acks, would hang both (it did, once).
async fn poll(
    mut el: EventLoop,
    client: AsyncClient,
    filters: Vec<String>,
    tx: mpsc::UnboundedSender<(u64, Publish)>,
    connection: Arc<AtomicU64>,
) {
    el.set_network_options(gatehouse_contract::mqtt::network_options());
    let mut errors = 0u64;
    let mut since = Instant::now();
    // Subscriptions still to ask for (the request queue was full).
    let mut to_subscribe: Vec<String> = Vec::new();
    loop {
        while let Some(f) = to_subscribe.last() {
            if client.try_subscribe(f.as_str(), QoS::AtLeastOnce).is_err() {
                break;
            }
            to_subscribe.pop();
        }
        match el.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send((connection.load(Ordering::Relaxed), p)).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                connection.fetch_add(1, Ordering::Relaxed);
                since = Instant::now();
                tracing::info!(
                    "connected to the broker (session present: {})",
                    c.session_present
                );
                to_subscribe = filters.clone();
                // A session from before the groups were per channel still holds one group
                // over every channel: dropped, or each record would come twice.
                if c.session_present {
                    for f in legacy_filters(&filters) {
                        let _ = client.try_unsubscribe(f);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                if worth_logging(errors) {
                    tracing::warn!(
                        "broker connection: {e} (up {:?}); reconnecting ({errors} so far)",
                        since.elapsed()
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_channel_has_a_group_of_its_own_and_the_old_one_is_dropped() {
        let f = super::filters("gi");
        assert_eq!(f[0], "$share/gi-events/gh/v1/+/+/+/+/+/events");
        assert!(f.contains(&"$share/gi-cmd-street/gh/v1/+/+/+/_all/cmd".to_string()));
        assert!(f.contains(&"gh/v1/+/+/+/+/+/status".to_string()));
        let groups: std::collections::HashSet<_> =
            f.iter().filter_map(|f| f.split('/').nth(1)).collect();
        assert_eq!(groups.len(), super::CHANNELS.len() + 1, "{f:?}");
        assert_eq!(
            super::legacy_filters(&f)[3],
            "$share/gi/gh/v1/+/+/+/+/+/status"
        );
    }
}
