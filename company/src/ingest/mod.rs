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

/// The channels the ingest keeps, below each gateway's path.
pub const CHANNELS: [&str; 5] = ["events", "alarms", "stats", "status", "twin/+"];

/// The shared-subscription filters of `group`.
pub fn filters(group: &str) -> Vec<String> {
    CHANNELS
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
fn worth_logging(n: u64) -> bool {
    n > 0 && 10u64.pow(n.ilog10()) == n
}

/// One message taken: what to ack, and what it decoded to.
struct Taken {
    publish: Publish,
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
    opts.set_max_packet_size(decode::MAX_MESSAGE + 4096, 1 << 20);
    // Room for a whole batch's acks at once.
    let (client, el) = AsyncClient::new(opts, settings.batch_max + 64);
    // Unbounded, so the connection's task never waits on this loop: it must go on polling (the
    // acks go out through it, and the keep-alive). What bounds it is the broker's in-flight
    // window: no more unacked messages than that come (README, sizing the broker).
    let (tx, mut rx) = mpsc::unbounded_channel::<Publish>();
    let filters = filters(&settings.group);
    let poller = tokio::spawn(poll(el, client.clone(), filters, tx));
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
            for t in &taken {
                client.ack(&t.publish).await?;
            }
        }
    }
    .await;
    poller.abort();
    let _ = client.disconnect().await;
    result
}

fn take(publish: Publish, counters: &Counters) -> Taken {
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
    Taken { publish, decoded }
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
                payload: t.publish.payload.to_vec(),
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

/// Commits `taken`, retrying while the database is down; `false` if told to stop first.
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
        if db.ping().await.is_ok() {
            // The database works and refuses this batch: find the message it refuses and keep
            // that one in the quarantine, so the stream goes on.
            tracing::warn!("a batch was refused ({e:#}); committing its messages one by one");
            for t in taken {
                let a = match db.apply(&batch_of([t], None)).await {
                    Ok(a) => a,
                    Err(e) => match db.apply(&batch_of([t], Some(&format!("{e:#}")))).await {
                        Ok(a) => a,
                        // Down after all: start over with the whole batch.
                        Err(_) => return Box::pin(commit(db, taken, counters, stop)).await,
                    },
                };
                counters.add(a);
            }
            return true;
        }
        if worth_logging(n) {
            tracing::warn!(
                "the database is unreachable ({e:#}); nothing is acked, retrying in {backoff:?} ({n} errors so far)"
            );
        }
        tokio::select! {
            _ = stop.changed() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
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
    tx: mpsc::UnboundedSender<Publish>,
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
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                since = Instant::now();
                tracing::info!(
                    "connected to the broker (session present: {})",
                    c.session_present
                );
                to_subscribe = filters.clone();
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
