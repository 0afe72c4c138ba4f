//! Commands from above over the in-process broker: every refusal reason, replay across a restart,
//! a remote open audited as a passage, and a street-wide mode change reaching exactly the
//! gateways of that street.
use crate::common::*;
use ed25519_dalek::SigningKey;
use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::hex::to_hex;
use gatehouse::mqtt_client::BrokerUrl;
use gatehouse::orders::sign;
use gatehouse::proto::v1;
use prost::Message;
use std::time::{Duration, Instant};

pub(crate) fn company() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

pub(crate) fn street_office() -> SigningKey {
    SigningKey::from_bytes(&[22; 32])
}

/// The company's emergency key: the only one that may order fire.
pub(crate) fn emergency() -> SigningKey {
    SigningKey::from_bytes(&[33; 32])
}

/// The trusted keys: the property company may do everything; the street office may only set
/// the mode of its street.
pub(crate) fn keys_toml() -> String {
    format!(
        r#"
[commands]
max_skew_s = 30

[[commands.keys]]
id = "company"
public_key = "{company}"
levels = ["gateway", "community", "street", "district"]
kinds = ["set_mode", "remote_open", "ping", "registry", "set_threshold"]

# The company's pages: acknowledgements only.
[[commands.keys]]
id = "company-web"
public_key = "{company}"
levels = ["gateway"]
kinds = ["ack_alarm"]

[[commands.keys]]
id = "street-office"
public_key = "{}"
levels = ["street"]
kinds = ["set_mode"]

[[commands.keys]]
id = "emergency"
public_key = "{}"
levels = ["street"]
kinds = ["fire"]
"#,
        to_hex(street_office().verifying_key().as_bytes()),
        to_hex(emergency().verifying_key().as_bytes()),
        company = to_hex(company().verifying_key().as_bytes()),
    )
}

pub(crate) fn command(
    id: &str,
    level: v1::Level,
    code: &str,
    payload: v1::command::Payload,
) -> v1::Command {
    let now = gatehouse::now_ms();
    v1::Command {
        id: id.into(),
        issued_at_ms: now,
        expires_at_ms: now + 60_000,
        target: Some(v1::Scope {
            level: level as i32,
            code: code.into(),
        }),
        payload: Some(payload),
    }
}

pub(crate) fn mode(m: &str) -> v1::command::Payload {
    v1::command::Payload::SetMode(v1::SetMode { mode: m.into() })
}

