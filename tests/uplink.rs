//! The uplink: nothing lost and order kept while the company broker is unreachable.
use crate::common::*;
use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::metrics::Metrics;
use gatehouse::mqtt_client::BrokerUrl;
use gatehouse::proto::v1;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_the_uplink_is_down_and_drain_in_order() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with_uplink(broker, proxy.url.clone()).await;
    h.uplink.status(v1::GatewayState::Online).await;

    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.uplink.events(1).await;

    proxy.cut();
    within("uplink noticed down", LONG, async {
        while h
            .daemon
            .metrics
            .uplink_connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    const N: u64 = 60;
    for serial in 100..100 + N {
        h.identify(
            serial,
            Some(&format!("R{:06}", serial % 100)),
            36.5,
            Unit::Celsius,
        )
        .await;
    }
    // The gate keeps deciding with the uplink down.
    for _ in 0..=N {
        h.next_command().await;
    }
    within("records durable", LONG, async {
        while Metrics::get(&h.daemon.metrics.outbox_depth) < N {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    proxy.restore();
    // Duplicates are allowed (same event id); each event's first arrival must be in order.
    let mut first_seen = Vec::new();
    within("the backlog upstream", LONG, async {
        while (first_seen.len() as u64) < N {
            for e in h.uplink.batch().await {
                let Some(v1::event::Body::Passage(p)) = &e.body else {
                    continue;
                };
                let cause: u64 = p.cause[0].parse().unwrap();
                assert_eq!(e.event_id, format!("{GATEWAY}:{}", e.seq));
                if cause >= 100 && !first_seen.contains(&cause) {
                    first_seen.push(cause);
                }
            }
        }
    })
    .await;
    assert_eq!(
        first_seen,
        (100..100 + N).collect::<Vec<_>>(),
        "every event, in order"
    );
    within("outbox emptied", LONG, async {
        while Metrics::get(&h.daemon.metrics.outbox_depth) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_moved_aside_with_an_alarm_and_the_gate_keeps_working() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let devices = DeviceSide::endpoint();
    let path = write_config(dir.path(), &devices, &broker);
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    std::fs::write(dir.path().join("store/gatehouse.redb"), vec![0xa5; 100_000]).unwrap();
    let mut company = Uplink::connect(&broker).await;
    let mut gate = gate_sim(&devices.link("gate-1"));
    let config = gatehouse::config::Config::load(&path).unwrap();
    let daemon = within(
        "start",
        LONG,
        gatehouse::daemon::Daemon::start(config, gatehouse::device::Profiles::builtin()),
    )
    .await
    .unwrap();
    let alarm = company.alarm().await;
    assert_eq!(alarm.kind(), v1::AlarmKind::StorageLoss);
    assert!(alarm.detail.contains("moved to"), "{}", alarm.detail);
    let kept = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("gatehouse.redb.corrupt-")
        });
    assert!(kept, "the damaged file is kept for inspection");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminal = Client::device(&devices.link("thermal-1"), "t").await;
    let body = gatehouse::tools::sim::hikvision::acs_event(5, Some("R000005"), 36.4, Unit::Celsius);
    terminal
        .publish("devices/thermal-1/event", body.into_bytes())
        .await;
    let c = within("command", LONG, gate.recv()).await.unwrap().unwrap();
    assert_eq!(
        (c.action.as_str(), c.cause.as_str()),
        ("open", "5"),
        "residents re-imported into the fresh store"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_resident_list_is_reported_upstream_with_its_bad_lines() {
    let broker = start_broker();
    let lists = tempfile::tempdir().unwrap();
    let bad = lists.path().join("bad.csv");
    std::fs::write(&bad, "person_id,household\nR1,H1\nR2\nR3,H1,extra\n").unwrap();
    let mut h = Harness::start_with(broker.clone(), broker, |t| {
        t.replace(
            "import = \"residents.csv\"",
            &format!("import = \"{}\"", bad.display()),
        )
    })
    .await;
    let alarm = h.uplink.alarm().await;
    assert_eq!(alarm.kind(), v1::AlarmKind::RegistryRefused);
    assert!(alarm.detail.contains("line 3"), "{}", alarm.detail);
    h.daemon.stop().await;
}

/// The hourly statistics, with the period shortened to a second: what was decided is counted
/// per lane and goes up on `stats` when the period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_per_lane_go_up_at_the_end_of_each_period() {
    let broker = start_broker();
    let mut h = Harness::start_with(broker.clone(), broker, |t| {
        t.replace("batch_max = 16", "batch_max = 16\nstats_period_s = 1")
    })
    .await;
    // Line the identifications up right after a period starts, so they fall into one.
    let now = gatehouse::now_ms();
    tokio::time::sleep(Duration::from_millis((1000 - now % 1000) as u64 + 50)).await;
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.identify(2, Some("R000002"), 38.0, Unit::Celsius).await;
    h.identify(3, None, 36.5, Unit::Celsius).await;
    for _ in 0..3 {
        h.next_command().await;
    }
    let counted = loop {
        let b = h.uplink.stats().await;
        assert_eq!(b.gateway, GATEWAY);
        let s = &b.stats[0];
        assert_eq!(
            (s.lane.as_str(), s.period_end_ms - s.period_start_ms),
            ("east-1", 1000)
        );
        if s.entries + s.denials.values().sum::<u32>() > 0 {
            break s.clone();
        }
    };
    assert_eq!(
        (
            counted.entries,
            counted.fevers,
            counted.denials.get("fever"),
            counted.denials.get("unknown_subject")
        ),
        (1, 1, Some(&1), Some(&1))
    );
    assert_eq!(counted.inside, 1);
}

/// Stopped in one period and started after it ended (a power cut across the hour, an update
/// at the top of it): the counts of the period it stopped in still go up, as their own batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_period_a_restart_skipped_over_still_goes_up_with_its_counts() {
    const PERIOD_MS: i64 = 6000;
    let broker = start_broker();
    let mut h = Harness::start_with(broker.clone(), broker, |t| {
        t.replace("batch_max = 16", "batch_max = 16\nstats_period_s = 6")
    })
    .await;
    let now = gatehouse::now_ms();
    tokio::time::sleep(Duration::from_millis(
        (PERIOD_MS - now % PERIOD_MS) as u64 + 50,
    ))
    .await;
    let period = gatehouse::now_ms() / PERIOD_MS * PERIOD_MS;
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.identify(2, Some("R000002"), 36.6, Unit::Celsius).await;
    for _ in 0..2 {
        assert_eq!(h.next_command().await.action, "open");
    }
    // Both decisions durable (a group commit is 10 ms), then a stop well inside the period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.daemon.stop().await;
    assert!(
        gatehouse::now_ms() < period + PERIOD_MS,
        "stopped too late for this test"
    );
    let wait = period + PERIOD_MS - gatehouse::now_ms() + 200;
    tokio::time::sleep(Duration::from_millis(wait as u64)).await;

    let config = Config::load(&h.dir.path().join("gatehouse.toml")).unwrap();
    let daemon = within(
        "daemon restart",
        LONG,
        Daemon::start(config, Profiles::builtin()),
    )
    .await
    .unwrap();
    let skipped = loop {
        let b = h.uplink.stats().await;
        let s = &b.stats[0];
        assert!(
            s.period_start_ms <= period,
            "the period the daemon stopped in never went up"
        );
        if s.period_start_ms == period {
            break b;
        }
    };
    assert_eq!(skipped.stats[0].entries, 2);
    // The identifications came right after the period began: counted in it, not the one before.
    assert!(skipped.seq > 0);
    let next = h.uplink.stats().await;
    assert_eq!(
        (next.stats[0].period_start_ms, next.seq),
        (period + PERIOD_MS, skipped.seq + 1)
    );
    daemon.stop().await;
}

/// The broker takes a backlog but its PUBACKs are lost: nothing leaves the outbox without one.
/// Then the link drops and comes back: the gateway sends again what was not acknowledged, and
/// every record arrives and is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_leave_the_outbox_only_after_the_brokers_puback() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with_uplink(broker, proxy.url.clone()).await;
    h.uplink.status(v1::GatewayState::Online).await;
    // A backlog made while the link is down, so it goes up in full batches.
    const N: u64 = 40;
    backlog(&mut h, &proxy, 200, N).await;
    proxy.set(Link::DropPubAcks);
    // The company receives them all…
    let mut seen = std::collections::HashSet::new();
    within("every record upstream", Duration::from_secs(40), async {
        while (seen.len() as u64) < N {
            for e in h.uplink.batch().await {
                if let Some(v1::event::Body::Passage(p)) = &e.body {
                    seen.insert(p.cause[0].clone());
                }
            }
        }
    })
    .await;
    // …but without its PUBACKs the gateway keeps every one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        Metrics::get(&h.daemon.metrics.outbox_depth) >= N,
        "deleted without a PUBACK: depth {}",
        Metrics::get(&h.daemon.metrics.outbox_depth)
    );
    assert_eq!(Metrics::get(&h.daemon.metrics.uplink_acked), 0);
    // The link drops and comes back whole: what was not acknowledged goes again, is acked and
    // deleted.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    within(
        "outbox emptied after the PUBACKs",
        Duration::from_secs(30),
        async {
            while Metrics::get(&h.daemon.metrics.outbox_depth) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert!(Metrics::get(&h.daemon.metrics.uplink_acked) >= N);
    h.daemon.stop().await;
}

/// A batch cut in the middle of its packet while a backlog drains (the link dying mid-write):
/// nothing is deleted for it, and once the link is back every record arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_mid_write_is_sent_again_and_every_record_arrives_in_order() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with_uplink(broker, proxy.url.clone()).await;
    h.uplink.status(v1::GatewayState::Online).await;
    const N: u64 = 80;
    backlog(&mut h, &proxy, 300, N).await;
    // Back, but the first write towards the broker is cut half-way.
    proxy.set(Link::CutMidWrite);
    let m = h.daemon.metrics.clone();
    within("a connection made and cut mid-write", LONG, async {
        while Metrics::get(&m.uplink_published) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Metrics::get(&m.outbox_depth) >= N,
        "deleted though cut mid-write: depth {}",
        Metrics::get(&m.outbox_depth)
    );
    proxy.restore();
    let mut first_seen = Vec::new();
    within("every record upstream", Duration::from_secs(40), async {
        while (first_seen.len() as u64) < N {
            for e in h.uplink.batch().await {
                let Some(v1::event::Body::Passage(p)) = &e.body else {
                    continue;
                };
                let cause: u64 = p.cause[0].parse().unwrap();
                if cause >= 300 && !first_seen.contains(&cause) {
                    first_seen.push(cause);
                }
            }
        }
    })
    .await;
    assert_eq!(first_seen, (300..300 + N).collect::<Vec<_>>(), "in order");
    within("outbox emptied", LONG, async {
        while Metrics::get(&m.outbox_depth) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    h.daemon.stop().await;
}

/// Cuts the uplink and decides `n` identifications (causes `from`…), each answered at the gate,
/// until all their records wait in the outbox.
async fn backlog(h: &mut Harness, proxy: &Proxy, from: u64, n: u64) {
    proxy.cut();
    for serial in from..from + n {
        let who = format!("R{:06}", serial % 100);
        h.identify(serial, Some(&who), 36.5, Unit::Celsius).await;
        h.next_command().await;
    }
    within("backlog durable", LONG, async {
        while Metrics::get(&h.daemon.metrics.outbox_depth) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Issue 27 §11: a 20 MiB retained message on the street's command topic (larger than any order
/// may be) used to break every connection right after it subscribed: records and orders stopped
/// until someone cleared it. Now that topic is left out, with an alarm naming it, and records
/// and the gateway's own orders flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_command_topic_is_left_out_with_an_alarm_and_records_and_orders_flow() {
    use crate::commands::{command, company, keys_toml, send};
    use gatehouse::orders::sign;
    if !have("mosquitto") {
        skip(
            "a_poisoned_command_topic_is_left_out_with_an_alarm_and_records_and_orders_flow",
            "mosquitto is not installed (apt-get install mosquitto)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf =
        format!("persistence false\nuser root\nallow_anonymous true\nlistener {port} 127.0.0.1\n");
    let _mosquitto = spawn_mosquitto(dir.path(), &conf, &[port]);
    let company_broker = BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap();
    let street = BASE.rsplitn(3, '/').nth(2).unwrap();
    let poisoned = format!("{street}/_all/cmd");
    poison(&company_broker, &poisoned, 20 << 20).await;

    let keys = keys_toml();
    let mut h = Harness::start_with(company_broker.clone(), company_broker.clone(), |t| {
        t + &keys
    })
    .await;
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    let (_, passage) = h.uplink.passage_from("thermal-1").await;
    assert_eq!(passage.verdict(), v1::Verdict::Allow, "{passage:?}");
    let alarm = h.uplink.alarm_of(v1::AlarmKind::OrderTopicPoisoned).await;
    assert!(alarm.detail.contains(&poisoned), "{}", alarm.detail);
    assert!(
        alarm.detail.contains("left unsubscribed for 60 s"),
        "{}",
        alarm.detail
    );

    let admin = Client::connect(&company_broker, "company-admin").await;
    let ping = v1::command::Payload::Ping(v1::Ping {});
    let order = command("after-poison", v1::Level::Gateway, GATEWAY_PATH, ping);
    send(
        &admin,
        &format!("{BASE}/cmd"),
        &sign(&order, "company", &company()),
    )
    .await;
    let result = h.uplink.result().await;
    assert_eq!(result.command_id, "after-poison");
    assert!(result.applied, "{result:?}");
    let metrics = h.daemon.metrics.clone();
    assert!(Metrics::get(&metrics.order_topics_poisoned) >= 1);
    h.daemon.stop().await;
}

/// Publishes `bytes` of junk, retained, on `topic`.
async fn poison(broker: &BrokerUrl, topic: &str, bytes: usize) {
    use rumqttc::{AsyncClient, Event, Outgoing, QoS};
    let mut o = gatehouse::mqtt_client::options(broker, "poisoner", Duration::from_secs(30));
    o.set_max_packet_size(bytes + 4096, bytes + 4096);
    let (client, mut el) = AsyncClient::new(o, 4);
    client
        .publish(topic, QoS::AtLeastOnce, true, vec![b'x'; bytes])
        .await
        .unwrap();
    within("the poison published", LONG, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("poisoner: {e}"),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
}

/// A cut link fires the gateway's will; the "online" it sends on its next connection must be
/// newer than that will, or the company would show it offline until its next reboot (issue 29).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_status_after_a_cut_link_is_newer_than_its_will() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with_uplink(broker, proxy.url.clone()).await;
    let before = h.uplink.status(v1::GatewayState::Online).await;
    proxy.cut();
    let will = h.uplink.status(v1::GatewayState::Offline).await;
    proxy.restore();
    let after = h.uplink.status(v1::GatewayState::Online).await;
    assert_eq!(
        (before.boot, will.boot, after.boot),
        (before.boot, before.boot, before.boot)
    );
    assert!(
        (before.boot, before.seq) < (will.boot, will.seq)
            && (will.boot, will.seq) < (after.boot, after.seq),
        "{} < {} < {}",
        before.seq,
        will.seq,
        after.seq
    );
    h.daemon.stop().await;
}
