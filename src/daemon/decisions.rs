//! The decision loop: the one task that owns the decision state. It takes what every source,
//! the local CLI and the uplink send, asks the core, carries out the core's outputs — gate
//! commands first (the fast path), then one append with the records and state changes — and
//! hands the device's ack to the writer, to be sent once that append is durable. No locks:
//! nothing else touches the core.
use super::actuate::Actuators;
use super::control::Control;
use super::order_desk::{Checked, OrderDesk, RegistrySwap};
use super::records;
use crate::decision::barrier::BarrierConfig;
use crate::decision::{Core, Hold, Mode, Observation, Origin, Output, StateKey};
use crate::device::GateCommandName;
use crate::metrics::Metrics;
use crate::sources::modbus::BarrierReport;
use crate::sources::{Input, LinkChange, SourceEvent};
use crate::store::local_passes::LocalPass;
use crate::store::outbox::{self, Append, Record};
use crate::uplink::stats::{finished_state, Pending, Stats};
use crate::uplink::StatusSource;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// In fire mode the hold-open goes out again this often: a turnstile that rebooted must not stay
/// locked while people leave a burning building.
const FIRE_REASSERT: Duration = Duration::from_secs(5);

/// How often freed heap memory is handed back to the kernel (`malloc_trim`: ~1 ms on this box).
const TRIM_EVERY: Duration = Duration::from_secs(5);

pub struct DecisionLoop {
    pub core: Core,
    pub actuators: Actuators,
    pub appends: mpsc::Sender<Append>,
    pub metrics: Arc<Metrics>,
    /// What the uplink's status and twins show; the loop keeps the mode and twins current.
    pub status: StatusSource,
    pub orders: OrderDesk,
    pub stats: Stats,
    pub stats_pending: Arc<Pending>,
    /// Barriers' last fault codes (0: none).
    faults: HashMap<usize, u16>,
    /// The last command sent to each gate, for its acknowledgement.
    last_command: HashMap<usize, &'static str>,
    /// When each gate was last sent an open (or a hold open), for the tamper rule.
    last_open_ms: HashMap<usize, i64>,
    last_fire_assert: Instant,
    last_trim: Instant,
    /// The event being decided came from a device whose reply is its gate command: the command
    /// for that device goes here (see `sources::http`).
    reply: Option<crate::sources::PendingReply>,
    /// What a clock jump made the core say, out with the next emit.
    clock_out: Vec<Output>,
    /// Decisions counted for `/metrics`, when it is served.
    pub scoreboard: Option<Arc<super::exporter::DecisionMetrics>>,
    /// Visitor passes registered at the console, by id (kept to add again after a sync).
    pub local_passes: HashMap<String, LocalPass>,
    /// Why the last gate command could not be handed over, for the console's answer.
    not_sent: Option<&'static str>,
    /// Opens from the console this run, to name each (`console:{boot}:{n}`).
    console_opens: u64,
}

/// Everything that reaches the decision loop, a channel per kind.
pub struct Inbox {
    /// Device observations (MQTT and serial sources).
    pub input: mpsc::Receiver<Input>,
    /// The local CLI.
    pub control: mpsc::Receiver<Control>,
    /// Links lost and found, gate acknowledgements.
    pub source_events: mpsc::Receiver<SourceEvent>,
    /// Barrier inputs from the Modbus buses.
    pub barrier_reports: mpsc::Receiver<BarrierReport>,
    /// Signed orders from above, checked by the gatekeeper.
    pub orders: mpsc::Receiver<Checked>,
    /// Statistics periods the uplink broker acknowledged.
    pub stats_acked: mpsc::Receiver<u64>,
    /// Registry syncs written to the store, with the new registry to swap in.
    pub swaps: mpsc::Receiver<RegistrySwap>,
}

/// What the decision loop takes next, chosen by `Inbox::next`.
pub enum Turn {
    Source(SourceEvent),
    Control(Control),
    Order(Checked),
    Swap(Box<RegistrySwap>),
    StatsAcked(u64),
    Barrier(BarrierReport),
    Tick,
    Input(Input),
    /// Every device source is gone: the daemon is stopping.
    Closed,
}

