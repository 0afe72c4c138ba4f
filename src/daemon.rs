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
use crate::core::barrier::Arm;
use crate::core::barrier::{BarrierCommand, BarrierConfig};
use crate::core::{
    self, AlarmKind, Core, DevicePolicy, Direction, Hold, JoinWindow, LanePolicy, Mode,
    Observation, Origin, Output, Policy, Quota, SubjectKind,
};
use crate::metrics::{worth_logging, Metrics};
use crate::profiles::{
    CommandArgs, GateCommandName, Profile, Profiles, Role, StateReport, Transport,
};
use crate::proto::v1;
use crate::sources::modbus::{self, BarrierReport, ModbusLink};
use crate::sources::mqtt::{self as mqtt_source, Connection, Input, Route};
use crate::sources::serial::{self, LinkChange, Note};
use crate::sources::DeviceLive;
use crate::store::outbox::{self, Append, Record, WriterConfig};
use crate::store::{Imported, Store};
use crate::uplink::{StatusSource, Uplink, UplinkConfig};
use anyhow::Context;
use rumqttc::{AsyncClient, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Where a gate's commands go.
struct Actuator {
    device_id: String,
    sink: Sink,
    address: Option<u64>,
    profile: Arc<Profile>,
}

enum Sink {
    Mqtt(String),
    /// Index into the serial ports.
    Serial(usize),
    /// Index into the Modbus buses (commands go through the barrier interlock).
    Modbus(usize),
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
        for (name, file) in [
            ("residents", &config.registry.import),
            ("passes", &config.registry.passes),
            ("plates", &config.registry.plates),
            ("households", &config.registry.households),
        ] {
            let Some(file) = file else { continue };
            let imported = match name {
                "residents" => store.import_residents(file, config.registry.max_residents),
                _ => store.import_list(name, file),
            };
            match imported {
                Ok(Imported::Replaced { residents: rows }) => {
                    info!(file = %file.display(), rows, "{name} list imported.")
                }
                Ok(Imported::Unchanged) => {}
                Err(e) => {
                    error!(error = %e, "{name} list refused; keeping the stored list.");
                    start_alarms.push(alarm(
                        v1::AlarmKind::RegistryRefused,
                        format!("{name} list refused, the stored list is kept: {e}"),
                    ));
                }
            }
        }
        let registry = store.load_registry()?;
        info!(
            residents = registry.len(),
            visitor_passes = registry.passes(),
            "Registry loaded."
        );
        let core_state = store.load_state()?;
        // Command ids applied and not yet expired (replay protection across restarts).
        let applied: HashMap<String, i64> = core_state
            .iter()
            .filter_map(|(k, v)| {
                let id = k.strip_prefix("cmd/")?;
                let until = i64::from_le_bytes(v.as_slice().try_into().ok()?);
                Some((id.to_string(), until))
            })
            .collect();
        // Importing and loading a large list churns the heap; hand the freed pages back so the
        // box's memory reflects what is actually held.
        release_free_memory();

        // With the embedded broker the daemon itself talks to it over an in-process link.
        let mut local = None;
        let device_broker = match config.device_broker.mode {
            BrokerMode::Embedded => {
                let listen = config.device_broker.listen;
                local = Some(broker::start_linked(listen)?);
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
            ports,
            buses,
            actuators,
            status: devices,
        } = build_lanes(&config, &profiles);
        let mut core = Core::new(policy, registry, Mode::Normal);
        // Every Modbus barrier is under the interlock.
        for bus in &buses {
            for d in &bus.devices {
                let lane = core.policy.devices[d.device].lane;
                core.add_barrier(
                    d.device,
                    BarrierConfig {
                        auto_close: config.lanes.get(lane).is_some_and(|l| l.auto_close),
                        confirm_ms: config.rules.barrier_confirm_ms as i64,
                    },
                );
            }
        }
        // The mode lives in the store; the config's mode applies when it changed in the file.
        let config_mode = core_state
            .iter()
            .find(|(k, _)| k == "config_mode/")
            .and_then(|(_, v)| std::str::from_utf8(v).ok().and_then(Mode::parse));
        // Statistics and command ids read their entries first; the core takes the rest.
        let mut stats_state = Vec::new();
        let core_state: Vec<_> = core_state
            .into_iter()
            .filter_map(|(k, v)| {
                if k.starts_with("stats") {
                    stats_state.push((k, v));
                    None
                } else {
                    Some((k, v))
                }
            })
            .collect();
        core.restore(core_state);
        let mut start_outputs = Vec::new();
        if config_mode != Some(config.rules.mode) {
            if let Err(e) = core.set_mode(config.rules.mode, Origin::Local, &mut start_outputs) {
                warn!(
                    mode = config.rules.mode.as_str(),
                    reason = e.as_str(),
                    "Config mode not applied: fire mode holds until `gatehouse fire-reset`."
                );
            }
            start_outputs.push(Output::State(
                "config_mode/".into(),
                Some(config.rules.mode.as_str().into()),
            ));
        } else if core.mode() == Mode::Fire {
            // Still in fire after a restart: open everything again at once.
            core.hold_barriers(Hold::Open, &mut start_outputs);
            start_outputs.push(Output::HoldAll(Hold::Open));
        }
        info!(mode = core.mode().as_str(), "Mode in force.");
        let mode = Arc::new(std::sync::Mutex::new(core.mode().as_str()));
        let twins = Arc::new(crate::twins::Twins::default());
        let status_changed = Arc::new(tokio::sync::Notify::new());
        let registry_version = Arc::new(std::sync::atomic::AtomicU64::new(
            store.registry_version().unwrap_or(0),
        ));
        for (i, (s, live)) in devices.iter().enumerate() {
            twins.add(
                i,
                v1::DeviceTwin {
                    device: s.id.clone(),
                    lane: s.lane.clone(),
                    profile: s.profile.clone(),
                    online: true,
                    arm: if core.barrier(i).is_some() {
                        Arm::Unknown.as_str().into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                },
                live.clone(),
            );
        }
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
                    state: Vec::new(),
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
        // Statistics: the period in progress and finished ones not yet acknowledged upstream.
        let stats_pending = Arc::new(crate::stats::Pending::default());
        let (stats_acked_tx, stats_acked_rx) = mpsc::channel(64);
        let mut stats = crate::stats::Stats::new(
            &config.gateway.id,
            config.lanes.iter().map(|l| l.id.clone()).collect(),
            config.uplink.stats_period_s.max(1) as i64 * 1000,
            crate::now_ms(),
        );
        for (k, v) in &stats_state {
            let Ok(batch) = <v1::StatsBatch as prost::Message>::decode(v.as_slice()) else {
                continue;
            };
            if k == "stats_now/" {
                stats.restore(batch);
            } else if let Some(start) = k.strip_prefix("stats/").and_then(|s| s.parse().ok()) {
                stats_pending.add(start, batch);
            }
        }
        let (synced_tx, synced_rx) = mpsc::channel(4);
        let store_for_sync = store.clone();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (results_tx, results_rx) = mpsc::channel(64);
        let g = &config.gateway;
        let command_topics = vec![
            format!("{}/cmd", config.topic_base()),
            format!(
                "gh/v1/{}/{}/{}/{}/_all/cmd",
                g.city, g.district, g.street, g.community
            ),
            format!("gh/v1/{}/{}/{}/_all/cmd", g.city, g.district, g.street),
            format!("gh/v1/{}/{}/_all/cmd", g.city, g.district),
        ];
        let trusted = config
            .commands
            .keys
            .iter()
            .filter_map(|k| {
                // Validation has checked every key.
                Some(crate::commands::TrustedKey {
                    id: k.id.clone(),
                    key: crate::commands::parse_public_key(&k.public_key).ok()?,
                    levels: k.levels.clone(),
                    kinds: k.kinds.clone(),
                })
            })
            .collect();
        let place = crate::commands::Place {
            gateway: g.id.clone(),
            community: g.community.clone(),
            street: g.street.clone(),
            district: g.district.clone(),
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
                client_cert: u.client_cert.clone().zip(u.client_key.clone()),
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
                twins: twins.clone(),
                changed: status_changed.clone(),
                mode: mode.clone(),
                registry_version: registry_version.clone(),
                devices: devices.clone(),
                metrics: metrics.clone(),
            },
        )?
        .with_commands(crate::uplink::Commands {
            topics: command_topics,
            to_core: cmd_tx,
            results: results_rx,
        })
        .with_stats(crate::uplink::StatsOut {
            pending: stats_pending.clone(),
            acked: stats_acked_tx,
        });

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let conn = Connection {
            url: device_broker.clone(),
            client_id: config.device_broker.client_id.clone(),
            username: config.device_broker.username.clone(),
            password: config.device_broker.password.clone(),
        };
        let (input_tx, input_rx) = mpsc::channel(mqtt_source::INPUT_CAPACITY);
        let (release_tx, release_rx) = oneshot::channel();
        let (cmd_client, cmd_connected, cmd_join, events_join) = match local {
            Some(broker::Local { mut tx, rx }) => {
                for topic in routes.keys() {
                    tx.subscribe(topic.as_str())
                        .context("subscribing on the embedded broker")?;
                }
                let events = tokio::spawn(mqtt_source::run_events_local(
                    rx,
                    routes,
                    input_tx.clone(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                ));
                let commands = CommandLink::Local(std::sync::Mutex::new(tx));
                (commands, Arc::new(AtomicBool::new(true)), None, events)
            }
            None => {
                let (client, connected, join) =
                    mqtt_source::spawn_commands(&conn, shutdown_rx.clone());
                let events = tokio::spawn(mqtt_source::run_events(
                    conn,
                    routes,
                    input_tx.clone(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                    release_rx,
                ));
                (CommandLink::Client(client), connected, Some(join), events)
            }
        };
        let (links_tx, links_rx) = mpsc::channel(256);
        let mut serial_writers = Vec::new();
        let mut serial_joins = Vec::new();
        for port in ports {
            let (w, j) = serial::spawn(
                port,
                input_tx.clone(),
                links_tx.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            );
            serial_writers.push(w);
            serial_joins.push(j);
        }
        drop(input_tx);
        let (reports_tx, reports_rx) = mpsc::channel(1024);
        let mut modbus_writers = Vec::new();
        for bus in buses {
            let (w, j) = modbus::spawn(
                bus,
                reports_tx.clone(),
                links_tx.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            );
            modbus_writers.push(w);
            serial_joins.push(j);
        }
        drop(reports_tx);
        let (control_tx, control_rx) = mpsc::channel(16);
        // Without its control socket the gate still works; only the local mode commands do not.
        let control_join = match crate::control::serve(
            &config.store.dir,
            control_tx.clone(),
            shutdown_rx.clone(),
        ) {
            Ok(j) => Some(j),
            Err(e) => {
                error!(error = %e, "Control socket unavailable: `gatehouse mode` and `gatehouse fire-reset` cannot reach this daemon.");
                None
            }
        };
        let decisions = DecisionLoop {
            core,
            actuators,
            commands: cmd_client,
            commands_connected: cmd_connected,
            serial_writers,
            modbus_writers,
            faults: HashMap::new(),
            last_command: HashMap::new(),
            appends: writer.appends,
            metrics: metrics.clone(),
            mode,
            devices,
            twins,
            status_changed,
            registry_version,
            store: store_for_sync,
            synced: synced_tx,
            last_fire_assert: Instant::now(),
            trusted,
            place,
            max_skew_ms: config.commands.max_skew_s as i64 * 1000,
            applied,
            results: results_tx,
            stats,
            stats_pending,
        };
        let inbox = Inbox {
            input: input_rx,
            control: control_rx,
            notes: links_rx,
            reports: reports_rx,
            commands: cmd_rx,
            stats_acked: stats_acked_rx,
            synced: synced_rx,
        };
        let core_join = tokio::spawn(decisions.run(inbox, start_outputs));

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
            if let Some(j) = cmd_join {
                let _ = tokio::time::timeout_at(deadline, j).await;
            }
            for j in serial_joins {
                let _ = tokio::time::timeout_at(deadline, j).await;
            }
            if let Some(j) = control_join {
                let _ = tokio::time::timeout_at(deadline, j).await;
            }
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
    /// Event topic → device (MQTT devices).
    routes: HashMap<String, Route>,
    /// Serial ports with their devices.
    ports: Vec<serial::Port>,
    /// Modbus buses with their barriers.
    buses: Vec<modbus::Bus>,
    /// By device index: where its commands go, if it takes any.
    actuators: Vec<Option<Actuator>>,
    /// By device index: its status.
    status: Vec<(v1::DeviceStatus, Arc<DeviceLive>)>,
}

fn build_lanes(config: &Config, profiles: &Profiles) -> Lanes {
    let r = &config.rules;
    let mut policy = Policy {
        plausible_min_c: r.plausible_min_c,
        plausible_max_c: r.plausible_max_c,
        quota: Quota {
            outings: r.quota_outings,
            days: r.quota_days,
            overdue_h: r.overdue_h,
        },
        min_plate_confidence: r.min_plate_confidence,
        lanes: Vec::new(),
        devices: Vec::new(),
    };
    let mut routes = HashMap::new();
    let mut ports: Vec<serial::Port> = Vec::new();
    let mut buses: Vec<modbus::Bus> = Vec::new();
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
            let live = Arc::new(DeviceLive::default());
            policy.devices.push(DevicePolicy {
                id: d.id.clone(),
                lane: li,
                role: d.role,
                calibration_offset_c: d.calibration_offset_c,
                direction: d.direction,
            });
            let mut sink = None;
            if let (Some(m), Some(spec)) = (&d.modbus, &profile.modbus) {
                let link = match (&m.tcp, &m.serial) {
                    (Some(addr), _) => ModbusLink::Tcp(addr.clone()),
                    (None, Some(s)) => ModbusLink::Rtu(s.clone()),
                    // Validation refuses this.
                    (None, None) => ModbusLink::Tcp(String::new()),
                };
                let i = match buses.iter().position(|b| b.link == link) {
                    Some(i) => i,
                    None => {
                        buses.push(modbus::Bus {
                            link,
                            devices: Vec::new(),
                            poll: Duration::from_millis(r.modbus_poll_ms),
                            timeout: Duration::from_millis(r.modbus_timeout_ms),
                        });
                        buses.len() - 1
                    }
                };
                buses[i].devices.push(modbus::ModbusDevice {
                    device: index,
                    device_id: d.id.clone(),
                    unit: d.address.unwrap_or(1) as u8,
                    spec: spec.clone(),
                    live: live.clone(),
                });
                sink = Some(Sink::Modbus(i));
            }
            match (&d.serial, profile.transport) {
                (Some(settings), Transport::Serial) => {
                    let i = match ports.iter().position(|p| p.settings.path == settings.path) {
                        Some(i) => i,
                        None => {
                            ports.push(serial::Port {
                                settings: settings.clone(),
                                devices: Vec::new(),
                            });
                            ports.len() - 1
                        }
                    };
                    ports[i].devices.push(serial::SerialDevice {
                        device: index,
                        device_id: d.id.clone(),
                        profile: profile.clone(),
                        address: d.address,
                        live: live.clone(),
                    });
                    sink = Some(Sink::Serial(i));
                }
                (_, Transport::Modbus) => {}
                _ => {
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
                                    live: live.clone(),
                                    status: None,
                                },
                            );
                        }
                    }
                    for (topic, i) in profile.status_topics_for(&d.id) {
                        routes.insert(
                            topic,
                            Route {
                                device: index,
                                device_id: d.id.clone(),
                                profile: profile.clone(),
                                live: live.clone(),
                                status: Some(i),
                            },
                        );
                    }
                    if let Some(topic) = d
                        .command_topic
                        .clone()
                        .or_else(|| profile.command_topic_for(&d.id))
                    {
                        sink = Some(Sink::Mqtt(topic));
                    }
                }
            }
            let mut actuator = None;
            // A plate camera can drive the barrier from its own output (see validation).
            let camera_gate = d.role == Role::PlateCamera
                && profile.roles.contains(&Role::Barrier)
                && !lane.devices.iter().any(|x| x.role.is_gate());
            if d.role.is_gate() || camera_gate {
                gate = Some(index);
                actuator = sink.map(|sink| Actuator {
                    device_id: d.id.clone(),
                    sink,
                    address: d.address,
                    profile: profile.clone(),
                });
            }
            actuators.push(actuator);
            status.push((
                v1::DeviceStatus {
                    id: d.id.clone(),
                    lane: lane.id.clone(),
                    profile: d.profile.clone(),
                    ..Default::default()
                },
                live,
            ));
        }
        // Temperature joins identity when the thermal station is a device of its own.
        let has = |role| lane.devices.iter().any(|d| d.role == role);
        let join = (has(Role::Thermal) && has(Role::Identifier)).then_some(JoinWindow {
            before_ms: r.join_before_ms as i64,
            after_ms: r.join_after_ms as i64,
        });
        policy.lanes.push(LanePolicy {
            id: lane.id.clone(),
            fever_threshold_c: lane.fever_threshold_c.unwrap_or(r.fever_threshold_c),
            gate,
            join,
            anti_passback: lane.anti_passback,
            direction: lane.direction,
        });
    }
    Lanes {
        policy,
        routes,
        ports,
        buses,
        actuators,
        status,
    }
}

