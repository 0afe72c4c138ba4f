//! Fire mode as scenarios: it opens everything and holds until the local reset, and the reset
//! waits for every fire alarm panel input to read normal (`fire_input.rs`).
use super::tests::*;
use super::*;

#[test]
fn fire_mode_opens_everything_and_only_a_local_reset_leaves_it() {
    let mut c = core();
    let mut out = Vec::new();
    c.set_mode(Mode::Fire, Origin::Remote, &mut out).unwrap();
    assert!(out.contains(&Output::HoldAll(Hold::Open)));
    assert_eq!(
        c.set_mode(Mode::Normal, Origin::Remote, &mut out),
        Err(Reason::FireMode)
    );
    assert_eq!(
        c.set_mode(Mode::Lockdown, Origin::Local, &mut out),
        Err(Reason::FireMode)
    );
    assert_eq!(
        one(&mut c, obs(0, Some("X"), Some(38.0), T0)),
        (true, Reason::FireMode)
    );
    out.clear();
    assert!(c.fire_reset(&mut out));
    assert!(out.contains(&Output::HoldAll(Hold::Release)));
    assert_eq!(c.mode(), Mode::Normal);
}

/// Unknown is never "no fire": the local reset waits while a fire input reads fire, cannot be
/// read, or has not been read yet since the start (a restart in fire mode).
#[test]
fn the_fire_reset_waits_for_every_fire_input_to_read_normal() {
    let mut p = policy();
    p.devices.push(DevicePolicy {
        id: "fire-1".into(),
        lane: 0,
        role: Role::FireInput,
        calibration_offset_c: 0.0,
        direction: None,
    });
    let panel = p.devices.len() - 1;
    let mut c = Core::new(p, registry(), Mode::Normal);
    let mut out = Vec::new();
    c.set_mode(Mode::Fire, Origin::Local, &mut out).unwrap();
    let blocked = c.fire_reset_blocked().expect("not read yet");
    assert!(blocked.contains("not been read yet"), "{blocked}");
    c.fire_input(panel, FireInput::Fire, "", &mut out);
    let blocked = c.fire_reset_blocked().expect("reads fire");
    assert!(blocked.contains("still reads fire"), "{blocked}");
    c.fire_input(panel, FireInput::Unknown, "no answer", &mut out);
    let blocked = c.fire_reset_blocked().expect("unknown");
    assert!(blocked.contains("cannot be read"), "{blocked}");
    c.fire_input(panel, FireInput::Normal, "", &mut out);
    assert_eq!(c.fire_reset_blocked(), None);
    assert!(c.fire_reset(&mut out));
}
