//! The profiles and their codec as the vendors' messages test them.
use super::profile::*;
use crate::decision::{CredentialKind, Direction, StateReport};
use crate::device::frame;
use crate::device::{CommandArgs, DecodeError};
use serde_json::Value;

fn hik() -> Profile {
    Profiles::builtin()
        .get("hikvision-acs-event")
        .unwrap()
        .clone()
}

#[test]
fn the_terminals_own_time_is_read_and_a_bad_one_costs_only_the_time() {
    let p = hik();
    let at = br#"{"dateTime":"2026-11-29T16:00:00+08:00","AccessControllerEvent":{"serialNo":7,"employeeNoString":"R1"}}"#;
    let d = p.decode(at).unwrap();
    assert_eq!(
        d.device_time_ms,
        crate::timefmt::parse_time_ms("2026-11-29T08:00:00Z")
    );
    let bad = br#"{"dateTime":"yesterday-ish","AccessControllerEvent":{"serialNo":7,"employeeNoString":"R1"}}"#;
    let d = p.decode(bad).unwrap();
    assert_eq!((d.device_time_ms, d.subject.as_deref()), (None, Some("R1")));
}

#[test]
fn builtin_profiles_load_without_problems() {
    let (p, problems) = Profiles::load(None);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        p.names(),
        vec![
            "dahua-access",
            "generic-gate-mqtt",
            "hikvision-acs-event",
            "hikvision-isapi",
            "modbus-fire-input",
            "modbus-relay-barrier",
            "rs485-barrier-5b",
            "rs485-face-id",
            "rs485-turnstile-eb",
            "rs485-wiegand-reader",
            "zhenshi-ivs",
            "zhenshi-ivs-http",
            "zkteco-adms"
        ]
    );
}

#[test]
fn hikvision_fahrenheit_and_kelvin_become_celsius_and_names_are_dropped() {
    let f = br#"{"AccessControllerEvent":{"serialNo":12,"employeeNoString":"R000001","name":"Zhang San",
        "pictureURL":"http://x/y.jpg","currTemperature":99.5,"thermometryUnit":"fahrenheit","isAbnomalTemperature":true}}"#;
    let d = hik().decode(f).unwrap();
    assert_eq!(d.event_id, "12");
    assert_eq!(d.subject.as_deref(), Some("R000001"));
    assert!((d.temperature_c.unwrap() - 37.5).abs() < 1e-9);
    assert_eq!(d.device_abnormal, Some(true));
    let k = br#"{"AccessControllerEvent":{"serialNo":"a","currTemperature":310.15,"thermometryUnit":"kelvin"}}"#;
    let d = hik().decode(k).unwrap();
    assert!((d.temperature_c.unwrap() - 37.0).abs() < 1e-9);
    assert_eq!(d.subject, None);
}

#[test]
fn wrong_types_and_garbage_are_clear_errors() {
    let e = hik()
        .decode(br#"{"AccessControllerEvent":{"currTemperature":"hot"}}"#)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "/AccessControllerEvent/currTemperature: \"hot\" is not a number"
    );
    assert!(matches!(
        hik().decode(b"\x00\xff{").unwrap_err(),
        DecodeError::NotJson(_)
    ));
    let e = hik()
        .decode(
            br#"{"AccessControllerEvent":{"currTemperature":36.5,"thermometryUnit":"rankine"}}"#,
        )
        .unwrap_err();
    assert!(matches!(e, DecodeError::UnknownUnit { .. }));
    assert!(matches!(
        hik().decode(&vec![b' '; MAX_PAYLOAD + 1]).unwrap_err(),
        DecodeError::TooLarge(_)
    ));
}

#[test]
fn gate_command_encodes_as_the_documented_json() {
    let p = Profiles::builtin()
        .get("generic-gate-mqtt")
        .unwrap()
        .clone();
    let out = p
        .encode_command(&CommandArgs {
            command: GateCommandName::Deny,
            address: None,
            reason: "fever",
            cause: "12\"x",
            lane: "east-1",
            device: "gate-1",
            ts_ms: 1700000000000,
        })
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"action":"deny","reason":"fever","cause":"12\"x","lane":"east-1","ts":1700000000000i64})
    );
}

