//! The gateway's own clock, as the core is told of it (`src/clock.rs` watches it). Two things:
//!
//! - **Trusted or not.** Until the time is known to be right, each rule that reads it has a
//!   stated behaviour (docs/ARCHITECTURE.md, "Time"): residents are never locked out by a wrong
//!   clock (their `valid_until` and the lockdown quota are not applied, and an outing's time is
//!   not recorded); what needs the time to be safe is refused — a visitor pass's window
//!   (`clock_unsynced`); a device event's age is not judged and no device clock is learned.
//! - **A jump.** The wall clock stepped by `delta_ms`: every timer in flight (join windows,
//!   barrier confirmations, the last open, how long a resident has been out, the devices' learned
//!   offsets) is carried across, so a step of ten years neither fires nor freezes them (how long
//!   a resident has been out is written again). Dated facts (outings, pass uses) keep the date
//!   they were given; one dated ahead of the clock is not counted.
use super::machine::Core;
use super::state_key::StateKey;
use super::vocabulary::{Alarm, AlarmKind, Output};

impl Core {
    /// The gateway's clock is (or is no longer) known to be right.
    pub fn set_clock_trusted(&mut self, trusted: bool) {
        self.clock_trusted = trusted;
    }

    pub fn clock_trusted(&self) -> bool {
        self.clock_trusted
    }

    /// The wall clock stepped by `delta_ms` (forwards positive): timers are carried across and the
    /// guard and upstream are told.
    pub fn clock_stepped(&mut self, delta_ms: i64, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.saturating_add(delta_ms);
        for lane in &mut self.lanes {
            for r in &mut lane.readings {
                r.at_ms = r.at_ms.saturating_add(delta_ms);
            }
            for w in &mut lane.waiting {
                w.until_ms = w.until_ms.saturating_add(delta_ms);
                w.obs.now_ms = w.obs.now_ms.saturating_add(delta_ms);
            }
        }
        for b in self.barriers.values_mut() {
            b.clock_stepped(delta_ms);
        }
        for (person, (since, _)) in self.out_since.iter_mut() {
            *since = since.saturating_add(delta_ms);
            out.push(Output::State(
                StateKey::OutSince(person.to_string()),
                Some(since.to_le_bytes().to_vec()),
            ));
        }
        for c in self.clocks.values_mut() {
            c.offset_ms = c.offset_ms.saturating_add(delta_ms);
        }
        let secs = (delta_ms.saturating_abs().saturating_add(500)) / 1000;
        out.push(Output::Alarm(Alarm {
            kind: AlarmKind::ClockJump,
            lane: None,
            device: None,
            subject_id: String::new(),
            temperature_c: None,
            detail: format!(
                "the gateway's clock stepped {} by {secs} s ({} days); timers carried across, \
                 records before it carry the old time",
                if delta_ms > 0 { "forwards" } else { "back" },
                secs / 86_400
            ),
            cause: Vec::new(),
        }));
    }
}
