//! MQTT devices. Two connections to the device-side broker, each with its event loop polled in a
//! task of its own:
//! - **events**: subscribes (QoS 1, manual acks) to every MQTT device's event topic, decodes each
//!   message with the device's profile and hands it to the decision loop. A message is acked only
//!   when the writer has made its decision durable, so a crash makes the broker redeliver it.
//!   Our session is persistent (fixed client id, clean session off) for the same reason.
//! - **commands**: publishes gate commands. Kept apart so a backlog of events waiting for the
//!   decision loop can never hold up a command.
//!
//! With the device endpoint (the default) neither connection exists: devices connect to
//! gatehouse itself (`sources/endpoint`).
use crate::backoff::Backoff;
use crate::config::{BrokerMode, DeviceBrokerSection};
use crate::metrics::{worth_logging, Metrics};
use crate::mqtt_client;
use crate::mqtt_client::BrokerUrl;
use crate::sources::endpoint::{self, Endpoint, Identity};
use crate::sources::SourceEvent;
pub use crate::sources::{decode, Input, Route, INPUT_CAPACITY};
use crate::store::outbox::{Ack, APPEND_CAPACITY};
use anyhow::Context;
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeFilter};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// Decoded events held in the events task while the decision loop's input is full. Full too →
/// the task stops reading from the broker until there is room (named policy: backpressure to the
/// broker, which keeps unacknowledged events).
const WAITING_MAX: usize = 4096;

/// Requests queued on the events connection are almost all acks; sized above everything the
/// pipeline can hold at once, so an ack never finds it full.
const EVENTS_REQUEST_CAPACITY: usize = 2 * (INPUT_CAPACITY + WAITING_MAX + APPEND_CAPACITY);

pub struct Connection {
    pub url: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS, set up once at start for an `mqtts://` broker (a bad CA file stops the start).
    pub tls: Option<rumqttc::Transport>,
}

impl Connection {
    /// The options of our events connection, or (`commands`) of our commands connection, which
    /// logs in as [`commands_username`]: a broker that takes client ids from usernames would
    /// otherwise have the two take each other's session.
    fn options(&self, commands: bool) -> rumqttc::MqttOptions {
        let (suffix, clean) = if commands {
            ("-commands", true)
        } else {
            ("-events", false)
        };
        let mut o = mqtt_client::options(
            &self.url,
            &format!("{}{suffix}", self.client_id),
            Duration::from_secs(15),
        );
        o.set_clean_session(clean);
        // A message too large for our client would fail the connection, and the broker would
        // send it again on every reconnect: no lane would decide again. So the client takes far
        // more than a device may send, and the decoder refuses it (counted, acked). The broker
        // config gatehouse generates refuses anything larger at the broker.
        o.set_max_packet_size(BROKER_MAX_PACKET, 1 << 20);
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            if commands {
                o.set_credentials(commands_username(u), p);
            } else {
                o.set_credentials(u, p);
            }
        }
        if let Some(t) = &self.tls {
            o.set_transport(t.clone());
        }
        o
    }
}

