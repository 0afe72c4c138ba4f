//! The barrier interlock: one pure state machine per barrier that turns "let this vehicle
//! through" and what the barrier's inputs say into OPEN and CLOSE commands — and refuses the
//! unsafe ones. Safety over security (docs/ARCHITECTURE.md, "Invariants"):
//!
//! - CLOSE only while the arm is known to be up and the safety loop (under the arm) is known to
//!   be clear. Unknown inputs (never read, unreadable, contradictory limit switches) refuse it.
//! - An OPEN is never retried automatically. After one, the arm-up limit must be seen within
//!   `confirm_ms`, or the outcome is `uncertain` (and the core raises an alarm): "accepted" is not
//!   "opened".
//! - Auto-close (if the lane wants it) only after the vehicle has been on the safety loop and has
//!   left it.
//! - A vehicle arriving on the safety loop while the arm comes down reopens it at once.
//! - Held open (fire mode): nothing closes.
//! - An arm that goes up from down with no open of ours in the confirm window before it is
//!   reported `Tampered` (a coil written by someone else on the LAN, a manual key switch, a broken
//!   controller): the core raises a tamper alarm.

/// The barrier's discrete inputs, as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BarrierInputs {
    pub arm_up: bool,
    pub arm_down: bool,
    /// The loop under the arm: a vehicle is there.
    pub safety_loop: bool,
    /// The loop before the arm: a vehicle is waiting.
    pub arming_loop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Up,
    Down,
    Moving,
    /// Never read, unreadable, or both limit switches at once.
    Unknown,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Up => "up",
            Arm::Down => "down",
            Arm::Moving => "moving",
            Arm::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierCommand {
    Open,
    Close,
}

impl BarrierCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            BarrierCommand::Open => "open",
            BarrierCommand::Close => "close",
        }
    }
}

/// What the interlock asks for or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierOutput {
    /// Send this to the barrier now.
    Command(BarrierCommand),
    /// The limit switch confirmed the command.
    Confirmed(BarrierCommand),
    /// Not confirmed in time (never retried).
    Uncertain(BarrierCommand),
    /// A close was asked for and refused, with why.
    Refused(BarrierCommand, &'static str),
    /// What the barrier reports changed (arm, loops, readability).
    Changed,
    /// The arm went up, and no open of ours could explain it.
    Tampered,
}

#[derive(Debug, Clone, Copy)]
pub struct BarrierConfig {
    /// Close on its own once the vehicle has cleared the safety loop.
    pub auto_close: bool,
    /// The arm must reach its limit this long after a command.
    pub confirm_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Barrier {
    pub config: BarrierConfig,
    inputs: Option<BarrierInputs>,
    /// The command sent and not yet confirmed, with its deadline.
    awaiting: Option<(BarrierCommand, i64)>,
    /// An open for a vehicle is in progress: auto-close may follow once it has passed.
    passage: bool,
    /// The vehicle has been on the safety loop since the open.
    vehicle_on_loop: bool,
    held_open: bool,
    /// When we last sent an open (unix ms): an arm rising within the confirm window after it is
    /// ours.
    last_open_ms: Option<i64>,
}

impl Barrier {
    pub fn new(config: BarrierConfig) -> Barrier {
        Barrier {
            config,
            inputs: None,
            awaiting: None,
            passage: false,
            vehicle_on_loop: false,
            held_open: false,
            last_open_ms: None,
        }
    }

    /// The wall clock stepped: the confirmation awaited and the last open move with it.
    pub fn clock_stepped(&mut self, delta_ms: i64) {
        if let Some((_, deadline)) = &mut self.awaiting {
            *deadline = deadline.saturating_add(delta_ms);
        }
        if let Some(at) = &mut self.last_open_ms {
            *at = at.saturating_add(delta_ms);
        }
    }

    pub fn inputs(&self) -> Option<BarrierInputs> {
        self.inputs
    }

    pub fn arm(&self) -> Arm {
        match self.inputs {
            None => Arm::Unknown,
            Some(i) => match (i.arm_up, i.arm_down) {
                (true, false) => Arm::Up,
                (false, true) => Arm::Down,
                (false, false) => Arm::Moving,
                (true, true) => Arm::Unknown,
            },
        }
    }

    /// Whether a CLOSE may go out now, and if not, why.
    pub fn may_close(&self) -> Result<(), &'static str> {
        if self.held_open {
            return Err("held open (fire mode)");
        }
        may_close(self.inputs)
    }