pub(crate) async fn send(c: &Client, topic: &str, signed: &v1::SignedCommand) {
    c.publish(topic, signed.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_reason_is_published_and_a_remote_open_is_audited() {
    let broker = start_broker();
    let keys = keys_toml();
    let mut h = Harness::start_with(broker.clone(), broker.clone(), |t| t + &keys).await;
    let admin = Client::connect(&broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let gw = v1::Level::Gateway;
    let ping = || v1::command::Payload::Ping(v1::Ping {});
    let cases: Vec<(v1::SignedCommand, &str)> = vec![
        (
            sign(
                &command("p1", gw, GATEWAY_PATH, ping()),
                "company",
                &company(),
            ),
            "",
        ),
        (
            sign(
                &command("p2", gw, GATEWAY_PATH, ping()),
                "company",
                &street_office(),
            ),
            "bad_signature",
        ),
        (
            sign(
                &command("p3", gw, GATEWAY_PATH, ping()),
                "district-9",
                &company(),
            ),
            "unknown_key",
        ),
        (
            {
                let mut c = command("p4", gw, GATEWAY_PATH, ping());
                c.expires_at_ms = gatehouse::now_ms() - 1;
                sign(&c, "company", &company())
            },
            "expired",
        ),
        (
            {
                let mut c = command("p5", gw, GATEWAY_PATH, ping());
                c.issued_at_ms = gatehouse::now_ms() + 120_000;
                c.expires_at_ms = c.issued_at_ms + 60_000;
                sign(&c, "company", &company())
            },
            "not_yet_valid",
        ),
        (
            sign(
                &command("p6", gw, "gw-other", ping()),
                "company",
                &company(),
            ),
            "out_of_scope",
        ),
        (
            sign(
                &command(
                    "p7",
                    gw,
                    GATEWAY_PATH,
                    v1::command::Payload::RemoteOpen(v1::RemoteOpen {
                        lane: "east-1".into(),
                        operator_id: "op-1".into(),
                        reason: "x".into(),
                    }),
                ),
                "street-office",
                &street_office(),
            ),
            "not_permitted",
        ),
        (
            sign(
                &command("p1", gw, GATEWAY_PATH, ping()),
                "company",
                &company(),
            ),
            "replayed",
        ),
    ];
    for (signed, expect) in &cases {
        send(&admin, &own, signed).await;
        let r = h.uplink.result().await;
        assert_eq!(
            (r.refused.as_str(), r.applied),
            (*expect, expect.is_empty()),
            "{r:?}"
        );
        assert_eq!(r.gateway, GATEWAY);
    }
    admin.publish(&own, b"not a command".to_vec()).await;
    assert_eq!(h.uplink.result().await.refused, "malformed");

    // The property company opens the gate for an ambulance: once, audited.
    let open = command(
        "open-1",
        gw,
        GATEWAY_PATH,
        v1::command::Payload::RemoteOpen(v1::RemoteOpen {
            lane: "east-1".into(),
            operator_id: "op-7".into(),
            reason: "ambulance".into(),
        }),
    );
    send(&admin, &own, &sign(&open, "company", &company())).await;
    assert_eq!(h.next_command().await.action, "open");
    let (_, d) = h.uplink.passage_from("gate-1").await;
    assert_eq!(
        (
            d.reason.as_str(),
            d.operator_id.as_str(),
            d.operator_reason.as_str()
        ),
        ("remote_open", "op-7", "ambulance")
    );
    assert_eq!(d.cause, vec!["open-1".to_string()]);
    assert!(h.uplink.result().await.applied);
    send(&admin, &own, &sign(&open, "company", &company())).await;
    assert_eq!(h.uplink.result().await.refused, "replayed", "single use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_command_id_stays_refused_across_a_restart() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &DeviceSide::endpoint(), &broker) + &keys_toml();
    let path = write_config_text(dir.path(), &text);
    let admin = Client::connect(&broker, "company-admin").await;
    // Signed once the gateway's store exists (orders from before it are refused), sent twice.
    let mut c = None;
    let own = format!("{BASE}/cmd");
    for expect in ["", "replayed"] {
        // A fresh watcher each time: an "online" of the previous run must not be taken for this
        // run's (the retained status is the previous run's "offline").
        let mut up = Uplink::connect(&broker).await;
        let daemon = within(
            "daemon start",
            LONG,
            Daemon::start(Config::load(&path).unwrap(), Profiles::builtin()),
        )
        .await
        .unwrap();
        up.status(v1::GatewayState::Online).await;
        let c = c.get_or_insert_with(|| {
            let lock = command("lock-1", v1::Level::Gateway, GATEWAY_PATH, mode("lockdown"));
            sign(&lock, "company", &company())
        });
        send(&admin, &own, c).await;
        assert_eq!(up.result().await.refused, expect);
        daemon.stop().await;
    }
}

/// A config for gateway `id` in `community` of `street` (all under district 330106).
/// A gateway of its own in the tree; its devices on its own endpoint at `devices` (no device
/// secrets: development mode, devices known by their username alone).
fn gateway_config(
    dir: &std::path::Path,
    broker: &BrokerUrl,
    devices: u16,
    id: &str,
    street: &str,
    community: &str,
) -> String {
    format!(
        r#"
[gateway]
id = "{id}"
city = "3301"
district = "330106"
street = "{street}"
community = "{community}"

[clock]
trusted = true

[device_broker]
listen = "127.0.0.1:{devices}"

[uplink]
url = "mqtt://127.0.0.1:{port}"

[store]
dir = "{store}"

[[lanes]]
id = "east-1"

[[lanes.devices]]
id = "{id}-thermal"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "{id}-gate"
role = "turnstile"
profile = "generic-gate-mqtt"
{keys}"#,
        port = broker.port,
        store = dir.join(id).display(),
        keys = keys_toml()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_street_wide_mode_change_reaches_every_gateway_of_the_street_and_no_other() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let gateways = [
        ("gw-a", "330106001", "330106001001"),
        ("gw-b", "330106001", "330106001002"),
        ("gw-c", "330106001", "330106001003"),
        ("gw-x", "330106002", "330106002001"),
    ];
    let mut daemons = Vec::new();
    let mut watchers = Vec::new();
    let mut endpoints = Vec::new();
    for (id, street, community) in gateways {
        let path = dir.path().join(format!("{id}.toml"));
        let port = gatehouse_company::broker::free_port().unwrap();
        endpoints.push(port);
        std::fs::write(
            &path,
            gateway_config(dir.path(), &broker, port, id, street, community),
        )
        .unwrap();
        let base = format!("gh/v1/3301/330106/{street}/{community}/{id}");
        let mut w = Uplink::connect_to(&broker, &base).await;
        daemons.push(
            within(
                "daemon start",
                LONG,
                Daemon::start(Config::load(&path).unwrap(), Profiles::builtin()),
            )
            .await
            .unwrap(),
        );
        w.status(v1::GatewayState::Online).await;
        watchers.push(w);
    }
    let office = Client::connect(&broker, "street-office").await;
    let c = sign(
        &command(
            "street-lockdown",
            v1::Level::Street,
            "330106001",
            mode("epidemic"),
        ),
        "street-office",
        &street_office(),
    );
    let sent = Instant::now();
    send(&office, "gh/v1/3301/330106/330106001/_all/cmd", &c).await;
    for w in &mut watchers[..3] {
        let r = w.result().await;
        assert!(r.applied, "{r:?}");
    }
    let took = sent.elapsed();
    println!("street-wide mode change applied (durably) on three gateways in {took:?}");
    // A threshold change for the street, from the company: 37.0 °C is now a fever there.
    let admin = Client::connect(&broker, "company-admin").await;
    let t = sign(
        &command(
            "street-threshold",
            v1::Level::Street,
            "330106001",
            v1::command::Payload::SetThreshold(v1::SetThreshold {
                fever_threshold_c: 37.0,
                lane: String::new(),
            }),
        ),
        "company",
        &company(),
    );
    send(&admin, "gh/v1/3301/330106/330106001/_all/cmd", &t).await;
    for w in &mut watchers[..3] {
        assert!(w.result().await.applied);
    }
    // The retained status says so at once, not at the next periodic status.
    while watchers[1].status(v1::GatewayState::Online).await.mode != "epidemic" {}
    // The first decision on one of them is under the new mode: no temperature, no entry.
    let gw_a = DeviceSide::Endpoint(endpoints[0]).url();
    let terminal = Client::device(
        &gatehouse::mqtt_client::DeviceLink::new(gw_a, "gw-a-thermal", "no secret set"),
        "gw-a-terminal",
    )
    .await;
    let body = gatehouse::tools::sim::hikvision::acs_event(1, Some("R1"), 37.1, Unit::Celsius);
    terminal
        .publish("devices/gw-a-thermal/event", body.into_bytes())
        .await;
    let e = watchers[0].batch().await;
    let Some(v1::event::Body::Passage(d)) = &e[0].body else {
        panic!("a passage")
    };
    assert_eq!((d.mode.as_str(), d.reason.as_str()), ("epidemic", "fever"));
    // The gateway in the other street heard nothing: no result in anything it sent, and its
    // mode is still normal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(m) = watchers[3].rx.try_recv() {
        match m {
            Upstream::Result(r) => panic!("gw-x answered an order of another street: {r:?}"),
            Upstream::Status { status, .. } => {
                assert_eq!(status.mode, "normal", "gw-x changed its mode")
            }
            _ => {}
        }
    }
    // Asked afresh: a retained status of gw-x, still normal.
    let mut fresh =
        Uplink::connect_to(&broker, "gh/v1/3301/330106/330106002/330106002001/gw-x").await;
    let s = fresh.retained_status().await;
    assert_eq!((s.gateway.as_str(), s.mode.as_str()), ("gw-x", "normal"));
    for d in daemons {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_are_synced_from_above_by_snapshot_and_delta_and_decisions_use_them() {
    let broker = start_broker();
    let keys = keys_toml();
    let mut h = Harness::start_with(broker.clone(), broker.clone(), |t| t + &keys).await;
    let admin = Client::connect(&broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let gw = v1::Level::Gateway;
    // Until now S000001 is a stranger here.
    h.identify(1, Some("S000001"), 36.5, Unit::Celsius).await;
    assert_eq!(h.next_command().await.reason, "unknown_subject");
    let snapshot = v1::RegistrySnapshot {
        version: 10,
        residents: (0..2000)
            .map(|i| v1::ResidentEntry {
                person_id: format!("S{i:06}"),
                household: format!("H{}", i / 4),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    send(
        &admin,
        &own,
        &sign(
            &command(
                "snap-10",
                gw,
                GATEWAY_PATH,
                v1::command::Payload::RegistrySnapshot(snapshot),
            ),
            "company",
            &company(),
        ),
    )
    .await;
    let r = h.uplink.result().await;
    assert!(r.applied, "{r:?}");
    println!("snapshot result: {}", r.detail);
    h.identify(2, Some("S000001"), 36.5, Unit::Celsius).await;
    assert_eq!(h.next_command().await.reason, "ok");
    // A delta on the wrong base asks for a snapshot; one on the right base applies.
    let delta = |base, version| v1::RegistryDelta {
        base_version: base,
        version,
        remove_residents: vec!["S000001".into()],
        ..Default::default()
    };
    send(
        &admin,
        &own,
        &sign(
            &command(
                "d-1",
                gw,
                GATEWAY_PATH,
                v1::command::Payload::RegistryDelta(delta(9, 11)),
            ),
            "company",
            &company(),
        ),
    )
    .await;
    assert_eq!(h.uplink.result().await.refused, "wrong_base");
    send(
        &admin,
        &own,
        &sign(
            &command(
                "d-2",
                gw,
                GATEWAY_PATH,
                v1::command::Payload::RegistryDelta(delta(10, 11)),
            ),
            "company",
            &company(),
        ),
    )
    .await;
    assert!(h.uplink.result().await.applied);
    h.identify(3, Some("S000001"), 36.5, Unit::Celsius).await;
    assert_eq!(h.next_command().await.reason, "unknown_subject");
    // The street office may not replace lists.
    let s = v1::RegistrySnapshot {
        version: 12,
        ..Default::default()
    };
    send(
        &admin,
        &own,
        &sign(
            &command(
                "snap-12",
                gw,
                GATEWAY_PATH,
                v1::command::Payload::RegistrySnapshot(s),
            ),
            "street-office",
            &street_office(),
        ),
    )
    .await;
    assert_eq!(h.uplink.result().await.refused, "not_permitted");
    // The status shows the synced version (it went up when the lists changed).
    while h
        .uplink
        .status(v1::GatewayState::Online)
        .await
        .registry_version
        != 11
    {}
}