/// A request from the box itself (`gatehouse mode`, `gatehouse fire-reset`).
pub enum Control {
    SetMode(Mode, Origin, oneshot::Sender<Result<(), String>>),
    FireReset(oneshot::Sender<Result<(), String>>),
}

/// In fire mode the hold-open goes out again this often: a turnstile that rebooted must not stay
/// locked while people leave a burning building.
const FIRE_REASSERT: Duration = Duration::from_secs(5);

/// The task that owns the decision state: decides, commands the gate, hands the record to the
/// writer. No locks: nothing else touches the core.
/// Where MQTT gate commands go: the device broker over TCP, or the embedded broker's in-process
/// link. QoS 0 either way (see [`DecisionLoop::command`]).
enum CommandLink {
    Client(AsyncClient),
    Local(std::sync::Mutex<rumqttd::local::LinkTx>),
}

impl CommandLink {
    /// False when it could not be handed over (queue full, link gone): the command is dropped.
    fn publish(&self, topic: &str, payload: Vec<u8>) -> bool {
        match self {
            CommandLink::Client(c) => c
                .try_publish(topic, QoS::AtMostOnce, false, payload)
                .is_ok(),
            CommandLink::Local(link) => link
                .lock()
                .is_ok_and(|mut l| l.try_publish(topic.to_string(), payload).is_ok()),
        }
    }
}

