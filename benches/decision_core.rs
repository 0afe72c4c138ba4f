//! The decision core alone, with the registry a large estate has (100,000 residents, 20,000
//! plates, 10,000 visitor passes): one identification decided per iteration, on one core; and
//! the serial frame decoder's throughput.
//!   cargo bench --bench decision_core
use gatehouse::decision::{
    Core, DevicePolicy, Direction, LanePolicy, Mode, Observation, Policy, Quota, Registry,
    RegistryBuilder, ResidentStatus,
};
use gatehouse::decision::{Decoded, Role};
use gatehouse::device::Profiles;
use std::time::Instant;

fn main() {
    divan::main();
}

fn policy() -> Policy {
    Policy {
        plausible_min_c: 30.0,
        plausible_max_c: 43.0,
        quota: Quota {
            outings: 1,
            days: 2,
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
            // A separate thermal station whose readings join the face reader's identifications,
            // with anti-passback: the stateful path.
            LanePolicy {
                id: "west-1".into(),
                fever_threshold_c: 37.3,
                gate: Some(4),
                join: Some(gatehouse::decision::JoinWindow {
                    before_ms: 3000,
                    after_ms: 1500,
                }),
                anti_passback: true,
                direction: Direction::In,
            },
        ],
        devices: vec![
            DevicePolicy {
                id: "thermal-1".into(),
                lane: 0,
                role: Role::Thermal,
                calibration_offset_c: 0.0,
                direction: None,
            },
            DevicePolicy {
                id: "gate-1".into(),
                lane: 0,
                role: Role::Turnstile,
                calibration_offset_c: 0.0,
                direction: None,
            },
            DevicePolicy {
                id: "thermal-2".into(),
                lane: 1,
                role: Role::Thermal,
                calibration_offset_c: 0.0,
                direction: None,
            },
            DevicePolicy {
                id: "face-2".into(),
                lane: 1,
                role: Role::Identifier,
                calibration_offset_c: 0.0,
                direction: None,
            },
            DevicePolicy {
                id: "gate-2".into(),
                lane: 1,
                role: Role::Turnstile,
                calibration_offset_c: 0.0,
                direction: None,
            },
        ],
    }
}

fn registry() -> Registry {
    let mut b = RegistryBuilder::with_capacity(100_000);
    for i in 0..100_000u32 {
        b.insert(
            &format!("R{i:06}"),
            &format!("H{:05}", i / 3),
            ResidentStatus::Active,
            i64::MAX,
        );
    }
    for i in 0..20_000u32 {
        b.insert_plate(
            &format!("浙A{i:05}"),
            gatehouse::decision::PlateKind::Resident,
            &format!("H{i:05}"),
            i64::MAX,
            false,
        );
    }
    for i in 0..10_000u32 {
        b.insert_pass(gatehouse::decision::PassRow {
            id: &format!("P{i:05}"),
            host_household: &format!("H{:05}", i * 3),
            valid_from_ms: 0,
            valid_until_ms: i64::MAX,
            uses: 10,
            credentials: &[format!("QR{i:08}")],
            plates: &[],
        });
    }
    b.build(0)
}

/// The same mix as the shared benchmark: 5% fever, 10% strangers.
fn observations() -> Vec<Decoded> {
    (0..1024u64)
        .map(|seq| Decoded {
            event_id: seq.to_string(),
            subject: Some(if seq % 10 == 3 {
                format!("V{seq:06}")
            } else {
                format!("R{:06}", (seq * 7919) % 100_000)
            }),
            temperature_c: Some(if seq % 20 == 7 {
                37.8
            } else {
                36.1 + (seq % 9) as f64 * 0.1
            }),
            device_abnormal: Some(false),
            ..Default::default()
        })
        .collect()
}

