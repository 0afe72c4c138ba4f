//! Bytes off the command topics, through the whole check of a `SignedCommand` (decode, key
//! lookup, Ed25519, scope, time, replay).
#![no_main]
use gatehouse::orders::{verify, Kind, Level, Place, TrustedKey};
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
    let _ = verify(data, keys, place, 1_800_000_000_000, 60_000, |id| id.len() == 3);
});
