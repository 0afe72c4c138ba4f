//! Each device's clock as gatehouse has learned it. A terminal re-uploads what it stored while
//! it was offline, hours later, as if it were new: such an event must be recorded, never open a
//! gate. Its age can only be read off the device's own clock, which may be minutes off or in the
//! wrong timezone — so the offset is learned from what is known to be live (heartbeats, events
//! the device itself marks live) and the age measured against it. A resident is never locked out
//! by a device's wrong clock once it has sent one heartbeat; a large offset is an alarm.
use super::machine::Core;
use super::vocabulary::{Alarm, AlarmKind, Output};

/// An offset beyond this raises [`AlarmKind::DeviceClock`] (once, until it comes back under
/// [`CLOCK_OK_MS`]).
pub const CLOCK_ALARM_MS: i64 = 5 * 60 * 1000;
const CLOCK_OK_MS: i64 = 60 * 1000;
/// Stale events in a row (by age alone) after which a device's clock is suspected.
pub const STALE_IN_A_ROW: u32 = 5;

impl Core {
    /// A live sample of `device`'s clock (a heartbeat, an event it marks live): the offset is
    /// learned from it, and an alarm goes up when it is large.
    pub fn clock_sample(
        &mut self,
        device: usize,
        device_time_ms: i64,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) {
        let Some(dev) = self.policy.devices.get(device) else {
            return;
        };
        // Against a gateway clock not known to be right, the offset would be our own error.
        if !self.clock_trusted {
            return;
        }
        let offset_ms = now_ms.saturating_sub(device_time_ms);
        let clock = self.clocks.entry(device).or_default();
        clock.offset_ms = offset_ms;
        clock.learned = true;
        if offset_ms.saturating_abs() > CLOCK_ALARM_MS && !clock.alarmed {
            clock.alarmed = true;
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::DeviceClock,
                lane: Some(dev.lane),
                device: Some(device),
                subject_id: String::new(),
                temperature_c: None,
                detail: format!(
                    "the device's clock is {} s {} gatehouse's: its events' times are wrong, their \
                     age is measured against the offset; set its time (NTP)",
                    offset_ms.saturating_abs() / 1000,
                    if offset_ms > 0 { "behind" } else { "ahead of" }
                ),
                cause: Vec::new(),
            }));
        } else if offset_ms.saturating_abs() < CLOCK_OK_MS {
            clock.alarmed = false;
        }
    }

    /// Whether an event is a stored one, from every transport alike: the device says so, or its
    /// age by the device's clock is past the policy's `stale_event_ms` — a terminal resending,
    /// minutes later, an event whose first decision was lost in a crash, its "current" flag still
    /// set. The age is measured against the offset learned from the device's heartbeats and
    /// earlier events, never from the event being judged. Until an offset is known, an event the
    /// device marks live is live (a terminal with a wrong clock must not lock residents out), the
    /// guard is told once that its ages cannot be judged yet, and it teaches the offset for the
    /// next ones; an unmarked one is measured against gatehouse's own clock (offset 0).
    pub(super) fn stored(
        &mut self,
        device: usize,
        marker: Option<bool>,
        device_time_ms: Option<i64>,
        now_ms: i64,
        out: &mut Vec<Output>,
    ) -> bool {
        let t = match (marker, device_time_ms) {
            (Some(true), _) => return true,
            (_, None) => return false,
            // An age needs our own clock to be right.
            (_, Some(_)) if !self.clock_trusted => return false,
            (_, Some(t)) => t,
        };
        let clock = self.clocks.get(&device);
        if !clock.is_some_and(|c| c.learned) && marker == Some(false) {
            self.age_unjudged(device, out);
            self.clock_sample(device, t, now_ms, out);
            return false;
        }
        // Not learned yet: gatehouse's own clock (offset 0), carried across its jumps.
        let offset = clock.map_or(0, |c| c.offset_ms);
        let lag = now_ms.saturating_sub(t).saturating_sub(offset);
        let stale = lag > self.policy.stale_event_ms;
        self.count_stale(device, stale, now_ms.saturating_sub(t), out);
        // A live one, marked so and on time, keeps the offset current (a clock that drifts
        // ahead) — only ever towards judging later events older: one that moved it the other
        // way could be a resend, and resends in a row would walk the window open. Heartbeats
        // move it both ways.
        if !stale && marker == Some(false) && lag < 0 {
            self.clock_sample(device, t, now_ms, out);
        }
        stale
    }

    /// The first event a device marks live before any heartbeat taught its clock: its age
    /// cannot be judged, so a resend of an old event would pass as live. Said once.
    fn age_unjudged(&mut self, device: usize, out: &mut Vec<Output>) {
        let Some(dev) = self.policy.devices.get(device) else {
            return;
        };
        let lane = dev.lane;
        let clock = self.clocks.entry(device).or_default();
        if std::mem::replace(&mut clock.unjudged_alarmed, true) {
            return;
        }
        out.push(Output::Alarm(Alarm {
            kind: AlarmKind::DeviceClock,
            lane: Some(lane),
            device: Some(device),
            subject_id: String::new(),
            temperature_c: None,
            detail: "its events' age cannot be judged yet (no heartbeat with its time since \
                     the start): its own \"current\" flag is trusted until one comes"
                .into(),
            cause: Vec::new(),
        }));
    }

    /// Whether a device's report about itself (an arm, a lock, a door, a heartbeat) is a stored
    /// one — the device's marker, or its age by the device's learned clock past
    /// `stale_event_ms` — and so says what was, not what is: recorded, never taken as the
    /// device's state now (a catch-up replaying lock reports would raise false tamper alarms).
    /// Unlike [`Core::stored`] for observations, it teaches nothing and counts nothing.
    pub fn report_is_stored(
        &self,
        device: usize,
        marker: Option<bool>,
        device_time_ms: Option<i64>,
        now_ms: i64,
    ) -> bool {
        match (marker, device_time_ms) {
            (Some(stored), _) => stored,
            (None, Some(t)) if self.clock_trusted => {
                let offset = self.clocks.get(&device).map_or(0, |c| c.offset_ms);
                now_ms.saturating_sub(t).saturating_sub(offset) > self.policy.stale_event_ms
            }
            _ => false,
        }
    }

    /// A device with no clock to learn from (no heartbeat time, no live marker) whose events all
    /// look stale is more likely a clock behind than a terminal replaying: after
    /// [`STALE_IN_A_ROW`] in a row the guard is told (`device_clock`), once until one is live.
    fn count_stale(&mut self, device: usize, stale: bool, lag_ms: i64, out: &mut Vec<Output>) {
        let Some(dev) = self.policy.devices.get(device) else {
            return;
        };
        let lane = dev.lane;
        let clock = self.clocks.entry(device).or_default();
        if !stale {
            clock.stale_in_a_row = 0;
            return;
        }
        clock.stale_in_a_row = clock.stale_in_a_row.saturating_add(1);
        if clock.stale_in_a_row == STALE_IN_A_ROW {
            out.push(Output::Alarm(Alarm {
                kind: AlarmKind::DeviceClock,
                lane: Some(lane),
                device: Some(device),
                subject_id: String::new(),
                temperature_c: None,
                detail: format!(
                    "{STALE_IN_A_ROW} events in a row look stale (the last {} s old by the device's clock): \
                     a clock behind locks people out — set its time (NTP); or it is replaying stored events",
                    lag_ms / 1000
                ),
                cause: Vec::new(),
            }));
        }
    }
}
