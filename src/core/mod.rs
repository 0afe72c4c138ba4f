//! The decision core: a pure, synchronous state machine of (state, observation, time) → outputs.
//! No sockets, clocks or disks in here — time is passed in — so every rule is testable in
//! microseconds, a simulated week takes a millisecond, and the hot path takes no locks.
//!
//! The rules, in the order they apply to an identification (DESIGN.md §5). The first that
//! decides gives the one reason code; `rule` names it in the passage event.
//! 1. `fire` mode → allow `fire_mode` (every exit opens; a fever still raises its alarm);
//! 2. a temperature outside the plausible range → deny `invalid_reading` (measure again);
//! 3. a temperature at or above the lane's threshold → deny `fever`, and raise a fever alarm;
//! 4. no temperature where the mode requires one (`epidemic`, `lockdown`) → deny `no_temperature`;
//! 5. nobody recognised, an unknown face, card or QR → deny `unknown_subject`;
//! 6. a resident who is suspended or past `valid_until` → deny `expired`;
//!    a visitor pass outside its window or used up → deny `expired`;
//! 7. a quarantined resident, or one of a quarantined household → deny `quarantined`
//!    (an attempt to leave also raises an alarm);
//! 8. `lockdown`: a visitor → deny `lockdown`; a resident leaving whose household has used its
//!    outings (N per M days, counted on exit) → deny `quota_exceeded`;
//! 9. anti-passback (lanes that ask for it): entering while already inside → deny `anti_passback`;
//! 10. otherwise allow `ok`.
//!
//! Vehicles (plate reads) skip the temperature rules: fire → `fire_mode`; confidence below
//! `min_plate_confidence` → `low_confidence` (and an alarm for the guard); unknown plate →
//! `unknown_subject`; blacklisted → `blacklisted`; a resident plate past its date or a visitor
//! vehicle pass outside its window or used up → `expired`; lockdown and not on the allow-list →
//! `lockdown`; anti-passback; otherwise `ok`. A read a camera replays (same `plateid`) is decided
//! once.
//!
//! Temperature joins identity on lanes whose thermal station is a separate device: an
//! identification takes the lane's latest unused reading from `join.before_ms` before it; when the
//! mode requires a temperature and none is there yet, the decision waits for one until
//! `join.after_ms` after, then denies `no_temperature`. A reading that joins nobody is recorded
//! on its own when it ages out. The device's own "abnormal temperature" flag never decides; a
//! disagreement is recorded.
pub mod barrier;
pub mod id;
pub mod registry;

pub use id::Id;
pub use registry::{
    Holder, Pass, PassRow, Plate, PlateHolder, PlateKind, Registry, RegistryBuilder, Resident,
    ResidentStatus,
};

use crate::profiles::{CredentialKind, Decoded, Role};
use barrier::{Barrier, BarrierCommand, BarrierConfig, BarrierInputs, BarrierOutput};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// Why a decision went the way it did. The codes are stable: upstream statistics key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    Fever,
    InvalidReading,
    NoTemperature,
    UnknownSubject,
    Expired,
    Quarantined,
    QuotaExceeded,
    Lockdown,
    Blacklisted,
    LowConfidence,
    AntiPassback,
    FireMode,
    RemoteOpen,
    DeviceFault,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Fever => "fever",
            Reason::InvalidReading => "invalid_reading",
            Reason::NoTemperature => "no_temperature",
            Reason::UnknownSubject => "unknown_subject",
            Reason::Expired => "expired",
            Reason::Quarantined => "quarantined",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::Lockdown => "lockdown",
            Reason::Blacklisted => "blacklisted",
            Reason::LowConfidence => "low_confidence",
            Reason::AntiPassback => "anti_passback",
            Reason::FireMode => "fire_mode",
            Reason::RemoteOpen => "remote_open",
            Reason::DeviceFault => "device_fault",
        }
    }
}

/// The policy in force (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    /// Temperature required for everyone.
    Epidemic,
    /// Residents only, temperature required, household outing quotas, quarantine holds.
    Lockdown,
    /// Every turnstile and barrier open and held until a local reset.
    Fire,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "normal" => Some(Mode::Normal),
            "epidemic" => Some(Mode::Epidemic),
            "lockdown" => Some(Mode::Lockdown),
            "fire" => Some(Mode::Fire),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Epidemic => "epidemic",
            Mode::Lockdown => "lockdown",
            Mode::Fire => "fire",
        }
    }

    /// Of people; vehicles are screened by their plate.
    fn requires_temperature(self) -> bool {
        matches!(self, Mode::Epidemic | Mode::Lockdown)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// Where a mode change comes from. Fire mode is left only by a local reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The CLI on the box (the guard, the fire brigade).
    Local,
    /// A command from upstream.
    Remote,
}

/// Reading ↔ identification join window on a lane with a separate thermal station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    pub before_ms: i64,
    pub after_ms: i64,
}