proptest::proptest! {
    // The plain-test side of `fuzz/fuzz_targets/device_json.rs`: bounded, no nightly needed.
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = hik().decode(&data);
    }

    #[test]
    fn decoders_never_panic_on_json_of_any_shape(
        serial in proptest::prelude::any::<i64>(),
        t in proptest::prelude::any::<f64>(),
        unit in "[a-z]{0,12}",
        who in proptest::option::of("\\PC{0,40}"),
        flag in proptest::prelude::any::<bool>(),
    ) {
        let v = serde_json::json!({"AccessControllerEvent": {
            "serialNo": serial, "currTemperature": t, "thermometryUnit": unit,
            "employeeNoString": who, "isAbnomalTemperature": flag }});
        if let Ok(d) = hik().decode(v.to_string().as_bytes()) {
            proptest::prop_assert_eq!(d.event_id, serial.to_string());
        }
    }
}

proptest::proptest! {
    // The plain-test side of `fuzz/fuzz_targets/serial_frames.rs`: every serial profile's
    // decoder and event mapping on arbitrary line bytes in arbitrary chunks.
    #[test]
    fn serial_decoders_never_panic_and_stay_bounded(
        line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        chunk in 1usize..64,
    ) {
        let profiles = Profiles::builtin();
        for name in profiles.names() {
            let Some(p) = profiles.get(name) else { continue };
            let Some(spec) = &p.frame else { continue };
            let mut d = frame::Decoder::new(spec);
            for piece in line.chunks(chunk) {
                d.push(piece, |f| {
                    let _ = p.decode_frame(&f, String::new());
                });
                proptest::prop_assert!(
                    d.buffered() <= 2 * spec.max_len,
                    "{name}: {} bytes held, max_len {}",
                    d.buffered(),
                    spec.max_len
                );
            }
        }
    }
}

#[test]
fn the_serial_profiles_frames_decode_to_observations() {
    let profiles = Profiles::builtin();
    let wiegand = profiles.get("rs485-wiegand-reader").unwrap();
    let spec = wiegand.frame.as_ref().unwrap();
    let values = [("addr".to_string(), 2u64), ("bits".to_string(), 34)].into();
    let bytes = spec.encode(&values, &frame::wiegand_encode(34, 4321, 555, 5));
    let mut got = Vec::new();
    frame::Decoder::new(spec).push(&bytes, |f| got.push(wiegand.decode_frame(&f, "e".into())));
    let d = got.remove(0).unwrap();
    assert_eq!(
        (d.subject.as_deref(), d.credential),
        (Some("4321:555"), CredentialKind::Card)
    );
    let face = profiles.get("rs485-face-id").unwrap();
    let spec = face.frame.as_ref().unwrap();
    let bytes = spec.encode(&[("cmd".to_string(), 0x20u64)].into(), b"");
    frame::Decoder::new(spec).push(&bytes, |f| got.push(face.decode_frame(&f, "e".into())));
    let d = got.remove(0).unwrap();
    assert!(d.stranger && d.subject.is_none());
    // The turnstile's documented open-left frame.
    let eb = profiles.get("rs485-turnstile-eb").unwrap();
    let out = eb
        .encode_command(&CommandArgs {
            command: GateCommandName::OpenIn,
            address: Some(1),
            reason: "ok",
            cause: "",
            lane: "",
            device: "",
            ts_ms: 0,
        })
        .unwrap();
    assert_eq!(out, crate::hex::parse_hex("EB 01 40 00 AA").unwrap());
    // The 5B barrier's documented open, and no command at all on a denial.
    let b5 = profiles.get("rs485-barrier-5b").unwrap();
    let args = |command| CommandArgs {
        command,
        address: None,
        reason: "",
        cause: "",
        lane: "",
        device: "",
        ts_ms: 0,
    };
    assert_eq!(
        b5.encode_command(&args(GateCommandName::OpenIn)).unwrap(),
        crate::hex::parse_hex("5B B2 01 00 00 B3 5D").unwrap()
    );
    assert_eq!(b5.encode_command(&args(GateCommandName::Deny)), None);
    let ack = crate::hex::parse_hex("5B AB 00 00 AB 5D").unwrap();
    let mut codes = Vec::new();
    frame::Decoder::new(b5.reply_frame.as_ref().unwrap())
        .push(&ack, |f| codes.push(b5.ack_code(&f)));
    assert_eq!(codes, vec![Some(0)]);
}

