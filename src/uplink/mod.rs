//! The uplink to the property company's broker: drains the outbox in seq order as protobuf
//! batches (QoS 1) and deletes each record only after the broker's PUBACK for its batch.
//! Alarms have a cursor of their own and go first, unthrottled; events (passage decisions and
//! routine records, merged in seq order, so per-lane order holds) go at most `replay_rate` a
//! second, and never faster than the writer takes the deletes.
//!
//! Topics: `gh/v1/{city}/{district}/{street}/{community}/{gateway}/{events|alarms|status}`.
//!
//! Matching PUBACKs to batches is `tags.rs`. The session is clean: after a reconnect
//! rumqttc drops what it had in flight, and so do we — the cursors go back to the oldest records
//! still in the outbox and everything unacked is sent again, in order, with the same ids.
mod pacing;
pub mod stats;
pub mod status;
mod subscriptions;
mod tags;
pub mod twins;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::{worth_logging, Metrics};
use crate::mqtt_client;
use crate::mqtt_client::BrokerUrl;
use crate::proto::v1;
use crate::store::outbox::Delete;
use crate::store::{Class, Store};
use gatehouse_contract::topics::{Channel, Topics};
use pacing::{sleep_until_opt, Bucket};
use prost::Message;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
pub use status::StatusSource;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use subscriptions::{unreadable, Step, Subscriptions};
use tags::{Tag, Tags};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// A batch stops growing past this many bytes.
const MAX_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("uplink.url: {0}")]
    Url(String),
    #[error("uplink.password_file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] mqtt_client::TlsError),
}

#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub url: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: our certificate chain and its private key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub keep_alive: Duration,
    pub batch_max: usize,
    pub window: usize,
    /// Most events per second published (how fast a backlog drains).
    pub replay_rate: u64,
    pub topics: Topics,
    pub status_interval: Duration,
}

impl UplinkConfig {
    /// From the config's `[uplink]` and the gateway's place; reads the password file.
    pub fn from_config(config: &Config) -> Result<UplinkConfig, SetupError> {
        let u = &config.uplink;
        let password = match &u.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|source| SetupError::PasswordFile {
                        path: f.clone(),
                        source,
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => u.password.clone(),
        };
        Ok(UplinkConfig {
            url: BrokerUrl::parse(&u.url).map_err(SetupError::Url)?,
            // Gateway ids are unique only within a community: with the community code (which holds
            // the street's, district's and city's) the default is unique on the company broker.
            client_id: u.client_id.clone().unwrap_or_else(|| {
                format!("gh-{}-{}", config.gateway.community, config.gateway.id)
            }),
            username: u.username.clone(),
            password,
            ca_file: u.ca_file.clone(),
            client_cert: u.client_cert.clone().zip(u.client_key.clone()),
            keep_alive: Duration::from_secs(u.keep_alive_s),
            batch_max: u.batch_max,
            window: u.window,
            replay_rate: u.replay_rate,
            topics: Topics::new(&config.gateway.path()),
            status_interval: Duration::from_secs(60),
        })
    }
}

pub struct Uplink {
    cfg: UplinkConfig,
    opts: rumqttc::MqttOptions,
    store: Store,
    committed: watch::Receiver<u64>,
    deletes: mpsc::Sender<Delete>,
    status: StatusSource,
    metrics: Arc<Metrics>,
    orders: Option<OrdersIn>,
    stats: Option<StatsOut>,
}

/// Statistics waiting to go up, and where their acknowledgements are reported.
pub struct StatsOut {
    pub pending: Arc<crate::uplink::stats::Pending>,
    pub acked: mpsc::Sender<u64>,
}

/// The largest command taken from above.
const MAX_COMMAND: usize = 16 << 20;

/// The order side of the uplink: where signed orders from above go, and their results to publish.
pub struct OrdersIn {
    pub to_check: mpsc::Sender<RawOrder>,
    pub results: mpsc::Receiver<v1::CommandResult>,
    /// What orders waiting to be checked may hold, in KiB ([`ORDER_QUEUE_KIB`] permits): a flood
    /// of large junk is dropped here, at the door, not queued.
    pub queued: Arc<tokio::sync::Semaphore>,
    /// Where a topic poisoned by a message the client cannot take is reported (an alarm).
    pub alarms: mpsc::Sender<crate::sources::SourceEvent>,
}

