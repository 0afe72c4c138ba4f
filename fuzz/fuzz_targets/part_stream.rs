//! A device's multipart event stream (Hikvision alertStream, Dahua eventManager) as it comes off
//! the socket, cut into pieces where the first byte says: no panic, memory bounded, whatever the
//! garbage between boundaries.
#![no_main]
use gatehouse::sources::http::multipart::PartStream;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let mut p = PartStream::new("boundary", 4096);
    let mut out = Vec::new();
    for piece in rest.chunks(usize::from(cut).max(1)) {
        p.feed(piece, &mut out);
        out.clear();
    }
});