#[test]
fn another_json_terminal_is_a_new_file_not_new_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.toml"),
        r#"
name = "acme-thermal-face"
roles = ["thermal", "identifier"]
transport = "mqtt"
event_topic = "acme/{device_id}/events"
[decode]
format = "json"
event_id = "/data/recordId"
subject = "/data/personCode"
[decode.temperature]
pointer = "/data/temp"
unit_pointer = "/data/unit"
units = { C = "celsius", F = "fahrenheit" }
scale = 0.1
"#,
    )
    .unwrap();
    let (profiles, problems) = Profiles::load(Some(dir.path()));
    assert!(problems.is_empty(), "{problems:?}");
    let p = profiles.get("acme-thermal-face").unwrap();
    assert_eq!(p.event_topic_for("t9").as_deref(), Some("acme/t9/events"));
    let d = p
        .decode(br#"{"data":{"recordId":"a-1","personCode":"R7","temp":995,"unit":"F"}}"#)
        .unwrap();
    assert_eq!(
        (d.event_id.as_str(), d.subject.as_deref()),
        ("a-1", Some("R7"))
    );
    assert!((d.temperature_c.unwrap() - 37.5).abs() < 1e-9);
}

#[test]
fn a_malformed_profile_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("terminal")).unwrap();
    let f = dir.path().join("terminal/bad.toml");
    std::fs::write(&f, "name = \"bad\"\nroles = [\"thermal\"]\ntransport = \"mqtt\"\nevent_topic = \"x\"\n[decode]\nformat = \"json\"\nsubject = \"no-slash\"\n").unwrap();
    std::fs::write(dir.path().join("broken.toml"), "name = ").unwrap();
    let (p, problems) = Profiles::load(Some(dir.path()));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems
        .iter()
        .any(|x| x.path.ends_with("terminal/bad.toml") && x.message.contains("decode.subject")));
    assert!(problems.iter().any(|x| x.path.ends_with("broken.toml")));
    assert!(p.get("bad").is_none());
}

fn builtin(name: &str) -> Profile {
    Profiles::builtin().get(name).unwrap().clone()
}

#[test]
fn a_card_swipe_is_read_as_the_card_on_both_hikvision_transports() {
    let swipe = br#"{"AccessControllerEvent":{"subEventType":9,"serialNo":2032,
        "cardNo":"3123456789","currentVerifyMode":"card","currTemperature":36.5}}"#;
    for p in [hik(), builtin("hikvision-isapi")] {
        let d = p.decode(swipe).unwrap();
        assert_eq!(d.subject.as_deref(), Some("3123456789"));
        assert_eq!(d.credential, CredentialKind::Card);
        assert_eq!(d.temperature_c, Some(36.5));
    }
    // A face match names the person; the card field does not override it.
    let face =
        br#"{"AccessControllerEvent":{"serialNo":1,"employeeNoString":"R000001","cardNo":"9"}}"#;
    let d = hik().decode(face).unwrap();
    assert_eq!(
        (d.subject.as_deref(), d.credential),
        (Some("R000001"), CredentialKind::Person)
    );
}