struct DecisionLoop {
    core: Core,
    actuators: Vec<Option<Actuator>>,
    commands: CommandLink,
    commands_connected: Arc<AtomicBool>,
    serial_writers: Vec<mpsc::Sender<Vec<u8>>>,
    modbus_writers: Vec<mpsc::Sender<(usize, BarrierCommand)>>,
    /// Barriers' last fault codes (0: none).
    faults: HashMap<usize, u16>,
    /// The last command sent to each serial gate, for its acknowledgement.
    last_command: HashMap<usize, &'static str>,
    appends: mpsc::Sender<Append>,
    metrics: Arc<Metrics>,
    mode: Arc<std::sync::Mutex<&'static str>>,
    devices: Vec<(v1::DeviceStatus, Arc<DeviceLive>)>,
    twins: Arc<crate::twins::Twins>,
    status_changed: Arc<tokio::sync::Notify>,
    registry_version: Arc<std::sync::atomic::AtomicU64>,
    /// For registry sync, which writes and loads the lists off the decision loop.
    store: Store,
    synced: mpsc::Sender<Synced>,
    trusted: Vec<crate::commands::TrustedKey>,
    place: crate::commands::Place,
    max_skew_ms: i64,
    /// Command ids applied, until when they stay refused as replays.
    applied: HashMap<String, i64>,
    results: mpsc::Sender<v1::CommandResult>,
    stats: crate::stats::Stats,
    stats_pending: Arc<crate::stats::Pending>,
    last_fire_assert: Instant,
}

