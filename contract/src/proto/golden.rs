//! Golden bytes: records as gateways of other versions send them. A company service must decode
//! what an older gateway sends (fields it lacks read as defaults) and what a newer one sends
//! (fields it does not know are skipped, never a reason to quarantine); and the bytes this
//! version writes must not change under anyone's feet (a renumbered field fails here).
use super::v1;
use crate::hex;
use prost::Message;

/// A passage as this version encodes it (every field the forms read set).
fn passage() -> v1::Event {
    v1::Event {
        event_id: "gw-1:7".into(),
        seq: 7,
        gateway_time_ms: 1_800_000_000_000,
        lane: "east".into(),
        device: "thermal-1".into(),
        body: Some(v1::event::Body::Passage(v1::PassageDecision {
            subject_kind: v1::SubjectKind::Resident as i32,
            subject_id: "R000011".into(),
            temperature_c: Some(36.5),
            verdict: v1::Verdict::Allow as i32,
            reason: "ok".into(),
            direction: v1::Direction::In as i32,
            medium: v1::Medium::Person as i32,
            household: "H002".into(),
            fever_threshold_c: Some(37.3),
            fever: false,
            ..Default::default()
        })),
        ..Default::default()
    }
}

const PASSAGE: &str = "0a0667772d313a3710071880a0f1c2b1342a04656173743209746865726d616c2d31522808011207523030303031311d0000124220012a026f6b50018001018a010448303032950133331542";

#[test]
fn this_version_writes_the_same_bytes() {
    assert_eq!(hex::to_hex(&passage().encode_to_vec()), PASSAGE);
}

/// The same passage from a gateway before the forms' fields (medium, household, threshold,
/// verdict): decodes, with those fields at their defaults.
const OLD_PASSAGE: &str = "0a0667772d313a3710071880a0f1c2b1342a04656173743209746865726d616c2d31521808011207523030303031311d0000124220012a026f6b5001";

#[test]
fn an_older_gateways_passage_decodes_with_defaults() {
    let e = v1::Event::decode(hex::parse_hex(OLD_PASSAGE).unwrap().as_slice()).unwrap();
    let Some(v1::event::Body::Passage(p)) = e.body else {
        panic!("a passage: {e:?}");
    };
    assert_eq!((e.seq, p.subject_id.as_str()), (7, "R000011"));
    assert_eq!(p.medium(), v1::Medium::Unspecified);
    assert_eq!(
        (p.household.as_str(), p.fever_threshold_c, p.fever),
        ("", None, false)
    );
}

/// A newer gateway's passage: this one plus a field on the event (number 99, a string) and one
/// on the passage (number 60, a varint) that this version does not know.
#[test]
fn a_newer_gateways_fields_are_skipped() {
    let mut bytes = passage().encode_to_vec();
    // Field 99, wire type 2 (length-delimited): key varint 99 << 3 | 2 = 794 = [0x9a, 0x06].
    bytes.extend_from_slice(&[0x9a, 0x06, 3, b'n', b'e', b'w']);
    let e = v1::Event::decode(bytes.as_slice()).unwrap();
    assert_eq!(e, passage());

    let Some(v1::event::Body::Passage(p)) = passage().body else {
        unreachable!()
    };
    let mut inner = p.encode_to_vec();
    // Field 60, wire type 0 (varint): key 60 << 3 = 480 = [0xe0, 0x03], value 1.
    inner.extend_from_slice(&[0xe0, 0x03, 1]);
    assert_eq!(v1::PassageDecision::decode(inner.as_slice()).unwrap(), p);
}

/// A status from a gateway before `boot` and `seq`: 0/0, older than any numbered one.
const OLD_STATUS: &str = "0a0467772d3110011a05302e312e3022066e6f726d616c4080a0f1c2b134";

#[test]
fn an_older_gateways_status_decodes_as_boot_zero() {
    let s = v1::Status::decode(hex::parse_hex(OLD_STATUS).unwrap().as_slice()).unwrap();
    assert_eq!(
        (s.gateway.as_str(), s.state()),
        ("gw-1", v1::GatewayState::Online)
    );
    assert_eq!((s.boot, s.seq), (0, 0));
}
