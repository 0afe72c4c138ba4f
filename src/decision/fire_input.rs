//! The fire alarm panel's input (GB 55024-2022 §5.3.6: the system takes the fire linkage signal
//! and releases access control). Its contact reading fire enters fire mode at once, exactly as
//! the local command does. Back to normal it is only reported (`fire_input_cleared`): fire mode
//! ends by the local `gatehouse fire-reset`, which is refused while any input still reads fire.
//! An input that cannot be read, or whose line is faulty, is "unknown": an alarm to the guard and
//! upstream, never "no fire", and not fire mode by itself.
use super::machine::Core;
use super::vocabulary::{Alarm, AlarmKind, FireInput, Mode, Origin, Output, Role};

impl Core {
    /// A fire input's new (debounced) reading; `detail` says why it is unknown.
    pub fn fire_input(
        &mut self,
        device: usize,
        now: FireInput,
        detail: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(dev) = self.policy.devices.get(device) else {
            return;
        };
        let lane = dev.lane;
        let before = self.fire_inputs.insert(device, now);
        if before == Some(now) {
            return;
        }
        let alarm = |kind, detail: String| {
            Output::Alarm(Alarm {
                kind,
                lane: Some(lane),
                device: Some(device),
                subject_id: String::new(),
                temperature_c: None,
                detail,
                cause: Vec::new(),
            })
        };
        match now {
            FireInput::Fire => {
                let detail = "the fire alarm panel's input reads fire: every gate opened and held";
                if self.mode == Mode::Fire {
                    out.push(alarm(AlarmKind::FireMode, detail.into()));
                    return;
                }
                // Entering fire cannot be refused; its alarm names the panel as the cause.
                let _ = self.set_mode(Mode::Fire, Origin::Local, out);
                for o in out.iter_mut() {
                    if let Output::Alarm(a) = o {
                        if a.kind == AlarmKind::FireMode && a.device.is_none() {
                            a.device = Some(device);
                            a.lane = Some(lane);
                            a.detail = detail.into();
                        }
                    }
                }
            }
            FireInput::Normal if before == Some(FireInput::Fire) => out.push(alarm(
                AlarmKind::FireInputCleared,
                "the fire alarm panel's input is back to normal; fire mode holds until \
                 `gatehouse fire-reset` at the box"
                    .into(),
            )),
            FireInput::Normal => {}
            FireInput::Unknown => out.push(alarm(
                AlarmKind::FireInputUnknown,
                format!("the fire alarm panel's input cannot be trusted ({detail}): check the module and its wiring"),
            )),
        }
    }

    /// What each fire input reads now, by device index: `None` until its first debounced
    /// reading (right after a start).
    pub fn fire_input_readings(&self) -> Vec<(usize, Option<FireInput>)> {
        let inputs = self.policy.devices.iter().enumerate();
        inputs
            .filter(|(_, d)| d.role == Role::FireInput)
            .map(|(i, _)| (i, self.fire_inputs.get(&i).copied()))
            .collect()
    }

    /// Why the local fire reset must wait, if it must: an input that reads fire, or one that
    /// cannot be read — unknown, or not read yet since the start. Unknown is never "no fire":
    /// a module that died mid-fire (a burnt cable) must not let the gates close on the people
    /// still leaving.
    pub fn fire_reset_blocked(&self) -> Option<String> {
        let readings = self.fire_input_readings();
        let id = |i: usize| self.policy.devices[i].id.as_str();
        if let Some((i, _)) = readings.iter().find(|(_, r)| *r == Some(FireInput::Fire)) {
            return Some(format!(
                "the fire alarm panel's input ({}) still reads fire: reset the panel first",
                id(*i)
            ));
        }
        let (i, r) = readings
            .iter()
            .find(|(_, r)| *r != Some(FireInput::Normal))?;
        let why = match r {
            None => "has not been read yet since the start",
            _ => "cannot be read (the module does not answer, or reports a line fault)",
        };
        Some(format!(
            "the fire alarm panel's input ({}) {why}: unknown is not \"no fire\" — \
             check the module and its wiring, then reset",
            id(*i)
        ))
    }
}

impl FireInput {
    pub fn as_str(self) -> &'static str {
        match self {
            FireInput::Normal => "normal",
            FireInput::Fire => "fire",
            FireInput::Unknown => "unknown",
        }
    }
}