/// Runs the events connection until `shutdown`, then stops taking new events and keeps the
/// connection up (so acks still go out) until `release` fires, then disconnects.
pub async fn run_events(
    conn: Connection,
    routes: HashMap<String, Route>,
    core: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    mut release: oneshot::Receiver<()>,
) {
    let mut opts = conn.options(false);
    opts.set_manual_acks(true);
    let (client, mut el) = AsyncClient::new(opts, EVENTS_REQUEST_CAPACITY);
    el.set_network_options(mqtt_client::network_options());
    let filters: Vec<SubscribeFilter> = routes
        .keys()
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
        .collect();
    let mut core = Some(core);
    // Events waiting for room in the decision loop's input. The event loop keeps being polled
    // meanwhile (keep-alive, acks); only when this is full too does reading stop, and the broker
    // holds the rest (it sends no more than its in-flight window without our acks anyway).
    let mut waiting: VecDeque<Input> = VecDeque::new();
    let mut backoff = Backoff::device_link();
    let mut errors = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stall = crate::metrics::stall_at("SOURCE");
    loop {
        crate::metrics::stall_if_due(stall, "device source").await;
        Metrics::inc(&metrics.source_ticks);
        if let Some(tx) = &core {
            while !waiting.is_empty() {
                match tx.try_reserve() {
                    Ok(permit) => permit.send(waiting.pop_front().expect("not empty")),
                    Err(mpsc::error::TrySendError::Full(())) => break,
                    Err(mpsc::error::TrySendError::Closed(())) => return, // the decision loop is gone
                }
            }
        }
        let room = core.clone().filter(|_| !waiting.is_empty());
        let ev = tokio::select! {
            _ = tick.tick() => continue,
            _ = shutdown.changed(), if core.is_some() => {
                // Intake stops here; events already handed on are still acked when durable.
                // Those still waiting are dropped unacked: the broker redelivers them.
                core = None;
                waiting.clear();
                continue;
            }
            _ = &mut release, if core.is_none() => break,
            permit = async { room.as_ref().expect("guarded").reserve().await }, if room.is_some() => {
                match permit {
                    Ok(permit) => permit.send(waiting.pop_front().expect("not empty")),
                    Err(_) => return,
                }
                continue;
            }
            ev = el.poll(), if waiting.len() < WAITING_MAX => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(broker = %format!("{}:{}", conn.url.host, conn.url.port), topics = filters.len(), "Device broker connected.");
                metrics
                    .device_broker_connected
                    .store(true, Ordering::Relaxed);
                Metrics::inc(&metrics.device_connects);
                backoff.reset();
                if filters.is_empty() {
                    metrics.device_subscribed.store(true, Ordering::Relaxed);
                } else if let Err(e) = client.try_subscribe_many(filters.clone()) {
                    warn!(error = %e, "Could not queue the device subscriptions.");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                metrics.device_subscribed.store(true, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let received = Instant::now();
                // After shutdown began: not acked, so the broker redelivers it to the next run.
                if core.is_none() {
                    continue;
                }
                let (device, decoded) = if p.retain {
                    // A broker hands a retained message to each new subscription: an old event
                    // replayed, never one happening now (those come with the flag cleared).
                    let n = metrics.device_refusals.fetch_add(1, Ordering::Relaxed) + 1;
                    if worth_logging(n) {
                        warn!(topic = %p.topic, refusals = n, "Retained device message from the broker ignored (an old event, not a new one).");
                    }
                    (usize::MAX, None)
                } else {
                    decode(&routes, &p.topic, &p.payload, &metrics)
                };
                // Undecodable messages are acked too (redelivering garbage only repeats the
                // error), but through the same queue as the rest: MQTT wants acks in order.
                let redelivered = p.dup;
                let (c, m) = (client.clone(), metrics.clone());
                let ack: Ack = Box::new(move || {
                    // Not sent (the client's queue is gone or full): the broker sends the event
                    // again, and its durable decision acks it without deciding twice.
                    if let Err(e) = c.try_ack(&p) {
                        let n = m.ack_errors.fetch_add(1, Ordering::Relaxed) + 1;
                        if worth_logging(n) {
                            warn!(error = %e, failures = n, "Device ack not queued; the broker will redeliver.");
                        }
                    }
                });
                waiting.push_back(Input {
                    reply: None,
                    device,
                    decoded,
                    received,
                    redelivered,
                    ack,
                });
            }
            Ok(_) => {}
            Err(e) => {
                metrics
                    .device_broker_connected
                    .store(false, Ordering::Relaxed);
                metrics.device_subscribed.store(false, Ordering::Relaxed);
                errors += 1;
                if worth_logging(errors) {
                    warn!(error = %e, failures = errors, "Device broker connection failed; reconnecting.");
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut release, if core.is_none() => break,
                }
            }
        }
    }
    disconnect(&client, &mut el).await;
}

/// The commands connection: its client publishes, this task only polls. Returns the client and
/// a flag that is true while connected (a command is never queued for a later connection: a
/// stale "open" must not lift a barrier minutes later).
///
/// At every connect it clears what is retained on the command topics: a broker has no per-topic
/// retain switch, and a retained "hold_open" would reach a gate again after each of its reboots.
/// (It subscribes to them for a moment to learn what is retained there: clearing blindly would
/// send every gate an empty command.)
pub fn spawn_commands(
    conn: &Connection,
    command_topics: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) -> (AsyncClient, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let (client, mut el) = AsyncClient::new(conn.options(true), 4096);
    el.set_network_options(mqtt_client::network_options());
    let connected = Arc::new(AtomicBool::new(false));
    let flag = connected.clone();
    let c = client.clone();
    let join = tokio::spawn(async move {
        let mut backoff = Backoff::device_link();
        let mut errors = 0u64;
        loop {
            let ev = tokio::select! {
                _ = shutdown.changed() => break,
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    flag.store(true, Ordering::Relaxed);
                    backoff.reset();
                    if !command_topics.is_empty() {
                        let filters = command_topics
                            .iter()
                            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtMostOnce));
                        let _ = c.try_subscribe_many(filters);
                    }
                }
                // Retained messages come right after the SUBACK, ahead of the unsubscribe.
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    for t in &command_topics {
                        let _ = c.try_unsubscribe(t.as_str());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.retain && !p.payload.is_empty() => {
                    warn!(topic = %p.topic, "A command was retained on the device broker; cleared.");
                    let _ = c.try_publish(p.topic.as_str(), QoS::AtLeastOnce, true, Vec::new());
                }
                Ok(_) => {}
                Err(e) => {
                    flag.store(false, Ordering::Relaxed);
                    // rumqttc keeps what was in flight or queued to send it again after the
                    // reconnect (our session persists): a gate command must never go late.
                    el.pending.clear();
                    errors += 1;
                    if worth_logging(errors) {
                        warn!(error = %e, failures = errors, "Command connection failed; reconnecting.");
                    }
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        disconnect(&c, &mut el).await;
    });
    (client, connected, join)
}

/// Sends DISCONNECT and polls until it is out (or a short deadline passes).
pub async fn disconnect(client: &AsyncClient, el: &mut rumqttc::EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match el.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Where MQTT gate commands go: the device broker over TCP, or straight to the device on the
/// endpoint. QoS 0 either way: a QoS 1 publish caught by a reconnect is sent again, which would be
/// an open retried seconds late, for whoever stands there then.
pub enum CommandLink {
    Client(AsyncClient),
    Endpoint(Endpoint),
}

impl CommandLink {
    /// False when it could not be handed over (queue full, link gone): the command is dropped.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        match self {
            CommandLink::Client(c) => c
                .try_publish(topic, QoS::AtMostOnce, false, payload)
                .is_ok(),
            CommandLink::Endpoint(e) => e.publish(topic, payload),
        }
    }
}

/// The MQTT device side, running: where gate commands go, whether that link is up, and the
/// tasks to wait for at shutdown.
pub struct MqttDevices {
    /// Where devices (and simulators) reach the device-side broker.
    pub broker: BrokerUrl,
    pub commands: CommandLink,
    pub commands_connected: Arc<AtomicBool>,
    pub events: tokio::task::JoinHandle<()>,
    pub commands_join: Option<tokio::task::JoinHandle<()>>,
    /// Fired once the writer has acked its last batch: the events connection may close then.
    pub release: oneshot::Sender<()>,
}

impl MqttDevices {
    /// Starts the device endpoint or connects to the external broker, and starts the events
    /// and commands tasks.
    pub async fn start(
        section: &DeviceBrokerSection,
        routes: HashMap<String, Route>,
        identities: Vec<Identity>,
        input: mpsc::Sender<Input>,
        events: mpsc::Sender<SourceEvent>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<MqttDevices> {
        let (release, release_rx) = oneshot::channel();
        match section.mode {
            BrokerMode::Endpoint => {
                let identities = with_secrets(section, identities)?;
                // A bad certificate or key stops the start here.
                let tls = match (section.tls_listen, &section.tls_cert, &section.tls_key) {
                    (Some(listen), Some(cert), Some(key)) => Some(endpoint::Tls {
                        listen,
                        acceptor: mqtt_client::tls_acceptor(
                            cert,
                            key,
                            section.client_ca.as_deref(),
                        )
                        .context("device_broker TLS")?,
                    }),
                    _ => None,
                };
                let (endpoint, join) = Endpoint::start(endpoint::Start {
                    listen: section.listen,
                    tls,
                    limits: endpoint::Limits {
                        unauthenticated: section.max_unauthenticated,
                        per_address: section.max_per_address,
                        connect_timeout: Duration::from_millis(section.connect_timeout_ms),
                        inflight: section.max_inflight,
                        inflight_bytes: section.max_inflight_kib * 1024,
                        max_packet: MAX_PACKET,
                    },
                    identities,
                    routes,
                    input,
                    events,
                    metrics,
                    shutdown,
                    release: release_rx,
                })
                .await?;
                let listen = endpoint.addr;
                let host = if listen.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    listen.ip().to_string()
                };
                Ok(MqttDevices {
                    broker: BrokerUrl {
                        tls: false,
                        host,
                        port: listen.port(),
                    },
                    commands: CommandLink::Endpoint(endpoint),
                    // Whether a device is there is the endpoint's to say, command by command.
                    commands_connected: Arc::new(AtomicBool::new(true)),
                    events: join,
                    commands_join: None,
                    release,
                })
            }
            BrokerMode::External => {
                let broker = BrokerUrl::parse(section.url.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)
                    .context("device_broker.url")?;
                // `mqtts://` is TLS or no start at all: never the password in plain text.
                let tls = if broker.tls {
                    let client = section
                        .client_cert
                        .as_deref()
                        .zip(section.client_key.as_deref());
                    let t = mqtt_client::tls_transport(section.ca_file.as_deref(), client)
                        .context("device_broker TLS")?;
                    Some(t)
                } else {
                    None
                };
                let password = match &section.password_file {
                    Some(f) => Some(
                        std::fs::read_to_string(f)
                            .with_context(|| {
                                format!("device_broker.password_file {}", f.display())
                            })?
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string(),
                    ),
                    None => section.password.clone(),
                };
                let conn = Connection {
                    url: broker.clone(),
                    client_id: section.client_id.clone(),
                    username: section.username.clone(),
                    password,
                    tls,
                };
                let command_topics = identities
                    .iter()
                    .filter_map(|i| i.command_topic.clone())
                    .collect();
                let (client, connected, join) =
                    spawn_commands(&conn, command_topics, shutdown.clone());
                let events = tokio::spawn(run_events(
                    conn, routes, input, metrics, shutdown, release_rx,
                ));
                Ok(MqttDevices {
                    broker,
                    commands: CommandLink::Client(client),
                    commands_connected: connected,
                    events,
                    commands_join: Some(join),
                    release,
                })
            }
        }
    }
}

/// Largest MQTT packet a device may send: a payload at the decoder's limit plus room for the
/// header. A larger publish is skipped unread, acknowledged and counted.
pub const MAX_PACKET: usize = crate::device::MAX_PAYLOAD + 4096;

/// The username of our commands connection on an external broker: ours with `-commands`.
pub fn commands_username(username: &str) -> String {
    format!("{username}-commands")
}

/// Largest packet our client takes from an external device broker (see [`Connection`]).
pub const BROKER_MAX_PACKET: usize = 16 << 20;

/// The identities with their passwords from the secrets file; a device with neither a hash nor
/// a line there connects on its username alone (development only; see the config checks).
fn with_secrets(
    section: &DeviceBrokerSection,
    mut identities: Vec<Identity>,
) -> anyhow::Result<Vec<Identity>> {
    let secrets = match &section.secrets_file {
        Some(f) => crate::config::secrets::read_secrets(f).map_err(anyhow::Error::msg)?,
        None => HashMap::new(),
    };
    for who in &mut identities {
        if let Some(p) = secrets.get(&who.id) {
            who.secret = crate::config::secrets::Secret::Plain(p.clone());
        }
        if matches!(who.secret, crate::config::secrets::Secret::None) {
            warn!(device = %who.id, "Device has no secret: it connects on its username alone (development only).");
        }
    }
    Ok(identities)
}
