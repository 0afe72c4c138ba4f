//! Resident list files (CSV and JSON lines) as the property company exports them.
#![no_main]
use gatehouse::store::residents;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = residents::parse(Path::new("x.csv"), text, 1000);
        let _ = residents::parse(Path::new("x.jsonl"), text, 1000);
        let _ = residents::parse_time_ms(text);
    }
});
