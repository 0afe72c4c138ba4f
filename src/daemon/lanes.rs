//! The lane plan: the config's lanes and devices indexed for the decision core (policy), and
//! each device put with its transport — MQTT routes, serial ports, Modbus buses — and, for gates,
//! where their commands go.
use super::actuate::{Actuator, Sink};
use crate::config::secrets::Secret;
use crate::config::Config;
use crate::decision::{DevicePolicy, JoinWindow, LanePolicy, Policy, Quota, Role};
use crate::device::profile::{Api, Reply};
use crate::device::{Profiles, Transport};
use crate::proto::v1;
use crate::sources::endpoint::Identity;
use crate::sources::fire_input::FireInputDevice;
use crate::sources::http::adms::Polls;
use crate::sources::http::api::ApiDevice;
use crate::sources::http::HttpDevice;
use crate::sources::modbus::{self, ModbusLink};
use crate::sources::{liveness, Route};
use crate::sources::{serial, DeviceLive};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Lanes and devices indexed for the core, with each device's transport.
pub struct LanePlan {
    pub policy: Policy,
    /// Event topic → device (MQTT devices).
    pub routes: HashMap<String, Route>,
    /// The MQTT devices with their topics, for the device endpoint (secrets from the config's
    /// hashes; the secrets file is read at start).
    pub identities: Vec<Identity>,
    /// Serial ports with their devices.
    pub ports: Vec<serial::Port>,
    /// Modbus buses with their barriers.
    pub buses: Vec<modbus::Bus>,
    /// By device index: where its commands go, if it takes any.
    pub actuators: Vec<Option<Actuator>>,
    /// By device index: its status.
    pub status: Vec<(v1::DeviceStatus, Arc<DeviceLive>)>,
    /// Devices that push over HTTP (secrets from the config's hashes; the secrets file is read
    /// at start).
    pub http: Vec<HttpDevice>,
    /// Devices whose own API gatehouse speaks (arming stream, self-configuration, catch-up,
    /// door).
    pub apis: Vec<ApiDevice>,
    /// Devices whose profile says how long they may be silent.
    pub watched: Vec<liveness::Watched>,
    /// Fire panels' inputs on Modbus I/O modules.
    pub fire_inputs: Vec<FireInputDevice>,
}

