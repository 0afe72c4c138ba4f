//! Wiring: builds every part from the config (each with its own constructor), connects them
//! with bounded channels, starts them, and stops them in order.
//!
//! ```text
//! sources ──Input──► decision loop ──command──► gates (first, fast path: actuate.rs)
//!    ▲                    │
//!    └─ ack after commit ─┴──Append──► outbox writer ──committed──► uplink ──PUBACK──┐
//!                                            ▲                                        │
//!                                            └──────────── delete ────────────────────┘
//! ```
//!
//! Shutdown travels apart from the data: a watch flips, the sources stop taking new events and
//! drop their senders, and the close ripples down the channels — the decision loop drains, the
//! writer commits its last batch and acks it, the uplink sends what it can before the deadline,
//! says "offline" and disconnects.
pub mod actuate;
pub mod boot;
pub mod console;
pub mod control;
pub mod decisions;
pub mod exporter;
pub mod intake;
pub mod lanes;
pub mod order_desk;
mod order_quota;
pub mod records;
pub mod status;

use crate::clock::ClockWatch;
use crate::config::Config;
use crate::decision::barrier::BarrierConfig;
use crate::decision::{Core, Mode, Output, Registry};
use crate::device::Profiles;
use crate::metrics::Metrics;
use crate::mqtt_client::BrokerUrl;
use crate::store::outbox::{self, Append, WriterConfig};
use crate::uplink::stats::{Pending, Stats};
use crate::uplink::{OrdersIn, StatsOut, StatusSource, Uplink, UplinkConfig, ORDER_QUEUE_KIB};
use decisions::{DecisionLoop, Inbox};
use lanes::LanePlan;
use order_desk::{Gatekeeper, OrderDesk, OrderTime};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, warn};

/// How long a stop may take before stragglers are abandoned (systemd's stop timeout is longer).
pub const STOP_DEADLINE: Duration = Duration::from_secs(4);

// The decision loop's other inboxes (device input's is `sources::INPUT_CAPACITY`). Full, the
// sender waits: nothing here is dropped.
/// Statistics periods the broker acknowledged: the uplink waits.
const STATS_ACKED: usize = 64;
/// Orders as they arrive, before the gatekeeper checks them: the uplink stops reading orders
/// (their bytes are bounded apart, `ORDER_QUEUE_KIB`).
const ORDERS_RAW: usize = 256;
/// Orders checked, waiting for the decision loop: the gatekeeper waits.
const ORDERS_CHECKED: usize = 16;
/// Results of orders, waiting for the uplink: the gatekeeper and the desk wait.
const ORDER_RESULTS: usize = 64;
/// Registries written to the store, waiting to be swapped in: the desk waits.
const REGISTRY_SWAPS: usize = 4;
/// `gatehouse mode` and `fire-reset` requests: the socket's handler waits.
const CONTROL_REQUESTS: usize = 16;

