//! Device payloads as they come off the broker, through every shipped profile's decoder.
#![no_main]
use gatehouse::device::{Profile, Profiles};
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
            .filter(|p| p.decode.is_some())
            .cloned()
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    for p in decoders() {
        let _ = p.decode(data);
    }
});