impl LanePlan {
    /// Indexes the config's lanes and devices for the core and groups the devices by transport.
    pub fn build(config: &Config, profiles: &Profiles) -> LanePlan {
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
            barrier_confirm_ms: r.barrier_confirm_ms as i64,
            // 0: no age check (a synthetic load whose device clock is frozen).
            stale_event_ms: match r.stale_event_s {
                0 => i64::MAX,
                s => s.saturating_mul(1000).min(i64::MAX as u64) as i64,
            },
            lanes: Vec::new(),
            devices: Vec::new(),
        };
        let mut routes = HashMap::new();
        let mut identities = Vec::new();
        let mut ports: Vec<serial::Port> = Vec::new();
        let mut buses: Vec<modbus::Bus> = Vec::new();
        let mut actuators = Vec::new();
        let mut status = Vec::new();
        let mut http = Vec::new();
        let mut apis = Vec::new();
        let mut watched = Vec::new();
        let mut fire_inputs = Vec::new();
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
                // Through an external broker an MQTT device's pings are not seen: only one with
                // a heartbeat of its own can be watched there.
                let heard = profile.transport != Transport::Mqtt
                    || config.device_broker.mode == crate::config::BrokerMode::Endpoint
                    || profile.has_heartbeat();
                if profile.offline_after_s > 0 && heard {
                    watched.push(liveness::Watched {
                        device: index,
                        limit: Duration::from_secs(profile.offline_after_s),
                        live: live.clone(),
                    });
                }
                policy.devices.push(DevicePolicy {
                    id: d.id.clone(),
                    lane: li,
                    role: d.role,
                    calibration_offset_c: d.calibration_offset_c,
                    direction: d.direction,
                });
                let mut sink = None;
                if let (Some(m), Some(spec)) = (&d.modbus, &profile.fire_input) {
                    fire_inputs.push(FireInputDevice {
                        device: index,
                        device_id: d.id.clone(),
                        link: match (&m.tcp, &m.serial) {
                            (Some(addr), _) => ModbusLink::Tcp(addr.clone()),
                            (None, Some(s)) => ModbusLink::Rtu(s.clone()),
                            (None, None) => ModbusLink::Tcp(String::new()),
                        },
                        unit: d.address.unwrap_or(1) as u8,
                        spec: spec.clone(),
                        live: live.clone(),
                        timeout: Duration::from_millis(r.modbus_timeout_ms),
                    });
                }
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
                    (_, Transport::Http) => {
                        let adms = profile.http.as_ref().and_then(|h| h.api) == Some(Api::Adms);
                        let polls = adms.then(|| Arc::new(Polls::default()));
                        if let Some(p) = &polls {
                            sink = Some(Sink::Poll(p.clone()));
                        }
                        http.push(HttpDevice {
                            device: index,
                            device_id: d.id.clone(),
                            profile: profile.clone(),
                            // Validation checked the hash.
                            secret: (d.password_hash.as_deref())
                                .and_then(|h| Secret::parse_hash(h).ok())
                                .unwrap_or(Secret::None),
                            from: d.from,
                            live: live.clone(),
                            seen_from: Default::default(),
                            adms_sn: d.adms_sn.clone().filter(|_| adms),
                            polls,
                        });
                        if profile.http.as_ref().map(|h| h.reply) == Some(Reply::Command) {
                            sink = Some(Sink::HttpReply);
                        }
                        if let Some(api) = &d.api {
                            let (door_tx, door_rx) = tokio::sync::mpsc::channel(DOOR_QUEUE);
                            if api.door.is_some() {
                                sink = Some(Sink::Api(door_tx));
                            }
                            apis.push(ApiDevice {
                                device: index,
                                device_id: d.id.clone(),
                                profile: profile.clone(),
                                api: api.clone(),
                                doors: door_rx,
                                live: live.clone(),
                            });
                        }
                    }
                    _ => {
                        let mut me = Identity {
                            device: index,
                            id: d.id.clone(),
                            // Validation checked the hash.
                            secret: (d.password_hash.as_deref())
                                .and_then(|h| Secret::parse_hash(h).ok())
                                .unwrap_or(Secret::None),
                            publishes: Vec::new(),
                            command_topic: None,
                            live: live.clone(),
                        };
                        if profile.decode.is_some() {
                            if let Some(topic) = d
                                .event_topic
                                .clone()
                                .or_else(|| profile.event_topic_for(&d.id))
                            {
                                me.publishes.push(topic.clone());
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
                            me.publishes.push(topic.clone());
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
                            me.command_topic = Some(topic.clone());
                            sink = Some(Sink::Mqtt(topic));
                        }
                        identities.push(me);
                    }
                }
                let mut actuator = None;
                // A plate camera can drive the barrier from its own output (see validation).
                // So can a terminal that drives its own door, opened over its API.
                let no_gate = !lane.devices.iter().any(|x| x.role.is_gate());
                let camera_gate = d.role == Role::PlateCamera
                    && profile.roles.contains(&Role::Barrier)
                    && no_gate;
                let door = (d.api.as_ref().is_some_and(|a| a.door.is_some())
                    || d.adms_sn.is_some())
                    && no_gate;
                if d.role.is_gate() || camera_gate || door {
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
        LanePlan {
            policy,
            routes,
            identities,
            ports,
            buses,
            actuators,
            status,
            http,
            apis,
            watched,
            fire_inputs,
        }
    }
}

/// Door commands waiting for the device's API: a few at most (each is one request).
const DOOR_QUEUE: usize = 4;
