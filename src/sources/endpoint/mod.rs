//! The device endpoint: gatehouse takes the devices' MQTT connections itself, so there is no
//! broker between a device and the decision, and nothing on the LAN that anyone can publish to.
//!
//! - **Identity.** Each MQTT device connects with its id as username and its secret; unknown and
//!   anonymous clients are refused at CONNECT. One session per device: only the device's own
//!   credentials can take it over.
//! - **Bound to its topics.** A device publishes only on its event and status topics and
//!   subscribes only to its own command topic; commands are routed to the device, never matched
//!   across sessions. No retained store (a retained publish is taken as plain and counted); a
//!   persistent session keeps its subscriptions only — commands are never queued.
//! - **At-least-once end to end.** A QoS 1 event gets its PUBACK once its decision is durable (the
//!   outbox writer runs the ack), in the order the events came (MQTT 3.1.1 §4.6).
//! - **Limits.** Sockets that have not authenticated are capped globally and per address and
//!   have a CONNECT deadline; each device has an in-flight window (messages and bytes) past which
//!   its socket is not read; an oversized publish is skipped unread, acked and counted.
//!
//! Every refusal is counted, logged at the 1st, 10th, 100th…, and raises a `device_misbehaving`
//! alarm upstream (at most once a minute per device, and once a minute for unknown clients).
//!
//! The wire format is MQTT 3.1.1, read and written with rumqttc's codec (`mqttbytes::v4`), the
//! same one rumqttd uses.
mod identity;
mod session;

pub use identity::Identity;

use crate::metrics::{worth_logging, Metrics};
use crate::sources::Route;
use crate::sources::{Input, SourceEvent};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

/// The endpoint's limits (config `[device_broker]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sockets accepted but not yet authenticated, in all.
    pub unauthenticated: usize,
    /// … and from one address.
    pub per_address: usize,
    /// Time from accept to a valid CONNECT.
    pub connect_timeout: Duration,
    /// QoS 1 messages of one device handed on and not yet acknowledged: past this its socket is
    /// not read until acks go out.
    pub inflight: usize,
    /// The same window in payload bytes.
    pub inflight_bytes: usize,
    /// Largest packet taken; a larger publish is skipped unread (acked and counted).
    pub max_packet: usize,
}

/// Gate commands waiting to be written to one device (a burst of decisions on its lane). One
/// that waited longer than [`COMMAND_MAX_AGE`] is dropped: a stale open must not lift a barrier.
const COMMAND_QUEUE: usize = 256;
const COMMAND_MAX_AGE: Duration = Duration::from_secs(1);

/// Largest CONNECT: no device needs more, and sockets not yet authenticated hold at most this.
const CONNECT_MAX: usize = 16 * 1024;

/// A device message's decision is durable: its PUBACK (PUBREC for QoS 2) is written, which also
/// frees its place in the in-flight window. Their channel has room for the whole window.
pub(crate) struct Ack {
    pkid: u16,
    /// 0: nothing to send back (a QoS 0 publish still held its place in the window until it was
    /// decided and recorded); 1: PUBACK; 2: PUBREC.
    qos: u8,
    bytes: usize,
}

/// A gate command (QoS 0) for the device.
pub(crate) struct Command {
    topic: String,
    payload: Vec<u8>,
    queued: Instant,
}

/// The connection a device has now.
struct Live {
    generation: u64,
    commands: mpsc::Sender<Command>,
    /// Fired to end the connection (taken over by a new one of the same device).
    kill: Arc<Notify>,
}

/// A device's session: the connection it has now, and its subscriptions (kept across a
/// reconnect for a persistent session).
#[derive(Default)]
struct Slot {
    live: Option<Live>,
    subscriptions: Vec<String>,
    generation: u64,
}

pub(crate) struct Shared {
    identities: Vec<Identity>,
    by_user: HashMap<String, usize>,
    by_command: HashMap<String, usize>,
    /// For each identity: every topic of every other device (a subscription matching one is
    /// refused).
    others: Vec<Vec<String>>,
    routes: HashMap<String, Route>,
    slots: Mutex<Vec<Slot>>,
    limits: Limits,
    /// Sockets not yet authenticated: strangers' share, per address, known devices' own.
    unauthenticated: Arc<crate::sources::slots::Slots>,
    refusals: crate::sources::Refusals,
    metrics: Arc<Metrics>,
    /// Intake stops (the daemon is stopping); connections stay up to write the last acks.
    shutdown: watch::Receiver<bool>,
    /// The last acks are out: connections close.
    released: watch::Receiver<bool>,
}

/// The running endpoint: where it listens, and the handle that routes gate commands.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
}

