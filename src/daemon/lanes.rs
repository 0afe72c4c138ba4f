//! The lane plan: the config's lanes and devices indexed for the decision core (policy), and
//! each device put with its transport — MQTT routes, serial ports, Modbus buses — and, for gates,
//! where their commands go.
use super::actuate::{Actuator, Sink};
use crate::config::secrets::Secret;
use crate::config::{
    Config, DeviceSection, LaneSection, ModbusSection, RulesSection, SerialSettings,
};
use crate::decision::{DevicePolicy, JoinWindow, LanePolicy, Policy, Quota, Role};
use crate::device::profile::{Api, Profile, Reply};
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

/// One device being put in the plan: its index for the core, its entry, its profile, and what
/// its transport reports of its life.
struct Placing<'a> {
    index: usize,
    d: &'a DeviceSection,
    profile: Arc<Profile>,
    live: Arc<DeviceLive>,
}

impl LanePlan {
    /// Indexes the config's lanes and devices for the core and groups the devices by transport.
    pub fn build(config: &Config, profiles: &Profiles) -> LanePlan {
        let r = &config.rules;
        let mut plan = LanePlan {
            policy: policy(r),
            routes: HashMap::new(),
            identities: Vec::new(),
            ports: Vec::new(),
            buses: Vec::new(),
            actuators: Vec::new(),
            status: Vec::new(),
            http: Vec::new(),
            apis: Vec::new(),
            watched: Vec::new(),
            fire_inputs: Vec::new(),
        };
        for (li, lane) in config.lanes.iter().enumerate() {
            let mut gate = None;
            for d in &lane.devices {
                // Validation guarantees the profile exists.
                let Some(profile) = profiles.get(&d.profile) else {
                    continue;
                };
                let p = Placing {
                    index: plan.policy.devices.len(),
                    d,
                    profile: Arc::new(profile.clone()),
                    live: Arc::new(DeviceLive::default()),
                };
                plan.watch(config, &p);
                plan.policy.devices.push(DevicePolicy {
                    id: d.id.clone(),
                    lane: li,
                    role: d.role,
                    calibration_offset_c: d.calibration_offset_c,
                    direction: d.direction,
                });
                let sink = plan.place(r, &p);
                let mut actuator = None;
                if drives_the_gate(lane, &p) {
                    gate = Some(p.index);
                    actuator = sink.map(|sink| Actuator {
                        device_id: d.id.clone(),
                        sink,
                        address: d.address,
                        profile: p.profile.clone(),
                    });
                }
                plan.actuators.push(actuator);
                let status = v1::DeviceStatus {
                    id: d.id.clone(),
                    lane: lane.id.clone(),
                    profile: d.profile.clone(),
                    ..Default::default()
                };
                plan.status.push((status, p.live));
            }
            plan.policy.lanes.push(lane_policy(r, lane, gate));
        }
        plan
    }

    /// Watched for silence when its profile says how long it may be silent and its silence can
    /// be seen: through an external broker an MQTT device's pings are not, so only one with a
    /// heartbeat of its own is watched there.
    fn watch(&mut self, config: &Config, p: &Placing) {
        let heard = p.profile.transport != Transport::Mqtt
            || config.device_broker.mode == crate::config::BrokerMode::Endpoint
            || p.profile.has_heartbeat();
        if p.profile.offline_after_s > 0 && heard {
            self.watched.push(liveness::Watched {
                device: p.index,
                limit: Duration::from_secs(p.profile.offline_after_s),
                live: p.live.clone(),
            });
        }
    }

    /// Puts the device with its transport; where its commands would go, if it takes any.
    fn place(&mut self, r: &RulesSection, p: &Placing) -> Option<Sink> {
        if let (Some(m), Some(spec)) = (&p.d.modbus, &p.profile.fire_input) {
            self.fire_inputs.push(FireInputDevice {
                device: p.index,
                device_id: p.d.id.clone(),
                link: modbus_link(m),
                unit: p.d.address.unwrap_or(1) as u8,
                spec: spec.clone(),
                live: p.live.clone(),
                timeout: Duration::from_millis(r.modbus_timeout_ms),
            });
        }
        match p.profile.transport {
            Transport::Modbus => self.add_modbus(r, p),
            // Validation refuses a serial profile without its port.
            Transport::Serial => p.d.serial.as_ref().map(|s| self.add_serial(p, s)),
            Transport::Http => self.add_http(p),
            Transport::Mqtt => self.add_mqtt(p),
        }
    }

    /// A barrier on a Modbus bus (devices on one link share it).
    fn add_modbus(&mut self, r: &RulesSection, p: &Placing) -> Option<Sink> {
        let (Some(m), Some(spec)) = (&p.d.modbus, &p.profile.modbus) else {
            return None;
        };
        let link = modbus_link(m);
        let i = match self.buses.iter().position(|b| b.link == link) {
            Some(i) => i,
            None => {
                self.buses.push(modbus::Bus {
                    link,
                    devices: Vec::new(),
                    poll: Duration::from_millis(r.modbus_poll_ms),
                    timeout: Duration::from_millis(r.modbus_timeout_ms),
                });
                self.buses.len() - 1
            }
        };
        self.buses[i].devices.push(modbus::ModbusDevice {
            device: p.index,
            device_id: p.d.id.clone(),
            unit: p.d.address.unwrap_or(1) as u8,
            spec: spec.clone(),
            live: p.live.clone(),
        });
        Some(Sink::Modbus(i))
    }

