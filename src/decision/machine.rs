//! The decision state machine: what the gate has seen (who is inside, pass uses, outings, join
//! windows, barriers) and the entry points the wiring calls — observe, tick, set_mode,
//! fire_reset, set_threshold, remote_open, restore. The rules themselves are in `rules.rs`.
use super::barrier::{Arm, Barrier, BarrierConfig, BarrierInputs, BarrierOutput};
use super::held::{self, Held};
use super::id::{self, Id};
use super::policy::{calibrate, threshold_plausible, Policy, DAY_MS};
use super::registry::Registry;
use super::state_key::StateKey;
use super::subject::Subject;
use super::vocabulary::{
    Alarm, AlarmKind, CredentialKind, Decision, Direction, Hold, Mode, Observation, Origin, Output,
    Reason, Role, SubjectKind,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

#[derive(Debug, Clone)]
pub(super) struct Reading {
    pub(super) device: usize,
    pub(super) at_ms: i64,
    pub(super) temperature_c: f64,
    pub(super) device_abnormal: Option<bool>,
    pub(super) cause: String,
    /// Its key in the durable state while it is held (see `held.rs`); empty when it never was.
    pub(super) held: String,
}

#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) obs: Observation,
    pub(super) until_ms: i64,
    pub(super) held: String,
}

/// One device's clock as learned (`device_clock.rs`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DeviceClock {
    /// Gatehouse's time minus the device's, at the last live sample.
    pub(super) offset_ms: i64,
    /// An offset was learned (a heartbeat, or an event judged live): ages can be judged.
    pub(super) learned: bool,
    pub(super) alarmed: bool,
    /// The guard was told that this device's ages cannot be judged yet.
    pub(super) unjudged_alarmed: bool,
    /// Events in a row found stale by their age alone (no live one between).
    pub(super) stale_in_a_row: u32,
}

#[derive(Debug, Default, Clone)]
pub(super) struct LaneState {
    /// Unused readings, oldest first; at most [`MAX_READINGS`].
    pub(super) readings: VecDeque<Reading>,
    /// Identifications waiting for a reading, oldest first; at most [`MAX_WAITING`].
    pub(super) waiting: VecDeque<Waiting>,
}

/// A lane never holds more than this many unused readings or waiting people: a stuck or
/// flooding device costs bounded memory, the oldest giving way.
const MAX_READINGS: usize = 32;
const MAX_WAITING: usize = 32;

/// The decision state: policy, registry, mode, and what the gate has seen.
pub struct Core {
    pub policy: Policy,
    pub registry: Registry,
    pub(super) mode: Mode,
    pub(super) lanes: Vec<LaneState>,
    /// Subjects inside, by the gateway's count (`R:` resident, `V:` pass).
    pub(super) inside: id::FastSet<Id>,
    /// Entries used per pass id.
    pub(super) pass_used: HashMap<Box<str>, u32>,
    /// Lockdown exits per household id (unix ms), the last `quota.days` days.
    pub(super) outings: HashMap<Box<str>, Vec<i64>>,
    /// Residents out in lockdown: since when, and whether the overdue alarm went.
    pub(super) out_since: HashMap<Box<str>, (i64, bool)>,
    /// Recent device events decided (`{device}:{event id}[@{device time}]`), oldest first; kept
    /// in the durable state too, so a redelivery after a restart is not decided again.
    pub(super) recent: VecDeque<Box<str>>,
    pub(super) recent_set: HashSet<Box<str>>,
    /// Interlocked barriers (with read-back), by device index.
    pub(super) barriers: HashMap<usize, Barrier>,
    /// The arm each other barrier last reported itself (a camera's barrier status).
    pub(super) reported_arms: HashMap<usize, Arm>,
    /// The latest time the core was given (for mode changes, which come without one).
    pub(super) now_ms: i64,
    /// Held observations of devices no longer configured: their keys are deleted at the next
    /// tick.
    pub(super) orphans: Vec<String>,
    /// Each device's clock as learned from its live messages.
    pub(super) clocks: HashMap<usize, DeviceClock>,
    /// Each fire input's last reading.
    pub(super) fire_inputs: HashMap<usize, super::vocabulary::FireInput>,
    /// The gateway's clock is known to be right (`gateway_clock.rs`).
    pub(super) clock_trusted: bool,
}

