//! The uplink to the property company's broker: drains the outbox in seq order as protobuf
//! batches (QoS 1) and deletes each record only after the broker's PUBACK for its batch.
//!
//! Topics: `gh/v1/{city}/{district}/{street}/{community}/{gateway}/{events|alarms|status}`.
//!
//! Matching PUBACKs to batches: rumqttc reports `Outgoing::Publish(pkid)` for our QoS 1 publishes
//! in the order we made them, so each publish pushes a tag on a FIFO and that event moves the tag
//! to a pkid map; the PUBACK for the pkid releases it. The session is clean: after a reconnect
//! rumqttc drops what it had in flight, and so do we — the cursor goes back to the oldest record
//! still in the outbox and everything unacked is sent again, in order, with the same ids.
use crate::config::BrokerUrl;
use crate::metrics::{worth_logging, Metrics};
use crate::mqtt;
use crate::proto::v1;
use crate::store::{Store, KIND_ALARM, KIND_EVENT};
use prost::Message;
use rumqttc::{AsyncClient, Event, LastWill, Outgoing, Packet, QoS};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// A batch stops growing past this many bytes.
const MAX_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub url: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub batch_max: usize,
    pub window: usize,
    /// `gh/v1/…/{gateway}`.
    pub topic_base: String,
    pub status_interval: Duration,
}

/// What the retained status says about this gateway.
#[derive(Debug, Clone)]
pub struct StatusSource {
    pub gateway: String,
    pub mode: String,
    pub registry_version: u64,
    /// Each device's status, with its last-seen time filled in when a status is made.
    pub devices: Vec<(v1::DeviceStatus, Arc<std::sync::atomic::AtomicI64>)>,
    pub metrics: Arc<Metrics>,
}

impl StatusSource {
    pub fn status(&self, state: v1::GatewayState) -> v1::Status {
        v1::Status {
            gateway: self.gateway.clone(),
            state: state as i32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.clone(),
            registry_version: self.registry_version,
            outbox_depth: Metrics::get(&self.metrics.outbox_depth),
            devices: self
                .devices
                .iter()
                .map(|(d, seen)| v1::DeviceStatus {
                    last_seen_ms: seen.load(Ordering::Relaxed),
                    ..d.clone()
                })
                .collect(),
            gateway_time_ms: crate::now_ms(),
        }
    }
}

enum Tag {
    Batch(Vec<u64>),
    Status,
}

pub struct Uplink {
    cfg: UplinkConfig,
    opts: rumqttc::MqttOptions,
    offline: Vec<u8>,
    store: Store,
    committed: watch::Receiver<u64>,
    deletes: mpsc::Sender<Vec<u64>>,
    status: StatusSource,
    metrics: Arc<Metrics>,
}