/// Orders waiting to be checked hold at most this many KiB (a few full-size snapshot chunks).
pub const ORDER_QUEUE_KIB: usize = 32 << 10;

/// An order as it arrived, unchecked, with its share of the queue's bytes.
pub struct RawOrder {
    pub bytes: Vec<u8>,
    pub queued: tokio::sync::OwnedSemaphorePermit,
}

impl Uplink {
    pub fn new(
        cfg: UplinkConfig,
        store: Store,
        committed: watch::Receiver<u64>,
        deletes: mpsc::Sender<Delete>,
        mut status: StatusSource,
    ) -> Result<Self, mqtt_client::TlsError> {
        status.period_ms = cfg.status_interval.as_millis().min(u64::MAX as u128) as u64;
        let metrics = status.metrics.clone();
        let mut opts = mqtt_client::options(&cfg.url, &cfg.client_id, cfg.keep_alive);
        opts.set_clean_session(true);
        // A registry snapshot of a large estate is a few MiB (100,000 residents ≈ 4 MiB).
        opts.set_max_packet_size(MAX_COMMAND + 4096, 1 << 20);
        opts.set_inflight(100);
        if let Some(u) = &cfg.username {
            opts.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
        }
        status.next_connection();
        opts.set_last_will(status.last_will(&cfg.topics));
        // TLS is set up here, so a bad CA file stops the start instead of the uplink.
        if cfg.url.tls {
            let client = cfg
                .client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path()));
            opts.set_transport(mqtt_client::tls_transport(cfg.ca_file.as_deref(), client)?);
        }
        Ok(Self {
            cfg,
            opts,
            store,
            committed,
            deletes,
            status,
            metrics,
            orders: None,
            stats: None,
        })
    }

    /// Publish finished statistics periods on `stats`.
    pub fn with_stats(mut self, s: StatsOut) -> Self {
        self.stats = Some(s);
        self
    }

    /// Pending statistics not yet handed to the client on this connection.
    fn publish_stats(
        &self,
        client: &AsyncClient,
        fifo: &mut VecDeque<Tag>,
        sent: &mut std::collections::HashSet<u64>,
    ) {
        let Some(s) = &self.stats else { return };
        for (seq, batch) in s.pending.all() {
            if sent.contains(&seq) {
                continue;
            }
            match client.try_publish(
                self.topic(&Channel::Stats),
                QoS::AtLeastOnce,
                false,
                batch.encode_to_vec(),
            ) {
                Ok(()) => {
                    sent.insert(seq);
                    fifo.push_back(Tag::Stats(seq));
                }
                Err(_) => break,
            }
        }
    }

    /// Subscribe to orders from above and publish their results.
    pub fn with_orders(mut self, o: OrdersIn) -> Self {
        self.orders = Some(o);
        self
    }

    fn topic(&self, channel: &Channel) -> String {
        self.cfg.topics.channel(channel)
    }

    /// An order from above, handed to the gatekeeper; dropped (counted, logged) when too many
    /// wait to be checked, or when it is larger than any order may be.
    fn take_order(&self, p: &rumqttc::Publish) {
        let Some(c) = &self.orders else { return };
        if !self.cfg.topics.orders().contains(&p.topic) {
            return;
        }
        if p.payload.len() > MAX_COMMAND {
            warn!(topic = %p.topic, bytes = p.payload.len(), "Command over 16 MiB ignored.");
            return;
        }
        let kib = (p.payload.len() / 1024 + 1) as u32;
        let queued = c.queued.clone().try_acquire_many_owned(kib).ok();
        let sent = queued.is_some_and(|queued| {
            let bytes = p.payload.to_vec();
            c.to_check.try_send(RawOrder { bytes, queued }).is_ok()
        });
        if !sent {
            let n = self.metrics.orders_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(topic = %p.topic, dropped = n, "Order dropped: too many orders waiting to be checked.");
            }
        }
    }

    /// The link broke on a message the client could not take (`what`): counted, and the command
    /// topic it came on — when it can be told — left out for a while, with an alarm naming it.
    fn poisoned(&self, subscriptions: &mut Subscriptions, what: &str) {
        let n = self
            .metrics
            .order_topics_poisoned
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let detail = match subscriptions.broken_by_message(Instant::now()) {
            Some(b) => format!(
                "{what} on {} broke the uplink's connection; that topic is left unsubscribed for {} s (orders sent there are not received) — clear the retained message there",
                b.topic,
                b.pause.as_secs()
            ),
            None => format!("{what} on a command topic broke the uplink's connection once (not retained: it does not come again)"),
        };
        if worth_logging(n) {
            error!(poisoned = n, "{detail}.");
        }
        if let Some(o) = &self.orders {
            let event = crate::sources::SourceEvent::OrderTopicPoisoned { detail };
            if o.alarms.try_send(event).is_err() {
                warn!("Alarm for a poisoned command topic not raised: the decision loop is busy.");
            }
        }
    }

    /// Runs until `finish` delivers a deadline; then drains what it can before it, publishes the
    /// offline status and disconnects.
    pub async fn run(mut self, mut finish: oneshot::Receiver<Instant>) {
        let (mut client, mut el) = self.client();

        let mut tags = Tags::default();
        let mut cursors = Cursors::default();
        let mut bucket = Bucket::new(self.cfg.replay_rate);
        let mut link = Link::Down;
        let mut backoff = Backoff::uplink();
        let mut failures = 0u64;
        let mut status_tick = tokio::time::interval(self.cfg.status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_tick.tick().await;
        let mut writer_gone = false;
        // Records the broker acked whose delete the writer has not taken yet. While there are
        // many, nothing new is published: the uplink never runs ahead of the writer's deletes
        // (dropping deletes would only mean sending those records again later).
        let mut acked: Delete = Vec::new();
        // Statistics periods handed to the client on this connection.
        let mut stats_sent = std::collections::HashSet::new();
        let order_topics = match &self.orders {
            Some(_) => self.cfg.topics.orders().to_vec(),
            None => Vec::new(),
        };
        let mut subscriptions = Subscriptions::new(order_topics);

        loop {
            if !acked.is_empty() {
                match self.deletes.try_send(std::mem::take(&mut acked)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(back)) => acked = back,
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            let mut exhausted = false;
            let mut throttled = None;
            if link.is_up() && acked.len() < 4 * self.cfg.batch_max {
                let in_flight = tags.in_flight();
                match self.fill(
                    &client,
                    &mut cursors,
                    &mut tags.fifo,
                    in_flight,
                    &mut bucket,
                ) {
                    Fill::Drained => exhausted = true,
                    Fill::Throttled(d) => throttled = Some(d),
                    Fill::WindowFull | Fill::Stuck => {}
                }
            }
            if let Link::Draining { until } = link {
                if (exhausted && tags.is_empty()) || Instant::now() >= until {
                    break;
                }
            }
            let ev = tokio::select! {
                ev = el.poll() => ev,
                permit = self.deletes.reserve(), if !acked.is_empty() => {
                    if let Ok(permit) = permit {
                        permit.send(std::mem::take(&mut acked));
                    }
                    continue;
                }
                r = self.committed.changed(), if !writer_gone => {
                    if r.is_err() {
                        // The writer is gone; nothing new will come.
                        writer_gone = true;
                        match link.stopping(Instant::now()) {
                            Some(next) => link = next,
                            None => break,
                        }
                    }
                    continue;
                }
                _ = status_tick.tick(), if link.is_up() => {
                    self.publish_status(&client, &mut tags.fifo, v1::GatewayState::Online, false);
                    self.publish_twins(&client, &mut tags.fifo, true);
                    continue;
                }
                _ = async {
                    match &self.stats {
                        Some(s) => s.pending.changed.notified().await,
                        None => std::future::pending().await,
                    }
                }, if link.is_up() => {
                    self.publish_stats(&client, &mut tags.fifo, &mut stats_sent);
                    continue;
                }
                _ = self.status.changed.notified(), if link.is_up() => {
                    self.publish_status(&client, &mut tags.fifo, v1::GatewayState::Online, false);
                    continue;
                }
                _ = self.status.twins.changed.notified(), if link.is_up() => {
                    self.publish_twins(&client, &mut tags.fifo, false);
                    continue;
                }
                Some(result) = async {
                    match self.orders.as_mut() {
                        Some(c) => c.results.recv().await,
                        None => std::future::pending().await,
                    }
                }, if link.is_up() => {
                    let topic = self.topic(&Channel::CmdResult);
                    if client.try_publish(topic, QoS::AtLeastOnce, false, result.encode_to_vec()).is_ok() {
                        tags.fifo.push_back(Tag::Status);
                    } else {
                        warn!(command = %result.command_id, "Command result not sent: the uplink's queue is full.");
                    }
                    continue;
                }
                d = &mut finish, if !link.is_draining() => {
                    match link.stopping(d.unwrap_or_else(|_| Instant::now())) {
                        Some(next) => link = next,
                        None => break,
                    }
                    continue;
                }
                _ = sleep_until_opt(link.deadline()) => continue,
                _ = sleep_until_opt(subscriptions.due()), if link.is_up() => {
                    if let Some(topic) = subscriptions.tick(Instant::now()) {
                        self.subscribe(&client, topic, &mut subscriptions);
                    }
                    continue;
                }
                _ = tokio::time::sleep(throttled.unwrap_or_default()), if throttled.is_some() => continue,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(broker = %format!("{}:{}", self.cfg.url.host, self.cfg.url.port), outbox = Metrics::get(&self.metrics.outbox_depth), "Uplink connected.");
                    // Only a link that was down comes up: a drain keeps its deadline.
                    if !link.is_up() {
                        link = Link::Up;
                    }
                    self.metrics.uplink_connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    cursors = Cursors::default();
                    match subscriptions.connected(Instant::now()) {
                        Step::Subscribe(topic) => {
                            self.subscribe(&client, topic, &mut subscriptions)
                        }
                        Step::Greet => self.greet(&client, &mut tags.fifo, &mut stats_sent),
                        Step::Wait => {}
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .contains(&rumqttc::SubscribeReasonCode::Failure)
                    {
                        warn!("The broker refused a command topic's subscription (its ACL?): orders on it will not arrive.");
                    }
                    if subscriptions.acked(Instant::now()) == Step::Greet {
                        self.greet(&client, &mut tags.fifo, &mut stats_sent);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.take_order(&p),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => tags.outgoing(pkid),
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => tags.await_ack(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => match tags.acked(ack.pkid) {
                    Some(Tag::Batch(seqs)) => {
                        Metrics::add(&self.metrics.uplink_acked, seqs.len() as u64);
                        acked.extend(seqs);
                    }
                    Some(Tag::Stats(seq)) => {
                        if let Some(s) = &self.stats {
                            if s.pending.remove(seq) {
                                let _ = s.acked.try_send(seq);
                            }
                        }
                    }
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => {
                    if let Some(what) = unreadable(&e) {
                        self.poisoned(&mut subscriptions, &what);
                        // A fresh client: rumqttc keeps what it read before the break (a SUBACK)
                        // and what was queued (a SUBSCRIBE) for the next connection.
                        (client, el) = self.client();
                    }
                    // The next connection's will, numbered after this one's statuses.
                    self.status.next_connection();
                    let will = self.status.last_will(&self.cfg.topics);
                    self.opts.set_last_will(will.clone());
                    el.mqtt_options.set_last_will(will);
                    let was = std::mem::replace(&mut link, Link::Down);
                    if was.is_up() {
                        warn!(error = %e, "Uplink lost; events wait in the outbox.");
                    }
                    self.metrics
                        .uplink_connected
                        .store(false, Ordering::Relaxed);
                    tags.clear();
                    failures += 1;
                    if worth_logging(failures) {
                        warn!(error = %e, failures, "Uplink connection failed; retrying with backoff.");
                    }
                    // Stopping with the link down: nothing more can go out.
                    if was.is_draining() {
                        break;
                    }
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut finish => break,
                    }
                }
            }
        }

        if !acked.is_empty() {
            let _ = self.deletes.try_send(acked);
        }
        if link.is_up() {
            self.say_offline(&client, &mut el, &tags).await;
        }
    }

    /// The MQTT client and its event loop.
    fn client(&self) -> (AsyncClient, rumqttc::EventLoop) {
        let (client, mut el) = AsyncClient::new(self.opts.clone(), 64 + self.cfg.window);
        el.set_network_options(mqtt_client::network_options());
        (client, el)
    }

    /// Asks for one command topic (`subscriptions.rs`: one at a time). Orders first: "online"
    /// goes once every topic is subscribed, so an order sent once it is seen upstream is not
    /// lost to a subscription still on its way.
    fn subscribe(&self, client: &AsyncClient, topic: String, subscriptions: &mut Subscriptions) {
        if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
            warn!(error = %e, "Could not ask for a command topic; asking again shortly.");
            subscriptions.not_asked(Instant::now());
        }
    }

    /// Subscribed: status, twins and statistics.
    fn greet(
        &self,
        client: &AsyncClient,
        fifo: &mut VecDeque<Tag>,
        stats_sent: &mut std::collections::HashSet<u64>,
    ) {
        self.publish_status(client, fifo, v1::GatewayState::Online, true);
        self.publish_twins(client, fifo, true);
        stats_sent.clear();
        self.publish_stats(client, fifo, stats_sent);
    }

    /// A clean stop says "offline" itself (the will fires only on an unclean end), waits a
    /// moment for its PUBACK, and disconnects.
    async fn say_offline(
        &mut self,
        client: &AsyncClient,
        el: &mut rumqttc::EventLoop,
        tags: &Tags,
    ) {
        let offline = self.status.will().encode_to_vec();
        let topic = self.topic(&Channel::Status);
        let _ = client.try_publish(topic, QoS::AtLeastOnce, true, offline);
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(ack))) if !tags.is_in_flight(ack.pkid) => {
                        break
                    }
                    Err(_) => break,
                    _ => {}
                }
            }
        })
        .await;
        crate::sources::mqtt::disconnect(client, el).await;
    }

    /// Retained twins: those that changed, or all of them.
    fn publish_twins(&self, client: &AsyncClient, fifo: &mut VecDeque<Tag>, all: bool) {
        for t in self.status.twins.take(all) {
            let topic = self.topic(&Channel::Twin(t.device.clone()));
            match client.try_publish(topic, QoS::AtLeastOnce, true, t.encode_to_vec()) {
                Ok(()) => fifo.push_back(Tag::Status),
                // The request queue is full: the next status tick sends every twin again.
                Err(_) => break,
            }
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
        match client.try_publish(
            self.topic(&Channel::Status),
            QoS::AtLeastOnce,
            true,
            payload,
        ) {
            Ok(()) => fifo.push_back(Tag::Status),
            Err(e) if log_failure => warn!(error = %e, "Could not queue the status."),
            Err(_) => {}
        }
    }

    /// Publishes batches until the window is full: alarms first (they jump the queue and are
    /// never throttled), then events at no more than the replay rate.
    fn fill(
        &self,
        client: &AsyncClient,
        cur: &mut Cursors,
        fifo: &mut VecDeque<Tag>,
        inflight: usize,
        bucket: &mut Bucket,
    ) -> Fill {
        // What memory held while the store failed is in the store now: from the oldest again
        // (what was sent already goes again with the same ids).
        let epoch = self.store.spill().epoch();
        if cur.spill_epoch != epoch {
            *cur = Cursors {
                spill_epoch: epoch,
                ..Cursors::default()
            };
        }
        while fifo.len() + inflight < self.cfg.window {
            let committed = *self.committed.borrow();
            if cur.alarms <= committed {
                match self.publish_batch(
                    client,
                    &[Class::Alarm],
                    &mut cur.alarms,
                    self.cfg.batch_max,
                    fifo,
                ) {
                    Ok(0) => cur.alarms = committed + 1,
                    Ok(_) => continue,
                    Err(()) => return Fill::Stuck,
                }
            }
            if cur.events > committed {
                return Fill::Drained;
            }
            let allowed = bucket.available().min(self.cfg.batch_max);
            if allowed == 0 {
                return Fill::Throttled(bucket.wait());
            }
            match self.publish_batch(
                client,
                &[Class::Passage, Class::Routine],
                &mut cur.events,
                allowed,
                fifo,
            ) {
                Ok(0) => {
                    cur.events = committed + 1;
                    return Fill::Drained;
                }
                Ok(n) => bucket.take(n),
                Err(()) => return Fill::Stuck,
            }
        }
        Fill::WindowFull
    }

    /// Reads up to `max` records of `classes` from `cursor` and publishes them as one batch;
    /// returns how many.
    fn publish_batch(
        &self,
        client: &AsyncClient,
        classes: &[Class],
        cursor: &mut u64,
        max: usize,
        fifo: &mut VecDeque<Tag>,
    ) -> Result<usize, ()> {
        let rows = self
            .store
            .outbox_from(classes, *cursor, max, MAX_BATCH_BYTES)
            .map_err(|e| {
                let n = self
                    .metrics
                    .uplink_read_errors
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if worth_logging(n) {
                    error!(error = %e, failures = n, "Cannot read the outbox; retrying.");
                }
            })?;
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let next = last.seq + 1;
        // EventBatch and AlarmBatch are both `repeated <msg> = 1`: a batch is the stored
        // messages, each behind its field key and length. No decode, no re-encode.
        let mut payload = Vec::with_capacity(rows.iter().map(|r| r.message.len() + 4).sum());
        for r in &rows {
            crate::store::outbox::frame(&r.message, &mut payload);
        }
        let channel = if classes.contains(&Class::Alarm) {
            Channel::Alarms
        } else {
            Channel::Events
        };
        match client.try_publish(self.topic(&channel), QoS::AtLeastOnce, false, payload) {
            Ok(()) => {
                Metrics::add(&self.metrics.uplink_published, rows.len() as u64);
                *cursor = next;
                fifo.push_back(Tag::Batch(rows.iter().map(|r| (r.class, r.seq)).collect()));
                Ok(rows.len())
            }
            Err(e) => {
                // Cannot happen while the window is below the channel's capacity; if it does,
                // the batch goes again on the next turn.
                warn!(error = %e, "Could not queue an uplink batch.");
                Err(())
            }
        }
    }
}

