//! Wiring: builds every part from the config, starts them, and stops them in order.
//!
//! ```text
//! events task ──Input──► decision loop ──command──► commands connection (first, fast path)
//!     ▲                        │
//!     └──── ack after commit ──┴──Append──► outbox writer ──committed──► uplink ──PUBACK──┐
//!                                                ▲                                        │
//!                                                └──────────── delete ────────────────────┘
//! ```
//!
//! Shutdown travels apart from the data: a watch flips, the events task stops taking new events
//! and drops its sender, and the close ripples down the channels — the decision loop drains, the
//! writer commits its last batch and acks it, the uplink sends what it can before the deadline,
//! says "offline" and disconnects.
use crate::broker;
use crate::config::{BrokerMode, BrokerUrl, Config};
use crate::core::{self, DevicePolicy, LanePolicy, Policy, Registry, SubjectKind};
use crate::metrics::{worth_logging, Metrics};
use crate::profiles::{CommandArgs, Profile, Profiles};
use crate::proto::v1;
use crate::sources::mqtt::{self as mqtt_source, Connection, Input, Route};
use crate::store::outbox::{self, Append, Record, WriterConfig};
use crate::store::{Imported, Store};
use crate::uplink::{StatusSource, Uplink, UplinkConfig};
use anyhow::Context;
use rumqttc::{AsyncClient, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

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

/// Where a lane's commands go.
struct Actuator {
    device_id: String,
    topic: String,
    profile: Arc<Profile>,
}

impl Daemon {
    /// Starts everything; returns once the device side is subscribed (or after a short wait if
    /// the device broker is unreachable: the gate keeps trying and decides as soon as it can).
    pub async fn start(config: Config, profiles: Profiles) -> anyhow::Result<Daemon> {
        config.validate(&profiles)?;
        let (store, moved_aside) = Store::open_or_recover(&config.store.dir)?;
        // What went wrong at start, told upstream as the first records.
        let mut start_alarms = Vec::new();
        let alarm = |kind: v1::AlarmKind, detail: String| {
            Record::Alarm(v1::Alarm {
                gateway_time_ms: crate::now_ms(),
                kind: kind as i32,
                detail,
                ..Default::default()
            })
        };
        if let Some(m) = moved_aside {
            start_alarms.push(alarm(
                v1::AlarmKind::StorageLoss,
                format!(
                    "store was damaged ({}); moved to {}; records not yet sent upstream are lost",
                    m.error,
                    m.to.display()
                ),
            ));
        }
        if let Some(file) = &config.registry.import {
            match store.import_residents(file, config.registry.max_residents) {
                Ok(Imported::Replaced { residents }) => {
                    info!(file = %file.display(), residents, "Resident list imported.")
                }
                Ok(Imported::Unchanged) => {}
                Err(e) => {
                    error!(error = %e, "Resident list refused; keeping the stored list.");
                    start_alarms.push(alarm(
                        v1::AlarmKind::RegistryRefused,
                        format!("resident list refused, the stored list is kept: {e}"),
                    ));
                }
            }
        }
        let registry = store.load_registry()?;
        info!(residents = registry.len(), "Registry loaded.");
        // Importing and loading a large list churns the heap; hand the freed pages back so the
        // box's memory reflects what is actually held.
        release_free_memory();

        let device_broker = match config.device_broker.mode {
            BrokerMode::Embedded => {
                let listen = config.device_broker.listen;
                broker::start(listen)?;
                let host = if listen.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    listen.ip().to_string()
                };
                info!(listen = %listen, "Embedded device broker listening.");
                BrokerUrl {
                    tls: false,
                    host,
                    port: listen.port(),
                }
            }
            BrokerMode::External => {
                BrokerUrl::parse(config.device_broker.url.as_deref().unwrap_or(""))
                    .map_err(anyhow::Error::msg)
                    .context("device_broker.url")?
            }
        };

        let metrics = Arc::new(Metrics::default());
        let Lanes {
            policy,
            routes,
            actuators,
            status: devices,
        } = build_lanes(&config, &profiles);
        let writer = outbox::spawn(
            store.clone(),
            WriterConfig {
                gateway: config.gateway.id.clone(),
                commit_interval: Duration::from_millis(config.store.commit_interval_ms),
                commit_max: config.store.commit_max,
                max_bytes: config.store.max_mib << 20,
                ttl: [
                    config.store.ttl_routine_h,
                    config.store.ttl_passage_h,
                    config.store.ttl_alarm_h,
                ]
                .map(|h| Duration::from_secs(h * 3600)),
            },
            metrics.clone(),
        )?;
        if !start_alarms.is_empty() {
            let _ = writer
                .appends
                .send(Append {
                    records: start_alarms,
                    ack: None,
                })
                .await;
        }

        // The uplink is built before anything is spawned: a bad CA file or password file stops
        // the start here.
        let u = &config.uplink;
        let password = match &u.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("uplink.password_file {}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            None => u.password.clone(),
        };
        let uplink = Uplink::new(
            UplinkConfig {
                url: BrokerUrl::parse(&u.url).map_err(anyhow::Error::msg)?,
                client_id: u
                    .client_id
                    .clone()
                    .unwrap_or_else(|| config.gateway.id.clone()),
                username: u.username.clone(),
                password,
                ca_file: u.ca_file.clone(),
                keep_alive: Duration::from_secs(u.keep_alive_s),
                batch_max: u.batch_max,
                window: u.window,
                replay_rate: u.replay_rate,
                topic_base: config.topic_base(),
                status_interval: Duration::from_secs(60),
            },
            store,
            writer.committed.clone(),
            writer.deletes,
            StatusSource {
                gateway: config.gateway.id.clone(),
                mode: "normal".into(),
                registry_version: registry.version,
                devices,
                metrics: metrics.clone(),
            },
        )?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let conn = Connection {
            url: device_broker.clone(),
            client_id: config.device_broker.client_id.clone(),
            username: config.device_broker.username.clone(),
            password: config.device_broker.password.clone(),
            ack_on_receipt: config.device_broker.mode == BrokerMode::Embedded,
        };
        let (cmd_client, cmd_connected, cmd_join) =
            mqtt_source::spawn_commands(&conn, shutdown_rx.clone());
        let (input_tx, input_rx) = mpsc::channel(mqtt_source::INPUT_CAPACITY);
        let (release_tx, release_rx) = oneshot::channel();
        let events_join = tokio::spawn(mqtt_source::run_events(
            conn,
            routes,
            input_tx,
            metrics.clone(),
            shutdown_rx.clone(),
            release_rx,
        ));
        let decisions = DecisionLoop {
            policy,
            registry,
            actuators,
            commands: cmd_client,
            commands_connected: cmd_connected,
            appends: writer.appends,
            metrics: metrics.clone(),
        };
        let core_join = tokio::spawn(decisions.run(input_rx));

        let (finish_tx, finish_rx) = oneshot::channel();
        let uplink_join = tokio::spawn(uplink.run(finish_rx));

        let mut stop = shutdown_rx.clone();
        let appends_done = writer.appends_done;
        let writer_join = writer.join;
        let supervisor = tokio::spawn(async move {
            let _ = stop.changed().await;
            let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
            // The close ripples: events task → decision loop → writer.
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
            let _ = tokio::time::timeout_at(deadline, cmd_join).await;
        });

        let daemon = Daemon {
            metrics,
            device_broker,
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

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel; it takes no
    // pointers of ours and is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Lanes and devices indexed for the core, with each device's transport.
struct Lanes {
    policy: Policy,
    /// Event topic → device.
    routes: HashMap<String, Route>,
    /// By device index: where its commands go, if it takes any.
    actuators: Vec<Option<Actuator>>,
    /// By device index: its status, and its last-seen time.
    status: Vec<(v1::DeviceStatus, Arc<AtomicI64>)>,
}

fn build_lanes(config: &Config, profiles: &Profiles) -> Lanes {
    let mut policy = Policy {
        plausible_min_c: config.rules.plausible_min_c,
        plausible_max_c: config.rules.plausible_max_c,
        lanes: Vec::new(),
        devices: Vec::new(),
    };
    let mut routes = HashMap::new();
    let mut actuators = Vec::new();
    let mut status = Vec::new();
    for (li, lane) in config.lanes.iter().enumerate() {
        let mut gate = None;
        for d in &lane.devices {
            let index = policy.devices.len();
            // Validation guarantees the profile exists.
            let Some(profile) = profiles.get(&d.profile) else {
                continue;
            };
            let profile = Arc::new(profile.clone());
            let last_seen = Arc::new(AtomicI64::new(0));
            policy.devices.push(DevicePolicy {
                id: d.id.clone(),
                lane: li,
                calibration_offset_c: d.calibration_offset_c,
            });
            if profile.decode.is_some() {
                if let Some(topic) = d
                    .event_topic
                    .clone()
                    .or_else(|| profile.event_topic_for(&d.id))
                {
                    routes.insert(
                        topic,
                        Route {
                            device: index,
                            device_id: d.id.clone(),
                            profile: profile.clone(),
                            last_seen: last_seen.clone(),
                        },
                    );
                }
            }
            let mut actuator = None;
            if d.role.is_gate() {
                gate = Some(index);
                if let Some(topic) = d
                    .command_topic
                    .clone()
                    .or_else(|| profile.command_topic_for(&d.id))
                {
                    actuator = Some(Actuator {
                        device_id: d.id.clone(),
                        topic,
                        profile: profile.clone(),
                    });
                }
            }
            actuators.push(actuator);
            status.push((
                v1::DeviceStatus {
                    id: d.id.clone(),
                    lane: lane.id.clone(),
                    profile: d.profile.clone(),
                    last_seen_ms: 0,
                },
                last_seen,
            ));
        }
        policy.lanes.push(LanePolicy {
            id: lane.id.clone(),
            fever_threshold_c: lane
                .fever_threshold_c
                .unwrap_or(config.rules.fever_threshold_c),
            gate,
        });
    }
    Lanes {
        policy,
        routes,
        actuators,
        status,
    }
}

/// The task that owns the decision state: decides, commands the gate, hands the record to the
/// writer. No locks: nothing else touches the policy or the registry.
struct DecisionLoop {
    policy: Policy,
    registry: Registry,
    actuators: Vec<Option<Actuator>>,
    commands: AsyncClient,
    commands_connected: Arc<AtomicBool>,
    appends: mpsc::Sender<Append>,
    metrics: Arc<Metrics>,
}

impl DecisionLoop {
    async fn run(self, mut input: mpsc::Receiver<Input>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Test hook for the watchdog: the loop stops turning after this long, as a hung one would.
        let stall_at = std::env::var("GATEHOUSE_TEST_STALL_DECISIONS_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        loop {
            if stall_at.is_some_and(|t| Instant::now() >= t) {
                warn!("Test hook: the decision loop stalls now.");
                std::future::pending::<()>().await;
            }
            tokio::select! {
                biased;
                i = input.recv() => match i {
                    Some(i) => self.handle(i).await,
                    None => break,
                },
                _ = tick.tick() => {}
            }
            Metrics::inc(&self.metrics.core_ticks);
        }
    }

    async fn handle(&self, i: Input) {
        let now_ms = crate::now_ms();
        let decision = i.decoded.as_ref().and_then(|ev| {
            core::decide(&self.policy, &self.registry, i.device, ev, now_ms).map(|d| (ev, d))
        });
        let Some((ev, d)) = decision else {
            // Garbage, or no identification (a heartbeat, a door event): nothing to keep, but
            // the ack waits its turn behind the records before it.
            self.append(Vec::new(), i.ack).await;
            return;
        };
        Metrics::inc(&self.metrics.decisions);
        let lane = &self.policy.lanes[d.lane];
        let device = &self.policy.devices[d.device];
        let cause = ev.event_id.as_str();
        if let Some(act) = d
            .gate
            .and_then(|g| self.actuators.get(g))
            .and_then(Option::as_ref)
        {
            self.command(
                act,
                &CommandArgs {
                    open: d.allow,
                    reason: d.reason.as_str(),
                    cause,
                    lane: &lane.id,
                    device: &act.device_id,
                    ts_ms: now_ms,
                },
            );
        }
        let latency_us = u32::try_from(i.received.elapsed().as_micros()).unwrap_or(u32::MAX);
        let temperature_c = d.temperature_c.map(|t| t as f32);
        let mut records = vec![Record::Event(v1::Event {
            gateway_time_ms: now_ms,
            lane: lane.id.clone(),
            device: device.id.clone(),
            body: Some(v1::event::Body::Passage(v1::PassageDecision {
                subject_kind: match d.subject_kind {
                    SubjectKind::Resident => v1::SubjectKind::Resident,
                    SubjectKind::Unknown => v1::SubjectKind::Unknown,
                } as i32,
                subject_id: d.subject_id.clone(),
                temperature_c,
                verdict: if d.allow {
                    v1::Verdict::Allow
                } else {
                    v1::Verdict::Deny
                } as i32,
                reason: d.reason.as_str().to_string(),
                decision_latency_us: latency_us,
                cause: vec![cause.to_string()],
                rule: d.rule.to_string(),
                device_flag_disagrees: d.device_flag_disagrees,
            })),
            ..Default::default()
        })];
        if d.fever_alarm {
            records.push(Record::Alarm(v1::Alarm {
                gateway_time_ms: now_ms,
                lane: lane.id.clone(),
                device: device.id.clone(),
                kind: v1::AlarmKind::Fever as i32,
                detail: format!(
                    "{:.1} °C at or above {:.1} °C",
                    d.temperature_c.unwrap_or(0.0),
                    lane.fever_threshold_c
                ),
                temperature_c,
                subject_id: d.subject_id,
                cause: vec![cause.to_string()],
                ..Default::default()
            }));
        }
        self.append(records, i.ack).await;
    }

    async fn append(&self, records: Vec<Record>, ack: outbox::Ack) {
        let append = Append {
            records,
            ack: Some(ack),
        };
        if self.appends.send(append).await.is_err() {
            error!("Outbox writer gone; decision not recorded (its device event stays unacknowledged).");
        }
    }

    /// The fast path: the command leaves before the record is written.
    fn command(&self, act: &Actuator, args: &CommandArgs<'_>) {
        let sent = self.commands_connected.load(Ordering::Relaxed)
            && act.profile.encode_command(args).is_some_and(|payload| {
                self.commands
                    .try_publish(act.topic.as_str(), QoS::AtLeastOnce, false, payload)
                    .is_ok()
            });
        if sent {
            Metrics::inc(&self.metrics.commands_sent);
        } else {
            let n = self.metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %act.device_id, cause = args.cause, failures = n, "Gate command not sent: command connection down. The gate stays shut.");
            }
        }
    }
}
