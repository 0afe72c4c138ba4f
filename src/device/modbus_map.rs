//! A Modbus barrier's register map (a profile's `[modbus]`): which coils pulse OPEN / CLOSE / STOP,
//! which discrete inputs are the arm's limits and the loops, where the fault code is.
use serde::Deserialize;

/// Where a barrier profile's coils and inputs are (from the profile's `[modbus]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSpec {
    pub coils: Coils,
    pub inputs: Inputs,
    /// Holding register with the controller's fault code, if it has one.
    pub fault_register: Option<u16>,
    /// How long a coil is held on for one command.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
}

fn default_pulse_ms() -> u64 {
    500
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coils {
    pub open: u16,
    pub close: u16,
    pub stop: u16,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub arm_up: u16,
    pub arm_down: u16,
    pub safety_loop: u16,
    pub arming_loop: u16,
}

impl Inputs {
    /// The first input and how many to read for all four; `None` if they lie too far apart for
    /// one request (at most 2000; profile validation refuses that).
    pub fn span(&self) -> Option<(u16, u16)> {
        let all = [
            self.arm_up,
            self.arm_down,
            self.safety_loop,
            self.arming_loop,
        ];
        let lo = all.iter().copied().min().unwrap_or(0);
        let hi = all.iter().copied().max().unwrap_or(0);
        let count = hi - lo;
        (count < 2000).then_some((lo, count + 1))
    }
}

/// A fire alarm panel's contact on an I/O module (a profile's `[fire_input]`): the discrete input
/// it is wired to, the module's line-fault input where it supervises the line, and how long a
/// reading must hold before it counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FireInputSpec {
    /// The discrete input the panel's fire contact is wired to.
    pub fire: u16,
    /// What that input reads in fire: `true` for a normally-open contact that closes on fire.
    #[serde(default = "default_true")]
    pub fire_when: bool,
    /// A supervised-input module's line-fault bit (open or short circuit on the contact's line).
    pub fault: Option<u16>,
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_debounce_ms() -> u64 {
    300
}

impl FireInputSpec {
    /// The first input and how many to read for both.
    pub fn span(&self) -> (u16, u16) {
        let lo = self.fire.min(self.fault.unwrap_or(self.fire));
        let hi = self.fire.max(self.fault.unwrap_or(self.fire));
        (lo, hi - lo + 1)
    }
}