/// A running gateway.
pub struct Daemon {
    pub metrics: Arc<Metrics>,
    /// Where devices (and simulators) reach the device-side broker.
    pub device_broker: BrokerUrl,
    shutdown: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Starts everything; returns once the device side is subscribed (or after a short wait if
    /// the device broker is unreachable: the gate keeps trying and decides as soon as it can).
    pub async fn start(config: Config, profiles: Profiles) -> anyhow::Result<Daemon> {
        config.validate(&profiles)?;
        let boot = boot::boot(&config)?;
        // The console's visitor passes, to add again after each sync from above.
        let local_passes = (boot.store.local_passes())
            .unwrap_or_else(|e| {
                error!(error = %e, "The console's visitor passes cannot be read; they do not admit until they can.");
                Vec::new()
            })
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let metrics = Arc::new(Metrics::default());
        let clock = clock_watch(&config);
        let mut plan = LanePlan::build(&config, &profiles);
        let gateway = &config.gateway.id;

        // The decision core with its barriers under the interlock, its state restored; what the
        // uplink and `status` show of it.
        let (core, mut start_outputs) = restored_core(&config, &plan, boot.registry, &boot.state);
        let mut status = status::source(gateway, &plan, &core, &boot.store, &metrics, &clock);

        let writer_config = WriterConfig::from_config(gateway, &config.store, clock.clone());
        let writer = outbox::spawn(boot.store.clone(), writer_config, metrics.clone())?;
        status.boot = writer.generation;
        // The console watches from before the first record: the start's own alarms included.
        let console_tap = config.console.listen.map(|_| writer.tap.subscribe());
        if !boot.alarms.is_empty() {
            let (records, state) = (boot.alarms, Vec::new());
            let _ = writer
                .appends
                .send(Append {
                    records,
                    state,
                    ack: None,
                })
                .await;
        }

        let (stats, stats_pending) =
            restored_stats(&config, &boot.state, &core, &mut start_outputs);
        let (stats_acked_tx, stats_acked) = mpsc::channel(STATS_ACKED);

        // Orders from above: in through the uplink, checked by the gatekeeper off the decision
        // loop, applied on it; results back out through the uplink.
        let (raw_tx, raw_rx) = mpsc::channel(ORDERS_RAW);
        let (checked_tx, checked_rx) = mpsc::channel(ORDERS_CHECKED);
        let (results_tx, results_rx) = mpsc::channel(ORDER_RESULTS);
        let (swaps_tx, swaps_rx) = mpsc::channel(REGISTRY_SWAPS);
        // What sources (and the uplink, of a poisoned command topic) tell the decision loop.
        let (events_tx, source_events) = mpsc::channel(intake::SOURCE_EVENTS);
        let time = OrderTime {
            store_created: Arc::new(AtomicI64::new(0)),
            clock: clock.clone(),
        };
        let console_store = boot.store.clone();
        let (store, results) = (boot.store.clone(), results_tx.clone());
        let desk = OrderDesk::new(
            &config,
            &boot.state,
            store,
            time.clone(),
            results,
            swaps_tx,
            metrics.clone(),
        );
        let gatekeeper = Gatekeeper::new(&config, time, results_tx, metrics.clone());

        // The uplink is built before anything is spawned: a bad CA file or password file stops
        // the start here.
        let uplink = Uplink::new(
            UplinkConfig::from_config(&config)?,
            boot.store,
            writer.committed.clone(),
            writer.deletes,
            status.clone(),
        )?
        .with_orders(OrdersIn {
            to_check: raw_tx,
            results: results_rx,
            queued: Arc::new(Semaphore::new(ORDER_QUEUE_KIB)),
            alarms: events_tx.clone(),
        })
        .with_stats(StatsOut {
            pending: stats_pending.clone(),
            acked: stats_acked_tx,
        });

        let (shutdown_tx, shutdown) = watch::channel(false);
        let mut intake = intake::start(&config, &mut plan, &metrics, events_tx, &shutdown).await?;
        let (control_tx, control) = mpsc::channel(CONTROL_REQUESTS);
        let console = ConsoleWiring {
            to_core: control_tx.clone(),
            appends: writer.appends.clone(),
            tap: console_tap,
            status: &status,
            store: console_store,
            gated: plan.policy.lanes.iter().map(|l| l.gate.is_some()).collect(),
        };
        intake
            .joins
            .extend(serve_console(&config, console, &shutdown).await);
        intake
            .joins
            .extend(serve_control(&config, control_tx, &status, &shutdown));
        let scoreboard = serve_metrics(&config, &status, &shutdown, &mut intake.joins).await;
        let mut decisions = DecisionLoop::new(
            core,
            intake.actuators,
            writer.appends,
            status,
            desk,
            stats,
            stats_pending,
        );
        decisions.scoreboard = scoreboard;
        decisions.local_passes = local_passes;
        let inbox = Inbox {
            input: intake.input,
            control,
            source_events,
            barrier_reports: intake.barrier_reports,
            orders: checked_rx,
            stats_acked,
            swaps: swaps_rx,
        };
        let tasks = Tasks {
            decisions: tokio::spawn(decisions.run(inbox, start_outputs)),
            appends_done: writer.appends_done,
            release: intake.release,
            uplink: {
                let (finish, finish_rx) = oneshot::channel();
                (finish, tokio::spawn(uplink.run(finish_rx)))
            },
            mqtt_events: intake.mqtt_events,
            writer: writer.join,
            others: intake.joins,
        };
        tokio::spawn(gatekeeper.run(raw_rx, checked_tx));
        let daemon = Daemon {
            metrics,
            device_broker: intake.device_broker,
            shutdown: shutdown_tx,
            supervisor: tokio::spawn(tasks.stop_in_order(shutdown)),
        };
        daemon.wait_subscribed(Duration::from_secs(3)).await;
        Ok(daemon)
    }

    async fn wait_subscribed(&self, patience: Duration) {
        let until = Instant::now() + patience;
        while !self.metrics.device_subscribed.load(Ordering::Relaxed) {
            if Instant::now() > until {
                warn!("Device broker not reachable yet; starting anyway and retrying.");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops intake, flushes the outbox, says "offline" upstream, disconnects.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(STOP_DEADLINE + Duration::from_secs(1), self.supervisor).await;
    }

    /// Signals shutdown without waiting (for a second Ctrl-C, a watchdog).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Everything that runs, in the order a stop takes them.
struct Tasks {
    decisions: JoinHandle<()>,
    /// Fired once the writer has committed and acked the last append.
    appends_done: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
    uplink: (oneshot::Sender<tokio::time::Instant>, JoinHandle<()>),
    mqtt_events: JoinHandle<()>,
    writer: JoinHandle<()>,
    others: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Waits for the stop, then lets the close ripple: sources → decision loop → writer → uplink.
    async fn stop_in_order(self, mut stop: watch::Receiver<bool>) {
        let _ = stop.changed().await;
        let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
        let _ = tokio::time::timeout_at(deadline, self.decisions).await;
        let _ = tokio::time::timeout_at(deadline, self.appends_done).await;
        let _ = self.release.send(());
        // Leave the uplink time to say "offline" before the deadline.
        let (finish, uplink) = self.uplink;
        let _ = finish.send(deadline - Duration::from_millis(700));
        if tokio::time::timeout_at(deadline, uplink).await.is_err() {
            warn!("Uplink did not finish before the stop deadline.");
        }
        let _ = tokio::time::timeout_at(deadline, self.mqtt_events).await;
        let _ = tokio::time::timeout_at(deadline, self.writer).await;
        for j in self.others {
            let _ = tokio::time::timeout_at(deadline, j).await;
        }
    }
}

/// The wall clock, and whether it may be trusted from the start.
fn clock_watch(config: &Config) -> Arc<ClockWatch> {
    if config.orders.trust_clock {
        warn!("[commands] trust_clock is deprecated: write [clock] trusted = true.");
    }
    let clock = Arc::new(ClockWatch::new(
        config.clock.trusted || config.orders.trust_clock,
    ));
    if !clock.trusted() {
        warn!("The clock is not known to be right (not synced, not vouched for): visitor passes and orders from above wait for it; records say clock_unsynced.");
    }
    clock
}

/// The decision core with its barriers under the interlock, and its state as the store left it;
/// with what it must say at once (fire found in the store holds every gate open).
fn restored_core(
    config: &Config,
    plan: &LanePlan,
    registry: Registry,
    state: &[(String, Vec<u8>)],
) -> (Core, Vec<Output>) {
    let mut core = Core::new(plan.policy.clone(), registry, Mode::Normal);
    let barriers = plan.buses.iter().flat_map(|bus| &bus.devices).map(|d| {
        let lane = plan.policy.devices[d.device].lane;
        let config = BarrierConfig {
            auto_close: config.lanes.get(lane).is_some_and(|l| l.auto_close),
            confirm_ms: config.rules.barrier_confirm_ms as i64,
        };
        (d.device, config)
    });
    let out = decisions::restore_core(&mut core, barriers, state, config.rules.mode);
    (core, out)
}

/// Statistics: the period in progress and finished ones not yet acknowledged upstream, as the
/// store left them (what they put back in the durable state goes out with the start's outputs).
fn restored_stats(
    config: &Config,
    state: &[(String, Vec<u8>)],
    core: &Core,
    out: &mut Vec<Output>,
) -> (Stats, Arc<Pending>) {
    let pending = Arc::new(Pending::default());
    let period_ms = config.uplink.stats_period_s.max(1) as i64 * 1000;
    let lane_ids = config.lanes.iter().map(|l| l.id.clone()).collect();
    let mut stats = Stats::new(&config.gateway.id, lane_ids, period_ms, crate::now_ms());
    let restored = stats.restore_from(state, &pending, core.inside());
    out.extend(restored.into_iter().map(|(k, v)| Output::State(k, v)));
    (stats, pending)
}

/// The local control socket. Without it the gate still works; only the local mode commands do
/// not.
fn serve_control(
    config: &Config,
    to_core: mpsc::Sender<control::Control>,
    status: &StatusSource,
    shutdown: &watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let served = control::serve(&config.store.dir, to_core, status.clone(), shutdown.clone());
    served
        .map_err(|e| error!(error = %e, "Control socket unavailable: `gatehouse mode` and `gatehouse fire-reset` cannot reach this daemon."))
        .ok()
}

/// What the console takes from the rest of the daemon.
struct ConsoleWiring<'a> {
    to_core: mpsc::Sender<control::Control>,
    appends: mpsc::Sender<Append>,
    tap: Option<outbox::TapRx>,
    status: &'a StatusSource,
    store: crate::store::Store,
    /// Which lanes have a gate, in config order.
    gated: Vec<bool>,
}

/// The guard's console, when configured. A gate without it still works: a console that cannot
/// start (its port taken, its certificate unreadable) is logged, never a reason to stop.
async fn serve_console(
    config: &Config,
    w: ConsoleWiring<'_>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let c = &config.console;
    let (Some(listen), Some(tap)) = (c.listen, w.tap) else {
        return Vec::new();
    };
    let lanes = (config.lanes.iter().enumerate())
        .map(|(i, l)| console::live::Lane {
            has_gate: w.gated.get(i).copied().unwrap_or(false),
            id: l.id.clone(),
            direction: match l.direction {
                crate::decision::Direction::In => "in",
                crate::decision::Direction::Out => "out",
            },
            devices: (l.devices.iter())
                .map(|d| (d.id.clone(), d.role.as_str().into(), d.profile.clone()))
                .collect(),
        })
        .collect();
    let tls = match c.tls() {
        None => None,
        Some((cert, key)) => match crate::mqtt_client::tls_acceptor(cert, key, None) {
            Ok(a) => Some(a),
            Err(e) => {
                error!(error = %e, "Console not started: its certificate or key is unreadable.");
                return Vec::new();
            }
        },
    };
    let view = Arc::new(console::live::View::new(
        w.status.clone(),
        lanes,
        &config.store.dir,
    ));
    let feed = tokio::spawn(console::live::feed(view.clone(), tap, shutdown.clone()));
    let start = console::Start {
        listen,
        tls,
        users: c.users.clone(),
        booth: c.booth.clone(),
        store_dir: config.store.dir.clone(),
        to_core: w.to_core,
        appends: w.appends,
        view,
        clock: w.status.clock.clone(),
        gateway: config.gateway.id.clone(),
        store: w.store,
        visitor_retention_days: c.visitor_retention_days,
    };
    match console::serve(start, shutdown.clone()).await {
        Ok((_, served)) => vec![feed, served],
        Err(e) => {
            error!(error = %e, "Console not started; the gate works without it.");
            feed.abort();
            Vec::new()
        }
    }
}

/// The operations team's `/metrics` and `/health`, when configured; a gate without them still
/// works.
async fn serve_metrics(
    config: &Config,
    status: &StatusSource,
    shutdown: &watch::Receiver<bool>,
    joins: &mut Vec<JoinHandle<()>>,
) -> Option<Arc<exporter::DecisionMetrics>> {
    let listen = config.metrics.listen?;
    let lanes: Vec<String> = config.lanes.iter().map(|l| l.id.clone()).collect();
    let (registry, counts) = exporter::registry(&lanes, status.clone());
    match exporter::serve(listen, registry, status.clone(), shutdown.clone()).await {
        Ok(j) => {
            joins.push(j);
            Some(counts)
        }
        Err(e) => {
            error!(error = %e, "Metrics endpoint unavailable; the gate works without it.");
            None
        }
    }
}
