//! Every rule as a scenario with its reason code, the join window both ways, quotas over a
//! simulated week, fire mode, and the invariants as properties.
use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::time::Instant;

pub(super) const H: i64 = 3600 * 1000;
pub(super) const T0: i64 = 1_800_000_000_000;

/// Lane 0 `east-1` (entry): a combined terminal `thermal-1` and a turnstile.
/// Lane 1 `west-1`: a separate thermal station, an entry reader and an exit reader (card), a
/// turnstile, join window 3 s before / 1.5 s after, anti-passback on.
pub(super) fn policy() -> Policy {
    let dev = |id: &str, lane, role, direction| DevicePolicy {
        id: id.into(),
        lane,
        role,
        calibration_offset_c: 0.0,
        direction,
    };
    Policy {
        plausible_min_c: 30.0,
        plausible_max_c: 43.0,
        quota: Quota {
            outings: 2,
            days: 7,
            overdue_h: 4,
        },
        min_plate_confidence: 80,
        barrier_confirm_ms: 4000,
        stale_event_ms: 30_000,
        lanes: vec![
            LanePolicy {
                id: "east-1".into(),
                fever_threshold_c: 37.3,
                gate: Some(1),
                join: None,
                anti_passback: false,
                direction: Direction::In,
            },
            LanePolicy {
                id: "west-1".into(),
                fever_threshold_c: 37.3,
                gate: Some(5),
                join: Some(JoinWindow {
                    before_ms: 3000,
                    after_ms: 1500,
                }),
                anti_passback: true,
                direction: Direction::In,
            },
        ],
        devices: vec![
            dev("thermal-1", 0, Role::Thermal, None),
            dev("gate-1", 0, Role::Turnstile, None),
            dev("thermal-2", 1, Role::Thermal, None),
            dev("reader-in", 1, Role::Identifier, None),
            dev("reader-out", 1, Role::Identifier, Some(Direction::Out)),
            dev("gate-2", 1, Role::Turnstile, None),
        ],
    }
}

pub(super) fn registry() -> Registry {
    let mut b = RegistryBuilder::default();
    b.insert("R1", "H1", ResidentStatus::Active, i64::MAX);
    b.insert("R2", "H1", ResidentStatus::Suspended, i64::MAX);
    b.insert("R3", "H2", ResidentStatus::Active, 1_000);
    b.insert("R4", "H3", ResidentStatus::Quarantined, i64::MAX);
    b.insert("R5", "H4", ResidentStatus::Active, i64::MAX);
    b.insert("R6", "H1", ResidentStatus::Active, i64::MAX);
    b.quarantine_household("H4");
    b.insert_card("10:1001", "R1");
    b.insert_card("10:1006", "R6");
    b.insert_pass(PassRow {
        id: "P1",
        host_household: "H1",
        valid_from_ms: T0,
        valid_until_ms: T0 + 24 * H,
        uses: 2,
        credentials: &["QR-777".to_string()],
        plates: &[],
    });
    b.insert_pass(PassRow {
        id: "P2",
        host_household: "H2",
        valid_from_ms: T0,
        valid_until_ms: T0 + 24 * H,
        uses: 1,
        credentials: &[],
        plates: &["沪C11111".to_string()],
    });
    b.insert_plate("粤B12345", PlateKind::Resident, "H1", i64::MAX, false);
    b.insert_plate("粤B22222", PlateKind::Resident, "H2", T0, true);
    b.insert_plate("粤B00000", PlateKind::Blacklist, "", i64::MAX, false);
    b.insert_plate("粤A99999", PlateKind::AllowList, "", i64::MAX, false);
    b.build(0)
}

pub(super) fn core() -> Core {
    Core::new(policy(), registry(), Mode::Normal)
}

pub(super) fn obs(
    device: usize,
    subject: Option<&str>,
    t: Option<f64>,
    now_ms: i64,
) -> Observation {
    let card = subject.is_some_and(|s| s.contains(':') || s.starts_with("QR"));
    Observation {
        device,
        decoded: Decoded {
            event_id: format!("e{now_ms}"),
            subject: subject.map(str::to_string),
            credential: if card {
                CredentialKind::Card
            } else {
                CredentialKind::Person
            },
            temperature_c: t,
            ..Default::default()
        },
        received: Instant::now(),
        now_ms,
        redelivered: false,
    }
}