/// The endpoint's TLS listener.
pub struct Tls {
    pub listen: SocketAddr,
    pub acceptor: rumqttc::tokio_rustls::TlsAcceptor,
}

pub struct Start {
    pub listen: SocketAddr,
    pub tls: Option<Tls>,
    pub limits: Limits,
    pub identities: Vec<Identity>,
    pub routes: HashMap<String, Route>,
    pub input: mpsc::Sender<Input>,
    pub events: mpsc::Sender<SourceEvent>,
    pub metrics: Arc<Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// Fired once the writer has acked its last batch.
    pub release: tokio::sync::oneshot::Receiver<()>,
}

impl Endpoint {
    /// Binds the listener (a taken port is a start error) and starts accepting.
    pub async fn start(s: Start) -> anyhow::Result<(Endpoint, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .map_err(|e| anyhow::anyhow!("device endpoint on {}: {e}", s.listen))?;
        let addr = listener.local_addr()?;
        let tls = match s.tls {
            Some(t) => {
                let l = tokio::net::TcpListener::bind(t.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("device endpoint (TLS) on {}: {e}", t.listen))?;
                info!(listen = %l.local_addr()?, "Device endpoint listening for TLS.");
                Some((l, t.acceptor))
            }
            None => None,
        };
        let topics_of = |i: &Identity| -> Vec<String> {
            i.publishes
                .iter()
                .chain(i.command_topic.iter())
                .cloned()
                .collect()
        };
        let others = s
            .identities
            .iter()
            .map(|me| {
                s.identities
                    .iter()
                    .filter(|o| o.device != me.device)
                    .flat_map(topics_of)
                    .collect()
            })
            .collect();
        let (released_tx, released) = watch::channel(false);
        let shared = Arc::new(Shared {
            by_user: (s.identities.iter().enumerate())
                .map(|(i, d)| (d.id.clone(), i))
                .collect(),
            by_command: (s.identities.iter().enumerate())
                .filter_map(|(i, d)| Some((d.command_topic.clone()?, i)))
                .collect(),
            slots: Mutex::new((0..s.identities.len()).map(|_| Slot::default()).collect()),
            others,
            routes: s.routes,
            unauthenticated: crate::sources::slots::Slots::new(
                s.limits.unauthenticated,
                s.limits.per_address,
                s.identities.iter().filter_map(|d| d.from).collect(),
            ),
            identities: s.identities,
            limits: s.limits,
            refusals: crate::sources::Refusals::new(s.metrics.clone(), s.events),
            metrics: s.metrics,
            shutdown: s.shutdown,
            released,
        });
        shared
            .metrics
            .device_broker_connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        shared
            .metrics
            .device_subscribed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!(listen = %addr, devices = shared.identities.len(), "Device endpoint listening.");
        let join = tokio::spawn(accept(
            listener,
            tls,
            shared.clone(),
            s.input,
            s.release,
            released_tx,
        ));
        Ok((Endpoint { shared, addr }, join))
    }

    /// Hands a gate command to the device whose command topic this is, if it is connected and
    /// subscribed. False otherwise: the command is dropped, never queued for later.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        let sh = &self.shared;
        let Some(&i) = sh.by_command.get(topic) else {
            return false;
        };
        let slots = sh.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &slots[i];
        let Some(live) = &slot.live else {
            return false;
        };
        if !slot
            .subscriptions
            .iter()
            .any(|f| rumqttc::matches(topic, f))
        {
            return false;
        }
        live.commands
            .try_send(Command {
                topic: topic.to_string(),
                payload,
                queued: Instant::now(),
            })
            .is_ok()
    }
}