/// The daemon moves each decoded message into the core, as here; the previous outputs are
/// dropped inside the timing, as the daemon drops them after emitting.
fn observe(core: &mut Core, decoded: Decoded, out: &mut Vec<gatehouse::decision::Output>) {
    out.clear();
    core.observe(
        Observation {
            device: 0,
            decoded,
            received: Instant::now(),
            now_ms: 1_700_000_000_000,
            redelivered: false,
        },
        out,
    );
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn decide(bencher: divan::Bencher) {
    let (mut core, obs) = (
        Core::new(policy(), registry(), Mode::Normal),
        observations(),
    );
    let mut out = Vec::with_capacity(4);
    let mut i = 0usize;
    bencher
        .with_inputs(|| {
            i += 1;
            // Every event its own id, as a terminal's serial numbers are: a repeated id would be
            // a redelivery, decided once.
            let mut d = obs[i & 1023].clone();
            d.event_id = i.to_string();
            d
        })
        .bench_local_values(|d| observe(&mut core, divan::black_box(d), &mut out));
}

/// The stateful path: epidemic mode on the lane whose thermal station is a device of its own, so
/// each reading waits to be joined by the next identification, with anti-passback on (half the
/// residents are inside already, so their entry is refused). One observation per iteration: a
/// reading, then an identification that joins it.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn decide_epidemic_join_anti_passback(bencher: divan::Bencher) {
    let mut core = Core::new(policy(), registry(), Mode::Normal);
    let mut out = Vec::with_capacity(8);
    let mut now = 1_700_000_000_000i64;
    for i in (0..100_000u32).step_by(2) {
        let d = Decoded {
            subject: Some(format!("R{i:06}")),
            temperature_c: Some(36.5),
            ..Default::default()
        };
        core.observe(
            Observation {
                device: 3,
                decoded: d,
                received: Instant::now(),
                now_ms: now,
                redelivered: false,
            },
            &mut out,
        );
        out.clear();
    }
    assert_eq!(core.inside(), 50_000);
    core.set_mode(Mode::Epidemic, gatehouse::decision::Origin::Local, &mut out)
        .expect("not in fire mode");
    let obs = observations();
    let mut i = 0;
    bencher
        .with_inputs(|| {
            i += 1;
            now += 10;
            // Even: the station's reading; odd: the face that takes it.
            let mut d = obs[(i / 2) & 1023].clone();
            d.event_id = i.to_string();
            let device = if i % 2 == 0 {
                d.subject = None;
                2
            } else {
                d.temperature_c = None;
                3
            };
            (device, d, now)
        })
        .bench_local_values(|(device, d, now)| {
            out.clear();
            core.observe(
                Observation {
                    device,
                    decoded: divan::black_box(d),
                    received: Instant::now(),
                    now_ms: now,
                    redelivered: false,
                },
                &mut out,
            );
        });
}

/// Decode (the Hikvision profile, from the JSON bytes) plus decide: the whole CPU path of one
/// identification before the command is encoded.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn decode_and_decide(bencher: divan::Bencher) {
    let mut core = Core::new(policy(), registry(), Mode::Normal);
    let mut out = Vec::with_capacity(4);
    let profiles = Profiles::builtin();
    let hik = profiles
        .get("hikvision-acs-event")
        .expect("built in")
        .clone();
    let mut seq = 0u64;
    bencher
        .with_inputs(|| {
            seq += 1;
            gatehouse::tools::sim::hikvision::acs_event(
                seq,
                Some(&format!("R{:06}", seq % 100_000)),
                36.5,
                gatehouse::device::Unit::Celsius,
            )
        })
        .bench_local_values(|payload| {
            let d = hik
                .decode(divan::black_box(payload.as_bytes()))
                .expect("valid");
            observe(&mut core, d, &mut out);
        });
}

/// Serial frames decoded per second: Wiegand reader frames with 10% line noise between them.
#[divan::bench(sample_count = 100, sample_size = 10)]
fn frame_decoder_1000_frames(bencher: divan::Bencher) {
    let profiles = Profiles::builtin();
    let spec = profiles
        .get("rs485-wiegand-reader")
        .and_then(|p| p.frame.clone())
        .expect("built in");
    let mut line = Vec::new();
    for i in 0..1000u32 {
        let values = [("addr".to_string(), 1u64), ("bits".to_string(), 26)].into();
        let data = gatehouse::device::frame::wiegand_encode(26, i % 256, i as u16, 5);
        line.extend_from_slice(&spec.encode(&values, &data));
        if i % 10 == 0 {
            line.extend_from_slice(&[0x55, 0xFF, 0x00]);
        }
    }
    bencher.bench_local(|| {
        let mut d = gatehouse::device::frame::Decoder::new(&spec);
        let mut n = 0;
        for chunk in line.chunks(64) {
            d.push(divan::black_box(chunk), |_| n += 1);
        }
        assert_eq!(n, 1000);
    });
}

/// A signed command checked end to end: decode, key lookup, Ed25519 verification, scope, replay.
#[divan::bench(sample_count = 100, sample_size = 100)]
fn verify_signed_command(bencher: divan::Bencher) {
    use gatehouse::orders::{sign, verify, Kind, Level, Limits, Place, StoreAge, TrustedKey};
    use gatehouse::proto::v1;
    use prost::Message;
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let trusted = vec![TrustedKey {
        id: "street".into(),
        key: key.verifying_key(),
        levels: vec![Level::Street],
        kinds: vec![Kind::SetMode],
    }];
    let place = Place {
        gateway: "gw".into(),
        community: "330106001001".into(),
        street: "330106001".into(),
        district: "330106".into(),
    };
    let now = 1_800_000_000_000;
    let c = v1::Command {
        id: "c1".into(),
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
        target: Some(v1::Scope {
            level: v1::Level::Street as i32,
            code: "330106001".into(),
        }),
        payload: Some(v1::command::Payload::SetMode(v1::SetMode {
            mode: "lockdown".into(),
        })),
    };
    let bytes = sign(&c, "street", &key).encode_to_vec();
    let limits = Limits {
        max_skew_ms: 30_000,
        max_lifetime_ms: 24 * 3600 * 1000,
        store: StoreAge::Since(1),
        clock_trusted: true,
    };
    bencher
        .bench_local(|| verify(divan::black_box(&bytes), &trusted, &place, now, &limits).is_ok());
}
