//! A `multipart/form-data` push as a terminal or camera sends it (Hikvision's event_log and
//! Picture parts, Zhenshi's heartbeat form), through the listener's form reader with the
//! device's profile — first byte even: `hikvision-isapi`, odd: `zhenshi-ivs-http` — arriving in
//! pieces where that byte says. Every part is capped: whatever the names, content types and
//! boundaries, no panic and nothing held past the limits.
#![no_main]
use gatehouse::device::{Profile, Profiles};
use gatehouse::sources::http::{read_form, Pushed};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const BOUNDARY: &str = "MIME_boundary_gatehouse_sim";

fn profiles() -> &'static (Profile, Profile) {
    static P: OnceLock<(Profile, Profile)> = OnceLock::new();
    P.get_or_init(|| {
        let all = Profiles::builtin();
        let get = |n: &str| all.get(n).cloned().expect("built in");
        (get("hikvision-isapi"), get("zhenshi-ivs-http"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let profile = match first % 2 {
        0 => &profiles().0,
        _ => &profiles().1,
    };
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = rest
        .chunks(usize::from(first / 2).max(1))
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let header = format!("multipart/form-data; boundary={BOUNDARY}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let stream = futures_util::stream::iter(chunks);
        if let Ok(Pushed::Event(doc, Some(mut after))) =
            read_form(stream, &header, profile, 1 << 20).await
        {
            let _ = profile.decode_value(&doc);
            while let Ok(Some(_)) = after.next_field().await {}
        }
    });
});