/// Accepts devices until shutdown; then, once the last acks are out (`release`), tells every
/// connection to close. The decision loop's input is held here and by the connections only
/// until shutdown, so the loop sees its input close and finishes.
async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<(tokio::net::TcpListener, rumqttc::tokio_rustls::TlsAcceptor)>,
    shared: Arc<Shared>,
    input: mpsc::Sender<Input>,
    mut release: tokio::sync::oneshot::Receiver<()>,
    released: watch::Sender<bool>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stall = crate::metrics::stall_at("SOURCE");
    let mut accept_errors = 0u64;
    let mut input = Some(input);
    loop {
        crate::metrics::stall_if_due(stall, "device source").await;
        Metrics::inc(&shared.metrics.source_ticks);
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed(), if input.is_some() => input = None,
            _ = &mut release => break,
            r = accept_tls(&tls), if input.is_some() && tls.is_some() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let Some(pending) = admit_socket(&shared, peer) else { continue };
                    let Some(input) = input.clone() else { continue };
                    let acceptor = tls.as_ref().map(|t| t.1.clone()).expect("guarded");
                    tokio::spawn(session::serve_tls(shared.clone(), input, acceptor, stream, peer, pending));
                }
                Err(e) => {
                    accept_errors += 1;
                    if worth_logging(accept_errors) {
                        warn!(error = %e, failures = accept_errors, "Device endpoint accept failed.");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            r = listener.accept(), if input.is_some() => match r {
                Ok((stream, peer)) => {
                    // Nagle and delayed ACKs would hold a gate command or a PUBACK for 40 ms.
                    let _ = stream.set_nodelay(true);
                    let Some(pending) = admit_socket(&shared, peer) else { continue };
                    let Some(input) = input.clone() else { continue };
                    tokio::spawn(session::serve(shared.clone(), input, stream, peer, pending, None));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, never spin.
                    accept_errors += 1;
                    if worth_logging(accept_errors) {
                        warn!(error = %e, failures = accept_errors, "Device endpoint accept failed.");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = released.send(true);
    shared
        .metrics
        .device_broker_connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
}

/// The next connection on the TLS listener (never, without one).
async fn accept_tls(
    tls: &Option<(tokio::net::TcpListener, rumqttc::tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match tls {
        Some((l, _)) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A new socket's place among those not yet authenticated, or `None` (refused and counted)
/// when there is no room ([`crate::sources::slots`]).
fn admit_socket(shared: &Arc<Shared>, peer: SocketAddr) -> Option<Pending> {
    match shared.unauthenticated.take(peer.ip()) {
        Ok(slot) => Some(slot),
        Err(why) => {
            shared.refuse(None, peer, why);
            None
        }
    }
}

/// A socket's place among the unauthenticated ones, given back once the device is known.
pub(crate) type Pending = crate::sources::slots::Slot;

impl Shared {
    /// Counts and logs a refusal, and raises `device_misbehaving` upstream unless one went for
    /// the same device (or for unknown clients) within the last minute.
    pub(crate) fn refuse(&self, device: Option<usize>, peer: SocketAddr, what: &str) {
        let id = device.map_or("unknown", |i| self.identities[i].id.as_str());
        let index = device.map(|i| self.identities[i].device);
        self.refusals.refuse(index, id, peer, what);
    }

    /// Registers a new connection for identity `i`, ending the one it had. Returns the
    /// connection's generation and whether a session was present.
    ///
    /// A persistent session is always present: a configured device's session exists as long as
    /// its configuration, and its only state here is its subscription to its own command topic
    /// (the one topic it may subscribe to), which survives gatehouse's restarts by being implied.
    /// Answering "present" is what makes a device send again what we had not acknowledged
    /// (clients discard their unacknowledged messages on a new session).
    fn attach(
        &self,
        i: usize,
        clean: bool,
        commands: mpsc::Sender<Command>,
        kill: Arc<Notify>,
    ) -> (u64, bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[i];
        if let Some(old) = slot.live.take() {
            old.kill.notify_one();
        }
        slot.generation += 1;
        let present = !clean;
        if clean {
            slot.subscriptions.clear();
        } else if slot.subscriptions.is_empty() {
            slot.subscriptions
                .extend(self.identities[i].command_topic.clone());
        }
        slot.live = Some(Live {
            generation: slot.generation,
            commands,
            kill,
        });
        let ready = !slot.subscriptions.is_empty();
        let generation = slot.generation;
        drop(slots);
        if ready {
            self.gate_ready(i);
        }
        (generation, present)
    }

    /// Device `i` can take gate commands now (see [`SourceEvent::GateReady`]).
    fn gate_ready(&self, i: usize) {
        let who = &self.identities[i];
        if who.command_topic.is_some() {
            let ready = SourceEvent::GateReady { device: who.device };
            let _ = self.refusals.events().try_send(ready);
        }
    }

    /// The connection of generation `generation` ended.
    fn detach(&self, i: usize, generation: u64, clean: bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[i];
        if slot
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            slot.live = None;
            if clean {
                slot.subscriptions.clear();
            }
        }
    }

    fn subscribe(&self, i: usize, filter: &str) -> bool {
        if !self.identities[i].may_subscribe(filter, &self.others[i]) {
            return false;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let subs = &mut slots[i].subscriptions;
        if !subs.iter().any(|f| f == filter) {
            subs.push(filter.to_string());
        }
        drop(slots);
        self.gate_ready(i);
        true
    }

    fn unsubscribe(&self, i: usize, filter: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots[i].subscriptions.retain(|f| f != filter);
    }
}