impl Inbox {
    /// The one place the loop's priorities live. Fire input readings, links and gate acks first;
    /// then the guard's command; then orders from above, barrier inputs and the timers; device
    /// input last, one event a turn: a device flooding the box slows only its own lane's
    /// decisions, never fire or the guard.
    pub async fn next(
        &mut self,
        window: impl std::future::Future<Output = ()>,
        tick: &mut tokio::time::Interval,
    ) -> Turn {
        tokio::select! {
            biased;
            Some(n) = self.source_events.recv() => Turn::Source(n),
            Some(c) = self.control.recv() => Turn::Control(c),
            Some(o) = self.orders.recv() => Turn::Order(o),
            Some(s) = self.swaps.recv() => Turn::Swap(Box::new(s)),
            Some(seq) = self.stats_acked.recv() => Turn::StatsAcked(seq),
            Some(r) = self.barrier_reports.recv() => Turn::Barrier(r),
            _ = window => Turn::Tick,
            _ = tick.tick() => Turn::Tick,
            i = self.input.recv() => i.map_or(Turn::Closed, Turn::Input),
        }
    }
}

/// Puts every Modbus barrier under the interlock, restores the durable state and applies the
/// config's mode when the file changed it. Returns what must go out at once (a fire mode still
/// in force after a restart opens everything again).
pub fn restore_core(
    core: &mut Core,
    barriers: impl IntoIterator<Item = (usize, BarrierConfig)>,
    state: &[(String, Vec<u8>)],
    config_mode: Mode,
) -> Vec<Output> {
    for (device, config) in barriers {
        core.add_barrier(device, config);
    }
    core.restore(state);
    // The mode lives in the store; the config's mode applies when it changed in the file.
    let stored_config_mode = state
        .iter()
        .find(|(k, _)| StateKey::decode(k) == Some(StateKey::ConfigMode))
        .and_then(|(_, v)| std::str::from_utf8(v).ok().and_then(Mode::parse));
    let mut out = Vec::new();
    if stored_config_mode != Some(config_mode) {
        if let Err(e) = core.set_mode(config_mode, Origin::Local, &mut out) {
            warn!(
                mode = config_mode.as_str(),
                reason = e.as_str(),
                "Config mode not applied: fire mode holds until `gatehouse fire-reset`."
            );
        }
        out.push(Output::State(
            StateKey::ConfigMode,
            Some(config_mode.as_str().into()),
        ));
    }
    // Still in fire after a restart (whatever the config file says now): open everything again
    // at once, before the first device event is read.
    let held = out.contains(&Output::HoldAll(Hold::Open));
    if core.mode() == Mode::Fire && !held {
        core.hold_barriers(Hold::Open, &mut out);
        out.push(Output::HoldAll(Hold::Open));
    }
    info!(mode = core.mode().as_str(), "Mode in force.");
    out
}