pub(super) fn decisions(out: &[Output]) -> Vec<&Decision> {
    out.iter()
        .filter_map(|o| match o {
            Output::Decision(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// What the outputs asked to store, as the store gives it back at start.
fn saved(out: &[Output]) -> Vec<(String, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::State(k, Some(v)) => Some((k.encode(), v.clone())),
            _ => None,
        })
        .collect()
}

/// What the core asked of the world besides writing its state: gate, records, alarms.
pub(super) fn effects(out: &[Output]) -> Vec<&Output> {
    out.iter()
        .filter(|o| !matches!(o, Output::State(..)))
        .collect()
}

pub(super) fn alarms(out: &[Output]) -> Vec<AlarmKind> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alarm(a) => Some(a.kind),
            _ => None,
        })
        .collect()
}

/// Decides one observation on a fresh core; the single decision's (allow, reason).
pub(super) fn one(c: &mut Core, o: Observation) -> (bool, Reason) {
    let mut out = Vec::new();
    c.observe(o, &mut out);
    let d = decisions(&out);
    assert_eq!(d.len(), 1, "{out:?}");
    (d[0].allow, d[0].reason)
}

fn reason(subject: Option<&str>, t: Option<f64>) -> (bool, Reason) {
    one(&mut core(), obs(0, subject, t, 2_000))
}

#[test]
fn each_rule_gives_its_reason_code() {
    assert_eq!(reason(Some("R1"), Some(36.5)), (true, Reason::Ok));
    assert_eq!(reason(Some("R1"), None), (true, Reason::Ok));
    assert_eq!(reason(Some("R1"), Some(37.3)), (false, Reason::Fever));
    assert_eq!(
        reason(Some("R1"), Some(29.9)),
        (false, Reason::InvalidReading)
    );
    assert_eq!(
        reason(Some("R1"), Some(43.1)),
        (false, Reason::InvalidReading)
    );
    assert_eq!(
        reason(Some("R1"), Some(f64::NAN)),
        (false, Reason::InvalidReading)
    );
    assert_eq!(
        reason(Some("X9"), Some(36.5)),
        (false, Reason::UnknownSubject)
    );
    assert_eq!(reason(None, Some(36.5)), (false, Reason::UnknownSubject));
    assert_eq!(reason(Some("R2"), Some(36.5)), (false, Reason::Expired));
    assert_eq!(reason(Some("R3"), Some(36.5)), (false, Reason::Expired));
    assert_eq!(reason(Some("R4"), Some(36.5)), (false, Reason::Quarantined));
    // A member of a quarantined household, though active herself.
    assert_eq!(reason(Some("R5"), Some(36.5)), (false, Reason::Quarantined));
    // The card stands for the resident: the non-face way in.
    assert_eq!(reason(Some("10:1001"), Some(36.5)), (true, Reason::Ok));
    assert_eq!(
        reason(Some("10:9999"), Some(36.5)),
        (false, Reason::UnknownSubject)
    );
}

#[test]
fn nothing_to_decide_without_subject_or_temperature() {
    let mut out = Vec::new();
    core().observe(obs(0, None, None, 0), &mut out);
    assert!(out.is_empty());
}

#[test]
fn fever_denies_even_when_device_says_normal_and_the_disagreement_is_recorded() {
    let mut o = obs(0, Some("R1"), Some(38.0), 0);
    o.decoded.device_abnormal = Some(false);
    let mut out = Vec::new();
    core().observe(o, &mut out);
    let d = decisions(&out)[0];
    assert!(!d.allow && d.device_flag_disagrees);
    assert_eq!(d.gate, Some(1));
    assert_eq!(alarms(&out), vec![AlarmKind::Fever]);
}

#[test]
fn calibration_offset_applies_before_the_threshold() {
    let mut p = policy();
    p.devices[0].calibration_offset_c = 0.4;
    let mut c = Core::new(p, registry(), Mode::Normal);
    let mut out = Vec::new();
    c.observe(obs(0, Some("R1"), Some(36.9), 0), &mut out);
    let d = decisions(&out)[0];
    assert_eq!((d.reason, d.temperature_c), (Reason::Fever, Some(37.3)));
}

