//! Stored events uploaded late, device clocks that are off, events that do not read: the rules
//! before the rules (`stale_event`, `invalid_reading`), as scenarios.
use super::tests::*;
use super::*;

const MIN: i64 = 60_000;

/// An identification at the combined terminal (device 0) seen by the device at `device_ms`,
/// arriving at `now_ms`.
fn at(subject: &str, device_ms: i64, now_ms: i64) -> Observation {
    let mut o = obs(0, Some(subject), Some(36.5), now_ms);
    o.decoded.device_time_ms = Some(device_ms);
    o.decoded.event_id = format!("s{device_ms}");
    o
}

fn decide(c: &mut Core, o: Observation) -> (Decision, Vec<Output>) {
    let mut out = Vec::new();
    c.observe(o, &mut out);
    let d = decisions(&out);
    assert_eq!(d.len(), 1, "{out:?}");
    (d[0].clone(), out)
}

#[test]
fn an_event_hours_old_is_recorded_as_stale_and_never_opens() {
    let mut c = core();
    let (d, _) = decide(&mut c, at("R1", T0 - 3 * H, T0));
    assert_eq!(
        (d.allow, d.reason, d.rule),
        (false, Reason::StaleEvent, "stale_event")
    );
    assert!(d.not_actuated && d.gate.is_none(), "{d:?}");
    assert_eq!(c.inside(), 0);
    // A fresh one opens.
    let (d, _) = decide(&mut c, at("R1", T0 + 1000, T0 + 1200));
    assert_eq!((d.allow, d.reason), (true, Reason::Ok));
    assert!(d.gate.is_some());
}

#[test]
fn the_devices_own_marker_makes_an_event_stored_whatever_its_time() {
    let mut c = core();
    let mut o = at("R1", T0, T0);
    o.decoded.stored = Some(true);
    let (d, _) = decide(&mut c, o);
    assert_eq!((d.allow, d.reason), (false, Reason::StaleEvent));
    // Without a time at all, too (a camera's `isoffline` read with no timestamp).
    let mut o = obs(0, Some("R1"), Some(36.5), T0);
    o.decoded.stored = Some(true);
    assert_eq!(one(&mut c, o), (false, Reason::StaleEvent));
}

#[test]
fn a_terminal_in_the_wrong_timezone_locks_nobody_out_once_it_was_heard_live() {
    let mut c = core();
    // Its clock says 8 h earlier than ours: before a live sample, its events look 8 h old.
    let behind = 8 * H;
    assert_eq!(
        one(&mut c, at("R1", T0 - behind, T0)),
        (false, Reason::StaleEvent)
    );
    // A heartbeat (or an event it marks live) teaches the offset, and the alarm goes up once.
    let mut out = Vec::new();
    c.clock_sample(0, T0 + MIN - behind, T0 + MIN, &mut out);
    assert_eq!(alarms(&out), vec![AlarmKind::DeviceClock]);
    let mut again = Vec::new();
    c.clock_sample(0, T0 + 2 * MIN - behind, T0 + 2 * MIN, &mut again);
    assert!(
        alarms(&again).is_empty(),
        "one alarm, not one per heartbeat"
    );
    // Now its live events open — their records carry the offset —, and what it stored an hour
    // ago by its own clock does not.
    let now = T0 + 3 * MIN;
    let (d, _) = decide(&mut c, at("R1", now - behind, now));
    assert_eq!((d.allow, d.reason), (true, Reason::Ok));
    assert_eq!(d.device_clock_offset_ms, Some(-behind));
    assert_eq!(
        one(&mut c, at("R2", now - behind - H, now + 1)),
        (false, Reason::StaleEvent)
    );
    // A clock ahead learns the same way.
    let mut c = core();
    let mut out = Vec::new();
    c.clock_sample(0, T0 + 2 * H, T0, &mut out);
    assert_eq!(alarms(&out), vec![AlarmKind::DeviceClock]);
    assert_eq!(
        one(&mut c, at("R1", T0 + 2 * H + 500, T0 + 600)),
        (true, Reason::Ok)
    );
}

#[test]
fn an_event_the_device_marks_live_teaches_the_offset() {
    let mut c = core();
    let mut live = at("R1", T0 - 20 * MIN, T0);
    live.decoded.stored = Some(false);
    let (d, out) = decide(&mut c, live);
    assert_eq!((d.allow, d.reason), (true, Reason::Ok));
    assert!(alarms(&out).contains(&AlarmKind::DeviceClock));
    // An unmarked event on the same clock is live too.
    assert_eq!(
        one(&mut c, at("R6", T0 - 20 * MIN + 5000, T0 + 5000)),
        (true, Reason::Ok)
    );
}

