//! A Hikvision terminal's answer to the catch-up search (`AcsEvent`), as the terminal — or
//! anyone answering at its address — sends it: read into stored events and through the
//! terminal's profile. An item of any shape is outside data that does not decode, never a panic
//! (one aborted the daemon at every start: a crash loop).
#![no_main]
use gatehouse::device::{Profile, Profiles};
use gatehouse::sources::http::api::catch_up_page;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn isapi() -> &'static Profile {
    static P: OnceLock<Profile> = OnceLock::new();
    P.get_or_init(|| {
        Profiles::builtin()
            .get("hikvision-isapi")
            .cloned()
            .expect("built in")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((docs, _more)) = catch_up_page(data) {
        for doc in &docs {
            let _ = isapi().decode_value(doc);
        }
    }
});