/// How many recent device events are remembered for de-duplication (a broker's redelivery, a
/// camera's offline replay).
pub(super) const MAX_RECENT: usize = 4096;

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
            reported_arms: HashMap::new(),
            now_ms: 0,
            orphans: Vec::new(),
            clocks: HashMap::new(),
            fire_inputs: HashMap::new(),
            clock_trusted: true,
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

    pub(super) fn barrier_outputs(
        &self,
        device: usize,
        b_out: Vec<BarrierOutput>,
        out: &mut Vec<Output>,
    ) {
        for o in b_out {
            match o {
                BarrierOutput::Command(command) => {
                    out.push(Output::Barrier { device, command });
                    out.push(Output::Outcome {
                        device,
                        command: command.as_str(),
                        outcome: "sent",
                        detail: "",
                    });
                }
                BarrierOutput::Confirmed(command) => out.push(Output::Outcome {
                    device,
                    command: command.as_str(),
                    outcome: "confirmed",
                    detail: "",
                }),
                BarrierOutput::Uncertain(command) => {
                    out.push(Output::Outcome {
                        device,
                        command: command.as_str(),
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
                    command: command.as_str(),
                    outcome: "refused",
                    detail: why,
                }),
                BarrierOutput::Tampered => out.push(self.tamper_alarm(device)),
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

    /// A gate command that never reached its gate: its link went down before it could be
    /// written, or it waited past its transport's bound (`why`). It is not retried. Recorded as
    /// refused; an interlocked barrier stops awaiting it; an open raises `CommandNotSent` — whoever
    /// was let through may be waiting at the gate.
    pub fn command_not_written(
        &mut self,
        device: usize,
        command: &'static str,
        why: &'static str,
        out: &mut Vec<Output>,
    ) {
        let Some(lane) = self.policy.devices.get(device).map(|d| d.lane) else {
            return;
        };
        if let Some(b) = self.barriers.get_mut(&device) {
            if b.held_open() && command == "open" {
                // Fire's hold, re-asserted every few seconds while the arm is not seen up: the
                // barrier's link alarm already says why it cannot be reached.
                b.not_written(super::barrier::BarrierCommand::Open);
                return;
            }
            match command {
                "open" => b.not_written(super::barrier::BarrierCommand::Open),
                "close" => b.not_written(super::barrier::BarrierCommand::Close),
                _ => {}
            }
        }
        out.push(Output::Outcome {
            device,
            command,
            outcome: "refused",
            detail: why,
        });
        if matches!(command, "open" | "hold_open") {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::CommandNotSent,
                lane: Some(lane),
                device: Some(device),
                subject_id: String::new(),
                temperature_c: None,
                detail: format!("{command} not written to the gate ({why}); not retried — whoever was let through may be waiting there"),
                cause: Vec::new(),
            }));
        }
    }

    /// Remembers a device event as decided, durably; the oldest is forgotten past
    /// [`MAX_RECENT`].
    fn remember(&mut self, key: Box<str>, now_ms: i64, out: &mut Vec<Output>) {
        out.push(Output::State(
            StateKey::Seen(key.to_string()),
            Some(now_ms.to_le_bytes().to_vec()),
        ));
        self.recent_set.insert(key.clone());
        self.recent.push_back(key);
        if self.recent.len() > MAX_RECENT {
            if let Some(old) = self.recent.pop_front() {
                out.push(Output::State(StateKey::Seen(old.to_string()), None));
                self.recent_set.remove(&old);
            }
        }
    }

    /// A barrier that is not interlocked reported its arm itself (a camera's barrier status);
    /// `last_open_ms` is when gatehouse last sent its gate an open. An arm up that no open of
    /// ours explains raises the tamper alarm, as for an interlocked barrier.
    pub fn arm_reported(
        &mut self,
        device: usize,
        arm: Arm,
        last_open_ms: Option<i64>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let before = self
            .reported_arms
            .insert(device, arm)
            .unwrap_or(Arm::Unknown);
        let confirm = self.policy.barrier_confirm_ms;
        if super::barrier::unexpected_open(before, arm, last_open_ms, now_ms, confirm) {
            out.push(self.tamper_alarm(device));
        }
    }

    fn tamper_alarm(&self, device: usize) -> Output {
        Output::Alarm(Alarm {
            kind: AlarmKind::Tamper,
            lane: self.policy.devices.get(device).map(|d| d.lane),
            device: Some(device),
            subject_id: String::new(),
            temperature_c: None,
            detail: "unexpected_open: the gate opened with no open from gatehouse (a coil written on the LAN, a key switch, a broken controller, a terminal opening its own door?)".into(),
            cause: Vec::new(),
        })
    }

    pub fn inside(&self) -> usize {
        self.inside.len()
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
        out.push(Output::State(StateKey::Mode, Some(mode.as_str().into())));
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
            StateKey::Mode,
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
        if !threshold_plausible(
            celsius,
            self.policy.plausible_min_c,
            self.policy.plausible_max_c,
        ) {
            return Err(format!("{celsius} °C lies outside the plausible range"));
        }
        let mut found = false;
        for l in self.policy.lanes.iter_mut() {
            if lane.is_none_or(|id| id == l.id) {
                l.fever_threshold_c = celsius;
                out.push(Output::State(
                    StateKey::Threshold(l.id.clone()),
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
            not_actuated: false,
            device_clock_offset_ms: None,
            credential: None,
            household: String::new(),
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
        if dev.lane >= self.policy.lanes.len() {
            return;
        }
        let ev = &obs.decoded;
        if ev.subject.is_none() && ev.temperature_c.is_none() && !ev.stranger {
            return;
        }
        let stored = self.stored(obs.device, ev.stored, ev.device_time_ms, obs.now_ms, out);
        let mut obs = obs;
        obs.decoded.stored = Some(stored);
        let ev = &obs.decoded;
        // A broker's redelivery, a camera's offline replay: the same event is decided once. Its
        // identity is the device's id with its time: devices restart their counters.
        if !ev.event_id.is_empty() {
            let dev_id = &self.policy.devices[obs.device].id;
            let key = match ev.device_time_ms.or(ev.id_time_ms) {
                Some(t) => format!("{dev_id}:{}@{t}", ev.event_id),
                None => format!("{dev_id}:{}", ev.event_id),
            };
            if self.recent_set.contains(key.as_str()) {
                return;
            }
            self.remember(key.into(), obs.now_ms, out);
        }
        // Checked above; borrowed again after `remember`.
        let dev = &self.policy.devices[obs.device];
        let lane = &self.policy.lanes[dev.lane];
        let li = dev.lane;
        let separate_thermal = lane.join.is_some() && dev.role == Role::Thermal;
        if separate_thermal && stored {
            // A stored reading is someone's from long ago: on record, never joined.
            if let Some(raw) = ev.temperature_c {
                out.push(Output::Reading {
                    lane: li,
                    device: obs.device,
                    temperature_c: calibrate(raw, dev.calibration_offset_c),
                    cause: ev.event_id.clone(),
                });
            }
            return;
        }
        // A stored or unreadable identification is decided now: it waits for no reading.
        if stored || ev.unreadable.is_some() {
            self.decide(obs, None, out);
            return;
        }
        if separate_thermal {
            let Some(raw) = ev.temperature_c else { return };
            let mut reading = Reading {
                device: obs.device,
                at_ms: obs.now_ms,
                temperature_c: calibrate(raw, dev.calibration_offset_c),
                device_abnormal: ev.device_abnormal,
                cause: ev.event_id.clone(),
                held: String::new(),
            };
            // The oldest waiting identification takes it.
            if let Some(w) = self.lanes[li].waiting.pop_front() {
                release(&w.held, out);
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
            reading.held = held::key(&dev.id, obs.now_ms, &ev.event_id);
            let record = Held::Reading {
                device: dev.id.clone(),
                at_ms: reading.at_ms,
                temperature_c: reading.temperature_c,
                device_abnormal: reading.device_abnormal,
                cause: reading.cause.clone(),
            };
            out.push(Output::State(
                StateKey::Held(reading.held.clone()),
                Some(record.encode()),
            ));
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
                // Never one from "the future": a clock that stepped back is not a fresh reading.
                if (0..=join.before_ms).contains(&(obs.now_ms - r.at_ms)) {
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
                        release(&w.held, out);
                        self.decide(w.obs, None, out);
                    }
                }
                let device = self.policy.devices[obs.device].id.clone();
                let held = held::key(&device, obs.now_ms, &obs.decoded.event_id);
                let record = Held::Waiting {
                    device,
                    at_ms: obs.now_ms,
                    until_ms,
                    decoded: obs.decoded.clone(),
                };
                out.push(Output::State(
                    StateKey::Held(held.clone()),
                    Some(record.encode()),
                ));
                self.lanes[li].waiting.push_back(Waiting {
                    obs,
                    until_ms,
                    held,
                });
                return;
            }
        }
        self.decide(obs, None, out);
    }

    /// Closes join windows and checks overdue outings. Call at [`Core::next_deadline`] or sooner.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.max(now_ms);
        for key in self.orphans.drain(..) {
            release(&key, out);
        }
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
        if self.mode != Mode::Lockdown || !self.clock_trusted {
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

    pub(super) fn expire(&mut self, now_ms: i64, out: &mut Vec<Output>) {
        for li in 0..self.lanes.len() {
            while self.lanes[li]
                .waiting
                .front()
                .is_some_and(|w| w.until_ms <= now_ms)
            {
                if let Some(w) = self.lanes[li].waiting.pop_front() {
                    release(&w.held, out);
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

    pub(super) fn unjoined(&self, li: usize, r: Reading, out: &mut Vec<Output>) {
        release(&r.held, out);
        if self.policy.is_fever(li, r.temperature_c) {
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

    pub(super) fn fever_alarm(
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

    /// Bookkeeping after an allowed passage: who is inside, pass uses, lockdown outings.
    pub(super) fn passed(
        &mut self,
        d: &Decision,
        subject: Option<&Subject>,
        now: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(subject) = subject else { return };
        let key = subject.key(&d.subject_id);
        match d.direction {
            Direction::In => {
                if !self.inside.contains(&key) {
                    out.push(Output::State(
                        StateKey::Inside(key.as_str().into()),
                        Some(Vec::new()),
                    ));
                    self.inside.insert(key);
                }
            }
            Direction::Out => {
                if self.inside.remove(&key) {
                    out.push(Output::State(StateKey::Inside(key.as_str().into()), None));
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
                    StateKey::PassUses(d.subject_id.clone()),
                    Some(used.to_le_bytes().to_vec()),
                ));
            }
            Subject::Resident(r) => {
                let person = d.subject_id.as_str();
                if d.direction == Direction::In {
                    if self.out_since.remove(person).is_some() {
                        out.push(Output::State(StateKey::OutSince(person.into()), None));
                    }
                } else if self.mode == Mode::Lockdown && self.clock_trusted {
                    // On a clock not known to be right the outing's date is unknown: counted at
                    // a wrong one it would later lock the household in, or vanish.
                    let household = self.registry.household_id(r).to_string();
                    let window = i64::from(self.policy.quota.days) * DAY_MS;
                    let times = self.outings.entry(household.as_str().into()).or_default();
                    times.retain(|&at| now - at < window);
                    times.push(now);
                    let bytes = times.iter().flat_map(|t| t.to_le_bytes()).collect();
                    out.push(Output::State(StateKey::Outings(household), Some(bytes)));
                    self.out_since.insert(person.into(), (now, false));
                    out.push(Output::State(
                        StateKey::OutSince(person.into()),
                        Some(now.to_le_bytes().to_vec()),
                    ));
                }
            }
            Subject::Visitor(_) | Subject::Vehicle(_) => {}
        }
    }
}

/// The held observation's outcome is in this batch of outputs: it need not be kept any more.
pub(super) fn release(held: &str, out: &mut Vec<Output>) {
    if !held.is_empty() {
        out.push(Output::State(StateKey::Held(held.to_string()), None));
    }
}