#[test]
fn strangers_leave_no_id() {
    let mut out = Vec::new();
    core().observe(obs(0, Some("V123"), Some(36.5), 0), &mut out);
    let d = decisions(&out)[0];
    assert_eq!(
        (d.subject_kind, d.subject_id.as_str()),
        (SubjectKind::Unknown, "")
    );
}

#[test]
fn epidemic_mode_requires_a_temperature_from_everyone() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    assert_eq!(
        one(&mut c, obs(0, Some("R1"), None, T0)),
        (false, Reason::NoTemperature)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("R1"), Some(36.6), T0 + 1)),
        (true, Reason::Ok)
    );
}

#[test]
fn a_reading_before_the_identification_joins_it() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(obs(2, None, Some(36.4), T0), &mut out);
    assert!(
        effects(&out).is_empty(),
        "a reading waits to be joined: {out:?}"
    );
    c.observe(obs(3, Some("R1"), None, T0 + 2900), &mut out);
    let d = decisions(&out)[0];
    assert_eq!(
        (d.allow, d.reason, d.temperature_c),
        (true, Reason::Ok, Some(36.4))
    );
    assert_eq!(d.cause, vec![format!("e{}", T0 + 2900), format!("e{T0}")]);
}

#[test]
fn a_reading_after_the_identification_joins_it_within_the_window() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(obs(3, Some("R1"), None, T0), &mut out);
    assert!(
        effects(&out).is_empty(),
        "the decision waits for the reading"
    );
    assert_eq!(c.next_deadline(), Some(T0 + 1500));
    c.observe(obs(2, None, Some(38.1), T0 + 1400), &mut out);
    let d = decisions(&out)[0];
    assert_eq!((d.allow, d.reason), (false, Reason::Fever));
    assert_eq!(alarms(&out), vec![AlarmKind::Fever]);
}

#[test]
fn no_reading_in_the_window_denies_no_temperature_when_it_closes() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    // Too old: 3.1 s before.
    c.observe(obs(2, None, Some(36.4), T0), &mut out);
    c.observe(obs(3, Some("R1"), None, T0 + 3100), &mut out);
    // The stale reading is recorded on its own; the identification waits.
    assert!(
        matches!(effects(&out)[..], [Output::Reading { .. }]),
        "{out:?}"
    );
    out.clear();
    c.tick(T0 + 4599, &mut out);
    assert!(effects(&out).is_empty());
    c.tick(T0 + 4600, &mut out);
    let d = decisions(&out)[0];
    assert_eq!((d.allow, d.reason), (false, Reason::NoTemperature));
}

#[test]
fn in_normal_mode_an_identification_does_not_wait_for_a_reading() {
    let mut c = core();
    assert_eq!(
        one(&mut c, obs(3, Some("R1"), None, T0)),
        (true, Reason::Ok)
    );
}

#[test]
fn a_reading_with_no_identification_is_still_recorded_and_a_fever_alarms() {
    let mut c = core();
    let mut out = Vec::new();
    c.observe(obs(2, None, Some(38.5), T0), &mut out);
    c.tick(T0 + 3001, &mut out);
    assert_eq!(alarms(&out), vec![AlarmKind::Fever]);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Reading { temperature_c, .. } if *temperature_c == 38.5)));
}

#[test]
fn visitors_pass_within_window_and_uses_and_never_in_lockdown() {
    let mut c = core();
    // Before the window opens.
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), None, T0 - 1)),
        (false, Reason::Expired)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), None, T0)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), None, T0 + 1)),
        (true, Reason::Ok)
    );
    // Two uses, both spent.
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), None, T0 + 2)),
        (false, Reason::Expired)
    );
    let mut c = core();
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), None, T0 + 25 * H)),
        (false, Reason::Expired)
    );
    let mut c = Core::new(policy(), registry(), Mode::Lockdown);
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), Some(36.5), T0)),
        (false, Reason::Lockdown)
    );
    // In lockdown a pass out of its window is `expired` first, as the README's table orders.
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), Some(36.5), T0 + 25 * H)),
        (false, Reason::Expired)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("QR-777"), Some(36.5), T0 - 1)),
        (false, Reason::Expired)
    );
}