    /// A device on a serial port (devices on one RS-485 line share it).
    fn add_serial(&mut self, p: &Placing, settings: &SerialSettings) -> Sink {
        let i = match self
            .ports
            .iter()
            .position(|x| x.settings.path == settings.path)
        {
            Some(i) => i,
            None => {
                self.ports.push(serial::Port {
                    settings: settings.clone(),
                    devices: Vec::new(),
                });
                self.ports.len() - 1
            }
        };
        self.ports[i].devices.push(serial::SerialDevice {
            device: p.index,
            device_id: p.d.id.clone(),
            profile: p.profile.clone(),
            address: p.d.address,
            live: p.live.clone(),
        });
        Sink::Serial(i)
    }

    /// A device that pushes over HTTP, and its own API when gatehouse speaks it. Its commands go
    /// in the reply to its push, to its API's door, or wait for its next ADMS poll.
    fn add_http(&mut self, p: &Placing) -> Option<Sink> {
        let d = p.d;
        let adms = p.profile.http.as_ref().and_then(|h| h.api) == Some(Api::Adms);
        let polls = adms.then(|| Arc::new(Polls::default()));
        let mut sink = polls.clone().map(Sink::Poll);
        self.http.push(HttpDevice {
            device: p.index,
            device_id: d.id.clone(),
            profile: p.profile.clone(),
            secret: secret_of(d),
            from: d.from,
            live: p.live.clone(),
            seen_from: Default::default(),
            adms_sn: d.adms_sn.clone().filter(|_| adms),
            polls,
        });
        if p.profile.http.as_ref().map(|h| h.reply) == Some(Reply::Command) {
            sink = Some(Sink::HttpReply);
        }
        if let Some(api) = &d.api {
            let (door_tx, door_rx) = tokio::sync::mpsc::channel(DOOR_QUEUE);
            if api.door.is_some() {
                sink = Some(Sink::Api(door_tx));
            }
            self.apis.push(ApiDevice {
                device: p.index,
                device_id: d.id.clone(),
                profile: p.profile.clone(),
                api: api.clone(),
                doors: door_rx,
                live: p.live.clone(),
            });
        }
        sink
    }

    /// An MQTT device: its identity on the endpoint, the topics it publishes on (events and
    /// state reports, each routed to it), and the topic its commands go to.
    fn add_mqtt(&mut self, p: &Placing) -> Option<Sink> {
        let d = p.d;
        let mut me = Identity {
            device: p.index,
            id: d.id.clone(),
            secret: secret_of(d),
            from: d.from,
            publishes: Vec::new(),
            command_topic: None,
            live: p.live.clone(),
        };
        let route = |status| Route {
            device: p.index,
            device_id: d.id.clone(),
            profile: p.profile.clone(),
            live: p.live.clone(),
            status,
        };
        let events = d.event_topic.clone();
        let events = events.or_else(|| p.profile.event_topic_for(&d.id));
        if let Some(topic) = events.filter(|_| p.profile.decode.is_some()) {
            me.publishes.push(topic.clone());
            self.routes.insert(topic, route(None));
        }
        for (topic, i) in p.profile.status_topics_for(&d.id) {
            me.publishes.push(topic.clone());
            self.routes.insert(topic, route(Some(i)));
        }
        let commands = d.command_topic.clone();
        me.command_topic = commands.or_else(|| p.profile.command_topic_for(&d.id));
        let sink = me.command_topic.clone().map(Sink::Mqtt);
        self.identities.push(me);
        sink
    }
}

/// Whether this device is its lane's gate: a turnstile or barrier, or — in a lane without one —
/// a plate camera that drives the barrier from its own output, or a terminal that drives its own
/// door, opened over its API (see validation).
fn drives_the_gate(lane: &LaneSection, p: &Placing) -> bool {
    let d = p.d;
    let no_gate = !lane.devices.iter().any(|x| x.role.is_gate());
    let camera_gate =
        d.role == Role::PlateCamera && p.profile.roles.contains(&Role::Barrier) && no_gate;
    let door = (d.api.as_ref().is_some_and(|a| a.door.is_some()) || d.adms_sn.is_some()) && no_gate;
    d.role.is_gate() || camera_gate || door
}

/// The core's policy from the rules, before the lanes and devices are added.
fn policy(r: &RulesSection) -> Policy {
    Policy {
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
    }
}

fn lane_policy(r: &RulesSection, lane: &LaneSection, gate: Option<usize>) -> LanePolicy {
    // Temperature joins identity when the thermal station is a device of its own.
    let has = |role| lane.devices.iter().any(|d| d.role == role);
    let join = (has(Role::Thermal) && has(Role::Identifier)).then_some(JoinWindow {
        before_ms: r.join_before_ms as i64,
        after_ms: r.join_after_ms as i64,
    });
    LanePolicy {
        id: lane.id.clone(),
        fever_threshold_c: lane.fever_threshold_c.unwrap_or(r.fever_threshold_c),
        gate,
        join,
        anti_passback: lane.anti_passback,
        direction: lane.direction,
    }
}

fn modbus_link(m: &ModbusSection) -> ModbusLink {
    match (&m.tcp, &m.serial) {
        (Some(addr), _) => ModbusLink::Tcp(addr.clone()),
        (None, Some(s)) => ModbusLink::Rtu(s.clone()),
        // Validation refuses this.
        (None, None) => ModbusLink::Tcp(String::new()),
    }
}

/// The device's password hash from its entry (validation checked it), or none: then the
/// secrets file read at start may give one.
fn secret_of(d: &DeviceSection) -> Secret {
    let hash = d.password_hash.as_deref();
    hash.and_then(|h| Secret::parse_hash(h).ok())
        .unwrap_or(Secret::None)
}

/// Door commands waiting for the device's API: a few at most (each is one request).
const DOOR_QUEUE: usize = 4;
