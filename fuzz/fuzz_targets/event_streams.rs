//! A terminal's event stream as gatehouse reads it in arming mode — Hikvision's alertStream
//! (first byte even) or Dahua's eventManager stream (odd) —, cut into pieces where the first
//! byte says: parts, the events in each (JSON, XML, Dahua's `Code=…;data=…` over many lines),
//! and the vendor's profile. No panic, memory bounded.
#![no_main]
use gatehouse::device::profile::Api;
use gatehouse::device::{Profile, Profiles};
use gatehouse::sources::http::api::stream_part;
use gatehouse::sources::http::multipart::{Item, PartStream};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn profiles() -> &'static (Profile, Profile) {
    static P: OnceLock<(Profile, Profile)> = OnceLock::new();
    P.get_or_init(|| {
        let all = Profiles::builtin();
        let get = |n: &str| all.get(n).cloned().expect("built in");
        (get("hikvision-isapi"), get("dahua-access"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (vendor, boundary, profile) = match first % 2 {
        0 => (Api::Isapi, "boundary", &profiles().0),
        _ => (Api::Dahua, "myboundary", &profiles().1),
    };
    let mut parts = PartStream::new(boundary, 256 * 1024);
    let mut items = Vec::new();
    for piece in rest.chunks(usize::from(first / 2).max(1)) {
        parts.feed(piece, &mut items);
        for item in items.drain(..) {
            if let Item::Part { content_type, body } = item {
                for doc in stream_part(vendor, &content_type, &body).unwrap_or_default() {
                    let _ = profile.decode_value(&doc);
                }
            }
        }
    }
});