#[test]
fn anti_passback_refuses_a_second_entry_until_an_exit() {
    let mut c = core();
    assert_eq!(
        one(&mut c, obs(3, Some("10:1001"), None, T0)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(3, Some("R1"), None, T0 + 10)),
        (false, Reason::AntiPassback),
        "the face and the card are the same person"
    );
    assert_eq!(
        one(&mut c, obs(4, Some("R1"), None, T0 + 20)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, obs(3, Some("R1"), None, T0 + 30)),
        (true, Reason::Ok)
    );
    // Lane 0 does not ask for anti-passback.
    assert_eq!(
        one(&mut c, obs(0, Some("R1"), None, T0 + 40)),
        (true, Reason::Ok)
    );
}

#[test]
fn lockdown_quota_counts_exits_per_household_over_a_simulated_week() {
    let mut c = Core::new(policy(), registry(), Mode::Lockdown);
    let exit = |c: &mut Core, who: &str, at: i64| one(c, obs(4, Some(who), Some(36.5), at));
    let back = |c: &mut Core, who: &str, at: i64| one(c, obs(3, Some(who), Some(36.5), at));
    // Household H1 (R1, R6): two outings per 7 days, shared.
    assert_eq!(exit(&mut c, "R1", T0), (true, Reason::Ok));
    assert_eq!(back(&mut c, "R1", T0 + H), (true, Reason::Ok));
    assert_eq!(exit(&mut c, "10:1006", T0 + 2 * 24 * H), (true, Reason::Ok));
    assert_eq!(back(&mut c, "R6", T0 + 2 * 24 * H + H), (true, Reason::Ok));
    assert_eq!(
        exit(&mut c, "R1", T0 + 5 * 24 * H),
        (false, Reason::QuotaExceeded)
    );
    // A week after the first outing, one is free again.
    assert_eq!(exit(&mut c, "R1", T0 + 7 * 24 * H), (true, Reason::Ok));
    // Entering is never counted.
    assert_eq!(back(&mut c, "R1", T0 + 7 * 24 * H + H), (true, Reason::Ok));
}

#[test]
fn an_overdue_outing_raises_one_alarm() {
    let mut c = Core::new(policy(), registry(), Mode::Lockdown);
    let mut out = Vec::new();
    c.observe(obs(4, Some("R1"), Some(36.5), T0), &mut out);
    out.clear();
    c.tick(T0 + 4 * H, &mut out);
    assert!(alarms(&out).is_empty());
    c.tick(T0 + 4 * H + 1, &mut out);
    c.tick(T0 + 5 * H, &mut out);
    assert_eq!(alarms(&out), vec![AlarmKind::OutingOverdue]);
}

#[test]
fn a_quarantined_exit_attempt_is_denied_with_an_alarm() {
    for mode in [Mode::Normal, Mode::Lockdown] {
        let mut c = Core::new(policy(), registry(), mode);
        let mut out = Vec::new();
        c.observe(obs(4, Some("R4"), Some(36.5), T0), &mut out);
        assert_eq!(decisions(&out)[0].reason, Reason::Quarantined);
        assert_eq!(alarms(&out), vec![AlarmKind::QuarantineExit]);
    }
}

#[test]
fn state_written_out_restores_counters() {
    let mut c = core();
    let mut out = Vec::new();
    c.observe(obs(0, Some("QR-777"), None, T0), &mut out);
    c.observe(obs(0, Some("QR-777"), None, T0 + 1), &mut out);
    let mut again = core();
    let state = saved(&out);
    again.restore(&state);
    assert_eq!(
        one(&mut again, obs(0, Some("QR-777"), None, T0 + 2)),
        (false, Reason::Expired),
        "the pass's uses survive a restart"
    );
    assert_eq!(again.inside(), 1);
}

fn any_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Normal),
        Just(Mode::Epidemic),
        Just(Mode::Lockdown),
        Just(Mode::Fire)
    ]
}