/// What the core knows about a lane.
#[derive(Debug, Clone)]
pub struct LanePolicy {
    pub id: String,
    pub fever_threshold_c: f64,
    /// The device (index into [`Policy::devices`]) that receives this lane's commands.
    pub gate: Option<usize>,
    /// Set when the lane's thermal station and identifier are different devices.
    pub join: Option<JoinWindow>,
    pub anti_passback: bool,
    pub direction: Direction,
}

/// What the core knows about a device.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    pub id: String,
    /// Index into [`Policy::lanes`].
    pub lane: usize,
    pub role: Role,
    pub calibration_offset_c: f64,
    /// Overrides the lane's direction (an exit reader on a shared turnstile).
    pub direction: Option<Direction>,
}

/// Household outing quota in lockdown: `outings` exits per `days` days; an outing longer than
/// `overdue_h` hours raises an alarm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub outings: u32,
    pub days: u32,
    pub overdue_h: u32,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Policy {
    pub plausible_min_c: f64,
    pub plausible_max_c: f64,
    pub quota: Quota,
    /// Plate reads below this confidence (1–100) are denied `low_confidence` and the guard called.
    pub min_plate_confidence: u8,
    pub lanes: Vec<LanePolicy>,
    pub devices: Vec<DevicePolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Resident,
    Visitor,
    Plate,
    Unknown,
}

/// One decision for one subject at one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub lane: usize,
    /// The device that identified (or measured, for a stranger).
    pub device: usize,
    pub direction: Direction,
    pub mode: Mode,
    pub subject_kind: SubjectKind,
    /// Registry id (person id or pass id); empty when unknown (strangers leave no id upstream).
    pub subject_id: String,
    /// Calibrated, rounded to 0.01 °C.
    pub temperature_c: Option<f64>,
    pub allow: bool,
    pub reason: Reason,
    /// The rule that decided, for the audit trail.
    pub rule: &'static str,
    pub device_flag_disagrees: bool,
    /// Device event ids: the identification's, then the joined reading's.
    pub cause: Vec<String>,
    /// When the identification arrived (for the decision latency).
    pub received: Instant,
    /// Where the command goes (device index), if the lane has a gate.
    pub gate: Option<usize>,
    /// A vehicle (plate read) rather than a person.
    pub vehicle: bool,
    /// The plate reader's confidence, 1–100.
    pub confidence: Option<u8>,
    /// A remote open: the operator who ordered it and why.
    pub operator: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    Fever,
    /// A plate read too uncertain to act on: the guard should look.
    LowConfidence,
    /// A barrier command not confirmed by its limit switch in time.
    CommandUncertain,
    QuarantineExit,
    OutingOverdue,
    FireMode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub kind: AlarmKind,
    pub lane: Option<usize>,
    pub device: Option<usize>,
    pub subject_id: String,
    pub temperature_c: Option<f64>,
    pub detail: String,
    pub cause: Vec<String>,
}

/// What a gate is told outside a single decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Open and stay open (fire).
    Open,
    /// Back to normal operation (after the fire reset).
    Release,
}

/// What the core asks the world to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Decision(Decision),
    /// A reading no identification took: recorded on its own.
    Reading {
        lane: usize,
        device: usize,
        temperature_c: f64,
        cause: String,
    },
    Alarm(Alarm),
    /// Every gate of every lane.
    HoldAll(Hold),
    /// Durable state to write with the records (key, value; `None` deletes).
    State(String, Option<Vec<u8>>),
    /// Send this to an interlocked barrier now.
    Barrier {
        device: usize,
        command: BarrierCommand,
    },
    /// What became of a barrier command: sent, confirmed, uncertain, refused (with why).
    Outcome {
        device: usize,
        command: BarrierCommand,
        outcome: &'static str,
        detail: &'static str,
    },
    /// A barrier's inputs changed (`None`: unreadable).
    DeviceState {
        device: usize,
        inputs: Option<BarrierInputs>,
        arm: barrier::Arm,
    },
}

/// One device message, normalised, as it reaches the core.
#[derive(Debug, Clone)]
pub struct Observation {
    pub device: usize,
    pub decoded: Decoded,
    pub received: Instant,
    pub now_ms: i64,
}

#[derive(Debug, Clone)]
struct Reading {
    device: usize,
    at_ms: i64,
    temperature_c: f64,
    device_abnormal: Option<bool>,
    cause: String,
}

#[derive(Debug, Clone)]
struct Waiting {
    obs: Observation,
    until_ms: i64,
}

#[derive(Debug, Default, Clone)]
struct LaneState {
    /// Unused readings, oldest first; at most [`MAX_READINGS`].
    readings: VecDeque<Reading>,
    /// Identifications waiting for a reading, oldest first; at most [`MAX_WAITING`].
    waiting: VecDeque<Waiting>,
}

