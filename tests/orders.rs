//! Orders from above, tried as an attacker with a foothold on the company broker would: a
//! street key ordering fire, a captured order replayed in another community, orders valid for a
//! century, replay after the store was lost, list sync that would freeze or swamp the gateway,
//! and a flood of junk. Each ends in a refusal with its reason — and the proper orders still
//! apply.
use crate::commands::{command, company, emergency, keys_toml, mode, send, street_office};
use crate::common::*;
use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::orders::sign;
use gatehouse::proto::v1;
use std::time::{Duration, Instant};

fn open(lane: &str) -> v1::command::Payload {
    v1::command::Payload::RemoteOpen(v1::RemoteOpen {
        lane: lane.into(),
        operator_id: "op-7".into(),
        reason: "ambulance".into(),
    })
}

fn snapshot(version: u64, residents: std::ops::Range<u32>) -> v1::RegistrySnapshot {
    v1::RegistrySnapshot {
        version,
        residents: residents
            .map(|i| v1::ResidentEntry {
                person_id: format!("S{i:06}"),
                household: format!("H{}", i / 4),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn harness(edit: impl FnOnce(String) -> String) -> Harness {
    let broker = start_broker();
    let keys = keys_toml();
    Harness::start_with(broker.clone(), broker, |t| edit(t + &keys)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_key_with_the_fire_kind_can_order_fire() {
    let mut h = harness(|t| t).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let street = "gh/v1/3301/330106/330106001/_all/cmd";
    let fire = |id| command(id, v1::Level::Street, "330106001", mode("fire"));
    // The street office may set its street's mode, but not to fire; nor may the company's key.
    send(
        &admin,
        street,
        &sign(&fire("f1"), "street-office", &street_office()),
    )
    .await;
    let r = h.uplink.result().await;
    assert_eq!(r.refused, "not_permitted", "{r:?}");
    let lockdown = command("l1", v1::Level::Street, "330106001", mode("lockdown"));
    send(
        &admin,
        street,
        &sign(&lockdown, "street-office", &street_office()),
    )
    .await;
    assert!(h.uplink.result().await.applied);
    // The emergency key may.
    send(
        &admin,
        street,
        &sign(&fire("f2"), "emergency", &emergency()),
    )
    .await;
    assert!(h.uplink.result().await.applied);
    let alarm = h.uplink.alarm_of(v1::AlarmKind::FireMode).await;
    assert!(alarm.detail.contains("fire mode"), "{alarm:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_order_applies_only_to_the_gateway_its_full_path_names() {
    let mut h = harness(|t| t).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    // Captured in community …002, for its own gw-test, published on ours: not ours.
    let elsewhere = command(
        "o1",
        v1::Level::Gateway,
        "330106001002/gw-test",
        open("east-1"),
    );
    send(&admin, &own, &sign(&elsewhere, "company", &company())).await;
    assert_eq!(h.uplink.result().await.refused, "out_of_scope");
    // The bare id, as before: refused with a hint.
    let bare = command("o2", v1::Level::Gateway, GATEWAY, open("east-1"));
    send(&admin, &own, &sign(&bare, "company", &company())).await;
    let r = h.uplink.result().await;
    assert_eq!(r.refused, "out_of_scope");
    assert!(r.detail.contains("full path"), "{r:?}");
    // Our full path: the gate opens.
    let ours = command("o3", v1::Level::Gateway, GATEWAY_PATH, open("east-1"));
    send(&admin, &own, &sign(&ours, "company", &company())).await;
    assert_eq!(h.next_command().await.action, "open");
    assert!(h.uplink.result().await.applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_valid_for_longer_than_the_maximum_lifetime_is_refused() {
    let mut h = harness(|t| t).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let now = gatehouse::now_ms();
    let year_ms = 365 * 24 * 3600 * 1000;
    for (id, issued, expires) in [
        ("century", now, now + 100 * year_ms),
        ("forever", now, i64::MAX),
        ("2001-2100", 978_307_200_000, 4_102_444_800_000),
    ] {
        let mut c = command(id, v1::Level::Gateway, GATEWAY_PATH, open("east-1"));
        (c.issued_at_ms, c.expires_at_ms) = (issued, expires);
        send(&admin, &own, &sign(&c, "company", &company())).await;
        let r = h.uplink.result().await;
        assert_eq!(
            (r.command_id.as_str(), r.refused.as_str()),
            (id, "lifetime_too_long")
        );
    }
    // A day is allowed (the default max_lifetime_s).
    let mut day = command("day", v1::Level::Gateway, GATEWAY_PATH, open("east-1"));
    day.expires_at_ms = day.issued_at_ms + 24 * 3600 * 1000;
    send(&admin, &own, &sign(&day, "company", &company())).await;
    assert_eq!(h.next_command().await.action, "open");
    assert!(h.uplink.result().await.applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_store_a_captured_order_is_not_applied_again_and_sync_starts_over() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    // A small skew, so that the test need not wait long for it to pass.
    let keys = keys_toml().replace("max_skew_s = 30", "max_skew_s = 3");
    let text = config_text(dir.path(), &DeviceSide::endpoint(), &broker) + &keys;
    let path = write_config_text(dir.path(), &text);
    let admin = Client::connect(&broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let start = || async {
        let daemon = Daemon::start(Config::load(&path).unwrap(), Profiles::builtin());
        within("daemon start", LONG, daemon).await.unwrap()
    };
    let mut up = Uplink::connect(&broker).await;
    let daemon = start().await;
    up.status(v1::GatewayState::Online).await;
    let captured = sign(
        &command("open-A", v1::Level::Gateway, GATEWAY_PATH, open("east-1")),
        "company",
        &company(),
    );
    send(&admin, &own, &captured).await;
    assert!(up.result().await.applied);
    // Issue 27 §12: one issued ahead of the gateway's clock, inside the skew: it stays valid
    // past the moment the new store is made.
    let mut ahead = command(
        "open-ahead",
        v1::Level::Gateway,
        GATEWAY_PATH,
        open("east-1"),
    );
    ahead.issued_at_ms += 2_500;
    let ahead = sign(&ahead, "company", &company());
    send(&admin, &own, &ahead).await;
    assert!(up.result().await.applied);
    let snap = command(
        "snap-5",
        v1::Level::Gateway,
        GATEWAY_PATH,
        v1::command::Payload::RegistrySnapshot(snapshot(5, 0..10)),
    );
    send(&admin, &own, &sign(&snap, "company", &company())).await;
    assert!(up.result().await.applied);
    daemon.stop().await;

    // The SD card garbles the store: it is moved aside and a fresh one made, replay ids and all.
    let store = dir.path().join("store").join("gatehouse.redb");
    std::fs::write(&store, b"garbage where the store was").unwrap();
    // Created after the captured order was issued, as a real rebuild is.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut up = Uplink::connect(&broker).await;
    let daemon = start().await;
    let status = up.status(v1::GatewayState::Online).await;
    assert_eq!(status.registry_version, 0);
    assert!(status.needs_snapshot, "the status asks for a snapshot");
    send(&admin, &own, &captured).await;
    let r = up.result().await;
    assert_eq!(r.refused, "issued_before_store", "{r:?}");
    // Replayed after the new store was made, still inside its validity (it was applied before
    // the loss at most the skew ahead): refused too (it was applied again).
    send(&admin, &own, &ahead).await;
    let r = up.result().await;
    assert_eq!(r.refused, "issued_before_store", "{r:?}");
    // The company sends anew once the skew has passed: that applies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = command("open-B", v1::Level::Gateway, GATEWAY_PATH, open("east-1"));
    send(&admin, &own, &sign(&fresh, "company", &company())).await;
    assert!(up.result().await.applied);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sync_is_bounded_like_an_import_and_a_large_snapshot_arrives_in_chunks() {
    let mut h = harness(|t| t.replace("[registry]\n", "[registry]\nmax_residents = 5000\n")).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let gw = v1::Level::Gateway;
    let push = |id: &str, p| sign(&command(id, gw, GATEWAY_PATH, p), "company", &company());
    use v1::command::Payload::RegistrySnapshot as Snap;
    // A version at the top of the range would freeze sync for good.
    send(&admin, &own, &push("max", Snap(snapshot(u64::MAX, 0..10)))).await;
    assert_eq!(h.uplink.result().await.refused, "version_too_far");
    // More residents than the gateway takes from a file.
    send(&admin, &own, &push("big", Snap(snapshot(3, 0..5001)))).await;
    assert_eq!(h.uplink.result().await.refused, "too_many");
    // The same person twice: refused, the ids named.
    let mut twice = snapshot(3, 0..10);
    twice.residents.push(twice.residents[3].clone());
    send(&admin, &own, &push("twice", Snap(twice))).await;
    let r = h.uplink.result().await;
    assert_eq!(r.refused, "duplicate_ids");
    assert!(r.detail.contains("S000003"), "{r:?}");

    // 4,000 residents in chunks of 20 kB, as `gatehouse-company command --snapshot` sends them.
    let key = company();
    let envelope = gatehouse_company::lists::Envelope {
        id: "snap-7",
        issued_at_ms: gatehouse::now_ms(),
        expires_at_ms: gatehouse::now_ms() + 60_000,
        target: v1::Scope {
            level: gw as i32,
            code: GATEWAY_PATH.into(),
        },
        key_id: "company",
        key: &key,
    };
    let chunks =
        gatehouse_company::lists::snapshot_orders(snapshot(7, 0..4000), 20_000, &envelope).unwrap();
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    for c in &chunks {
        send(&admin, &own, c).await;
    }
    let mut results = Vec::new();
    while results.len() < chunks.len() + 1 {
        results.push(h.uplink.result().await);
    }
    assert!(results.iter().all(|r| r.applied), "{results:?}");
    let done = results
        .iter()
        .find(|r| r.command_id == "snap-7")
        .expect("the transfer's result");
    assert!(done.detail.contains("version 7 applied"), "{done:?}");
    h.identify(1, Some("S003999"), 36.5, Unit::Celsius).await;
    assert_eq!(h.next_command().await.reason, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_orders_is_answered_at_a_bounded_rate_and_gates_keep_deciding() {
    let mut h = harness(|t| t).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let started = Instant::now();
    // 2,000 small junk orders and 16 of 1 MiB, signed by nobody.
    for i in 0..2000u32 {
        admin.publish(&own, i.to_le_bytes().repeat(8)).await;
    }
    for _ in 0..16 {
        admin.publish(&own, vec![0x55; 1 << 20]).await;
    }
    // Residents still pass while the junk is being checked.
    for serial in 0..5 {
        h.identify(serial, Some("R000001"), 36.5, Unit::Celsius)
            .await;
        let c = within(
            "a decision during the flood",
            Duration::from_secs(3),
            h.next_command(),
        )
        .await;
        assert_eq!(c.reason, "ok");
    }
    // Wait until every junk order was refused or dropped at the door.
    let m = h.daemon.metrics.clone();
    let counted = || {
        gatehouse::metrics::Metrics::get(&m.orders_refused)
            + gatehouse::metrics::Metrics::get(&m.orders_dropped)
    };
    // Until every junk order that reached the gateway was refused or dropped at the door.
    let mut last = u64::MAX;
    while counted() != last && started.elapsed() < Duration::from_secs(60) {
        last = counted();
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    println!(
        "junk orders refused or dropped: {last} of 2016 sent, in {:?}",
        started.elapsed()
    );
    assert!(last >= 1000, "the junk reached the gateway ({last})");
    // Answers upstream: a burst of 10, then one a second — not one per junk message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answers = 0;
    while let Ok(Some(u)) =
        tokio::time::timeout(Duration::from_millis(300), h.uplink.rx.recv()).await
    {
        if matches!(u, Upstream::Result(_)) {
            answers += 1;
        }
    }
    let allowed = 10 + started.elapsed().as_secs() as usize + 2;
    assert!(
        answers <= allowed,
        "{answers} answers in {:?}",
        started.elapsed()
    );
    assert!(answers >= 1, "refusals are still answered");
    assert!(
        gatehouse::metrics::Metrics::get(&m.orders_refusals_unanswered) > 0,
        "the rest were counted, not answered"
    );
    // A proper order still applies after the flood.
    let ping = command(
        "after",
        v1::Level::Gateway,
        GATEWAY_PATH,
        v1::command::Payload::Ping(v1::Ping {}),
    );
    let ping = sign(&ping, "company", &company());
    send(&admin, &own, &ping).await;
    let r = h.uplink.result().await;
    assert_eq!((r.command_id.as_str(), r.applied), ("after", true));
    // The same order replayed 300 times: refused each time, counted, and not answered 300 times.
    let before = counted();
    let unanswered = gatehouse::metrics::Metrics::get(&m.orders_refusals_unanswered);
    for _ in 0..300 {
        send(&admin, &own, &ping).await;
    }
    within("every replay refused", Duration::from_secs(30), async {
        while counted() < before + 300 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gatehouse::metrics::Metrics::get(&m.orders_refusals_unanswered) > unanswered + 200,
        "replays are answered at the bounded rate too"
    );
}

/// Issue 27 §13: every applied id is kept until its order expires, and a key could send valid
/// orders without end (a ping-only key at 3,000/s grew memory and the store by 10 MB per
/// 100,000). Now a key gets a burst of 2,048, then one a second: the rest are refused
/// `too_many_orders`, and another key's order still applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flooding_valid_orders_is_refused_past_its_quota_and_other_keys_are_not() {
    let pinger = ed25519_dalek::SigningKey::from_bytes(&[44; 32]);
    let key = format!(
        "\n[[commands.keys]]\nid = \"pinger\"\npublic_key = \"{}\"\nlevels = [\"gateway\"]\nkinds = [\"ping\"]\n",
        gatehouse::hex::to_hex(pinger.verifying_key().as_bytes())
    );
    let mut h = harness(|t| t + &key).await;
    let admin = Client::connect(&h.broker, "company-admin").await;
    let own = format!("{BASE}/cmd");
    let ping = || v1::command::Payload::Ping(v1::Ping {});
    let started = Instant::now();
    for i in 0..2_100 {
        let c = command(
            &format!("ping-{i}"),
            v1::Level::Gateway,
            GATEWAY_PATH,
            ping(),
        );
        send(&admin, &own, &sign(&c, "pinger", &pinger)).await;
    }
    let mut applied = 0;
    loop {
        let r = h.uplink.result().await;
        if r.refused == "too_many_orders" {
            assert!(r.detail.contains("\"pinger\""), "{r:?}");
            break;
        }
        assert!(r.applied, "{r:?}");
        applied += 1;
    }
    let allowed = 2_048 + started.elapsed().as_secs() as usize + 1;
    assert!(applied <= allowed, "{applied} applied, at most {allowed}");
    let c = command("company-ping", v1::Level::Gateway, GATEWAY_PATH, ping());
    send(&admin, &own, &sign(&c, "company", &company())).await;
    loop {
        let r = h.uplink.result().await;
        if r.command_id == "company-ping" {
            assert!(r.applied, "{r:?}");
            break;
        }
    }
}