proptest! {
    #[test]
    fn a_reading_at_or_above_threshold_never_opens_outside_fire(
        t in 37.3f64..200.0, who in "R[0-9]", mode in any_mode().prop_filter("not fire", |m| *m != Mode::Fire),
        device in prop_oneof![Just(0usize), Just(3), Just(4)],
    ) {
        let mut c = Core::new(policy(), registry(), mode);
        let mut out = Vec::new();
        c.observe(obs(device, Some(&who), Some(t), T0), &mut out);
        for d in decisions(&out) {
            prop_assert!(!d.allow);
        }
    }

    /// The same through a separate thermal station whose reading joins the identification
    /// (before or after it), with a calibration offset on the station: the calibrated reading
    /// decides, and at or above the threshold nothing opens.
    #[test]
    fn a_joined_calibrated_reading_at_or_above_threshold_never_opens_outside_fire(
        raw in 30.0f64..45.0, offset in -1.0f64..1.0, who in "R[0-9]",
        mode in any_mode().prop_filter("not fire", |m| *m != Mode::Fire),
        reading_first in any::<bool>(), gap in 0i64..1400,
    ) {
        let mut p = policy();
        p.devices[2].calibration_offset_c = offset;
        let mut c = Core::new(p, registry(), mode);
        let mut out = Vec::new();
        let reading = obs(2, None, Some(raw), T0 + if reading_first { 0 } else { gap });
        let face = obs(3, Some(&who), None, T0 + if reading_first { gap } else { 0 });
        if reading_first {
            c.observe(reading, &mut out);
            c.observe(face, &mut out);
        } else {
            c.observe(face, &mut out);
            c.observe(reading, &mut out);
        }
        c.tick(T0 + 10_000, &mut out);
        let calibrated = ((raw + offset) * 100.0).round() / 100.0;
        let fever = (37.3..=43.0).contains(&calibrated);
        for d in decisions(&out) {
            // Where the mode requires a temperature the identification waits for the reading;
            // in normal mode it may be decided before the reading comes (no one waits).
            if mode != Mode::Normal {
                prop_assert_eq!(d.temperature_c, Some(calibrated), "{:?}", d);
            }
            if d.temperature_c.is_some() {
                prop_assert_eq!(d.temperature_c, Some(calibrated));
                if calibrated >= 37.3 {
                    prop_assert!(!d.allow, "{:?}", d);
                }
            }
        }
        // A fever raises its alarm either way, joined or recorded on its own.
        prop_assert_eq!(alarms(&out).contains(&AlarmKind::Fever), fever, "{:?}", out);
    }

    #[test]
    fn fire_mode_always_opens(who in proptest::option::of("[RXQ][0-9]"), t in proptest::option::of(-50f64..100.0), device in 0usize..5) {
        let mut c = Core::new(policy(), registry(), Mode::Fire);
        let mut out = Vec::new();
        c.observe(obs(device, who.as_deref(), t, T0), &mut out);
        c.tick(T0 + 10_000, &mut out);
        for d in decisions(&out) {
            prop_assert!(d.allow && d.reason == Reason::FireMode);
        }
    }

    /// An allowed decision says `ok` (or `fire_mode` in fire, `remote_open` for an operator's
    /// open); a denial never does. Random sequences on every device, every mode.
    #[test]
    fn allow_and_reason_always_agree(
        mode in any_mode(),
        steps in proptest::collection::vec((0usize..5, proptest::option::of("R[1-6]|QR-777|10:100[16]|X"), proptest::option::of(35f64..39.0), 0i64..5000), 1..40),
    ) {
        let mut c = Core::new(policy(), registry(), mode);
        let mut out = Vec::new();
        let mut now = T0;
        for (device, who, t, dt) in steps {
            now += dt;
            c.observe(obs(device, who.as_deref(), t, now), &mut out);
            c.tick(now, &mut out);
        }
        for d in decisions(&out) {
            let allowed_reason = matches!(d.reason, Reason::Ok | Reason::FireMode | Reason::RemoteOpen);
            prop_assert_eq!(d.allow, allowed_reason, "{:?}", d);
        }
    }
}

