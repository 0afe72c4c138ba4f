//! The fire alarm panel's input (GB 55024-2022 §5.3.6: the system takes the fire linkage signal
//! and releases access control). Its contact reading fire enters fire mode at once, exactly as
//! the local command does. Back to normal it is only reported (`fire_input_cleared`): fire mode
//! ends by the local `gatehouse fire-reset`, which is refused while any input still reads fire.
//! An input that cannot be read, or whose line is faulty, is "unknown": an alarm to the guard and
//! upstream, never "no fire", and not fire mode by itself.
use super::machine::Core;
use super::vocabulary::{Alarm, AlarmKind, FireInput, Mode, Origin, Output};

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

    /// Whether some fire input still reads fire (the local reset is refused then).
    pub fn fire_input_active(&self) -> bool {
        self.fire_inputs.values().any(|s| *s == FireInput::Fire)
    }
}
