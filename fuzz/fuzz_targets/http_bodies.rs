//! An HTTP push's event body as a terminal or camera sends it — XML (turned into JSON) or JSON —
//! through every shipped HTTP profile's decoder (Hikvision ISAPI, Zhenshi IVS HTTP).
#![no_main]
use gatehouse::device::{xml, Profile, Profiles, Transport};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn decoders() -> &'static [Profile] {
    static DECODERS: OnceLock<Vec<Profile>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let profiles = Profiles::builtin();
        profiles
            .names()
            .iter()
            .filter_map(|n| profiles.get(n))
            .filter(|p| p.transport == Transport::Http)
            .cloned()
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let value = match xml::to_json(data) {
        Some(v) => v,
        None => match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    for p in decoders() {
        let _ = p.decode_value(&value);
    }
});