#[test]
fn quoted_numbers_and_capitalised_units_are_read() {
    for (body, want) in [
        (r#""currTemperature":"36.5""#, 36.5),
        (
            r#""currTemperature":38.2,"thermometryUnit":"Celsius""#,
            38.2,
        ),
        (
            r#""currTemperature":" 100.4 ","thermometryUnit":"FAHRENHEIT""#,
            38.0,
        ),
    ] {
        let payload = format!(
            r#"{{"AccessControllerEvent":{{"serialNo":3,"employeeNoString":"R1",{body}}}}}"#
        );
        let d = hik().decode(payload.as_bytes()).unwrap();
        assert!((d.temperature_c.unwrap() - want).abs() < 1e-9, "{body}");
        assert_eq!(d.unreadable, None);
    }
    let z = builtin("zhenshi-ivs");
    let read = br#"{"payload":{"AlarmInfoPlate":{"result":{"PlateResult":{"license":"5rWZQTEyMzQ1","confidence":"97","direction":"4","plateid":"8"}}}}}"#;
    let d = z.decode(read).unwrap();
    assert_eq!(
        (d.confidence, d.direction, d.subject.as_deref()),
        (Some(97), Some(Direction::In), Some("浙A12345"))
    );
}

#[test]
fn an_event_that_names_a_person_but_does_not_read_is_still_an_event() {
    let d = hik()
        .decode(br#"{"AccessControllerEvent":{"serialNo":4,"employeeNoString":"R1","currTemperature":"warm"}}"#)
        .unwrap();
    assert_eq!(d.subject.as_deref(), Some("R1"));
    assert_eq!(
        d.unreadable.as_deref(),
        Some("/AccessControllerEvent/currTemperature: \"warm\" is not a number")
    );
    // Nobody named: nothing to answer, the message is an error as before.
    assert!(hik()
        .decode(br#"{"AccessControllerEvent":{"serialNo":4,"currTemperature":"warm"}}"#)
        .is_err());
}

#[test]
fn stored_markers_and_heartbeats_are_told_apart() {
    let p = builtin("hikvision-isapi");
    let stored = br#"{"dateTime":"2026-11-29T13:00:00+08:00","AccessControllerEvent":{"serialNo":5,"employeeNoString":"R1","currentEvent":false}}"#;
    assert_eq!(p.decode(stored).unwrap().stored, Some(true));
    let live =
        br#"{"AccessControllerEvent":{"serialNo":5,"employeeNoString":"R1","currentEvent":true}}"#;
    assert_eq!(p.decode(live).unwrap().stored, Some(false));
    let unmarked = br#"{"AccessControllerEvent":{"serialNo":5,"employeeNoString":"R1"}}"#;
    assert_eq!(p.decode(unmarked).unwrap().stored, None);
    let beat = br#"{"eventType":"heartBeat","dateTime":"2026-11-29T13:00:00+08:00"}"#;
    let d = p.decode(beat).unwrap();
    assert_eq!(d.state, Some(StateReport::Heartbeat));
    assert_eq!(d.device_time_ms, Some(1_795_928_400_000));

    let z = builtin("zhenshi-ivs-http");
    let offline = r#"{"AlarmInfoPlate":{"result":{"PlateResult":{"license":"浙A12345","confidence":96,
        "plateid":77,"isoffline":1,"timeStamp":{"Timeval":{"sec":1795928400}}}}}}"#;
    let d = z.decode(offline.as_bytes()).unwrap();
    assert_eq!(
        (d.stored, d.id_time_ms, d.event_id.as_str()),
        (Some(true), Some(1_795_928_400_000), "77")
    );
    assert_eq!(
        d.device_time_ms, None,
        "the read's time names it, never dates it"
    );
    let beat = br#"{"heartbeat":{"countid":3,"timeStamp":{"Timeval":{"sec":1795928400}}}}"#;
    assert_eq!(z.decode(beat).unwrap().state, Some(StateReport::Heartbeat));
}