#[test]
fn a_threshold_from_above_applies_and_survives_a_restart() {
    let mut c = core();
    let mut out = Vec::new();
    assert!(
        c.set_threshold(None, 50.0, &mut out).is_err(),
        "implausible"
    );
    assert!(c.set_threshold(Some("nowhere"), 37.0, &mut out).is_err());
    c.set_threshold(Some("east-1"), 37.0, &mut out).unwrap();
    assert_eq!(
        one(&mut c, obs(0, Some("R1"), Some(37.1), T0)),
        (false, Reason::Fever)
    );
    let mut again = core();
    let state = saved(&out);
    again.restore(&state);
    assert_eq!(
        one(&mut again, obs(0, Some("R1"), Some(37.1), T0)),
        (false, Reason::Fever)
    );
    assert_eq!(
        one(&mut again, obs(3, Some("R1"), Some(37.1), T0)),
        (true, Reason::Ok),
        "only east-1"
    );
}

/// Short ids live inside the key, long ones on the heap; a key equals another only for the same
/// text, whichever way it is stored.
#[test]
fn ids_inline_or_not_are_found_by_their_text() {
    let short = "R000001";
    let plate = "浙A12345"; // 9 bytes of UTF-8
    let edge = "x".repeat(22);
    let long = "resident-0f8fad5b-d9cb-469f-a165-70867728950e";
    let mut m: id::FastSet<Id> = Default::default();
    for s in [short, plate, edge.as_str(), long] {
        m.insert(Id::new(s));
    }
    assert!(matches!(Id::new(&edge), Id::Inline { .. }));
    assert!(matches!(Id::new(&format!("{edge}y")), Id::Heap(_)));
    assert!(matches!(Id::joined("R:", &edge), Id::Heap(_)));
    for s in [short, plate, edge.as_str(), long] {
        assert!(m.contains(&Id::new(s)), "{s}");
    }
    assert!(!m.contains(&Id::new("R00000")));
    assert!(!m.contains(&Id::new("")));
    assert_eq!(Id::joined("R:", "x").as_str(), "R:x");
    assert_eq!(Id::joined("R:", long).as_str(), format!("R:{long}"));
    assert_ne!(Id::new("R1"), Id::new("R10"));
}

proptest! {
    /// The interned registry answers as a plain map of the same inserts would: the last entry
    /// for an id wins, households are shared, nothing else is found.
    #[test]
    fn the_registry_finds_what_a_map_would(
        ops in prop::collection::vec(("[a-c]{0,3}|[a-z0-9]{20,30}", 0u32..5, any::<bool>()), 0..60)
    ) {
        let mut b = RegistryBuilder::default();
        let mut model = HashMap::new();
        for (id, h, suspended) in &ops {
            let status = if *suspended { ResidentStatus::Suspended } else { ResidentStatus::Active };
            b.insert(id, &format!("H{h}"), status, 7);
            b.insert_card(&format!("card-{id}"), id);
            model.insert(id.clone(), (format!("H{h}"), status));
        }
        b.insert_card("card-of-nobody", "not-a-resident");
        let r = b.build(0);
        prop_assert_eq!(r.len(), model.len());
        for (id, (h, status)) in &model {
            let got = r.get(id);
            prop_assert_eq!(got.map(|g| g.status), Some(*status));
            prop_assert_eq!(got.map(|g| r.household_id(g)), Some(h.as_str()));
            let card = r.card(&format!("card-{id}")).copied();
            let Some(Holder::Resident(i)) = card else {
                return Err(TestCaseError::fail(format!("card of {id}: {card:?}")));
            };
            prop_assert_eq!(r.resident_id(i), id.as_str());
        }
        prop_assert!(r.get("not-a-resident").is_none());
        prop_assert!(r.card("card-of-nobody").is_none());
    }
}

/// What a restarted gateway's core holds: the state the outputs wrote, read back.
pub(super) fn restarted(mode: Mode, out: &[Output]) -> Core {
    let mut state: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for o in out {
        if let Output::State(k, v) = o {
            match v {
                Some(v) => state.insert(k.encode(), v.clone()),
                None => state.remove(&k.encode()),
            };
        }
    }
    let mut c = Core::new(policy(), registry(), mode);
    c.restore(&state.into_iter().collect::<Vec<_>>());
    c
}