impl Uplink {
    pub fn new(
        cfg: UplinkConfig,
        store: Store,
        committed: watch::Receiver<u64>,
        deletes: mpsc::Sender<Vec<u64>>,
        status: StatusSource,
    ) -> Result<Self, mqtt::TlsError> {
        let metrics = status.metrics.clone();
        let mut opts = mqtt::options(&cfg.url, &cfg.client_id, cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_inflight(100);
        if let Some(u) = &cfg.username {
            opts.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
        }
        let offline = status.status(v1::GatewayState::Offline).encode_to_vec();
        opts.set_last_will(LastWill::new(
            format!("{}/status", cfg.topic_base),
            offline.clone(),
            QoS::AtLeastOnce,
            true,
        ));
        // TLS is set up here, so a bad CA file stops the start instead of the uplink.
        if cfg.url.tls {
            opts.set_transport(mqtt::tls_transport(cfg.ca_file.as_deref())?);
        }
        Ok(Self {
            cfg,
            opts,
            offline,
            store,
            committed,
            deletes,
            status,
            metrics,
        })
    }

    fn topic(&self, channel: &str) -> String {
        format!("{}/{channel}", self.cfg.topic_base)
    }

    /// Runs until `finish` delivers a deadline; then drains what it can before it, publishes the
    /// offline status and disconnects.
    pub async fn run(mut self, mut finish: oneshot::Receiver<Instant>) {
        let (client, mut el) = AsyncClient::new(self.opts.clone(), 64 + self.cfg.window);
        el.set_network_options(mqtt::network_options());

        let mut fifo: VecDeque<Tag> = VecDeque::new();
        let mut inflight: HashMap<u16, Tag> = HashMap::new();
        let mut parked: Option<(u16, Tag)> = None;
        let mut cursor = 0u64;
        let mut connected = false;
        let mut deadline: Option<Instant> = None;
        let mut backoff = mqtt::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut failures = 0u64;
        let mut status_tick = tokio::time::interval(self.cfg.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_tick.tick().await;
        let mut writer_gone = false;

        loop {
            // Nothing past the cursor has been committed: no need to look.
            let mut exhausted = cursor > *self.committed.borrow();
            if connected && !exhausted {
                exhausted = self.fill(&client, &mut cursor, &mut fifo, inflight.len());
            }
            if let Some(d) = deadline {
                let drained = exhausted && fifo.is_empty() && inflight.is_empty();
                if !connected || drained || Instant::now() >= d {
                    break;
                }
            }
            let ev = tokio::select! {
                ev = el.poll() => ev,
                r = self.committed.changed(), if !writer_gone => {
                    if r.is_err() {
                        // The writer is gone; nothing new will come.
                        writer_gone = true;
                        deadline.get_or_insert_with(Instant::now);
                    }
                    continue;
                }
                _ = status_tick.tick(), if connected => {
                    self.publish_status(&client, &mut fifo, v1::GatewayState::Online, false);
                    continue;
                }
                d = &mut finish, if deadline.is_none() => {
                    deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                    continue;
                }
                _ = sleep_until_opt(deadline) => continue,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(broker = %format!("{}:{}", self.cfg.url.host, self.cfg.url.port), outbox = Metrics::get(&self.metrics.outbox_depth), "Uplink connected.");
                    connected = true;
                    self.metrics.uplink_connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    cursor = 0;
                    self.publish_status(&client, &mut fifo, v1::GatewayState::Online, true);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let tag = match parked.take() {
                        Some((p, tag)) if p == pkid => Some(tag),
                        other => {
                            parked = other;
                            fifo.pop_front()
                        }
                    };
                    if let Some(tag) = tag {
                        inflight.insert(pkid, tag);
                    }
                }
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    // The broker acked out of order and this publish waits for its pkid to free.
                    parked = fifo.pop_front().map(|t| (pkid, t));
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(Tag::Batch(seqs)) = inflight.remove(&ack.pkid) {
                        Metrics::add(&self.metrics.uplink_acked, seqs.len() as u64);
                        // Full: the records stay and go again later (a duplicate, not a loss).
                        let _ = self.deletes.try_send(seqs);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        warn!(error = %e, "Uplink lost; events wait in the outbox.");
                    }
                    connected = false;
                    self.metrics
                        .uplink_connected
                        .store(false, Ordering::Relaxed);
                    fifo.clear();
                    inflight.clear();
                    parked = None;
                    failures += 1;
                    if worth_logging(failures) {
                        warn!(error = %e, failures, "Uplink connection failed; retrying with backoff.");
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        d = &mut finish, if deadline.is_none() => {
                            deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                        }
                    }
                }
            }
        }

        if connected {
            // The will only fires on an unclean end; a clean stop says "offline" itself.
            let offline = std::mem::take(&mut self.offline);
            let _ = client.try_publish(self.topic("status"), QoS::AtLeastOnce, true, offline);
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(ack)))
                            if !inflight.contains_key(&ack.pkid) =>
                        {
                            break
                        }
                        Err(_) => break,
                        _ => {}
                    }
                }
            })
            .await;
            crate::sources::mqtt::disconnect(&client, &mut el).await;
        }
    }

    fn publish_status(
        &self,
        client: &AsyncClient,
        fifo: &mut VecDeque<Tag>,
        state: v1::GatewayState,
        log_failure: bool,
    ) {
        let payload = self.status.status(state).encode_to_vec();
        match client.try_publish(self.topic("status"), QoS::AtLeastOnce, true, payload) {
            Ok(()) => fifo.push_back(Tag::Status),
            Err(e) if log_failure => warn!(error = %e, "Could not queue the status."),
            Err(_) => {}
        }
    }

    /// Publishes batches from `cursor` until the window is full. True when the outbox has
    /// nothing more past the cursor.
    fn fill(
        &self,
        client: &AsyncClient,
        cursor: &mut u64,
        fifo: &mut VecDeque<Tag>,
        inflight: usize,
    ) -> bool {
        while fifo.len() + inflight < self.cfg.window {
            let rows = match self
                .store
                .outbox_from(*cursor, self.cfg.batch_max, MAX_BATCH_BYTES)
            {
                Ok(rows) => rows,
                Err(e) => {
                    error!(error = %e, "Cannot read the outbox.");
                    return false;
                }
            };
            let Some(kind) = rows.first().and_then(|(_, v)| v.first().copied()) else {
                return true;
            };
            let run: Vec<&(u64, Vec<u8>)> = rows
                .iter()
                .take_while(|(_, v)| v.first() == Some(&kind))
                .collect();
            let seqs: Vec<u64> = run.iter().map(|(s, _)| *s).collect();
            *cursor = seqs[seqs.len() - 1] + 1;
            let channel = match kind {
                KIND_EVENT => "events",
                KIND_ALARM => "alarms",
                other => {
                    error!(kind = other, seqs = ?seqs, "Outbox record of unknown kind; dropping it.");
                    let _ = self.deletes.try_send(seqs);
                    continue;
                }
            };
            // EventBatch and AlarmBatch are both `repeated <msg> = 1`: a batch is the stored
            // messages, each behind its field key and length. No decode, no re-encode.
            let mut payload = Vec::with_capacity(run.iter().map(|(_, v)| v.len() + 4).sum());
            for (_, v) in &run {
                let msg = &v[1..];
                prost::encoding::encode_key(
                    1,
                    prost::encoding::WireType::LengthDelimited,
                    &mut payload,
                );
                prost::encoding::encode_varint(msg.len() as u64, &mut payload);
                payload.extend_from_slice(msg);
            }
            match client.try_publish(self.topic(channel), QoS::AtLeastOnce, false, payload) {
                Ok(()) => {
                    Metrics::add(&self.metrics.uplink_published, seqs.len() as u64);
                    fifo.push_back(Tag::Batch(seqs));
                }
                Err(e) => {
                    // Cannot happen while the window is below the channel's capacity; if it
                    // does, the batch goes again on the next turn.
                    warn!(error = %e, "Could not queue an uplink batch.");
                    *cursor = run[0].0;
                    return false;
                }
            }
        }
        false
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
