//! Device payloads as they come off the broker, through every shipped profile's decoder.
#![no_main]
use gatehouse::profiles::Profiles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let profiles = Profiles::builtin();
    for name in profiles.names() {
        if let Some(p) = profiles.get(name) {
            if p.decode.is_some() {
                let _ = p.decode(data);
            }
        }
    }
});