/// A lane never holds more than this many unused readings or waiting people: a stuck or
/// flooding device costs bounded memory, the oldest giving way.
const MAX_READINGS: usize = 32;
const MAX_WAITING: usize = 32;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The decision state: policy, registry, mode, and what the gate has seen.
pub struct Core {
    pub policy: Policy,
    pub registry: Registry,
    mode: Mode,
    lanes: Vec<LaneState>,
    /// Subjects inside, by the gateway's count (`R:` resident, `V:` pass).
    inside: id::FastSet<Id>,
    /// Entries used per pass id.
    pass_used: HashMap<Box<str>, u32>,
    /// Lockdown exits per household id (unix ms), the last `quota.days` days.
    outings: HashMap<Box<str>, Vec<i64>>,
    /// Residents out in lockdown: since when, and whether the overdue alarm went.
    out_since: HashMap<Box<str>, (i64, bool)>,
    /// Recent `{device}:{event id}` of devices whose ids are dedupe keys, oldest first.
    recent: VecDeque<Box<str>>,
    recent_set: HashSet<Box<str>>,
    /// Interlocked barriers (with read-back), by device index.
    barriers: HashMap<usize, Barrier>,
    /// The latest time the core was given (for mode changes, which come without one).
    now_ms: i64,
}

/// How many recent reads are remembered for de-duplication (a camera's offline replay).
const MAX_RECENT: usize = 4096;

impl Core {
    pub fn new(policy: Policy, registry: Registry, mode: Mode) -> Core {
        let lanes = vec![LaneState::default(); policy.lanes.len()];
        Core {
            policy,
            registry,
            mode,
            lanes,
            inside: Default::default(),
            pass_used: HashMap::new(),
            outings: HashMap::new(),
            out_since: HashMap::new(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            barriers: HashMap::new(),
            now_ms: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Puts a barrier with read-back under the interlock: the lane's decisions open it through
    /// [`Barrier`], never directly.
    pub fn add_barrier(&mut self, device: usize, config: BarrierConfig) {
        self.barriers.insert(device, Barrier::new(config));
    }

    pub fn barrier(&self, device: usize) -> Option<&Barrier> {
        self.barriers.get(&device)
    }

    /// New inputs read from a barrier (`None`: it could not be read).
    pub fn barrier_update(
        &mut self,
        device: usize,
        inputs: Option<BarrierInputs>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        let mut b_out = Vec::new();
        if let Some(b) = self.barriers.get_mut(&device) {
            b.update(inputs, now_ms, &mut b_out);
        }
        self.barrier_outputs(device, b_out, out);
    }

    fn barrier_outputs(&self, device: usize, b_out: Vec<BarrierOutput>, out: &mut Vec<Output>) {
        for o in b_out {
            match o {
                BarrierOutput::Command(command) => {
                    out.push(Output::Barrier { device, command });
                    out.push(Output::Outcome {
                        device,
                        command,
                        outcome: "sent",
                        detail: "",
                    });
                }
                BarrierOutput::Confirmed(command) => out.push(Output::Outcome {
                    device,
                    command,
                    outcome: "confirmed",
                    detail: "",
                }),
                BarrierOutput::Uncertain(command) => {
                    out.push(Output::Outcome {
                        device,
                        command,
                        outcome: "uncertain",
                        detail: "limit switch not reached in time; not retried",
                    });
                    let lane = self.policy.devices.get(device).map(|d| d.lane);
                    out.push(Output::Alarm(Alarm {
                        kind: AlarmKind::CommandUncertain,
                        lane,
                        device: Some(device),
                        subject_id: String::new(),
                        temperature_c: None,
                        detail: format!(
                            "{} accepted but not confirmed by the limit switch; not retried — please check the barrier",
                            command.as_str()
                        ),
                        cause: Vec::new(),
                    }));
                }
                BarrierOutput::Refused(command, why) => out.push(Output::Outcome {
                    device,
                    command,
                    outcome: "refused",
                    detail: why,
                }),
                BarrierOutput::Changed => {
                    if let Some(b) = self.barriers.get(&device) {
                        out.push(Output::DeviceState {
                            device,
                            inputs: b.inputs(),
                            arm: b.arm(),
                        });
                    }
                }
            }
        }
    }

    pub fn inside(&self) -> usize {
        self.inside.len()
    }

    /// Restores durable state written through [`Output::State`]. Unknown or damaged entries are
    /// skipped: at worst a counter restarts.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = (String, Vec<u8>)>) {
        for (k, v) in entries {
            let Some((kind, id)) = k.split_once('/') else {
                continue;
            };
            match kind {
                "mode" => {
                    if let Some(m) = std::str::from_utf8(&v).ok().and_then(Mode::parse) {
                        self.mode = m;
                    }
                }
                "in" => {
                    self.inside.insert(id.into());
                }
                "pass" => {
                    if let Ok(b) = <[u8; 4]>::try_from(v.as_slice()) {
                        self.pass_used.insert(id.into(), u32::from_le_bytes(b));
                    }
                }
                "quota" => {
                    let times = v
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect();
                    self.outings.insert(id.into(), times);
                }
                "threshold" => {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        let t = f64::from_le_bytes(b);
                        for l in self.policy.lanes.iter_mut().filter(|l| l.id == id) {
                            l.fever_threshold_c = t;
                        }
                    }
                }
                "out" => {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        self.out_since
                            .insert(id.into(), (i64::from_le_bytes(b), false));
                    }
                }
                _ => {}
            }
        }
    }

