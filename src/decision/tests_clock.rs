//! The gateway's own clock: what each time rule does while it is not known to be right, and
//! timers carried across a jump (`gateway_clock.rs`), as scenarios.
use super::tests::*;
use super::*;

const YEARS_10: i64 = 10 * 365 * 24 * H;

fn unsynced(mode: Mode) -> Core {
    let mut c = Core::new(policy(), registry(), mode);
    c.set_clock_trusted(false);
    c
}

#[test]
fn on_an_unsynced_clock_residents_pass_and_visitor_passes_wait() {
    // Decades off: R3's `valid_until` (1970) and the pass's window mean nothing.
    let mut c = unsynced(Mode::Normal);
    assert_eq!(
        one(&mut c, obs(0, Some("R3"), Some(36.5), T0)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), Some(36.5), T0 + 1)),
        (false, Reason::ClockUnsynced)
    );
    // What needs no time still holds: suspended, quarantined, unknown, fever.
    assert_eq!(
        one(&mut c, obs(0, Some("R2"), Some(36.5), T0 + 2)),
        (false, Reason::Expired)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("R4"), Some(36.5), T0 + 3)),
        (false, Reason::Quarantined)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("R1"), Some(38.5), T0 + 4)),
        (false, Reason::Fever)
    );
    // Synced: the dates apply again.
    c.set_clock_trusted(true);
    assert_eq!(
        one(&mut c, obs(0, Some("R3"), Some(36.5), T0 + 5)),
        (false, Reason::Expired)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), Some(36.5), T0 + 6)),
        (true, Reason::Ok)
    );
}

#[test]
fn on_an_unsynced_clock_the_quota_neither_refuses_nor_counts() {
    let mut c = unsynced(Mode::Lockdown);
    for i in 0..4 {
        let exit = obs(4, Some("R1"), Some(36.5), T0 + i * H);
        assert_eq!(one(&mut c, exit), (true, Reason::Ok), "exit {i}");
    }
    let mut out = Vec::new();
    c.tick(T0 + 100 * H, &mut out);
    assert!(
        alarms(&out).is_empty(),
        "no overdue alarm on an unknown time"
    );
    // Synced: the outings made on the unknown clock were not counted.
    c.set_clock_trusted(true);
    assert_eq!(
        one(&mut c, obs(4, Some("R1"), Some(36.5), T0 + 101 * H)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(4, Some("R6"), Some(36.5), T0 + 102 * H)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(4, Some("R1"), Some(36.5), T0 + 103 * H)),
        (false, Reason::QuotaExceeded)
    );
}

#[test]
fn on_an_unsynced_clock_an_events_age_is_not_judged_nor_a_device_clock_learned() {
    let mut c = unsynced(Mode::Normal);
    let mut o = obs(0, Some("R1"), Some(36.5), T0);
    o.decoded.device_time_ms = Some(T0 - YEARS_10);
    assert_eq!(one(&mut c, o), (true, Reason::Ok));
    let mut out = Vec::new();
    c.clock_sample(0, T0 - YEARS_10, T0, &mut out);
    assert!(
        alarms(&out).is_empty(),
        "our own error is not the device's: {out:?}"
    );
    // The device's own stored marker needs no clock.
    let mut o = obs(0, Some("R1"), Some(36.5), T0 + 1);
    o.decoded.stored = Some(true);
    assert_eq!(one(&mut c, o), (false, Reason::StaleEvent));
}

#[test]
fn a_jump_of_ten_years_either_way_carries_the_join_window_across() {
    for delta in [YEARS_10, -YEARS_10] {
        let mut c = Core::new(policy(), registry(), Mode::Epidemic);
        let mut out = Vec::new();
        // R1 waits 1.5 s for a reading on lane west-1.
        c.observe(obs(3, Some("R1"), None, T0), &mut out);
        assert!(effects(&out).is_empty());
        c.clock_stepped(delta, &mut out);
        assert_eq!(alarms(&out), vec![AlarmKind::ClockJump]);
        assert_eq!(c.next_deadline(), Some(T0 + 1500 + delta));
        out.clear();
        // Neither fired at once (forwards) nor frozen for ten years (back): the reading 1 s later,
        // on the new clock, still joins.
        c.tick(T0 + 500 + delta, &mut out);
        assert!(effects(&out).is_empty(), "{out:?}");
        c.observe(obs(2, None, Some(36.6), T0 + 1000 + delta), &mut out);
        let d = decisions(&out)[0];
        assert_eq!(
            (d.allow, d.reason, d.temperature_c),
            (true, Reason::Ok, Some(36.6))
        );
    }
}

#[test]
fn a_jump_does_not_make_an_outing_overdue() {
    let mut c = Core::new(policy(), registry(), Mode::Lockdown);
    let mut out = Vec::new();
    c.observe(obs(4, Some("R1"), Some(36.5), T0), &mut out);
    c.clock_stepped(YEARS_10, &mut out);
    out.clear();
    c.tick(T0 + YEARS_10 + H, &mut out);
    assert!(alarms(&out).is_empty(), "{out:?}");
    c.tick(T0 + YEARS_10 + 5 * H, &mut out);
    assert_eq!(alarms(&out), vec![AlarmKind::OutingOverdue]);
}

#[test]
fn what_was_held_at_a_power_cut_goes_at_the_first_tick_even_on_a_clock_back_in_1970() {
    // Lane west-1 joins thermal-2's readings to reader-in's identifications. The box boots with
    // its clock at 1970.
    let boot = 60_000;
    // Someone waiting for a reading when the power went: decided at the first tick.
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(obs(3, Some("R1"), None, T0), &mut out);
    let mut again = restarted(Mode::Epidemic, &out);
    assert!(
        again.next_deadline().is_some_and(|d| d <= boot),
        "due at once"
    );
    let mut after = Vec::new();
    again.tick(boot, &mut after);
    let d = decisions(&after);
    assert_eq!(d.len(), 1, "{after:?}");
    assert!(d[0].not_actuated);
    // A reading taken just before the cut: recorded on its own, never joined to the next person.
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(obs(2, None, Some(36.4), T0), &mut out);
    let mut again = restarted(Mode::Epidemic, &out);
    let mut next = Vec::new();
    again.observe(obs(3, Some("R6"), None, boot + 1_000), &mut next);
    assert!(
        decisions(&next).is_empty(),
        "waits for its own reading: {next:?}"
    );
    assert!(
        next.iter().any(|o| matches!(o, Output::Reading { .. })),
        "the old reading recorded on its own: {next:?}"
    );
}