impl DecisionLoop {
    pub fn new(
        core: Core,
        actuators: Actuators,
        appends: mpsc::Sender<Append>,
        status: StatusSource,
        orders: OrderDesk,
        stats: Stats,
        stats_pending: Arc<Pending>,
    ) -> DecisionLoop {
        DecisionLoop {
            metrics: status.metrics.clone(),
            core,
            actuators,
            appends,
            status,
            orders,
            stats,
            stats_pending,
            faults: HashMap::new(),
            last_command: HashMap::new(),
            last_open_ms: HashMap::new(),
            last_fire_assert: Instant::now(),
            last_trim: Instant::now(),
            reply: None,
            clock_out: Vec::new(),
            scoreboard: None,
            not_sent: None,
            console_opens: 0,
            local_passes: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut inbox: Inbox, start: Vec<Output>) {
        self.core.set_clock_trusted(self.status.clock.trusted());
        self.emit(start, None).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stall = crate::metrics::stall_at("DECISIONS");
        loop {
            crate::metrics::stall_if_due(stall, "decision loop").await;
            // A waiting identification is decided when its join window closes, not a tick later.
            let deadline = self.core.next_deadline().map(|at| {
                let wait = (at - self.now()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let window = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let turn = inbox.next(window, &mut tick).await;
            match turn {
                Turn::Source(n) => match n {
                    SourceEvent::Link(l) => self.link(l).await,
                    SourceEvent::Ack { device, code } => self.ack(device, code).await,
                    SourceEvent::FireInput {
                        device,
                        state,
                        detail,
                    } => {
                        self.status
                            .twins
                            .update(device, |t| t.fire_input = state.as_str().into());
                        let mut out = Vec::new();
                        self.core.fire_input(device, state, &detail, &mut out);
                        self.mode_shown();
                        self.emit(out, None).await;
                    }
                    SourceEvent::GateReady { device } => self.gate_ready(device),
                    SourceEvent::NotWritten {
                        device,
                        command,
                        why,
                    } => {
                        let mut out = Vec::new();
                        self.core
                            .command_not_written(device, command, why, &mut out);
                        self.emit(out, None).await;
                    }
                    SourceEvent::Misbehaving { device, detail } => {
                        let status = device
                            .and_then(|d| self.status.devices.get(d))
                            .map(|s| &s.0);
                        let r =
                            records::misbehaving_alarm(status, &detail, self.status.clock.now());
                        self.append(vec![r], Vec::new(), None).await;
                    }
                    SourceEvent::OrderTopicPoisoned { detail } => {
                        let kind = crate::proto::v1::AlarmKind::OrderTopicPoisoned;
                        let r = records::gateway_alarm(kind, detail, self.status.clock.now());
                        self.append(vec![r], Vec::new(), None).await;
                    }
                },
                Turn::Control(c) => self.control(c).await,
                Turn::Order(o) => self.order(o).await,
                Turn::Swap(s) => self.swap(*s),
                Turn::StatsAcked(seq) => {
                    // Upstream has it: the store need not keep it.
                    self.append(Vec::new(), vec![(StateKey::StatsBatch(seq), None)], None)
                        .await;
                }
                Turn::Barrier(r) => {
                    let mut out = Vec::new();
                    let now = self.now();
                    self.core.barrier_update(r.device, r.inputs, now, &mut out);
                    self.faults(&r, &mut out);
                    self.emit(out, None).await;
                }
                Turn::Tick => self.tick().await,
                Turn::Input(i) => self.observe(i).await,
                Turn::Closed => break,
            }
            Metrics::inc(&self.metrics.core_ticks);
        }
        // Whoever still waits for a reading is decided now: the record must not be lost.
        let mut out = Vec::new();
        self.core.tick(i64::MAX, &mut out);
        self.emit(out, None).await;
    }

    async fn observe(&mut self, i: Input) {
        if let Some(state) = i.decoded.as_ref().and_then(|d| d.state) {
            let now_ms = self.now();
            let mut out = Vec::new();
            // A heartbeat is sent now, whatever its clock says: it is what teaches the clock
            // (judged by the old offset, a device whose clock stepped back would stay stale).
            let heartbeat = matches!(state, crate::decision::StateReport::Heartbeat);
            let stored = !heartbeat
                && i.decoded.as_ref().is_some_and(|d| {
                    let core = &self.core;
                    core.report_is_stored(i.device, d.stored, d.device_time_ms, now_ms)
                });
            match state {
                // A stored report (a catch-up, an upload after an outage) is what was: recorded
                // below, never the device's state now.
                _ if stored => {}
                crate::decision::StateReport::Arm(arm) => {
                    let opened = self.last_open_ms.get(&i.device).copied();
                    self.core
                        .arm_reported(i.device, arm, opened, now_ms, &mut out);
                }
                crate::decision::StateReport::Heartbeat => {
                    if let Some(t) = i.decoded.as_ref().and_then(|d| d.device_time_ms) {
                        self.core.clock_sample(i.device, t, now_ms, &mut out);
                    }
                }
                _ => {}
            }
            let mut records: Vec<Record> = out
                .into_iter()
                .filter_map(|o| match o {
                    Output::Alarm(a) => Some(records::alarm(&self.core.policy, a, now_ms)),
                    _ => None,
                })
                .collect();
            let last = self
                .last_command
                .get(&i.device)
                .copied()
                .unwrap_or("unknown");
            let record = records::state_report(state, last, stored)
                .filter(|_| i.device < self.core.policy.devices.len())
                .map(|body| records::device_event(&self.core.policy, i.device, now_ms, body));
            records.extend(record);
            self.append(records, Vec::new(), Some(i.ack)).await;
            return;
        }
        let Some(decoded) = i.decoded else {
            // Garbage: nothing to keep, but the ack waits its turn behind the records before it.
            self.append(Vec::new(), Vec::new(), Some(i.ack)).await;
            return;
        };
        let mut out = Vec::new();
        self.reply = i.reply;
        let now_ms = self.now();
        self.core.observe(
            Observation {
                device: i.device,
                decoded,
                received: i.received,
                now_ms,
                redelivered: i.redelivered,
            },
            &mut out,
        );
        self.emit(out, Some(i.ack)).await;
        self.reply = None;
    }

    async fn tick(&mut self) {
        // Freed memory (bursts, a list swap) goes back to the kernel now and then, so the box's
        // RSS is what is held, not what was once at the peak.
        if self.last_trim.elapsed() >= TRIM_EVERY {
            self.last_trim = Instant::now();
            super::boot::release_free_memory();
        }
        self.check_clock();
        let mut out = Vec::new();
        let now = self.now();
        self.core.tick(now, &mut out);
        self.orders.tick(now, &mut out);
        if self.core.mode() == Mode::Fire && self.last_fire_assert.elapsed() >= FIRE_REASSERT {
            self.core.hold_barriers(Hold::Open, &mut out);
            out.push(Output::HoldAll(Hold::Open));
        }
        // emit closes a statistics period the clock has left.
        if !out.is_empty() || self.stats.ended(now) {
            self.emit(out, None).await;
        }
    }

    /// A checked order from above, answered once its change is durable.
    async fn order(&mut self, order: Checked) {
        let mut out = Vec::new();
        let now = self.now();
        let result = self
            .orders
            .take(order.verified, &mut self.core, now, &mut out);
        self.mode_shown();
        let results = self.orders.answer_later(result);
        self.emit(out, results).await;
    }

    /// A registry sync finished off the loop: the new lists replace the old ones whole.
    fn swap(&mut self, s: RegistrySwap) {
        let current = self.status.registry_version.load(Ordering::Relaxed);
        // Syncs are written one at a time and never to an older version; a load that finishes
        // after a newer one must not undo it either.
        let registry = s.registry.filter(|_| s.version >= current);
        if let Some(registry) = registry {
            info!(
                version = s.version,
                residents = registry.len(),
                plates = registry.plates(),
                passes = registry.passes(),
                "Registry synced from above."
            );
            self.core.registry = registry;
            // A registry read from the store before a pass was registered lacks it.
            self.readd_local_passes();
            self.status
                .registry_version
                .store(s.version, Ordering::Relaxed);
            self.status.changed.notify_one();
        }
        self.orders.answer(s.result);
    }

    async fn control(&mut self, c: Control) {
        let mut out = Vec::new();
        let (reply, result) = match c {
            Control::Open {
                lane,
                by,
                reason,
                reply,
            } => return self.open_from_console(lane, by, reason, reply).await,
            Control::AddPass(pass, reply) => {
                let _ = reply.send(self.add_pass(*pass));
                return;
            }
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
                let r = if self.core.mode() != Mode::Fire {
                    Err("not in fire mode".to_string())
                } else if let Some(why) = self.core.fire_reset_blocked() {
                    Err(why)
                } else if self.core.fire_reset(&mut out) {
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
        let answer: outbox::Ack = Box::new(move || {
            let _ = reply.send(result);
        });
        self.emit(out, Some(answer)).await;
    }

    /// The status shows the mode in force; a change goes up at once.
    fn mode_shown(&self) {
        let now = self.core.mode().as_str();
        let changed = self.status.mode.lock().is_ok_and(|mut m| {
            let changed = *m != now;
            *m = now;
            changed
        });
        if changed {
            self.status.changed.notify_one();
        }
    }

    /// A gate is reachable again: in fire mode it is held open now, not at the next re-assert.
    fn gate_ready(&mut self, device: usize) {
        if self.core.mode() != Mode::Fire {
            return;
        }
        let now_ms = self.now();
        self.hold(device, Hold::Open, now_ms);
    }

    /// Fire's hold (or its release) to one gate. Re-asserted every few seconds: a gate it cannot
    /// reach is counted and logged (its link's alarm says why), not recorded each time.
    fn hold(&mut self, gate: usize, hold: Hold, now_ms: i64) {
        if hold == Hold::Open {
            self.last_open_ms.insert(gate, now_ms);
        }
        let command = GateCommandName::of(None, Some(hold));
        let policy = &self.core.policy;
        let now = (Instant::now(), None);
        let _ = self
            .actuators
            .command(policy, gate, command, "", "fire_mode", now_ms, now);
    }

    /// A command the actuators could not hand over: what the core makes of it goes out with
    /// the rest of this emit.
    fn not_written(
        &mut self,
        gate: usize,
        command: &'static str,
        why: &'static str,
        out: &mut std::collections::VecDeque<Output>,
    ) {
        self.not_sent = Some(why);
        let mut more = Vec::new();
        self.core.command_not_written(gate, command, why, &mut more);
        out.extend(more);
    }

    /// A serial gate acknowledged our last command to it.
    async fn ack(&mut self, device: usize, code: u64) {
        if device >= self.core.policy.devices.len() {
            return;
        }
        let last = self.last_command.get(&device).copied().unwrap_or("unknown");
        let body = records::command_answer(last, i64::try_from(code).unwrap_or(i64::MAX));
        let now = self.now();
        let r = records::device_event(&self.core.policy, device, now, body);
        self.append(vec![r], Vec::new(), None).await;
    }

    async fn link(&mut self, l: LinkChange) {
        let now_ms = self.now();
        let mut records = Vec::new();
        for &d in &l.devices {
            let Some((status, live)) = self.status.devices.get(d) else {
                continue;
            };
            live.offline.store(!l.online, Ordering::Relaxed);
            self.status.twins.update(d, |t| t.online = l.online);
            records.push(records::link_alarm(status, l.online, &l.detail, now_ms));
        }
        self.append(records, Vec::new(), None).await;
    }

    /// The wall clock, through the watch: a jump since the last reading is first carried across
    /// the core's timers and the last opens (and reported with the next emit).
    fn now(&mut self) -> i64 {
        let now = self.status.clock.now();
        if let Some(delta_ms) = self.status.clock.take_jump() {
            warn!(
                delta_ms,
                "The wall clock jumped: timers carried across; alarm clock_jump."
            );
            self.core.clock_stepped(delta_ms, &mut self.clock_out);
            for at in self.last_open_ms.values_mut() {
                *at = at.saturating_add(delta_ms);
            }
            self.orders.clock_stepped(delta_ms);
        }
        now
    }

    /// Reads the kernel's sync state again; a change reaches the core and the status.
    fn check_clock(&mut self) {
        let clock = &self.status.clock;
        // A jump may have changed it too, not only the kernel.
        clock.check_sync();
        if clock.trusted() == self.core.clock_trusted() {
            return;
        }
        let trusted = clock.trusted();
        self.core.set_clock_trusted(trusted);
        self.status.changed.notify_one();
        if trusted {
            info!("The clock is synced: visitor passes, orders and time rules apply again.");
        } else {
            warn!("The clock is no longer known to be synced: visitor passes and orders wait for it; records say clock_unsynced.");
        }
    }

    /// Carries out the core's outputs: commands first (the fast path), then one append with the
    /// records and state changes, and the device's ack after them.
    async fn emit(&mut self, mut out: Vec<Output>, ack: Option<outbox::Ack>) {
        let now_ms = self.now();
        if !self.clock_out.is_empty() {
            out.splice(0..0, std::mem::take(&mut self.clock_out));
        }
        let mut records = Vec::new();
        let mut state = Vec::new();
        // Set when the period in progress must be written: a roll, a count, or one handed in.
        let mut counted = self.roll_stats(now_ms, &mut state);
        // Outputs in order; a command that could not be handed over adds what the core makes
        // of it at the end (its refusal, an alarm), carried out in this same emit.
        let mut out = std::collections::VecDeque::from(out);
        while let Some(o) = out.pop_front() {
            match o {
                Output::Decision(d) => {
                    Metrics::inc(&self.metrics.decisions);
                    self.stats.record(&d, !self.core.clock_trusted());
                    counted = true;
                    if let Some(g) = d.gate {
                        let command = GateCommandName::of(d.allow.then_some(d.direction), None);
                        self.last_command.insert(g, command.as_str());
                        if d.allow {
                            self.last_open_ms.insert(g, now_ms);
                        }
                        let cause = d.cause.first().map_or("", String::as_str);
                        let policy = &self.core.policy;
                        let reply = self.reply.take_if(|r| r.answers(g, d.device, d.received));
                        let sent = self.actuators.command(
                            policy,
                            g,
                            command,
                            cause,
                            d.reason.as_str(),
                            now_ms,
                            (d.received, reply),
                        );
                        if let (Err(why), true) = (sent, d.allow) {
                            self.not_written(g, command.as_str(), why, &mut out);
                        }
                    }
                    // After the gate command: the latency is the person's wait.
                    if let Some(s) = &self.scoreboard {
                        s.decided(&d);
                    }
                    records.push(records::passage(&self.core.policy, d, now_ms));
                }
                Output::Reading {
                    lane,
                    device,
                    temperature_c,
                    cause,
                } => {
                    if self.core.policy.is_fever(lane, temperature_c) {
                        self.stats.fever(lane);
                        counted = true;
                    }
                    let policy = &self.core.policy;
                    records.push(records::reading(
                        policy,
                        lane,
                        device,
                        temperature_c,
                        cause,
                        now_ms,
                    ));
                }
                Output::Alarm(a) => records.push(records::alarm(&self.core.policy, a, now_ms)),
                Output::Acknowledged {
                    alarm_seq,
                    alarm_time_ms,
                    by,
                } => records.push(Record::AlarmAck(crate::proto::v1::AlarmAck {
                    alarm_seq,
                    alarm_time_ms,
                    by,
                    acked_at_ms: now_ms,
                })),
                Output::HoldAll(hold) => {
                    self.last_fire_assert = Instant::now();
                    for g in 0..self.actuators.len() {
                        self.hold(g, hold, now_ms);
                    }
                }
                // Whatever period a caller saw, the one in force now is written, last.
                Output::State(StateKey::StatsNow, _) => counted = true,
                Output::State(k, v) => state.push((k, v)),
                Output::Barrier { device, command } => {
                    if let Err(why) = self.actuators.barrier(device, command) {
                        self.not_written(device, command.as_str(), why, &mut out);
                    }
                }
                Output::Outcome {
                    device,
                    command,
                    outcome,
                    detail,
                } => {
                    if outcome == "uncertain" {
                        self.status
                            .twins
                            .update(device, |t| t.uncertain_commands += 1);
                    }
                    let policy = &self.core.policy;
                    records.push(records::command_outcome(
                        policy, device, command, outcome, detail, now_ms,
                    ));
                }
                Output::DeviceState {
                    device,
                    inputs,
                    arm,
                } => {
                    let fault = self.faults.get(&device).copied().unwrap_or(0);
                    self.status.twins.update(device, |t| {
                        t.arm = arm.as_str().into();
                        t.safety_loop = inputs.is_some_and(|i| i.safety_loop);
                        t.arming_loop = inputs.is_some_and(|i| i.arming_loop);
                        t.fault_code = fault.into();
                    });
                    let body = records::barrier_state(inputs, arm, fault);
                    records.push(records::device_event(
                        &self.core.policy,
                        device,
                        now_ms,
                        body,
                    ));
                }
            }
        }
        if counted {
            // The period's counts so far, with the records that changed them; last, so no
            // older copy handed in with the outputs can overwrite it.
            state.push(self.stats.state());
        }
        self.append(records, state, ack).await;
    }

    /// Closes the statistics period once the clock has left it: at every tick, and before
    /// anything is counted (a decision in the first second of an hour counts in that hour).
    /// The finished batch and the new highest seq go into `state`; true if it rolled (the
    /// caller writes the new period, last).
    fn roll_stats(&mut self, now_ms: i64, state: &mut Vec<(StateKey, Option<Vec<u8>>)>) -> bool {
        let Some(done) = self.stats.roll(now_ms, self.core.inside()) else {
            return false;
        };
        state.push(finished_state(&done));
        state.push(self.stats.seq_state());
        self.stats_pending.add(done);
        true
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

    async fn append(
        &self,
        mut records: Vec<Record>,
        state: Vec<(StateKey, Option<Vec<u8>>)>,
        ack: Option<outbox::Ack>,
    ) {
        if records.is_empty() && state.is_empty() && ack.is_none() {
            return;
        }
        if !self.core.clock_trusted() {
            records.iter_mut().for_each(Record::mark_clock_unsynced);
        }
        let append = Append {
            records,
            state: state.into_iter().map(|(k, v)| (k.encode(), v)).collect(),
            ack,
        };
        if self.appends.send(append).await.is_err() {
            error!("Outbox writer gone; decision not recorded (its device event stays unacknowledged).");
        }
    }
}

#[path = "decisions_console.rs"]
mod console_requests;

#[cfg(test)]
#[path = "decisions_tests.rs"]
mod tests;
