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
pub mod control;
pub mod decisions;
pub mod exporter;
pub mod lanes;
pub mod orders;
pub mod records;

use crate::clock::ClockWatch;
use crate::config::Config;
use crate::decision::barrier::{Arm, BarrierConfig};
use crate::decision::{Core, Mode, Output};
use crate::device::Profiles;
use crate::metrics::Metrics;
use crate::mqtt_client::BrokerUrl;
use crate::proto::v1;
use crate::sources::mqtt::{MqttDevices, INPUT_CAPACITY};
use crate::sources::{modbus, serial};
use crate::store::outbox::{self, Append, WriterConfig};
use crate::uplink::stats::{Pending, Stats};
use crate::uplink::twins::Twins;
use crate::uplink::{OrdersIn, StatsOut, StatusSource, Uplink, UplinkConfig, ORDER_QUEUE_KIB};
use actuate::Actuators;
use decisions::{DecisionLoop, Inbox};
use lanes::LanePlan;
use orders::{Gatekeeper, OrderDesk, OrderTime};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tracing::{error, warn};

/// How long a stop may take before stragglers are abandoned (systemd's stop timeout is longer).
pub const STOP_DEADLINE: Duration = Duration::from_secs(4);

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
        let metrics = Arc::new(Metrics::default());
        if config.orders.trust_clock {
            warn!("[commands] trust_clock is deprecated: write [clock] trusted = true.");
        }
        let clock = Arc::new(ClockWatch::new(
            config.clock.trusted || config.orders.trust_clock,
        ));
        if !clock.trusted() {
            warn!("The clock is not known to be right (not synced, not vouched for): visitor passes and orders from above wait for it; records say clock_unsynced.");
        }
        let plan = LanePlan::build(&config, &profiles);

        // The decision core, its barriers under the interlock, its state restored.
        let mut core = Core::new(plan.policy.clone(), boot.registry, Mode::Normal);
        let barriers = plan.buses.iter().flat_map(|bus| &bus.devices).map(|d| {
            let lane = plan.policy.devices[d.device].lane;
            let config = BarrierConfig {
                auto_close: config.lanes.get(lane).is_some_and(|l| l.auto_close),
                confirm_ms: config.rules.barrier_confirm_ms as i64,
            };
            (d.device, config)
        });
        let mut start_outputs =
            decisions::restore_core(&mut core, barriers, &boot.state, config.rules.mode);

        // What the uplink shows: status, twins.
        let twins = Arc::new(Twins::default());
        for (i, (s, live)) in plan.status.iter().enumerate() {
            let arm = core.barrier(i).map(|_| Arm::Unknown.as_str().into());
            // Not read yet: unknown until its first debounced reading.
            let fire_input = core.policy.devices[i].role == crate::decision::Role::FireInput;
            let twin = v1::DeviceTwin {
                device: s.id.clone(),
                lane: s.lane.clone(),
                profile: s.profile.clone(),
                online: true,
                arm: arm.unwrap_or_default(),
                fire_input: if fire_input {
                    "unknown".into()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            twins.add(i, twin, live.clone());
        }
        let status = StatusSource {
            gateway: config.gateway.id.clone(),
            mode: Arc::new(Mutex::new(core.mode().as_str())),
            registry_version: Arc::new(AtomicU64::new(boot.store.registry_version().unwrap_or(0))),
            devices: plan.status.clone(),
            metrics: metrics.clone(),
            twins,
            clock: clock.clone(),
            changed: Arc::new(Notify::new()),
        };

        let gateway = &config.gateway.id;
        let writer = outbox::spawn(
            boot.store.clone(),
            WriterConfig::from_config(gateway, &config.store, clock.clone()),
            metrics.clone(),
        )?;
        if !boot.alarms.is_empty() {
            let first = Append {
                records: boot.alarms,
                state: Vec::new(),
                ack: None,
            };
            let _ = writer.appends.send(first).await;
        }

        // Statistics: the period in progress and finished ones not yet acknowledged upstream.
        let stats_pending = Arc::new(Pending::default());
        let period_ms = config.uplink.stats_period_s.max(1) as i64 * 1000;
        let lane_ids = config.lanes.iter().map(|l| l.id.clone()).collect();
        let mut stats = Stats::new(gateway, lane_ids, period_ms, crate::now_ms());
        let restored = stats.restore_from(&boot.state, &stats_pending, core.inside());
        start_outputs.extend(restored.into_iter().map(|(k, v)| Output::State(k, v)));
        let (stats_acked_tx, stats_acked_rx) = mpsc::channel(64);

        // Orders from above: in through the uplink, checked by the gatekeeper off the decision
        // loop, applied on it; results back out through the uplink.
        let (raw_tx, raw_rx) = mpsc::channel(256);
        let (checked_tx, checked_rx) = mpsc::channel(16);
        let (results_tx, results_rx) = mpsc::channel(64);
        let (swaps_tx, swaps_rx) = mpsc::channel(4);
        let time = OrderTime {
            store_created: Arc::new(AtomicI64::new(0)),
            clock: clock.clone(),
        };
        let orders = OrderDesk::new(
            &config,
            &boot.state,
            boot.store.clone(),
            time.clone(),
            results_tx.clone(),
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
        })
        .with_stats(StatsOut {
            pending: stats_pending.clone(),
            acked: stats_acked_tx,
        });

        // The sources: MQTT devices, serial ports, Modbus buses; each source's channel end.
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (input_tx, input_rx) = mpsc::channel(INPUT_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(256);
        let mqtt = MqttDevices::start(
            &config.device_broker,
            plan.routes,
            plan.identities,
            input_tx.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let mut joins = Vec::new();
        joins.push(crate::sources::liveness::spawn(
            plan.watched,
            events_tx.clone(),
            shutdown_rx.clone(),
        ));
        for f in plan.fire_inputs {
            joins.push(crate::sources::fire_input::spawn(
                f,
                events_tx.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            ));
        }
        joins.extend(
            start_http(
                &config,
                plan.http,
                plan.apis,
                &input_tx,
                &events_tx,
                &metrics,
                &shutdown_rx,
            )
            .await?,
        );
        let mut serial_writers = Vec::new();
        for port in plan.ports {
            let (w, j) = serial::spawn(
                port,
                input_tx.clone(),
                events_tx.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            );
            serial_writers.push(w);
            joins.push(j);
        }
        drop(input_tx);
        let (reports_tx, reports_rx) = mpsc::channel(1024);
        let mut modbus_writers = Vec::new();
        for bus in plan.buses {
            let (w, j) = modbus::spawn(
                bus,
                reports_tx.clone(),
                events_tx.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            );
            modbus_writers.push(w);
            joins.push(j);
        }
        drop(reports_tx);
        let (control_tx, control_rx) = mpsc::channel(16);
        // Without its control socket the gate still works; only the local mode commands do not.
        match control::serve(
            &config.store.dir,
            control_tx,
            status.clone(),
            shutdown_rx.clone(),
        ) {
            Ok(j) => joins.push(j),
            Err(e) => {
                error!(error = %e, "Control socket unavailable: `gatehouse mode` and `gatehouse fire-reset` cannot reach this daemon.");
            }
        }
        joins.extend(mqtt.commands_join);

        let actuators = Actuators {
            by_device: plan.actuators,
            mqtt: mqtt.commands,
            mqtt_connected: mqtt.commands_connected,
            serial: serial_writers,
            modbus: modbus_writers,
            metrics: metrics.clone(),
        };
        // The operations team's endpoint; a gate without it still works.
        let mut scoreboard = None;
        if let Some(listen) = config.metrics.listen {
            let lanes: Vec<String> = config.lanes.iter().map(|l| l.id.clone()).collect();
            let (registry, counts) = exporter::registry(&lanes, status.clone());
            match exporter::serve(listen, registry, status.clone(), shutdown_rx.clone()).await {
                Ok(j) => {
                    joins.push(j);
                    scoreboard = Some(counts);
                }
                Err(e) => {
                    error!(error = %e, "Metrics endpoint unavailable; the gate works without it.")
                }
            }
        }
        let mut decisions = DecisionLoop::new(
            core,
            actuators,
            writer.appends,
            status,
            orders,
            stats,
            stats_pending,
        );
        decisions.scoreboard = scoreboard;
        let inbox = Inbox {
            input: input_rx,
            control: control_rx,
            source_events: events_rx,
            barrier_reports: reports_rx,
            orders: checked_rx,
            stats_acked: stats_acked_rx,
            swaps: swaps_rx,
        };
        let core_join = tokio::spawn(decisions.run(inbox, start_outputs));
        tokio::spawn(gatekeeper.run(raw_rx, checked_tx));
        let (finish_tx, finish_rx) = oneshot::channel();
        let uplink_join = tokio::spawn(uplink.run(finish_rx));

        let mut stop = shutdown_rx;
        let appends_done = writer.appends_done;
        let writer_join = writer.join;
        let events_join = mqtt.events;
        let release_tx = mqtt.release;
        let supervisor = tokio::spawn(async move {
            let _ = stop.changed().await;
            let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
            // The close ripples: sources → decision loop → writer.
            let _ = tokio::time::timeout_at(deadline, core_join).await;
            let _ = tokio::time::timeout_at(deadline, appends_done).await;
            let _ = release_tx.send(());
            // Leave the uplink time to say "offline" before the deadline.
            let _ = finish_tx.send(deadline - Duration::from_millis(700));
            if tokio::time::timeout_at(deadline, uplink_join)
                .await
                .is_err()
            {
                warn!("Uplink did not finish before the stop deadline.");
            }
            let _ = tokio::time::timeout_at(deadline, events_join).await;
            let _ = tokio::time::timeout_at(deadline, writer_join).await;
            for j in joins {
                let _ = tokio::time::timeout_at(deadline, j).await;
            }
        });

        let daemon = Daemon {
            metrics,
            device_broker: mqtt.broker,
            shutdown: shutdown_tx,
            supervisor,
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

/// The HTTP device listener (when a device pushes over HTTP) and the tasks of the devices whose
/// own API gatehouse speaks. Device passwords come from the config's hashes or the secrets file.
async fn start_http(
    config: &Config,
    mut devices: Vec<crate::sources::http::HttpDevice>,
    apis: Vec<crate::sources::http::api::ApiDevice>,
    input: &mpsc::Sender<crate::sources::Input>,
    events: &mpsc::Sender<crate::sources::SourceEvent>,
    metrics: &Arc<Metrics>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use crate::config::secrets::{read_secrets, Secret};
    use crate::sources::http;
    let mut joins = Vec::new();
    if devices.is_empty() {
        return Ok(joins);
    }
    let secrets = match &config.device_broker.secrets_file {
        Some(f) => read_secrets(f).map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    for d in &mut devices {
        if let Some(p) = secrets.get(&d.device_id) {
            d.secret = Secret::Plain(p.clone());
        }
        if let Some(sn) = &d.adms_sn {
            warn!(device = %d.device_id, sn = %sn, from = ?d.from, "ZKTeco ADMS device: taken on its serial number and address alone (ADMS has no authentication; opted in with adms_open).");
        } else if matches!(d.secret, Secret::None) {
            warn!(device = %d.device_id, "HTTP device has no secret: its pushes are taken on its id alone (development only).");
        }
    }
    let h = &config.device_http;
    let (_, join) = http::start(http::Start {
        listen: h.listen,
        limits: http::Limits {
            connections: h.max_connections,
            header_timeout: Duration::from_millis(h.header_timeout_ms),
            body_timeout: Duration::from_millis(h.body_timeout_ms),
            max_body: h.max_body_kib * 1024,
        },
        devices,
        input: input.clone(),
        events: events.clone(),
        refusals: Arc::new(crate::sources::Refusals::new(
            metrics.clone(),
            events.clone(),
        )),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    })
    .await?;
    joins.push(join);
    let ctx = http::api::Context {
        input: input.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    for api in apis {
        let secret = secrets.get(&api.device_id).cloned();
        joins.extend(http::api::spawn(api, secret, ctx.clone())?);
    }
    Ok(joins)
}
