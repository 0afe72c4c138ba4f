//! Plate reads at a vehicle lane: each vehicle rule's reason, the guard called on an uncertain
//! read, lockdown's allow-list, a camera's replay decided once, as scenarios.
use super::tests::*;
use super::*;

fn plate(plate: &str, confidence: u8, id: &str, now_ms: i64) -> Observation {
    let mut o = obs(0, Some(plate), None, now_ms);
    o.decoded.credential = CredentialKind::Plate;
    o.decoded.confidence = Some(confidence);
    o.decoded.event_id = id.into();
    o.decoded.dedupe = true;
    o
}

#[test]
fn vehicle_rules_give_their_reason_codes() {
    let mut c = core();
    let mut d = |p: &str, conf: u8, id: &str, at: i64| one(&mut c, plate(p, conf, id, at));
    assert_eq!(d("粤B12345", 95, "1", T0), (true, Reason::Ok));
    assert_eq!(d("粤B12345", 79, "2", T0), (false, Reason::LowConfidence));
    assert_eq!(d("粤B99999", 95, "3", T0), (false, Reason::UnknownSubject));
    assert_eq!(d("粤B00000", 95, "4", T0), (false, Reason::Blacklisted));
    assert_eq!(d("粤B22222", 95, "5", T0 + 1), (false, Reason::Expired));
    assert_eq!(d("沪C11111", 95, "6", T0), (true, Reason::Ok));
    assert_eq!(
        d("沪C11111", 95, "7", T0 + 1),
        (false, Reason::Expired),
        "one use"
    );
    assert_eq!(d("粤A99999", 95, "8", T0), (true, Reason::Ok));
}

#[test]
fn a_low_confidence_read_calls_the_guard_and_epidemic_mode_asks_no_temperature_of_a_car() {
    let mut c = Core::new(policy(), registry(), Mode::Epidemic);
    let mut out = Vec::new();
    c.observe(plate("粤B12345", 40, "1", T0), &mut out);
    assert_eq!(decisions(&out)[0].reason, Reason::LowConfidence);
    assert_eq!(alarms(&out), vec![AlarmKind::LowConfidence]);
    out.clear();
    c.observe(plate("粤B12345", 99, "2", T0), &mut out);
    let d = decisions(&out)[0];
    assert_eq!(
        (d.allow, d.subject_kind, d.subject_id.as_str()),
        (true, SubjectKind::Plate, "粤B12345")
    );
}

#[test]
fn lockdown_admits_only_allow_listed_vehicles() {
    let mut c = Core::new(policy(), registry(), Mode::Lockdown);
    assert_eq!(
        one(&mut c, plate("粤B12345", 95, "1", T0)),
        (false, Reason::Lockdown)
    );
    assert_eq!(
        one(&mut c, plate("粤A99999", 95, "2", T0)),
        (true, Reason::Ok)
    );
    assert_eq!(
        one(&mut c, plate("沪C11111", 95, "3", T0)),
        (false, Reason::Lockdown)
    );
    // A visitor vehicle pass out of its window is `expired` before `lockdown`.
    assert_eq!(
        one(&mut c, plate("沪C11111", 95, "4", T0 + 400 * 24 * H)),
        (false, Reason::Expired)
    );
}

#[test]
fn a_replayed_plate_read_is_decided_once_and_the_cameras_direction_counts() {
    let mut c = core();
    let mut out = Vec::new();
    c.observe(plate("粤B12345", 95, "p-1", T0), &mut out);
    c.observe(plate("粤B12345", 95, "p-1", T0 + 5000), &mut out);
    assert_eq!(decisions(&out).len(), 1);
    let mut leaving = plate("粤B12345", 95, "p-2", T0 + 6000);
    leaving.decoded.direction = Some(Direction::Out);
    c.observe(leaving, &mut out);
    assert_eq!(decisions(&out)[1].direction, Direction::Out);
}
