//! Bytes off the command topics, through the whole check of a `SignedCommand` (decode, key
//! lookup, Ed25519, scope, time, replay).
#![no_main]
use gatehouse::orders::{verify, Kind, Level, Limits, Place, StoreAge, TrustedKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn setup() -> &'static (Vec<TrustedKey>, Place) {
    static S: OnceLock<(Vec<TrustedKey>, Place)> = OnceLock::new();
    S.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        (
            vec![TrustedKey {
                id: "company".into(),
                key: key.verifying_key(),
                levels: vec![Level::Gateway, Level::Street],
                kinds: vec![Kind::SetMode, Kind::RemoteOpen, Kind::Ping],
            }],
            Place {
                gateway: "gw".into(),
                community: "330106001001".into(),
                street: "330106001".into(),
                district: "330106".into(),
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, place) = setup();
    let limits = Limits {
        max_skew_ms: 60_000,
        max_lifetime_ms: 24 * 3600 * 1000,
        store: StoreAge::Since(1_700_000_000_000),
    };
    if let Ok(v) = verify(data, keys, place, 1_800_000_000_000, &limits) {
        let _ = v.replayed(|id| id.len() == 3);
    }
});