    /// Changes the mode. Entering fire holds every gate open; nothing but a local
    /// [`Core::fire_reset`] leaves it.
    pub fn set_mode(
        &mut self,
        mode: Mode,
        origin: Origin,
        out: &mut Vec<Output>,
    ) -> Result<(), Reason> {
        if self.mode == Mode::Fire && mode != Mode::Fire {
            let _ = origin;
            return Err(Reason::FireMode);
        }
        if mode == self.mode {
            return Ok(());
        }
        self.mode = mode;
        out.push(Output::State("mode/".into(), Some(mode.as_str().into())));
        if mode == Mode::Fire {
            self.hold_barriers(Hold::Open, out);
            out.push(Output::HoldAll(Hold::Open));
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::FireMode,
                lane: None,
                device: None,
                subject_id: String::new(),
                temperature_c: None,
                detail: format!("fire mode ({origin:?}): every gate opened and held"),
                cause: Vec::new(),
            }));
        }
        Ok(())
    }

    /// The local reset after a fire: gates go back to normal operation, the mode to `normal`.
    pub fn fire_reset(&mut self, out: &mut Vec<Output>) -> bool {
        if self.mode != Mode::Fire {
            return false;
        }
        self.mode = Mode::Normal;
        out.push(Output::State(
            "mode/".into(),
            Some(Mode::Normal.as_str().into()),
        ));
        self.hold_barriers(Hold::Release, out);
        out.push(Output::HoldAll(Hold::Release));
        true
    }

    /// Fire: interlocked barriers open and hold (or are released after the reset). Called again
    /// on the re-assert timer and after a restart in fire mode.
    pub fn hold_barriers(&mut self, hold: Hold, out: &mut Vec<Output>) {
        let now_ms = self.now_ms;
        let mut all = Vec::new();
        for (&device, b) in self.barriers.iter_mut() {
            let mut b_out = Vec::new();
            match hold {
                Hold::Open => b.hold_open(now_ms, &mut b_out),
                Hold::Release => b.release(),
            }
            all.push((device, b_out));
        }
        for (device, b_out) in all {
            self.barrier_outputs(device, b_out, out);
        }
    }

    /// A fever threshold from above, for one lane or every lane (`None`). Refused outside the
    /// plausible range; kept across restarts.
    pub fn set_threshold(
        &mut self,
        lane: Option<&str>,
        celsius: f64,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if !(celsius.is_finite()
            && celsius > self.policy.plausible_min_c
            && celsius <= self.policy.plausible_max_c)
        {
            return Err(format!("{celsius} °C lies outside the plausible range"));
        }
        let mut found = false;
        for l in self.policy.lanes.iter_mut() {
            if lane.is_none_or(|id| id == l.id) {
                l.fever_threshold_c = celsius;
                out.push(Output::State(
                    format!("threshold/{}", l.id),
                    Some(celsius.to_le_bytes().to_vec()),
                ));
                found = true;
            }
        }
        if found {
            Ok(())
        } else {
            Err(format!("no lane {:?}", lane.unwrap_or("")))
        }
    }

    /// An operator's remote open of `lane` (already verified and permitted): the lane's gate opens
    /// once, audited as a passage with reason `remote_open`. `None` if there is no such lane.
    pub fn remote_open(
        &mut self,
        lane: &str,
        operator: (String, String),
        command_id: String,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> Option<()> {
        self.now_ms = self.now_ms.max(now_ms);
        let li = self.policy.lanes.iter().position(|l| l.id == lane)?;
        let l = &self.policy.lanes[li];
        let gate = l.gate?;
        let mut d = Decision {
            lane: li,
            device: gate,
            direction: l.direction,
            mode: self.mode,
            subject_kind: SubjectKind::Unknown,
            subject_id: String::new(),
            temperature_c: None,
            allow: true,
            reason: Reason::RemoteOpen,
            rule: "remote_open",
            device_flag_disagrees: false,
            cause: vec![command_id],
            received: Instant::now(),
            gate: Some(gate),
            vehicle: false,
            confidence: None,
            operator: Some(operator),
        };
        let mut b_out = Vec::new();
        if let Some(b) = self.barriers.get_mut(&gate) {
            d.gate = None;
            b.open(now_ms, &mut b_out);
        }
        out.push(Output::Decision(d));
        self.barrier_outputs(gate, b_out, out);
        Some(())
    }

    /// Takes one device message. Identifications decide (now, or when their join window closes);
    /// readings from a separate thermal station wait to be joined.
    pub fn observe(&mut self, obs: Observation, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.max(obs.now_ms);
        self.expire(obs.now_ms, out);
        let Some(dev) = self.policy.devices.get(obs.device) else {
            return;
        };
        let Some(lane) = self.policy.lanes.get(dev.lane) else {
            return;
        };
        let ev = &obs.decoded;
        if ev.subject.is_none() && ev.temperature_c.is_none() && !ev.stranger {
            return;
        }
        // A device that replays its offline records sends the same read again: decided once.
        if ev.dedupe && !ev.event_id.is_empty() {
            let key: Box<str> = format!("{}:{}", obs.device, ev.event_id).into();
            if !self.recent_set.insert(key.clone()) {
                return;
            }
            self.recent.push_back(key);
            if self.recent.len() > MAX_RECENT {
                if let Some(old) = self.recent.pop_front() {
                    self.recent_set.remove(&old);
                }
            }
        }
        let li = dev.lane;
        let separate_thermal = lane.join.is_some() && dev.role == Role::Thermal;
        if separate_thermal {
            let Some(raw) = ev.temperature_c else { return };
            let reading = Reading {
                device: obs.device,
                at_ms: obs.now_ms,
                temperature_c: calibrate(raw, dev.calibration_offset_c),
                device_abnormal: ev.device_abnormal,
                cause: ev.event_id.clone(),
            };
            // The oldest waiting identification takes it.
            if let Some(w) = self.lanes[li].waiting.pop_front() {
                let mut o = w.obs;
                o.now_ms = obs.now_ms;
                self.decide(o, Some(reading), out);
                return;
            }
            let lane_state = &mut self.lanes[li];
            if lane_state.readings.len() == MAX_READINGS {
                if let Some(r) = lane_state.readings.pop_front() {
                    self.unjoined(li, r, out);
                }
            }
            self.lanes[li].readings.push_back(reading);
            return;
        }
        if let (Some(join), None, false) = (
            lane.join,
            ev.temperature_c,
            ev.credential == CredentialKind::Plate,
        ) {
            // A newest reading inside the window joins; older ones were someone else's.
            let lane_state = &mut self.lanes[li];
            if let Some(r) = lane_state.readings.pop_back() {
                if obs.now_ms - r.at_ms <= join.before_ms {
                    self.decide(obs, Some(r), out);
                    return;
                }
                lane_state.readings.push_back(r);
            }
            if self.mode.requires_temperature() {
                let until_ms = obs.now_ms + join.after_ms;
                let lane_state = &mut self.lanes[li];
                if lane_state.waiting.len() == MAX_WAITING {
                    if let Some(w) = lane_state.waiting.pop_front() {
                        self.decide(w.obs, None, out);
                    }
                }
                self.lanes[li].waiting.push_back(Waiting { obs, until_ms });
                return;
            }
        }
        self.decide(obs, None, out);
    }

    /// Closes join windows and checks overdue outings. Call at [`Core::next_deadline`] or sooner.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.expire(now_ms, out);
        let mut all = Vec::new();
        for (&device, b) in self.barriers.iter_mut() {
            let mut b_out = Vec::new();
            b.tick(now_ms, &mut b_out);
            if !b_out.is_empty() {
                all.push((device, b_out));
            }
        }
        for (device, b_out) in all {
            self.barrier_outputs(device, b_out, out);
        }
        if self.mode != Mode::Lockdown {
            return;
        }
        let overdue_ms = i64::from(self.policy.quota.overdue_h) * 3600 * 1000;
        for (person, (since, alarmed)) in self.out_since.iter_mut() {
            if !*alarmed && now_ms - *since > overdue_ms {
                *alarmed = true;
                out.push(Output::Alarm(Alarm {
                    kind: AlarmKind::OutingOverdue,
                    lane: None,
                    device: None,
                    subject_id: person.to_string(),
                    temperature_c: None,
                    detail: format!(
                        "out for more than {} h (left at unix ms {since})",
                        self.policy.quota.overdue_h
                    ),
                    cause: Vec::new(),
                }));
            }
        }
    }

    /// The earliest time a waiting identification must be decided, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        let waiting = self
            .lanes
            .iter()
            .filter_map(|l| l.waiting.front().map(|w| w.until_ms));
        let barriers = self.barriers.values().filter_map(Barrier::next_deadline);
        waiting.chain(barriers).min()
    }

    fn expire(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        for li in 0..self.lanes.len() {
            while self.lanes[li]
                .waiting
                .front()
                .is_some_and(|w| w.until_ms <= now_ms)
            {
                if let Some(w) = self.lanes[li].waiting.pop_front() {
                    let mut o = w.obs;
                    o.now_ms = now_ms;
                    self.decide(o, None, out);
                }
            }
            let before = self.policy.lanes[li].join.map_or(0, |j| j.before_ms);
            while self.lanes[li]
                .readings
                .front()
                .is_some_and(|r| now_ms - r.at_ms > before)
            {
                if let Some(r) = self.lanes[li].readings.pop_front() {
                    self.unjoined(li, r, out);
                }
            }
        }
    }

    fn unjoined(&self, li: usize, r: Reading, out: &mut Vec<Output>) {
        let fever = r.temperature_c >= self.policy.lanes[li].fever_threshold_c
            && r.temperature_c <= self.policy.plausible_max_c;
        if fever {
            out.push(Output::Alarm(self.fever_alarm(
                li,
                r.device,
                "",
                r.temperature_c,
                vec![r.cause.clone()],
            )));
        }
        out.push(Output::Reading {
            lane: li,
            device: r.device,
            temperature_c: r.temperature_c,
            cause: r.cause,
        });
    }

    fn fever_alarm(
        &self,
        li: usize,
        device: usize,
        subject: &str,
        t: f64,
        cause: Vec<String>,
    ) -> Alarm {
        Alarm {
            kind: AlarmKind::Fever,
            lane: Some(li),
            device: Some(device),
            subject_id: subject.to_string(),
            temperature_c: Some(t),
            detail: format!(
                "{t:.1} °C at or above {:.1} °C",
                self.policy.lanes[li].fever_threshold_c
            ),
            cause,
        }
    }

    /// The rules, in order (module docs). Emits exactly one decision.
    fn decide(&mut self, obs: Observation, joined: Option<Reading>, out: &mut Vec<Output>) {
        let Some(dev) = self.policy.devices.get(obs.device) else {
            return;
        };
        let li = dev.lane;
        let lane = &self.policy.lanes[li];
        let mut ev = obs.decoded;
        let now = obs.now_ms;
        let own_t = ev
            .temperature_c
            .map(|t| calibrate(t, dev.calibration_offset_c));
        let (temperature_c, abnormal) = match (&joined, own_t) {
            (_, Some(t)) => (Some(t), ev.device_abnormal),
            (Some(r), None) => (Some(r.temperature_c), r.device_abnormal),
            (None, None) => (None, None),
        };
        let mut cause = Vec::with_capacity(1 + usize::from(joined.is_some()));
        cause.push(std::mem::take(&mut ev.event_id));
        cause.extend(joined.map(|r| r.cause));
        let direction = dev.direction.unwrap_or(lane.direction);
        let mut d = Decision {
            lane: li,
            device: obs.device,
            direction,
            mode: self.mode,
            subject_kind: SubjectKind::Unknown,
            subject_id: String::new(),
            temperature_c,
            allow: false,
            reason: Reason::Ok,
            rule: "",
            device_flag_disagrees: false,
            cause,
            received: obs.received,
            gate: lane.gate,
            vehicle: false,
            confidence: None,
            operator: None,
        };
        d.vehicle = ev.credential == CredentialKind::Plate;
        d.confidence = ev.confidence;
        if let Some(dir) = ev.direction {
            d.direction = dir;
        }
        let subject = ev
            .subject
            .take()
            .and_then(|id| resolve(&self.registry, ev.credential, id));
        let subject = subject.map(|(id, s)| {
            d.subject_kind = match s {
                Subject::Resident(_) => SubjectKind::Resident,
                Subject::Visitor(_) => SubjectKind::Visitor,
                Subject::Vehicle(_) => SubjectKind::Plate,
            };
            d.subject_id = id;
            s
        });
        let fever = temperature_c
            .is_some_and(|t| t >= lane.fever_threshold_c && t <= self.policy.plausible_max_c);
        d.device_flag_disagrees = temperature_c.is_some() && abnormal.is_some_and(|a| a != fever);
        if fever {
            let t = temperature_c.unwrap_or_default();
            out.push(Output::Alarm(self.fever_alarm(
                li,
                obs.device,
                &d.subject_id,
                t,
                d.cause.clone(),
            )));
        }

        let verdict = self.rules(&d, subject.as_ref(), now);
        let (allow, reason, rule) = verdict;
        d.allow = allow;
        d.reason = reason;
        d.rule = rule;
        if reason == Reason::LowConfidence {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::LowConfidence,
                lane: Some(li),
                device: Some(obs.device),
                subject_id: String::new(),
                temperature_c: None,
                detail: format!(
                    "plate read with confidence {} below {}: please check the vehicle",
                    d.confidence.unwrap_or(0),
                    self.policy.min_plate_confidence
                ),
                cause: d.cause.clone(),
            }));
        }
        if reason == Reason::Quarantined && direction == Direction::Out {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::QuarantineExit,
                lane: Some(li),
                device: Some(obs.device),
                subject_id: d.subject_id.clone(),
                temperature_c: None,
                detail: "a quarantined resident tried to leave".into(),
                cause: d.cause.clone(),
            }));
        }
        if allow {
            self.passed(&d, subject.as_ref(), now, out);
        }
        // An interlocked barrier opens through its interlock; a denial sends it nothing.
        let mut barrier_out = None;
        if let Some(g) = d.gate {
            if let Some(b) = self.barriers.get_mut(&g) {
                d.gate = None;
                if allow {
                    let mut b_out = Vec::new();
                    b.open(now, &mut b_out);
                    barrier_out = Some((g, b_out));
                }
            }
        }
        out.push(Output::Decision(d));
        if let Some((g, b_out)) = barrier_out {
            self.barrier_outputs(g, b_out, out);
        }
    }

    fn rules(
        &self,
        d: &Decision,
        subject: Option<&Subject>,
        now: i64,
    ) -> (bool, Reason, &'static str) {
        let lane = &self.policy.lanes[d.lane];
        let deny = |reason, rule| (false, reason, rule);
        if self.mode == Mode::Fire {
            return (true, Reason::FireMode, "fire_mode");
        }
        if d.vehicle {
            return self.vehicle_rules(d, subject, now);
        }
        if let Some(t) = d.temperature_c {
            // NaN fails both comparisons, so it must be caught here as implausible.
            if !(t >= self.policy.plausible_min_c && t <= self.policy.plausible_max_c) {
                return deny(Reason::InvalidReading, "plausible_range");
            }
            if t >= lane.fever_threshold_c {
                return deny(Reason::Fever, "fever_threshold");
            }
        } else if self.mode.requires_temperature() {
            return deny(Reason::NoTemperature, "temperature_required");
        }
        let Some(subject) = subject else {
            return deny(Reason::UnknownSubject, "registry");
        };
        match subject {
            // A plate read decides by the vehicle rules; it never reaches here.
            Subject::Vehicle(_) => return deny(Reason::UnknownSubject, "registry"),
            Subject::Resident(r) => {
                if r.status == ResidentStatus::Suspended || now > r.valid_until_ms {
                    return deny(Reason::Expired, "registry_validity");
                }
                if r.status == ResidentStatus::Quarantined
                    || self.registry.household_quarantined(r.household)
                {
                    return deny(Reason::Quarantined, "quarantine");
                }
                if self.mode == Mode::Lockdown && d.direction == Direction::Out {
                    let household = self.registry.household_id(r);
                    let q = self.policy.quota;
                    let window = i64::from(q.days) * DAY_MS;
                    let used = self
                        .outings
                        .get(household)
                        .map_or(0, |t| t.iter().filter(|&&at| now - at < window).count());
                    if used >= q.outings as usize {
                        return deny(Reason::QuotaExceeded, "outing_quota");
                    }
                }
            }
            Subject::Visitor(i) => {
                if self.mode == Mode::Lockdown {
                    return deny(Reason::Lockdown, "lockdown_residents_only");
                }
                if let Err(reason) = self.pass_admits(*i, d.direction, now) {
                    return deny(reason, "visitor_pass");
                }
            }
        }
        if lane.anti_passback
            && d.direction == Direction::In
            && self.inside.contains(&subject.key(&d.subject_id))
        {
            return deny(Reason::AntiPassback, "anti_passback");
        }
        (true, Reason::Ok, subject.rule())
    }

    /// A visitor pass (for a person or a vehicle) admits now: inside its window, and with a use
    /// left when entering (leaving never uses one).
    fn pass_admits(&self, pass: u32, direction: Direction, now: i64) -> Result<(), Reason> {
        let Some(p) = self.registry.pass(pass) else {
            return Err(Reason::UnknownSubject);
        };
        let used = self.pass_used.get(&p.id).copied().unwrap_or(0);
        let used_up = direction == Direction::In && used >= p.uses;
        if now < p.valid_from_ms || now > p.valid_until_ms || used_up {
            return Err(Reason::Expired);
        }
        Ok(())
    }

    /// Vehicles: a read too uncertain to act on, unknown, blacklisted, expired, lockdown.
    fn vehicle_rules(
        &self,
        d: &Decision,
        subject: Option<&Subject>,
        now: i64,
    ) -> (bool, Reason, &'static str) {
        let lane = &self.policy.lanes[d.lane];
        let deny = |reason, rule| (false, reason, rule);
        if d.confidence.unwrap_or(0) < self.policy.min_plate_confidence {
            return deny(Reason::LowConfidence, "plate_confidence");
        }
        let lockdown = self.mode == Mode::Lockdown;
        let rule = match subject {
            None => return deny(Reason::UnknownSubject, "plate_registry"),
            Some(Subject::Vehicle(p)) => {
                match p.holder {
                    PlateHolder::Blacklisted => return deny(Reason::Blacklisted, "blacklist"),
                    PlateHolder::Resident { valid_until_ms, .. } if now > valid_until_ms => {
                        return deny(Reason::Expired, "plate_validity")
                    }
                    _ => {}
                }
                if lockdown && !p.lockdown_allowed {
                    return deny(Reason::Lockdown, "lockdown_allow_list");
                }
                match p.holder {
                    PlateHolder::AllowListed => "lockdown_allow_list",
                    _ => "resident_vehicle",
                }
            }
            Some(Subject::Visitor(i)) => {
                if lockdown {
                    return deny(Reason::Lockdown, "lockdown_allow_list");
                }
                if let Err(reason) = self.pass_admits(*i, d.direction, now) {
                    return deny(reason, "visitor_vehicle_pass");
                }
                "visitor_vehicle_pass"
            }
            Some(Subject::Resident(_)) => "resident",
        };
        if lane.anti_passback && d.direction == Direction::In {
            if let Some(s) = subject {
                if self.inside.contains(&s.key(&d.subject_id)) {
                    return deny(Reason::AntiPassback, "anti_passback");
                }
            }
        }
        (true, Reason::Ok, rule)
    }

    /// Bookkeeping after an allowed passage: who is inside, pass uses, lockdown outings.
    fn passed(&mut self, d: &Decision, subject: Option<&Subject>, now: i64, out: &mut Vec<Output>) {
        let Some(subject) = subject else { return };
        let key = subject.key(&d.subject_id);
        match d.direction {
            Direction::In => {
                if !self.inside.contains(&key) {
                    out.push(Output::State(
                        format!("in/{}", key.as_str()),
                        Some(Vec::new()),
                    ));
                    self.inside.insert(key);
                }
            }
            Direction::Out => {
                if self.inside.remove(&key) {
                    out.push(Output::State(format!("in/{}", key.as_str()), None));
                }
            }
        }
        match subject {
            Subject::Visitor(_) if d.direction == Direction::In => {
                let used = self
                    .pass_used
                    .entry(d.subject_id.as_str().into())
                    .or_insert(0);
                *used += 1;
                out.push(Output::State(
                    format!("pass/{}", d.subject_id),
                    Some(used.to_le_bytes().to_vec()),
                ));
            }
            Subject::Resident(r) => {
                let person = d.subject_id.as_str();
                if d.direction == Direction::In {
                    if self.out_since.remove(person).is_some() {
                        out.push(Output::State(format!("out/{person}"), None));
                    }
                } else if self.mode == Mode::Lockdown {
                    let household = self.registry.household_id(r).to_string();
                    let window = i64::from(self.policy.quota.days) * DAY_MS;
                    let times = self.outings.entry(household.as_str().into()).or_default();
                    times.retain(|&at| now - at < window);
                    times.push(now);
                    let bytes = times.iter().flat_map(|t| t.to_le_bytes()).collect();
                    out.push(Output::State(format!("quota/{household}"), Some(bytes)));
                    self.out_since.insert(person.into(), (now, false));
                    out.push(Output::State(
                        format!("out/{person}"),
                        Some(now.to_le_bytes().to_vec()),
                    ));
                }
            }
            Subject::Visitor(_) | Subject::Vehicle(_) => {}
        }
    }
}

