//! The fuzz targets' seeds (`fuzz/seeds/`), taken from what the simulators send: not a test
//! but the tool that writes them, run by hand when a simulator's output changes.

/// Writes the fuzz targets' seeds from what the simulators send (`fuzz/seeds/`, kept in git):
/// `cargo test -p gatehouse --test integration write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    use gatehouse::tools::sim::{http_push, isapi_terminal};
    let write = |target: &str, name: &str, bytes: Vec<u8>| {
        let dir = std::path::Path::new("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let stored = |serial: u64| {
        serde_json::json!({"major": 5, "minor": 75, "serialNo": serial,
            "time": "2026-12-06T10:00:00+08:00", "employeeNoString": "R000007",
            "currTemperature": 36.4})
    };
    let page = [stored(900), stored(901)];
    write(
        "catch_up",
        "more",
        isapi_terminal::acs_event_answer(&page, "MORE", 5).into_bytes(),
    );
    let odd = [stored(902), serde_json::json!(7), serde_json::json!("x")];
    write(
        "catch_up",
        "odd-items",
        isapi_terminal::acs_event_answer(&odd, "OK", 3).into_bytes(),
    );
    let event = crate::http_intake::hik_event(
        1,
        serde_json::json!({"employeeNoString": "R000001", "currTemperature": 36.5}),
        1_796_000_000_000,
    );
    let mut isapi = vec![128];
    isapi.extend(isapi_terminal::isapi_part(&event));
    isapi.extend(isapi_terminal::isapi_part(r#"{"eventType":"videoloss"}"#));
    write("event_streams", "isapi", isapi);
    let mut dahua = vec![129];
    dahua.extend(isapi_terminal::dahua_part("Heartbeat"));
    let data =
        serde_json::json!({"UserID": "R000001", "Method": 15, "RecNo": 101, "UTC": 1796000000});
    dahua.extend(isapi_terminal::dahua_part(&isapi_terminal::dahua_access(
        &data,
    )));
    write("event_streams", "dahua", dahua);
    let (_, body) = http_push::hikvision_multipart(&event, 2000);
    write("push_form", "hikvision", [vec![128], body].concat());
    let (_, form) = http_push::zhenshi_heartbeat_form();
    write("push_form", "zhenshi-heartbeat", [vec![129], form].concat());
}
