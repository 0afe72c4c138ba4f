//! The decision core alone, with the registry a large estate has (100,000 residents): one
//! identification decoded and decided per iteration, on one core.
//!   cargo bench --bench decision_core
use gatehouse::core::{
    self, DevicePolicy, LanePolicy, Policy, Registry, RegistryBuilder, ResidentStatus,
};
use gatehouse::profiles::{Decoded, Profiles};

fn main() {
    divan::main();
}

fn policy() -> Policy {
    Policy {
        plausible_min_c: 30.0,
        plausible_max_c: 43.0,
        lanes: vec![LanePolicy {
            id: "east-1".into(),
            fever_threshold_c: 37.3,
            gate: Some(1),
        }],
        devices: vec![
            DevicePolicy {
                id: "thermal-1".into(),
                lane: 0,
                calibration_offset_c: 0.0,
            },
            DevicePolicy {
                id: "gate-1".into(),
                lane: 0,
                calibration_offset_c: 0.0,
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
        })
        .collect()
}

#[divan::bench(sample_count = 200, sample_size = 2000)]
fn decide(bencher: divan::Bencher) {
    let (p, r, obs) = (policy(), registry(), observations());
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) & 1023;
        core::decide(&p, &r, 0, divan::black_box(&obs[i]), 1_700_000_000_000)
    });
}

/// Decode (the Hikvision profile, from the JSON bytes) plus decide: the whole CPU path of one
/// identification before the command is encoded.
#[divan::bench(sample_count = 200, sample_size = 2000)]
fn decode_and_decide(bencher: divan::Bencher) {
    let (p, r) = (policy(), registry());
    let profiles = Profiles::builtin();
    let hik = profiles
        .get("hikvision-acs-event")
        .expect("built in")
        .clone();
    let payloads: Vec<String> = (0..1024u64)
        .map(|seq| {
            gatehouse::sim::hikvision::acs_event(
                seq,
                Some(&format!("R{:06}", seq % 100_000)),
                36.5,
                gatehouse::profiles::Unit::Celsius,
            )
        })
        .collect();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) & 1023;
        let d = hik
            .decode(divan::black_box(payloads[i].as_bytes()))
            .expect("valid");
        core::decide(&p, &r, 0, &d, 1_700_000_000_000)
    });
}
