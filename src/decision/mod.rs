//! The decision core: a pure, synchronous state machine of (state, observation, time) → outputs.
//! No sockets, clocks or disks in here — time is passed in — so every rule is testable in
//! microseconds, a simulated week takes a millisecond, and the hot path takes no locks.
//!
//! The rules, in the order they apply to an identification (docs/ARCHITECTURE.md, "Invariants"). The first that
//! decides gives the one reason code; `rule` names it in the passage event.
//! 0. a stored event — the device marks it so, or it is older than `stale_event_ms` by the
//!    device's learned clock (`device_clock.rs`) → deny `stale_event`, recorded, never actuated;
//!    an event that names a person but could not be read in full → deny `invalid_reading`;
//! 1. `fire` mode → allow `fire_mode` (every exit opens; a fever still raises its alarm). Fire
//!    mode comes from the local command, an order from above, or the fire panel's input
//!    (`fire_input.rs`), and ends only by the local reset — refused while the input reads fire;
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
//! Time: while the gateway's clock is not known to be right (`gateway_clock.rs`) a visitor pass
//! is refused `clock_unsynced`; a resident's `valid_until`, the lockdown quota, the overdue-outing
//! alarm and an event's age are not applied (residents are never locked out by a wrong clock).
//!
//! Temperature joins identity on lanes whose thermal station is a separate device: an
//! identification takes the lane's latest unused reading from `join.before_ms` before it; when the
//! mode requires a temperature and none is there yet, the decision waits for one until
//! `join.after_ms` after, then denies `no_temperature`. A reading that joins nobody is recorded
//! on its own when it ages out. The device's own "abnormal temperature" flag never decides; a
//! disagreement is recorded.
pub mod barrier;
mod device_clock;
mod fire_input;
mod gateway_clock;
pub mod held;
pub mod id;
pub mod machine;
pub mod policy;
pub mod registry;
mod restore;
mod rules;
pub mod state_key;
mod subject;
pub mod vocabulary;

pub use device_clock::CLOCK_ALARM_MS;
pub use id::Id;
pub use machine::Core;
pub use policy::{DevicePolicy, JoinWindow, LanePolicy, Policy, Quota};
pub use registry::{
    Holder, Pass, PassRow, Plate, PlateHolder, PlateKind, Registry, RegistryBuilder, Resident,
    ResidentStatus,
};
pub use state_key::StateKey;
pub use vocabulary::{
    Alarm, AlarmKind, CredentialKind, Decision, Decoded, Direction, FireInput, Hold, Mode,
    Observation, Origin, Output, Reason, Role, StateReport, SubjectKind,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_clock;
#[cfg(test)]
mod tests_fire;
#[cfg(test)]
mod tests_stale;
#[cfg(test)]
mod tests_vehicle;