/// Whom a decision is about; the id is in [`Decision::subject_id`].
#[derive(Clone, Copy)]
enum Subject {
    Resident(Resident),
    /// Index into the registry's passes.
    Visitor(u32),
    /// A plate the registry knows (resident, blacklisted, allow-listed).
    Vehicle(Plate),
}

impl Subject {
    /// Its key in the inside set and the durable state.
    fn key(&self, id: &str) -> Id {
        let prefix = match self {
            Subject::Resident(_) => "R:",
            Subject::Visitor(_) => "V:",
            Subject::Vehicle(_) => "C:",
        };
        Id::joined(prefix, id)
    }

    fn rule(&self) -> &'static str {
        match self {
            Subject::Resident(..) => "resident",
            Subject::Visitor(..) => "visitor_pass",
            Subject::Vehicle(..) => "resident_vehicle",
        }
    }
}

/// A face gives a person id; a card or QR number may stand for a resident or a visitor pass.
/// The subject's registry id (person id or pass id) and what it is.
fn resolve(registry: &Registry, kind: CredentialKind, id: String) -> Option<(String, Subject)> {
    match kind {
        CredentialKind::Person => {
            let r = *registry.get(&id)?;
            Some((id, Subject::Resident(r)))
        }
        CredentialKind::Card => match registry.card(&id)? {
            Holder::Resident(i) => registry
                .resident(*i)
                .map(|r| (registry.resident_id(*i).to_string(), Subject::Resident(*r))),
            Holder::Pass(i) => registry
                .pass(*i)
                .map(|p| (p.id.to_string(), Subject::Visitor(*i))),
        },
        CredentialKind::Plate => {
            let plate = *registry.plate(&id)?;
            match plate.holder {
                PlateHolder::Pass(i) => registry
                    .pass(i)
                    .map(|p| (p.id.to_string(), Subject::Visitor(i))),
                _ => Some((id, Subject::Vehicle(plate))),
            }
        }
    }
}

fn calibrate(t: f64, offset: f64) -> f64 {
    ((t + offset) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