/// Everything that reaches the decision loop, a channel per kind.
struct Inbox {
    /// Device observations (MQTT and serial sources).
    input: mpsc::Receiver<Input>,
    /// The local CLI.
    control: mpsc::Receiver<Control>,
    /// Links lost and found, gate acknowledgements.
    notes: mpsc::Receiver<Note>,
    /// Barrier inputs from the Modbus buses.
    reports: mpsc::Receiver<BarrierReport>,
    /// Signed commands from above.
    commands: mpsc::Receiver<Vec<u8>>,
    /// Statistics periods the uplink broker acknowledged.
    stats_acked: mpsc::Receiver<i64>,
    /// Registry syncs written to the store, with the new registry to swap in.
    synced: mpsc::Receiver<Synced>,
}

/// A registry sync done off the decision loop: the new registry (or why not), and its result.
struct Synced {
    registry: Option<core::Registry>,
    version: u64,
    result: v1::CommandResult,
}

impl DecisionLoop {
    async fn run(mut self, mut inbox: Inbox, start: Vec<Output>) {
        self.emit(start, None).await;
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
            // A waiting identification is decided when its join window closes, not a tick later.
            let deadline = self.core.next_deadline().map(|at| {
                let wait = (at - crate::now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let window = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                i = inbox.input.recv() => match i {
                    Some(i) => self.handle(i).await,
                    None => break,
                },
                Some(c) = inbox.control.recv() => self.control(c).await,
                Some(c) = inbox.commands.recv() => self.command_from_above(c).await,
                Some(s) = inbox.synced.recv() => {
                    if let Some(registry) = s.registry {
                        info!(version = s.version, residents = registry.len(), plates = registry.plates(), passes = registry.passes(), "Registry synced from above.");
                        self.core.registry = registry;
                        self.registry_version.store(s.version, Ordering::Relaxed);
                        self.status_changed.notify_one();
                    }
                    let _ = self.results.try_send(s.result);
                }
                Some(start) = inbox.stats_acked.recv() => {
                    // Upstream has it: the store need not keep it.
                    self.append(Vec::new(), vec![(format!("stats/{start}"), None)], None).await;
                }
                Some(n) = inbox.notes.recv() => match n {
                    Note::Link(l) => self.link(l).await,
                    Note::Ack { device, code } => self.ack(device, code).await,
                },
                Some(r) = inbox.reports.recv() => {
                    let mut out = Vec::new();
                    self.core.barrier_update(r.device, r.inputs, crate::now_ms(), &mut out);
                    self.faults(&r, &mut out);
                    self.emit(out, None).await;
                }
                _ = window => self.tick().await,
                _ = tick.tick() => self.tick().await,
            }
            Metrics::inc(&self.metrics.core_ticks);
        }
        // Whoever still waits for a reading is decided now: the record must not be lost.
        let mut out = Vec::new();
        self.core.tick(i64::MAX, &mut out);
        self.emit(out, None).await;
    }

    async fn handle(&mut self, i: Input) {
        if let Some(state) = i.decoded.as_ref().and_then(|d| d.state) {
            let record = self.state_report(i.device, state);
            self.append(record.into_iter().collect(), Vec::new(), Some(i.ack))
                .await;
            return;
        }
        let Some(decoded) = i.decoded else {
            // Garbage: nothing to keep, but the ack waits its turn behind the records before it.
            self.append(Vec::new(), Vec::new(), Some(i.ack)).await;
            return;
        };
        let mut out = Vec::new();
        self.core.observe(
            Observation {
                device: i.device,
                decoded,
                received: i.received,
                now_ms: crate::now_ms(),
            },
            &mut out,
        );
        self.emit(out, Some(i.ack)).await;
    }

    async fn tick(&mut self) {
        let mut out = Vec::new();
        let now = crate::now_ms();
        self.core.tick(now, &mut out);
        // Expired command ids can no longer be replayed: forget them.
        let expired: Vec<String> = self
            .applied
            .iter()
            .filter(|(_, until)| **until < now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.applied.remove(&id);
            out.push(Output::State(format!("cmd/{id}"), None));
        }
        if let Some(done) = self.stats.roll(now, self.core.inside()) {
            let start = done.stats.first().map_or(0, |s| s.period_start_ms);
            out.push(Output::State(
                format!("stats/{start}"),
                Some(prost::Message::encode_to_vec(&done)),
            ));
            out.push(Output::State(
                "stats_now/".into(),
                Some(prost::Message::encode_to_vec(self.stats.snapshot())),
            ));
            self.stats_pending.add(start, done);
        }
        if self.core.mode() == Mode::Fire && self.last_fire_assert.elapsed() >= FIRE_REASSERT {
            self.core.hold_barriers(Hold::Open, &mut out);
            out.push(Output::HoldAll(Hold::Open));
        }
        if !out.is_empty() {
            self.emit(out, None).await;
        }
    }

    /// A `SignedCommand` from the uplink: checked (signature, key scope, time, replay), applied,
    /// and answered on `cmd/result` once the change is durable.
    async fn command_from_above(&mut self, bytes: Vec<u8>) {
        let now = crate::now_ms();
        let applied = &self.applied;
        let verified = crate::commands::verify(
            &bytes,
            &self.trusted,
            &self.place,
            now,
            self.max_skew_ms,
            |id| applied.contains_key(id),
        );
        let gateway = self.place.gateway.clone();
        let result = move |id: String, refused: &str, detail: String| v1::CommandResult {
            gateway: gateway.clone(),
            command_id: id,
            applied: refused.is_empty(),
            refused: refused.to_string(),
            detail,
            gateway_time_ms: now,
        };
        let v = match verified {
            Ok(v) => v,
            Err(r) => {
                warn!(command = %r.id, reason = r.reason, detail = %r.detail, "Command refused.");
                let _ = self.results.try_send(result(r.id, r.reason, r.detail));
                return;
            }
        };
        let id = v.command.id.clone();
        let mut out = vec![Output::State(
            format!("cmd/{id}"),
            Some(v.command.expires_at_ms.to_le_bytes().to_vec()),
        )];
        self.applied.insert(id.clone(), v.command.expires_at_ms);
        let mut answered_later = false;
        let (refused, detail) = match v.command.payload {
            Some(v1::command::Payload::SetMode(m)) => match Mode::parse(&m.mode) {
                None => ("malformed", format!("unknown mode {:?}", m.mode)),
                Some(mode) => match self.core.set_mode(mode, Origin::Remote, &mut out) {
                    Ok(()) => {
                        info!(command = %id, mode = mode.as_str(), "Mode changed from above.");
                        self.mode_shown();
                        ("", String::new())
                    }
                    Err(_) => ("fire_mode", "fire mode holds until a local reset".into()),
                },
            },
            Some(v1::command::Payload::RemoteOpen(o)) => {
                let opened = self.core.remote_open(
                    &o.lane,
                    (o.operator_id.clone(), o.reason.clone()),
                    id.clone(),
                    now,
                    &mut out,
                );
                match opened {
                    Some(()) => {
                        info!(command = %id, lane = %o.lane, operator = %o.operator_id, "Remote open.");
                        ("", String::new())
                    }
                    None => ("unknown_lane", format!("no lane {:?} with a gate", o.lane)),
                }
            }
            Some(v1::command::Payload::RegistrySnapshot(s)) => {
                self.sync(id.clone(), now, Ok(s));
                answered_later = true;
                ("", String::new())
            }
            Some(v1::command::Payload::RegistryDelta(d)) => {
                self.sync(id.clone(), now, Err(d));
                answered_later = true;
                ("", String::new())
            }
            Some(v1::command::Payload::SetThreshold(t)) => {
                let lane = (!t.lane.is_empty()).then_some(t.lane.as_str());
                match self.core.set_threshold(lane, t.fever_threshold_c, &mut out) {
                    Ok(()) => {
                        info!(command = %id, threshold = t.fever_threshold_c, lane = %t.lane, "Fever threshold changed from above.");
                        ("", String::new())
                    }
                    Err(e) => ("malformed", e),
                }
            }
            Some(v1::command::Payload::Ping(_)) | None => ("", String::new()),
        };
        if answered_later {
            // The result comes from the sync task; only the id is recorded here.
            self.emit(out, None).await;
            return;
        }
        let r = result(id, refused, detail);
        let results = self.results.clone();
        let answer: outbox::Ack = Box::new(move || {
            let _ = results.try_send(r);
        });
        self.emit(out, Some(answer)).await;
    }

    async fn control(&mut self, c: Control) {
        let mut out = Vec::new();
        let reply = match c {
            Control::SetMode(mode, origin, reply) => {
                let r = self.core.set_mode(mode, origin, &mut out).map_err(|_| {
                    "fire mode holds until a local `gatehouse fire-reset`".to_string()
                });
                if r.is_ok() {
                    info!(mode = mode.as_str(), ?origin, "Mode changed.");
                }
                (reply, r)
            }
            Control::FireReset(reply) => {
                let r = if self.core.fire_reset(&mut out) {
                    warn!("Fire mode reset locally; gates back to normal operation.");
                    Ok(())
                } else {
                    Err("not in fire mode".to_string())
                };
                (reply, r)
            }
        };
        self.mode_shown();
        // The answer goes once the change is durable: an "ok" survives a crash right after it.
        let (reply, result) = reply;
        let answer: outbox::Ack = Box::new(move || {
            let _ = reply.send(result);
        });
        self.emit(out, Some(answer)).await;
    }

    /// Writes a snapshot (`Ok`) or delta (`Err`) to the store and loads the new registry, on a
    /// blocking thread: decisions keep flowing meanwhile, and the new lists are swapped in whole.
    fn sync(&self, id: String, now: i64, what: Result<v1::RegistrySnapshot, v1::RegistryDelta>) {
        let store = self.store.clone();
        let synced = self.synced.clone();
        let gateway = self.place.gateway.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let (version, applied) = match &what {
                Ok(s) => (s.version, store.apply_snapshot(s)),
                Err(d) => (d.version, store.apply_delta(d)),
            };
            let loaded = match applied {
                Ok(Ok(())) => store.load_registry().map(Ok),
                Ok(Err(refused)) => Ok(Err(refused)),
                Err(e) => Err(e),
            };
            let (registry, refused, detail) = match loaded {
                Ok(Ok(r)) => (
                    Some(r),
                    String::new(),
                    format!(
                        "version {version} applied in {} ms",
                        started.elapsed().as_millis()
                    ),
                ),
                Ok(Err(r)) => (None, r.reason.to_string(), r.detail),
                Err(e) => (None, "store_error".into(), e.to_string()),
            };
            let result = v1::CommandResult {
                gateway,
                command_id: id,
                applied: refused.is_empty(),
                refused,
                detail,
                gateway_time_ms: now,
            };
            let _ = synced.blocking_send(Synced {
                registry,
                version,
                result,
            });
        });
    }

    /// The status shows the mode in force; a change goes up at once.
    fn mode_shown(&self) {
        let now = self.core.mode().as_str();
        let changed = self.mode.lock().is_ok_and(|mut m| {
            let changed = *m != now;
            *m = now;
            changed
        });
        if changed {
            self.status_changed.notify_one();
        }
    }

    /// A device's report about itself (an MQTT camera's barrier status, loop input, command
    /// reply) becomes a device-state or command-outcome record.
    fn state_report(&mut self, device: usize, state: StateReport) -> Option<Record> {
        if device >= self.core.policy.devices.len() {
            return None;
        }
        let body = match state {
            StateReport::Arm(arm) => v1::event::Body::DeviceState(v1::DeviceState {
                readable: arm != Arm::Unknown,
                arm: arm.as_str().into(),
                ..Default::default()
            }),
            StateReport::Loop(on) => v1::event::Body::DeviceState(v1::DeviceState {
                readable: true,
                arm: Arm::Unknown.as_str().into(),
                arming_loop: on,
                ..Default::default()
            }),
            StateReport::Ack(code) => v1::event::Body::CommandOutcome(v1::CommandOutcome {
                command: self
                    .last_command
                    .get(&device)
                    .copied()
                    .unwrap_or("unknown")
                    .into(),
                outcome: if code == 0 { "accepted" } else { "rejected" }.into(),
                detail: if code == 0 {
                    String::new()
                } else {
                    format!("code {code}")
                },
            }),
        };
        Some(self.device_event(device, crate::now_ms(), body))
    }

    /// A serial gate acknowledged our last command to it. Accepted is not opened: a gate without
    /// read-back cannot say more.
    async fn ack(&mut self, device: usize, code: u64) {
        let command = self.last_command.get(&device).copied().unwrap_or("unknown");
        let (outcome, detail) = if code == 0 {
            ("accepted", String::new())
        } else {
            ("rejected", format!("code {code}"))
        };
        if device < self.core.policy.devices.len() {
            let r = self.device_event(
                device,
                crate::now_ms(),
                v1::event::Body::CommandOutcome(v1::CommandOutcome {
                    command: command.into(),
                    outcome: outcome.into(),
                    detail,
                }),
            );
            self.append(vec![r], Vec::new(), None).await;
        }
    }

    async fn link(&mut self, l: LinkChange) {
        let now_ms = crate::now_ms();
        let mut records = Vec::new();
        for &d in &l.devices {
            let Some((status, live)) = self.devices.get(d) else {
                continue;
            };
            live.offline.store(!l.online, Ordering::Relaxed);
            self.twins.update(d, |t| t.online = l.online);
            let kind = if l.online {
                v1::AlarmKind::DeviceOnline
            } else {
                v1::AlarmKind::DeviceOffline
            };
            records.push(Record::Alarm(v1::Alarm {
                gateway_time_ms: now_ms,
                lane: status.lane.clone(),
                device: status.id.clone(),
                kind: kind as i32,
                detail: l.detail.clone(),
                ..Default::default()
            }));
        }
        self.append(records, Vec::new(), None).await;
    }

    /// Carries out the core's outputs: commands first (the fast path), then one append with the
    /// records and state changes, and the device's ack after them.
    async fn emit(&mut self, out: Vec<Output>, ack: Option<outbox::Ack>) {
        let now_ms = crate::now_ms();
        let mut records = Vec::new();
        let mut state = Vec::new();
        let mut counted = false;
        for o in out {
            match o {
                Output::Decision(d) => {
                    Metrics::inc(&self.metrics.decisions);
                    self.stats.record(&d);
                    counted = true;
                    self.decided(d, now_ms, &mut records);
                }
                Output::Reading {
                    lane,
                    device,
                    temperature_c,
                    cause,
                } => records.push({
                    if temperature_c >= self.core.policy.lanes[lane].fever_threshold_c
                        && temperature_c <= self.core.policy.plausible_max_c
                    {
                        self.stats.fever(lane);
                        counted = true;
                    }
                    Record::Event(v1::Event {
                        gateway_time_ms: now_ms,
                        lane: self.core.policy.lanes[lane].id.clone(),
                        device: self.core.policy.devices[device].id.clone(),
                        body: Some(v1::event::Body::Reading(v1::Reading {
                            temperature_c: temperature_c as f32,
                            cause,
                        })),
                        ..Default::default()
                    })
                }),
                Output::Alarm(a) => records.push(self.alarm(a, now_ms)),
                Output::HoldAll(hold) => {
                    self.last_fire_assert = Instant::now();
                    for g in 0..self.actuators.len() {
                        self.command(
                            g,
                            GateCommandName::of(None, Some(hold)),
                            "",
                            "fire_mode",
                            now_ms,
                        );
                    }
                }
                Output::State(k, v) => state.push((k, v)),
                Output::Barrier { device, command } => self.barrier_command(device, command),
                Output::Outcome {
                    device,
                    command,
                    outcome,
                    detail,
                } => records.push({
                    if outcome == "uncertain" {
                        self.twins.update(device, |t| t.uncertain_commands += 1);
                    }
                    self.device_event(
                        device,
                        now_ms,
                        v1::event::Body::CommandOutcome(v1::CommandOutcome {
                            command: command.as_str().into(),
                            outcome: outcome.into(),
                            detail: detail.into(),
                        }),
                    )
                }),
                Output::DeviceState {
                    device,
                    inputs,
                    arm,
                } => records.push({
                    let fault = self.faults.get(&device).copied().unwrap_or(0);
                    self.twins.update(device, |t| {
                        t.arm = arm.as_str().into();
                        t.safety_loop = inputs.is_some_and(|i| i.safety_loop);
                        t.arming_loop = inputs.is_some_and(|i| i.arming_loop);
                        t.fault_code = fault.into();
                    });
                    self.device_event(
                        device,
                        now_ms,
                        v1::event::Body::DeviceState(v1::DeviceState {
                            readable: inputs.is_some(),
                            arm: arm.as_str().into(),
                            safety_loop: inputs.is_some_and(|i| i.safety_loop),
                            arming_loop: inputs.is_some_and(|i| i.arming_loop),
                            fault_code: self.faults.get(&device).copied().unwrap_or(0).into(),
                        }),
                    )
                }),
            }
        }
        if counted {
            // The period's counts so far, with the records that changed them: a restart
            // mid-hour loses nothing.
            state.push((
                "stats_now/".into(),
                Some(prost::Message::encode_to_vec(self.stats.snapshot())),
            ));
        }
        self.append(records, state, ack).await;
    }

    /// A new fault code from a barrier's fault register: kept for its device-state records, and
    /// one is written now if the inputs did not change with it.
    fn faults(&mut self, r: &BarrierReport, out: &mut Vec<Output>) {
        let fault = r.fault.unwrap_or(0);
        let before = self.faults.insert(r.device, fault).unwrap_or(0);
        let reported = out
            .iter()
            .any(|o| matches!(o, Output::DeviceState { device, .. } if *device == r.device));
        if fault != before && !reported {
            if let Some(b) = self.core.barrier(r.device) {
                out.push(Output::DeviceState {
                    device: r.device,
                    inputs: b.inputs(),
                    arm: b.arm(),
                });
            }
        }
    }

    fn device_event(&self, device: usize, now_ms: i64, body: v1::event::Body) -> Record {
        let p = &self.core.policy;
        let dev = &p.devices[device];
        Record::Event(v1::Event {
            gateway_time_ms: now_ms,
            lane: p.lanes[dev.lane].id.clone(),
            device: dev.id.clone(),
            body: Some(body),
            ..Default::default()
        })
    }

    /// A barrier command from the interlock: straight to its bus, never queued behind a down
    /// link (the interlock reports it uncertain when the arm does not follow).
    fn barrier_command(&self, device: usize, command: BarrierCommand) {
        let Some(act) = self.actuators.get(device).and_then(Option::as_ref) else {
            return;
        };
        let Sink::Modbus(bus) = act.sink else {
            return;
        };
        let sent = self
            .modbus_writers
            .get(bus)
            .is_some_and(|w| w.try_send((device, command)).is_ok());
        if !sent {
            let n = self.metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %act.device_id, ?command, failures = n, "Barrier command not handed to its bus (queue full or bus task gone).");
            }
        }
    }

    fn decided(&mut self, d: core::Decision, now_ms: i64, records: &mut Vec<Record>) {
        let cause = d.cause.first().cloned().unwrap_or_default();
        if let Some(g) = d.gate {
            let open = d.allow.then_some(d.direction);
            self.last_command
                .insert(g, GateCommandName::of(open, None).as_str());
            self.command(
                g,
                GateCommandName::of(open, None),
                &cause,
                d.reason.as_str(),
                now_ms,
            );
        }
        let lane = &self.core.policy.lanes[d.lane];
        let device = &self.core.policy.devices[d.device];
        let latency_us = u32::try_from(d.received.elapsed().as_micros()).unwrap_or(u32::MAX);
        records.push(Record::Event(v1::Event {
            gateway_time_ms: now_ms,
            lane: lane.id.clone(),
            device: device.id.clone(),
            body: Some(v1::event::Body::Passage(v1::PassageDecision {
                subject_kind: match d.subject_kind {
                    SubjectKind::Resident => v1::SubjectKind::Resident,
                    SubjectKind::Visitor => v1::SubjectKind::Visitor,
                    SubjectKind::Plate => v1::SubjectKind::Plate,
                    SubjectKind::Unknown => v1::SubjectKind::Unknown,
                } as i32,
                subject_id: d.subject_id,
                temperature_c: d.temperature_c.map(|t| t as f32),
                verdict: if d.allow {
                    v1::Verdict::Allow
                } else {
                    v1::Verdict::Deny
                } as i32,
                reason: d.reason.as_str().to_string(),
                decision_latency_us: latency_us,
                cause: d.cause,
                rule: d.rule.to_string(),
                device_flag_disagrees: d.device_flag_disagrees,
                direction: match d.direction {
                    Direction::In => v1::Direction::In,
                    Direction::Out => v1::Direction::Out,
                } as i32,
                mode: d.mode.as_str().to_string(),
                operator_id: d.operator.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
                operator_reason: d.operator.map(|o| o.1).unwrap_or_default(),
            })),
            ..Default::default()
        }));
    }

    fn alarm(&self, a: core::Alarm, now_ms: i64) -> Record {
        let p = &self.core.policy;
        Record::Alarm(v1::Alarm {
            gateway_time_ms: now_ms,
            lane: a.lane.map(|l| p.lanes[l].id.clone()).unwrap_or_default(),
            device: a
                .device
                .map(|d| p.devices[d].id.clone())
                .unwrap_or_default(),
            kind: match a.kind {
                AlarmKind::Fever => v1::AlarmKind::Fever,
                AlarmKind::LowConfidence => v1::AlarmKind::LowConfidence,
                AlarmKind::CommandUncertain => v1::AlarmKind::CommandOutcomeUncertain,
                AlarmKind::QuarantineExit => v1::AlarmKind::QuarantineExit,
                AlarmKind::OutingOverdue => v1::AlarmKind::OutingOverdue,
                AlarmKind::FireMode => v1::AlarmKind::FireMode,
            } as i32,
            detail: a.detail,
            temperature_c: a.temperature_c.map(|t| t as f32),
            subject_id: a.subject_id,
            cause: a.cause,
            ..Default::default()
        })
    }

    async fn append(
        &self,
        records: Vec<Record>,
        state: Vec<(String, Option<Vec<u8>>)>,
        ack: Option<outbox::Ack>,
    ) {
        if records.is_empty() && state.is_empty() && ack.is_none() {
            return;
        }
        let append = Append {
            records,
            state,
            ack,
        };
        if self.appends.send(append).await.is_err() {
            error!("Outbox writer gone; decision not recorded (its device event stays unacknowledged).");
        }
    }

    /// The fast path: the command leaves before the record is written. Never queued behind a
    /// down link: a stale "open" must not arrive later. For the same reason MQTT commands go at
    /// QoS 0: a QoS 1 publish caught by a reconnect is sent again, which would be an open
    /// retried seconds late, for whoever stands there then (and it spares the broker a PUBACK
    /// per command). The passage record says what was decided either way.
    fn command(
        &self,
        gate: usize,
        command: GateCommandName,
        cause: &str,
        reason: &str,
        ts_ms: i64,
    ) {
        let Some(act) = self.actuators.get(gate).and_then(Option::as_ref) else {
            return;
        };
        let lane = &self.core.policy.lanes[self.core.policy.devices[gate].lane].id;
        let payload = act.profile.encode_command(&CommandArgs {
            command,
            address: act.address,
            reason,
            cause,
            lane,
            device: &act.device_id,
            ts_ms,
        });
        let Some(payload) = payload else {
            // A gate without a hold-open command gets a plain open in fire mode.
            if command == GateCommandName::HoldOpen {
                self.command(gate, GateCommandName::OpenOut, cause, reason, ts_ms);
            }
            return;
        };
        let sent = match &act.sink {
            Sink::Mqtt(topic) => {
                self.commands_connected.load(Ordering::Relaxed)
                    && self.commands.publish(topic, payload)
            }
            Sink::Serial(port) => self
                .serial_writers
                .get(*port)
                .is_some_and(|w| w.try_send(payload).is_ok()),
            // Barriers on Modbus take their commands from the interlock only.
            Sink::Modbus(_) => return,
        };
        if sent {
            Metrics::inc(&self.metrics.commands_sent);
        } else {
            let n = self.metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %act.device_id, cause, failures = n, "Gate command not sent: link down or queue full. The gate stays shut.");
            }
        }
    }
}