/// Where the uplink is in the outbox. Alarms and events are read apart so alarms jump the queue;
/// both go back to the oldest record after a reconnect.
#[derive(Debug, Default)]
struct Cursors {
    alarms: u64,
    events: u64,
    /// The store's spill epoch these cursors were read under.
    spill_epoch: u64,
}

enum Fill {
    /// Nothing more committed past the cursors.
    Drained,
    WindowFull,
    /// Over the replay rate: try again after this long.
    Throttled(Duration),
    /// The outbox could not be read or the batch not queued: try on the next turn.
    Stuck,
}

/// Where the uplink stands; what it may do follows from it.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// No connection: records wait in the outbox; reconnecting with backoff.
    Down,
    /// Connected: records, status, twins, statistics and order results go out.
    Up,
    /// Stopping, still connected: sending what it can until `until`, then "offline".
    Draining { until: Instant },
}

impl Link {
    fn is_up(self) -> bool {
        matches!(self, Link::Up | Link::Draining { .. })
    }

    fn is_draining(self) -> bool {
        matches!(self, Link::Draining { .. })
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Link::Draining { until } => Some(until),
            _ => None,
        }
    }

    /// Told to stop by `until`: connected, it drains until then (already draining, it keeps
    /// its deadline); down, there is nothing to drain (`None`: stop now).
    fn stopping(self, until: Instant) -> Option<Link> {
        match self {
            Link::Down => None,
            Link::Up => Some(Link::Draining { until }),
            draining => Some(draining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_client_id_is_unique_across_communities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        let text = crate::config::tests_support::MINIMAL;
        let mut ids = Vec::new();
        for community in ["330106001001", "330106001002"] {
            std::fs::write(&path, text.replace("330106001001", community)).unwrap();
            let config = Config::load(&path).unwrap();
            ids.push(UplinkConfig::from_config(&config).unwrap().client_id);
        }
        assert_eq!(ids, ["gh-330106001001-gw-1", "gh-330106001002-gw-1"]);
    }
}