/// A terminal resends, minutes later, an event whose first decision was lost in a crash — its
/// "current" flag still set. Once a heartbeat has taught its clock, its age gives it away: on
/// record, never opening again. The flag alone no longer vouches for it.
#[test]
fn a_resend_still_marked_current_is_judged_by_its_age_once_the_clock_is_known() {
    let mut c = core();
    let mut out = Vec::new();
    c.clock_sample(0, T0, T0, &mut out);
    let mut resend = at("R1", T0 - 5 * MIN, T0 + 1000);
    resend.decoded.stored = Some(false);
    let (d, _) = decide(&mut c, resend);
    assert_eq!((d.allow, d.reason), (false, Reason::StaleEvent));
    assert!(d.not_actuated && d.gate.is_none(), "{d:?}");
    // A live one on the same clock opens.
    let mut live = at("R1", T0 + 2000, T0 + 2100);
    live.decoded.stored = Some(false);
    assert_eq!(one(&mut c, live), (true, Reason::Ok));
}

/// Before any heartbeat the device's own flag is all there is: honoured (nobody locked out by a
/// wrong clock), the guard told once that ages cannot be judged yet, and the offset learned from
/// it for the events after — never from the event being judged.
#[test]
fn before_a_heartbeat_a_current_flag_is_trusted_and_the_guard_is_told() {
    let mut c = core();
    let mut first = at("R1", T0 - 3 * MIN, T0);
    first.decoded.stored = Some(false);
    let (d, out) = decide(&mut c, first);
    assert_eq!((d.allow, d.reason), (true, Reason::Ok));
    let told: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Alarm(a) if a.detail.contains("cannot be judged") => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1, "{out:?}");
    // Its clock is 3 min behind: an event it marks current from 10 min ago by that clock is old.
    let mut old = at("R6", T0 - 10 * MIN, T0 + 1000);
    old.decoded.stored = Some(false);
    let (d, out) = decide(&mut c, old);
    assert_eq!((d.allow, d.reason), (false, Reason::StaleEvent));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Alarm(a) if a.detail.contains("cannot be judged"))));
}

/// Resends less than the stale window apart, each still marked current, must not walk the learned
/// offset along with them until an old event passes as live.
#[test]
fn resends_marked_current_cannot_walk_the_offset_open() {
    let mut c = core();
    let mut out = Vec::new();
    c.clock_sample(0, T0, T0, &mut out);
    // Each 20 s older than the one before, by the device's clock, arriving a second apart.
    for k in 1..=6 {
        let mut o = at("R1", T0 - k * 20_000, T0 + k * 1000);
        o.decoded.event_id = format!("resend{k}");
        o.decoded.stored = Some(false);
        let (d, _) = decide(&mut c, o);
        if k >= 2 {
            assert_eq!(d.reason, Reason::StaleEvent, "resend {k}: {d:?}");
        }
    }
}

#[test]
fn the_same_event_twice_is_decided_once() {
    let mut c = core();
    let (d, _) = decide(&mut c, at("R1", T0, T0 + 100));
    assert!(d.allow);
    let mut out = Vec::new();
    c.observe(at("R1", T0, T0 + 900), &mut out);
    assert!(
        effects(&out).is_empty(),
        "a duplicate decides nothing: {out:?}"
    );
}

#[test]
fn an_unreadable_event_that_names_a_person_is_denied_invalid_reading() {
    let mut c = core();
    let mut o = obs(0, Some("R1"), None, T0);
    o.decoded.unreadable = Some("/currTemperature: \"warm\" is not a number".into());
    let (d, _) = decide(&mut c, o);
    assert_eq!(
        (d.allow, d.reason, d.rule),
        (false, Reason::InvalidReading, "unreadable_event")
    );
    assert!(d.gate.is_some(), "the terminal is told: a denial goes out");
}

#[test]
fn a_stored_reading_of_a_separate_thermal_station_joins_nobody() {
    let mut c = core();
    c.set_mode(Mode::Epidemic, Origin::Local, &mut Vec::new())
        .unwrap();
    // Device 2 is lane 1's thermal station; device 3 its entry reader.
    let mut reading = obs(2, None, Some(36.4), T0);
    reading.decoded.device_time_ms = Some(T0 - H);
    let mut out = Vec::new();
    c.observe(reading, &mut out);
    assert!(
        matches!(effects(&out)[..], [Output::Reading { .. }]),
        "recorded on its own: {out:?}"
    );
    let mut out = Vec::new();
    c.observe(obs(3, Some("R1"), None, T0 + 100), &mut out);
    assert!(decisions(&out).is_empty(), "waits for a live reading");
}

#[test]
fn a_device_whose_every_event_looks_stale_is_reported_once() {
    let mut c = core();
    let behind = 2 * H;
    let mut alarms_seen = Vec::new();
    for i in 0..8 {
        let now = T0 + i * 1000;
        let (d, out) = decide(&mut c, at("R1", now - behind, now));
        assert_eq!(d.reason, Reason::StaleEvent);
        alarms_seen.extend(alarms(&out));
    }
    assert_eq!(
        alarms_seen,
        vec![AlarmKind::DeviceClock],
        "once, not per event"
    );
    // A live one resets the count.
    let now = T0 + 20_000;
    assert_eq!(one(&mut c, at("R1", now, now)), (true, Reason::Ok));
}
