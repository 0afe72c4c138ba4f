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