#[test]
fn wrapped_commands_encode_as_the_vendor_expects() {
    let args = |command| CommandArgs {
        command,
        address: None,
        reason: "ok",
        cause: "1",
        lane: "l",
        device: "d",
        ts_ms: 0,
    };
    let z = builtin("zhenshi-ivs-http");
    let open = z.encode_command(&args(GateCommandName::OpenIn)).unwrap();
    assert_eq!(
        open,
        br#"{"Response_AlarmInfoPlate":{"info":"ok","plateid":1}}"#
    );
    let no = z.encode_command(&args(GateCommandName::Deny)).unwrap();
    assert_eq!(
        no,
        br#"{"Response_AlarmInfoPlate":{"info":"no","plateid":1}}"#
    );
    let h = builtin("hikvision-isapi");
    let open = h.encode_command(&args(GateCommandName::OpenIn)).unwrap();
    assert_eq!(open, br#"{"RemoteControlDoor":{"cmd":"open"}}"#);
    let hold = h.encode_command(&args(GateCommandName::HoldOpen)).unwrap();
    assert_eq!(hold, br#"{"RemoteControlDoor":{"cmd":"alwaysOpen"}}"#);
}

#[test]
fn a_terminals_lock_reports_are_its_doors_state() {
    use crate::decision::barrier::Arm;
    let p = builtin("hikvision-isapi");
    let opened = br#"{"eventType":"AccessControllerEvent","AccessControllerEvent":{"majorEventType":5,"subEventType":21,"serialNo":9}}"#;
    assert_eq!(
        p.decode(opened).unwrap().state,
        Some(StateReport::Arm(Arm::Up))
    );
    let closed = br#"{"AccessControllerEvent":{"subEventType":"22"}}"#;
    assert_eq!(
        p.decode(closed).unwrap().state,
        Some(StateReport::Arm(Arm::Down))
    );
    let face = br#"{"AccessControllerEvent":{"subEventType":75,"employeeNoString":"R1"}}"#;
    assert_eq!(p.decode(face).unwrap().state, None);
}

#[test]
fn a_dahua_records_time_is_part_of_its_identity_but_never_its_age() {
    let p = Profiles::builtin().get("dahua-access").unwrap().clone();
    let part = br#"{"Code":"AccessControl","data":{"RecNo":12,"UserID":"R1","UTC":1800000000}}"#;
    let d = p.decode(part).unwrap();
    assert_eq!(d.event_id, "12");
    assert_eq!(
        (d.id_time_ms, d.device_time_ms),
        (Some(1_800_000_000_000), None)
    );
}

#[test]
fn a_zhenshi_mqtt_read_is_named_by_its_id_and_time_and_says_whether_it_was_stored() {
    use crate::tools::sim::zhenshi::{ivs_result_of, PlateRead};
    let p = Profiles::builtin().get("zhenshi-ivs").unwrap().clone();
    let read = PlateRead {
        offline: true,
        device_s: 1_800_000_000,
        ..PlateRead::live(3, "粤B12345", 96, 4)
    };
    let d = p.decode(ivs_result_of(&read).as_bytes()).unwrap();
    assert_eq!(
        (d.event_id.as_str(), d.subject.as_deref(), d.stored),
        ("3", Some("粤B12345"), Some(true))
    );
    assert_eq!(
        (d.id_time_ms, d.device_time_ms),
        (Some(1_800_000_000_000), None)
    );
}

/// A JSON value of a few levels whose keys and indices the pointers below can hit.
fn json_tree() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ab0]{0,2}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[ab0/~]{0,2}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// The decoder's own pointer walk finds exactly what serde_json's `pointer` finds: tokens
    /// from the keys' own alphabet, so most steps hit something, and the index forms serde_json
    /// refuses (sign, leading zero, `-`, a space) and the escapes.
    #[test]
    fn the_pointer_walk_agrees_with_serde_json(
        v in json_tree(),
        tokens in proptest::collection::vec(
            "[ab0]{0,2}|1|3|4|00|01|\\+0|\\+1|-| 1|~0|~1|a~1b|~",
            0..4,
        ),
        bare in proptest::prelude::any::<bool>(),
    ) {
        let pointer: String = tokens.iter().map(|t| format!("/{t}")).collect();
        // Without its leading slash: no pointer at all, to both.
        let pointer = if bare { pointer.trim_start_matches('/').to_string() } else { pointer };
        proptest::prop_assert_eq!(super::pointer::at(&v, &pointer), v.pointer(&pointer));
    }
}
