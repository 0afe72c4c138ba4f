//! Bytes off an RS-485 line, through every shipped serial profile's frame decoder and its
//! event mapping, fed in uneven chunks as a UART delivers them.
#![no_main]
use gatehouse::device::frame::Decoder;
use gatehouse::device::{Profile, Profiles};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn serial() -> &'static [Profile] {
    static SERIAL: OnceLock<Vec<Profile>> = OnceLock::new();
    SERIAL.get_or_init(|| {
        let profiles = Profiles::builtin();
        profiles
            .names()
            .iter()
            .filter_map(|n| profiles.get(n))
            .filter(|p| p.frame.is_some())
            .cloned()
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so splits across reads are explored too.
    let Some((&chunk, line)) = data.split_first() else {
        return;
    };
    for p in serial() {
        let Some(spec) = &p.frame else { continue };
        let mut d = Decoder::new(spec);
        for piece in line.chunks(usize::from(chunk).max(1)) {
            d.push(piece, |f| {
                let _ = p.decode_frame(&f, String::new());
            });
        }
    }
});
