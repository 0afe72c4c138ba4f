//! A ZKTeco terminal's ADMS upload (ATTLOG lines) and a Dahua stream part, as they come off the
//! socket: each line read and decoded with the shipped profiles — no panic, whatever the bytes.
#![no_main]
use gatehouse::device::Profiles;
use gatehouse::sources::http::{adms::attlog_line, api::dahua_events};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn profiles() -> &'static Profiles {
    static P: OnceLock<Profiles> = OnceLock::new();
    P.get_or_init(Profiles::builtin)
}

fuzz_target!(|data: &[u8]| {
    let (Some(zk), Some(dh)) = (
        profiles().get("zkteco-adms"),
        profiles().get("dahua-access"),
    ) else {
        return;
    };
    for line in String::from_utf8_lossy(data).lines() {
        if let Some(doc) = attlog_line(line) {
            let _ = zk.decode_value(&doc);
        }
    }
    for doc in dahua_events(data) {
        let _ = dh.decode_value(&doc);
    }
});