#[test]
fn an_identification_waiting_in_its_window_survives_a_crash_and_is_recorded_not_acted_on() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(obs(3, Some("R1"), None, T0), &mut out);
    assert!(effects(&out).is_empty(), "waiting for a reading");
    // The gateway dies here; the ack of that message went out with the held record.
    let mut again = restarted(Mode::Epidemic, &out);
    let mut after = Vec::new();
    again.tick(T0 + 30_000, &mut after);
    let d = decisions(&after);
    assert_eq!(d.len(), 1, "decided after the restart: {after:?}");
    assert_eq!(d[0].reason, Reason::NoTemperature);
    assert!(
        d[0].not_actuated && d[0].gate.is_none(),
        "too late to act on"
    );
    // And its held record is deleted with that decision.
    let held_gone = after
        .iter()
        .any(|o| matches!(o, Output::State(StateKey::Held(_), None)));
    assert!(held_gone, "{after:?}");
    assert!(restarted(Mode::Epidemic, &[out, after].concat())
        .next_deadline()
        .is_none());
}

#[test]
fn a_fever_reading_waiting_to_be_joined_survives_a_crash_with_its_alarm() {
    let mut c = Core::new(policy(), registry(), Mode::Normal);
    let mut out = Vec::new();
    c.observe(obs(2, None, Some(38.4), T0), &mut out);
    assert!(effects(&out).is_empty(), "the reading waits to be joined");
    let mut again = restarted(Mode::Normal, &out);
    let mut after = Vec::new();
    again.tick(T0 + 10_000, &mut after);
    assert!(
        matches!(effects(&after)[..], [Output::Alarm(a), Output::Reading { .. }] if a.kind == AlarmKind::Fever),
        "{after:?}"
    );
}

#[test]
fn a_redelivered_event_whose_decision_is_durable_is_not_decided_again() {
    let mut c = core();
    let mut out = Vec::new();
    c.observe(obs(0, Some("R1"), Some(36.5), T0), &mut out);
    assert_eq!(decisions(&out).len(), 1);
    let mut again = restarted(Mode::Normal, &out);
    let mut redelivery = obs(0, Some("R1"), Some(36.5), T0);
    redelivery.redelivered = true;
    redelivery.now_ms = T0 + 5000;
    let mut after = Vec::new();
    again.observe(redelivery, &mut after);
    assert!(effects(&after).is_empty(), "no second decision: {after:?}");
    // The same serial number at another device time is another event (terminals restart
    // their serial numbers).
    let mut other = obs(0, Some("R1"), Some(36.5), T0);
    other.decoded.device_time_ms = Some(T0 + 60_000);
    other.now_ms = T0 + 60_000;
    assert_eq!(one(&mut again, other), (true, Reason::Ok));
}

#[test]
fn a_redelivery_decided_again_is_recorded_but_never_opens_however_fresh() {
    let mut c = core();
    let mut late = obs(0, Some("R1"), Some(36.5), T0 + 10_000);
    late.redelivered = true;
    late.decoded.device_time_ms = Some(T0);
    let mut out = Vec::new();
    c.observe(late, &mut out);
    let d = decisions(&out)[0];
    assert!(d.allow && d.not_actuated && d.gate.is_none(), "{d:?}");
    assert_eq!(c.inside(), 0, "not counted as a passage");
    let mut fresh = obs(0, Some("R6"), Some(36.5), T0 + 10_000);
    fresh.redelivered = true;
    fresh.decoded.device_time_ms = Some(T0 + 9_500);
    let mut out = Vec::new();
    c.observe(fresh, &mut out);
    let d = decisions(&out)[0];
    assert!(d.allow && d.not_actuated && d.gate.is_none(), "{d:?}");
    // Of unknown age: not acted on either.
    let mut unknown = obs(0, Some("R1"), Some(36.5), T0 + 20_000);
    unknown.redelivered = true;
    let mut out = Vec::new();
    c.observe(unknown, &mut out);
    assert!(decisions(&out)[0].not_actuated);
}