    /// A command this barrier was sent never reached it (its link went down first, it waited
    /// past its bound, or a fresh read refused a close). Nothing awaits its confirmation, and an
    /// open that was not written cannot explain an arm that rises later. Never resent: an open
    /// waits for a new decision; a close is judged again on the next fresh inputs, as an
    /// auto-close is (the passage is not over, so a car that rolled under the arm and leaves
    /// lets it close then; an arm left up would let everyone after in).
    pub fn not_written(&mut self, c: BarrierCommand) {
        if matches!(self.awaiting, Some((awaited, _)) if awaited == c) {
            self.awaiting = None;
        }
        match c {
            BarrierCommand::Open => self.last_open_ms = None,
            BarrierCommand::Close => {
                self.passage = true;
                self.vehicle_on_loop = true;
            }
        }
    }

    /// A vehicle may pass: open (once), or keep open if the arm is already up.
    pub fn open(&mut self, now_ms: i64, out: &mut Vec<BarrierOutput>) {
        self.passage = true;
        self.vehicle_on_loop = false;
        if self.arm() == Arm::Up {
            return;
        }
        // Already on its way up: a second vehicle's open is not sent again.
        if matches!(self.awaiting, Some((BarrierCommand::Open, _))) {
            return;
        }
        self.send(BarrierCommand::Open, now_ms, out);
    }

    /// A close asked for (auto-close, or an operator): sent only if safe.
    pub fn close(&mut self, now_ms: i64, out: &mut Vec<BarrierOutput>) {
        match self.may_close() {
            Ok(()) => {
                self.passage = false;
                self.vehicle_on_loop = false;
                self.send(BarrierCommand::Close, now_ms, out);
            }
            Err(why) => out.push(BarrierOutput::Refused(BarrierCommand::Close, why)),
        }
    }

    /// Fire: open and never close until released.
    pub fn hold_open(&mut self, now_ms: i64, out: &mut Vec<BarrierOutput>) {
        self.held_open = true;
        if self.arm() != Arm::Up {
            self.send(BarrierCommand::Open, now_ms, out);
        }
    }

    pub fn held_open(&self) -> bool {
        self.held_open
    }

    pub fn release(&mut self) {
        self.held_open = false;
    }

    fn send(&mut self, c: BarrierCommand, now_ms: i64, out: &mut Vec<BarrierOutput>) {
        if c == BarrierCommand::Open {
            self.last_open_ms = Some(now_ms);
        }
        self.awaiting = Some((c, now_ms + self.config.confirm_ms));
        out.push(BarrierOutput::Command(c));
    }

    /// New inputs from the barrier (`None`: could not be read).
    pub fn update(
        &mut self,
        inputs: Option<BarrierInputs>,
        now_ms: i64,
        out: &mut Vec<BarrierOutput>,
    ) {
        let before = self.arm();
        if inputs != self.inputs {
            self.inputs = inputs;
            out.push(BarrierOutput::Changed);
        }
        let arm = self.arm();
        if unexpected_open(
            before,
            arm,
            self.last_open_ms,
            now_ms,
            self.config.confirm_ms,
        ) {
            out.push(BarrierOutput::Tampered);
        }
        if let Some((c, _)) = self.awaiting {
            let reached = match c {
                BarrierCommand::Open => arm == Arm::Up,
                BarrierCommand::Close => arm == Arm::Down,
            };
            if reached {
                self.awaiting = None;
                out.push(BarrierOutput::Confirmed(c));
            }
        }
        // Held open (fire): an arm seen down again — a barrier back after a restart or a link
        // loss, a controller that closed on its own timer — is opened again at once.
        if self.held_open && arm == Arm::Down && self.awaiting.is_none() {
            self.send(BarrierCommand::Open, now_ms, out);
            return;
        }
        let Some(i) = self.inputs else { return };
        // The arm coming down onto a vehicle: up again at once (a reversal, not a retry).
        if i.safety_loop && matches!(self.awaiting, Some((BarrierCommand::Close, _))) {
            self.passage = true;
            self.send(BarrierCommand::Open, now_ms, out);
            return;
        }
        if self.passage && i.safety_loop {
            self.vehicle_on_loop = true;
        }
        let passed = self.passage && self.vehicle_on_loop && !i.safety_loop;
        if passed && self.config.auto_close && self.awaiting.is_none() && !self.held_open {
            self.close(now_ms, out);
        }
    }

    /// Deadlines: a command not confirmed in time is uncertain, and is not retried.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<BarrierOutput>) {
        if let Some((c, deadline)) = self.awaiting {
            if now_ms >= deadline {
                self.awaiting = None;
                out.push(BarrierOutput::Uncertain(c));
            }
        }
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.awaiting.map(|(_, d)| d)
    }
}

