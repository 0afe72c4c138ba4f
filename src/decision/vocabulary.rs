//! The decision core's vocabulary: what it hears from the devices (observations, normalised by
//! the profiles), what it decides (decisions with one reason code, alarms), and what it asks the
//! world to do (outputs). Nothing here knows a vendor, a transport or a wire format.
use super::barrier::{Arm, BarrierCommand, BarrierInputs};
use super::state_key::StateKey;
use serde::Deserialize;
use std::fmt;
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
    /// The event happened a while ago (a terminal's stored record, uploaded late): recorded,
    /// never opens a gate.
    StaleEvent,
    /// The gateway's clock is not known to be right, and the rule needs it (a visitor pass's
    /// window): not honoured until it is. Residents are never refused for this.
    ClockUnsynced,
}

impl Reason {
    /// Every reason, in declaration order (`reason as usize` indexes it: `/metrics` counts by
    /// it). A new reason goes here too.
    pub const ALL: [Reason; 17] = [
        Reason::Ok,
        Reason::Fever,
        Reason::InvalidReading,
        Reason::NoTemperature,
        Reason::UnknownSubject,
        Reason::Expired,
        Reason::Quarantined,
        Reason::QuotaExceeded,
        Reason::Lockdown,
        Reason::Blacklisted,
        Reason::LowConfidence,
        Reason::AntiPassback,
        Reason::FireMode,
        Reason::RemoteOpen,
        Reason::DeviceFault,
        Reason::StaleEvent,
        Reason::ClockUnsynced,
    ];

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
            Reason::StaleEvent => "stale_event",
            Reason::ClockUnsynced => "clock_unsynced",
        }
    }
}

/// The policy in force (docs/ARCHITECTURE.md, "Words").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
    pub fn requires_temperature(self) -> bool {
        matches!(self, Mode::Epidemic | Mode::Lockdown)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
    /// Not acted on (a redelivery after a restart, whose first decision's command may have gone
    /// out; a stored event): recorded, no gate command, no passage counted.
    pub not_actuated: bool,
    /// The identifying device's clock offset as learned (its time minus gatehouse's), if any.
    pub device_clock_offset_ms: Option<i64>,
    /// How the subject was identified; `None` for a remote open.
    pub credential: Option<CredentialKind>,
    /// The subject's household: a resident's, a resident vehicle's, a visitor pass's host; empty
    /// when there is none.
    pub household: String,
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
    /// A barrier's arm went up with no open of ours (`unexpected_open`).
    Tamper,
    /// A device's clock is far off gatehouse's: its events' age is measured against the
    /// learned offset, but its records' own times are wrong.
    DeviceClock,
    /// The fire panel's contact is back to normal: fire mode holds until the local reset.
    FireInputCleared,
    /// The fire panel's input cannot be read, or its line is faulty: neither fire nor "no fire".
    FireInputUnknown,
    /// The gateway's wall clock stepped (forwards or back) by more than a second.
    ClockJump,
    /// An open was decided and never reached its gate (its link went down first, or it waited
    /// past its transport's bound): whoever was let through may be waiting there.
    CommandNotSent,
}

/// What a fire panel's supervised input reads (debounced by its source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireInput {
    Normal,
    Fire,
    /// The module does not answer, answers with an exception, or reports a line fault.
    Unknown,
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
    State(StateKey, Option<Vec<u8>>),
    /// Send this to an interlocked barrier now.
    Barrier {
        device: usize,
        command: BarrierCommand,
    },
    /// What became of a gate command: sent, confirmed, uncertain, refused (with why). `command`
    /// as the record names it (`open`, `close`, `open_in`, `hold_open`, …).
    Outcome {
        device: usize,
        command: &'static str,
        outcome: &'static str,
        detail: &'static str,
    },
    /// A barrier's inputs changed (`None`: unreadable).
    DeviceState {
        device: usize,
        inputs: Option<BarrierInputs>,
        arm: Arm,
    },
    /// An alarm acknowledged from above (an order): recorded, and closed on the console.
    Acknowledged {
        alarm_seq: u64,
        alarm_time_ms: i64,
        by: String,
    },
}

/// One device message, normalised, as it reaches the core.
#[derive(Debug, Clone)]
pub struct Observation {
    pub device: usize,
    pub decoded: Decoded,
    pub received: Instant,
    pub now_ms: i64,
    /// The device's broker sent it again (MQTT DUP): the first delivery was never acknowledged,
    /// so the gateway may have stopped before deciding it, or before its decision was durable.
    pub redelivered: bool,
}

/// What a device does at its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Thermal,
    Identifier,
    Turnstile,
    PlateCamera,
    Barrier,
    Loop,
    /// A dry contact of the fire alarm panel, read through an I/O module.
    FireInput,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Thermal => "thermal",
            Role::Identifier => "identifier",
            Role::Turnstile => "turnstile",
            Role::PlateCamera => "plate_camera",
            Role::Barrier => "barrier",
            Role::Loop => "loop",
            Role::FireInput => "fire_input",
        }
    }

    /// Devices that let someone through and so receive the lane's commands.
    pub fn is_gate(self) -> bool {
        matches!(self, Role::Turnstile | Role::Barrier)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device's report about itself (not an identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateReport {
    Arm(Arm),
    Loop(bool),
    Ack(i64),
    /// The device says it is alive (a heartbeat), with its clock where it sends one.
    Heartbeat,
}

/// What a device's subject id is: a face matched to a registry person id, or a card / QR
/// number (a resident's or a visitor pass's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    #[default]
    Person,
    Card,
    /// A licence plate (vehicle lanes).
    Plate,
}

/// A device message in normalised form: what the decision core needs, nothing more.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub event_id: String,
    pub subject: Option<String>,
    pub credential: CredentialKind,
    /// As the device reported it, converted to °C; not yet calibrated.
    pub temperature_c: Option<f64>,
    pub device_abnormal: Option<bool>,
    /// The device saw someone it does not know (a face with no match): an identification
    /// attempt with no subject, to be denied, not ignored.
    pub stranger: bool,
    /// A plate reader's confidence, 1–100.
    pub confidence: Option<u8>,
    /// The direction the device saw (a camera's approaching / leaving), over the lane's.
    pub direction: Option<Direction>,
    /// `event_id` is a dedupe key: the device replays records (same id twice = one read).
    pub dedupe: bool,
    /// Not an observation but the device's report about itself (status topics).
    pub state: Option<StateReport>,
    /// When the device saw it, by the device's clock (unix ms), where the profile reads it.
    pub device_time_ms: Option<i64>,
    /// A device time read only for the event's identity (the profile's `id_time`), unix ms.
    pub id_time_ms: Option<i64>,
    /// The device's own marker: `Some(true)` a stored record uploaded late (Hikvision
    /// `currentEvent: false`, Zhenshi `isoffline`), `Some(false)` live. The core also marks an
    /// event stored when its age, by the device's learned clock, is past `stale_event_ms`.
    pub stored: Option<bool>,
    /// Part of the event could not be read (a temperature that is no number, an unknown unit):
    /// why. The person it names is denied `invalid_reading`, so the terminal asks again.
    pub unreadable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn every_reason_is_listed_once_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
