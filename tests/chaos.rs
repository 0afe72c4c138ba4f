//! Links that fail the way real ones do, through a proxy the test controls: nothing lost, and
//! the gate keeps deciding throughout.
use crate::common::*;
use gatehouse::device::Unit;
use gatehouse::metrics::Metrics;
use gatehouse::proto::v1;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Collects passage events upstream until every cause in `causes` has been seen; returns the
/// causes in the order they first arrived.
async fn upstream_causes(h: &mut Harness, causes: &[u64]) -> Vec<u64> {
    let mut first_seen = Vec::new();
    within("events upstream", Duration::from_secs(20), async {
        while !causes.iter().all(|c| first_seen.contains(c)) {
            for e in h.uplink.batch().await {
                let Some(v1::event::Body::Passage(p)) = &e.body else {
                    continue;
                };
                let c: u64 = p.cause[0].parse().unwrap();
                if causes.contains(&c) && !first_seen.contains(&c) {
                    first_seen.push(c);
                }
            }
        }
    })
    .await;
    first_seen
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, Duration::from_secs(15), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_uplink_is_noticed_by_keepalive_and_nothing_is_lost() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with(broker, proxy.url.clone(), |t| {
        t.replace("batch_max = 16", "batch_max = 16\nkeep_alive_s = 1")
    })
    .await;
    h.uplink.status(v1::GatewayState::Online).await;

    // No RST, no FIN: only the missing PINGRESP tells.
    proxy.set(Link::Blackhole);
    let m = h.daemon.metrics.clone();
    until("the uplink noticed", || {
        !m.uplink_connected.load(Ordering::Relaxed)
    })
    .await;
    let causes: Vec<u64> = (1..=20).collect();
    for &c in &causes {
        h.identify(c, Some(&format!("R{c:06}")), 36.5, Unit::Celsius)
            .await;
    }
    for _ in &causes {
        h.next_command().await;
    }
    proxy.restore();
    assert_eq!(
        upstream_causes(&mut h, &causes).await,
        causes,
        "all, in order"
    );
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_uplink_delays_but_delivers_everything_in_order() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let mut h = Harness::start_with(broker, proxy.url.clone(), |t| t).await;
    h.uplink.status(v1::GatewayState::Online).await;
    proxy.set(Link::Slow(Duration::from_millis(80)));
    let causes: Vec<u64> = (1..=40).collect();
    for &c in &causes {
        h.identify(c, Some(&format!("R{c:06}")), 36.5, Unit::Celsius)
            .await;
    }
    // The gate does not wait for the uplink.
    for _ in &causes {
        h.next_command().await;
    }
    assert_eq!(upstream_causes(&mut h, &causes).await, causes);
    h.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_device_broker_link_drops_the_gateway_resubscribes_and_decides_what_waited() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let devices = DeviceSide::External(proxy.url.clone());
    let mut h = Harness::start_on(devices, broker.clone(), broker, |t| t).await;
    h.identify(1, Some("R000001"), 36.5, Unit::Celsius).await;
    h.next_command().await;

    proxy.cut();
    let m = h.daemon.metrics.clone();
    until("the device side noticed", || {
        !m.device_broker_connected.load(Ordering::Relaxed)
    })
    .await;
    // The terminal still reaches the broker, which keeps the events for our session.
    let causes: Vec<u64> = (2..=11).collect();
    for &c in &causes {
        h.identify(c, Some(&format!("R{c:06}")), 36.5, Unit::Celsius)
            .await;
    }
    proxy.restore();
    assert_eq!(
        upstream_causes(&mut h, &causes).await,
        causes,
        "decided after the link came back"
    );
    assert!(Metrics::get(&m.device_connects) >= 2);
    h.daemon.stop().await;
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_is_shed_and_real_identifications_still_decide() {
    let _heavy = HEAVY.lock().await;
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let devices = DeviceSide::endpoint();
    let config = write_config(dir.path(), &devices, &broker);
    let mut company = Uplink::connect(&broker).await;
    let mut gate = gate_sim(&devices.link("gate-1"));
    let mut child = gatehouse_run(&config).spawn().unwrap();
    company.status(v1::GatewayState::Online).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2 s of 10,000 garbage messages a second on the terminal's own topic (a broken or
    // compromised terminal: only the terminal itself may publish there), with 40 real
    // identifications among them.
    let terminal = Client::device(&devices.link("thermal-1"), "terminal").await;
    let flooder = &terminal;
    let start = std::time::Instant::now();
    let mut real = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..2000u64 {
        tick.tick().await;
        for k in 0..10 {
            let junk = match k % 3 {
                0 => b"\x00\xff garbage".to_vec(),
                1 => br#"{"AccessControllerEvent":{"currTemperature":"NaN"}}"#.to_vec(),
                _ => vec![b'{'; 2000],
            };
            flooder.publish("devices/thermal-1/event", junk).await;
        }
        if i % 50 == 0 {
            let serial = 1_000 + i / 50;
            let body = gatehouse::tools::sim::hikvision::acs_event(
                serial,
                Some("R000007"),
                36.5,
                Unit::Celsius,
            );
            terminal
                .publish("devices/thermal-1/event", body.into_bytes())
                .await;
            real.push(serial);
        }
    }
    let flood_secs = start.elapsed().as_secs_f64();
    let mut answered = Vec::new();
    within(
        "every real identification answered",
        Duration::from_secs(30),
        async {
            while answered.len() < real.len() {
                let c = gate.recv().await.unwrap().unwrap();
                assert_eq!(c.action, "open");
                answered.push(c.cause.parse::<u64>().unwrap());
            }
        },
    )
    .await;
    answered.sort_unstable();
    assert_eq!(answered, real);
    let peak = peak_rss_kb(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    println!("flood: 20,000 garbage messages in {flood_secs:.1} s, {} real identifications all answered, gatehouse peak RSS {peak} kB", real.len());
    assert!(peak < 96 * 1024, "memory stays bounded: peak {peak} kB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_evicts_like_a_full_outbox_and_the_writer_keeps_going() {
    use gatehouse::store::outbox::{self, Append, Record, WriterConfig};
    use gatehouse::store::Store;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    let Some(disk) = SmallDisk::mount("4m") else {
        skip(
            "a_full_disk_evicts_like_a_full_outbox_and_the_writer_keeps_going",
            "cannot mount a tmpfs here (needs root)",
        );
        return;
    };
    let store = Store::open(disk.0.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let w = outbox::spawn(
        store.clone(),
        WriterConfig {
            gateway: "gw".into(),
            // The eviction path is under test here, not degraded mode.
            degraded_after: Duration::from_secs(3600),
            commit_interval: Duration::from_millis(2),
            commit_max: 64,
            // Far more than the disk holds: the disk is what says "full".
            max_bytes: 1 << 30,
            ttl: [Duration::from_secs(3600); 3],
            clock: std::sync::Arc::new(gatehouse::clock::ClockWatch::new(true)),
        },
        metrics.clone(),
    )
    .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    const N: u64 = 12_000;
    for i in 0..N {
        let record = Record::Event(v1::Event {
            lane: format!("{i:0>600}"),
            body: Some(v1::event::Body::Passage(Default::default())),
            ..Default::default()
        });
        let a = acked.clone();
        let ack: outbox::Ack = Box::new(move || {
            a.fetch_add(1, Ordering::Relaxed);
        });
        within(
            "append",
            Duration::from_secs(30),
            w.appends.send(Append {
                records: vec![record],
                state: Vec::new(),
                ack: Some(ack),
            }),
        )
        .await
        .unwrap();
    }
    drop(w.appends);
    within("all durable", Duration::from_secs(60), w.appends_done)
        .await
        .unwrap();
    drop(w.deletes);
    within("writer ends", Duration::from_secs(60), w.join)
        .await
        .unwrap();
    let evicted = Metrics::get(&metrics.outbox_evicted);
    println!(
        "full disk: {N} records of ~650 B into a 4 MiB disk: all acknowledged, {evicted} evicted oldest-first, {} kept ({} kB), {} commit errors met",
        Metrics::get(&metrics.outbox_depth),
        Metrics::get(&metrics.outbox_bytes) / 1024,
        Metrics::get(&metrics.outbox_commit_errors)
    );
    assert_eq!(
        acked.load(Ordering::Relaxed),
        N,
        "every device event acknowledged"
    );
    assert!(
        evicted > 0 && Metrics::get(&metrics.outbox_commit_errors) > 0,
        "the disk did fill"
    );
    assert!(Metrics::get(&metrics.outbox_depth) > 0);
    // Oldest first: what is kept is the newest records (each carries its number), no hole.
    let kept: Vec<u64> = store
        .outbox_from(
            &[gatehouse::store::Class::Passage],
            0,
            usize::MAX,
            usize::MAX,
        )
        .unwrap()
        .iter()
        .map(|r| {
            let e = <v1::Event as prost::Message>::decode(r.message.as_slice()).unwrap();
            e.lane.parse().unwrap()
        })
        .collect();
    assert!(!kept.is_empty());
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "a hole in what was kept"
    );
    assert_eq!(
        kept.last().copied(),
        Some(N - 1),
        "the newest kept, the oldest evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_backlog_replays_live_decisions_stay_fast_and_alarms_jump_the_queue() {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    // Slow replay, so the backlog is still draining when the fever comes.
    let mut h = Harness::start_with(broker, proxy.url.clone(), |t| {
        t.replace("batch_max = 16", "batch_max = 16\nreplay_rate = 200")
    })
    .await;
    h.uplink.status(v1::GatewayState::Online).await;
    proxy.cut();
    let m = h.daemon.metrics.clone();
    until("the uplink noticed", || {
        !m.uplink_connected.load(Ordering::Relaxed)
    })
    .await;
    const BACKLOG: u64 = 1200;
    for c in 1..=BACKLOG {
        h.identify(c, Some(&format!("R{:06}", c % 100)), 36.5, Unit::Celsius)
            .await;
    }
    for _ in 1..=BACKLOG {
        h.next_command().await;
    }
    until("backlog durable", || {
        Metrics::get(&m.outbox_depth) >= BACKLOG
    })
    .await;

    proxy.restore();
    until("the uplink is back", || {
        m.uplink_connected.load(Ordering::Relaxed)
    })
    .await;
    // A fever during the replay: the gate answers at once, and its alarm overtakes the backlog.
    let t = std::time::Instant::now();
    h.identify(9_999, Some("R000009"), 38.4, Unit::Celsius)
        .await;
    let c = h.next_command().await;
    let answered = t.elapsed();
    assert_eq!((c.cause.as_str(), c.reason.as_str()), ("9999", "fever"));
    let alarm = h.uplink.alarm().await;
    assert_eq!(alarm.cause, vec!["9999".to_string()]);
    let depth_at_alarm = Metrics::get(&m.outbox_depth);
    println!("replay: fever answered in {answered:?} during the replay; its alarm arrived with {depth_at_alarm} records still waiting");
    assert!(
        depth_at_alarm > BACKLOG / 4,
        "the alarm did not wait for the backlog ({depth_at_alarm} left)"
    );
    h.daemon.stop().await;
}