/// Whether a CLOSE may be written to a barrier whose inputs read `inputs` (`None`: unreadable),
/// and if not, why: the arm known up (one limit switch, not both) and the safety loop known clear.
/// The interlock asks it before it sends a close; the bus asks it again on a fresh read at the
/// moment it writes one, so a car that arrived in between is never under a falling arm.
pub fn may_close(inputs: Option<BarrierInputs>) -> Result<(), &'static str> {
    let Some(i) = inputs else {
        return Err("barrier state unknown");
    };
    if i.safety_loop {
        return Err("safety loop occupied");
    }
    if !i.arm_up || i.arm_down {
        return Err("arm not known to be up");
    }
    Ok(())
}

/// The tamper rule, for every barrier that reports its arm (an interlocked Modbus barrier, a
/// camera's barrier status): the arm went up from a position known not to be up, and no open of
/// ours in the confirm window before explains it (`unexpected_open`: a coil written on the LAN, a
/// key switch, a broken controller).
pub fn unexpected_open(
    before: Arm,
    now: Arm,
    last_open_ms: Option<i64>,
    now_ms: i64,
    confirm_ms: i64,
) -> bool {
    let ours = last_open_ms.is_some_and(|at| now_ms - at <= confirm_ms);
    now == Arm::Up && matches!(before, Arm::Down | Arm::Moving) && !ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UP: BarrierInputs = BarrierInputs {
        arm_up: true,
        arm_down: false,
        safety_loop: false,
        arming_loop: false,
    };
    const DOWN: BarrierInputs = BarrierInputs {
        arm_up: false,
        arm_down: true,
        safety_loop: false,
        arming_loop: false,
    };

    fn barrier(auto_close: bool) -> Barrier {
        Barrier::new(BarrierConfig {
            auto_close,
            confirm_ms: 4000,
        })
    }

    fn commands(out: &[BarrierOutput]) -> Vec<BarrierCommand> {
        out.iter()
            .filter_map(|o| match o {
                BarrierOutput::Command(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_vehicle_passes_and_the_arm_closes_only_after_it_cleared_the_loop() {
        let mut b = barrier(true);
        let mut out = Vec::new();
        b.update(Some(DOWN), 0, &mut out);
        b.open(10, &mut out);
        assert_eq!(commands(&out), vec![BarrierCommand::Open]);
        out.clear();
        b.update(
            Some(BarrierInputs {
                arm_down: false,
                ..DOWN
            }),
            500,
            &mut out,
        );
        b.update(Some(UP), 2000, &mut out);
        assert!(out.contains(&BarrierOutput::Confirmed(BarrierCommand::Open)));
        // Up, loop still empty: the car has not passed yet; nothing closes.
        b.update(
            Some(BarrierInputs {
                arming_loop: true,
                ..UP
            }),
            2500,
            &mut out,
        );
        b.update(
            Some(BarrierInputs {
                safety_loop: true,
                ..UP
            }),
            3000,
            &mut out,
        );
        assert_eq!(commands(&out), vec![]);
        b.update(Some(UP), 4000, &mut out);
        assert_eq!(commands(&out), vec![BarrierCommand::Close]);
    }

    #[test]
    fn an_open_not_confirmed_in_time_is_uncertain_and_never_retried() {
        let mut b = barrier(true);
        let mut out = Vec::new();
        b.update(Some(DOWN), 0, &mut out);
        b.open(0, &mut out);
        b.tick(3999, &mut out);
        b.tick(4000, &mut out);
        b.tick(9000, &mut out);
        assert_eq!(commands(&out), vec![BarrierCommand::Open]);
        assert_eq!(
            out.iter()
                .filter(|o| **o == BarrierOutput::Uncertain(BarrierCommand::Open))
                .count(),
            1
        );
    }

    #[test]
    fn close_is_refused_with_the_loop_occupied_or_the_state_unknown_and_a_car_under_a_falling_arm_reopens_it(
    ) {
        let mut b = barrier(false);
        let mut out = Vec::new();
        b.close(0, &mut out);
        assert_eq!(
            out,
            vec![BarrierOutput::Refused(
                BarrierCommand::Close,
                "barrier state unknown"
            )]
        );
        out.clear();
        b.update(
            Some(BarrierInputs {
                safety_loop: true,
                ..UP
            }),
            0,
            &mut out,
        );
        b.close(0, &mut out);
        assert!(commands(&out).is_empty());
        out.clear();
        b.update(Some(UP), 10, &mut out);
        b.close(10, &mut out);
        assert_eq!(commands(&out), vec![BarrierCommand::Close]);
        out.clear();
        b.update(
            Some(BarrierInputs {
                arm_up: false,
                safety_loop: true,
                ..UP
            }),
            500,
            &mut out,
        );
        assert_eq!(commands(&out), vec![BarrierCommand::Open]);
    }

    /// The bus refused a close (a car rolled under the arm before it was written): the passage
    /// is not over — when the car leaves, the next fresh inputs close the arm, never the stale
    /// command. An arm left up would let everyone after in.
    #[test]
    fn a_close_the_bus_did_not_write_is_judged_again_on_the_next_fresh_inputs() {
        let mut b = barrier(true);
        let mut out = Vec::new();
        b.update(Some(DOWN), 0, &mut out);
        b.open(10, &mut out);
        b.update(Some(UP), 1000, &mut out);
        let on_loop = BarrierInputs {
            safety_loop: true,
            ..UP
        };
        b.update(Some(on_loop), 1500, &mut out);
        out.clear();
        b.update(Some(UP), 2000, &mut out);
        assert_eq!(commands(&out), vec![BarrierCommand::Close]);
        // A second car under the arm before the bus wrote it: refused there, not written.
        b.not_written(BarrierCommand::Close);
        out.clear();
        b.update(Some(on_loop), 2100, &mut out);
        assert!(commands(&out).is_empty(), "no close onto the car: {out:?}");
        b.update(Some(UP), 3000, &mut out);
        assert_eq!(
            commands(&out),
            vec![BarrierCommand::Close],
            "closed once it left"
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Inputs(Option<BarrierInputs>),
        Open,
        Close,
        Hold,
        Release,
        Tick(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let inputs = proptest::option::weighted(
            0.9,
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
                |(arm_up, arm_down, safety_loop, arming_loop)| BarrierInputs {
                    arm_up,
                    arm_down,
                    safety_loop,
                    arming_loop,
                },
            ),
        );
        prop_oneof![
            4 => inputs.prop_map(Step::Inputs),
            2 => Just(Step::Open),
            2 => Just(Step::Close),
            1 => Just(Step::Hold),
            1 => Just(Step::Release),
            2 => (0i64..6000).prop_map(Step::Tick),
        ]
    }

    #[test]
    fn an_arm_that_rises_without_our_open_is_tampering_and_ours_is_not() {
        let mut b = barrier(false);
        let mut out = Vec::new();
        let down = BarrierInputs {
            arm_down: true,
            ..Default::default()
        };
        let up = BarrierInputs {
            arm_up: true,
            ..Default::default()
        };
        b.update(Some(down), 0, &mut out);
        // Someone writes the OPEN coil on the LAN: the arm rises, we sent nothing.
        b.update(Some(up), 1000, &mut out);
        assert!(out.contains(&BarrierOutput::Tampered), "{out:?}");
        // Our own open, confirmed within the window: no alarm.
        let mut out = Vec::new();
        let mut b = barrier(false);
        b.update(Some(down), 0, &mut out);
        b.open(1000, &mut out);
        b.update(Some(up), 2000, &mut out);
        assert!(!out.contains(&BarrierOutput::Tampered), "{out:?}");
        // An arm already up when first read (after a restart) is no news.
        let mut out = Vec::new();
        let mut b = barrier(false);
        b.update(Some(up), 0, &mut out);
        assert!(!out.contains(&BarrierOutput::Tampered), "{out:?}");
    }

    proptest! {
        /// A car parked on the safety loop, or an arm whose position is unknown, blocks every
        /// close — over random sequences of inputs, decisions, operator closes, fire holds and time.
        #[test]
        fn close_never_goes_out_onto_an_occupied_loop_or_an_unknown_arm(
            auto_close in any::<bool>(),
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut b = barrier(auto_close);
            let mut now = 0;
            let mut last: Option<BarrierInputs> = None;
            // Fire: from a hold until the release, no close goes out, whatever else happens.
            let mut held = false;
            for s in steps {
                let mut out = Vec::new();
                match s {
                    Step::Inputs(i) => { last = i; b.update(i, now, &mut out) }
                    Step::Open => b.open(now, &mut out),
                    Step::Close => b.close(now, &mut out),
                    Step::Hold => { held = true; b.hold_open(now, &mut out) }
                    Step::Release => { held = false; b.release() }
                    Step::Tick(dt) => { now += dt; b.tick(now, &mut out) }
                }
                for c in commands(&out) {
                    if c == BarrierCommand::Close {
                        prop_assert!(!held, "a close while fire holds the barrier open");
                        let i = last.expect("a close only with known inputs");
                        prop_assert!(!i.safety_loop, "close onto an occupied loop");
                        prop_assert!(i.arm_up && !i.arm_down, "close with the arm not known up");
                    }
                }
                if matches!(s, Step::Hold) {
                    prop_assert!(
                        commands(&out).contains(&BarrierCommand::Open)
                            || last.is_some_and(|i| i.arm_up && !i.arm_down),
                        "a fire hold opens the barrier unless it is already up"
                    );
                }
                // Time alone never produces a command: no automatic retry.
                if matches!(s, Step::Tick(_)) {
                    prop_assert!(commands(&out).is_empty());
                }
            }
        }
    }
}
