//! Liveness for every device (issue 16): a device silent past its profile's `offline_after_s` is
//! reported offline, and online when it is heard again — an MQTT camera on the endpoint by its
//! keep-alive messages (and pings), a camera pushing over HTTP by its heartbeats.
use crate::common::*;
use gatehouse::proto::v1;
use gatehouse::tools::sim::http_push::{zhenshi_heartbeat, Pusher};
use std::collections::BTreeSet;
use std::time::Duration;

/// The shipped Zhenshi profiles under other names, silent for 3 s at most.
fn fast_profiles(dir: &std::path::Path) {
    for (file, text) in [
        (
            "zhenshi-ivs.toml",
            include_str!("../devices/camera/zhenshi-ivs.toml"),
        ),
        (
            "zhenshi-ivs-http.toml",
            include_str!("../devices/camera/zhenshi-ivs-http.toml"),
        ),
    ] {
        let fast = text
            .replace("name = \"zhenshi-ivs", "name = \"fast-zhenshi-ivs")
            .replace("offline_after_s = 90", "offline_after_s = 3");
        std::fs::write(dir.join(file), fast).unwrap();
    }
}

async fn two_alarms(h: &mut Harness, kind: v1::AlarmKind) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        seen.insert(h.uplink.alarm_of(kind).await.device);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_is_reported_offline_and_online_when_heard_again() {
    let profiles = tempfile::tempdir().unwrap();
    fast_profiles(profiles.path());
    let http_port = gatehouse_company::broker::free_port().unwrap();
    let broker = start_broker();
    let dir = profiles.path().display().to_string();
    let mut h = Harness::start_with(broker.clone(), broker, |t| {
        t + &format!(
            r#"
[profiles]
dir = "{dir}"

[device_http]
listen = "127.0.0.1:{http_port}"

[[lanes]]
id = "cars-x"

[[lanes.devices]]
id = "cam-x"
role = "plate_camera"
profile = "fast-zhenshi-ivs"

[[lanes]]
id = "cars-h"

[[lanes.devices]]
id = "cam-h"
role = "plate_camera"
profile = "fast-zhenshi-ivs-http"
"#
        )
    })
    .await;
    // Never heard: both reported offline after 3 s.
    let offline = within(
        "offline alarms",
        LONG,
        two_alarms(&mut h, v1::AlarmKind::DeviceOffline),
    )
    .await;
    assert_eq!(
        offline,
        BTreeSet::from(["cam-h".to_string(), "cam-x".to_string()])
    );
    // Heard: online again, each by its own sign of life.
    h.publish_as(
        "cam-x",
        "device/cam-x/message/up/keep_alive",
        b"{}".to_vec(),
    )
    .await;
    let mut p = Pusher::new(&format!("127.0.0.1:{http_port}"));
    let (s, _) = p
        .post(
            "/push/cam-h/any",
            "application/json",
            zhenshi_heartbeat(1, gatehouse::now_ms() / 1000).into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(s.as_u16(), 200);
    let online = within(
        "online alarms",
        LONG,
        two_alarms(&mut h, v1::AlarmKind::DeviceOnline),
    )
    .await;
    assert_eq!(
        online,
        BTreeSet::from(["cam-h".to_string(), "cam-x".to_string()])
    );
    // Kept alive by its keep-alive messages, cam-x is not reported again; cam-h, silent, is.
    for _ in 0..5 {
        h.publish_as(
            "cam-x",
            "device/cam-x/message/up/keep_alive",
            b"{}".to_vec(),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let a = h.uplink.alarm_of(v1::AlarmKind::DeviceOffline).await;
    assert_eq!(a.device, "cam-h");
    let more: Vec<_> = h
        .uplink
        .alarms_so_far()
        .into_iter()
        .filter(|a| a.kind() == v1::AlarmKind::DeviceOffline && a.device == "cam-x")
        .collect();
    assert!(more.is_empty(), "cam-x kept alive: {more:?}");
}
