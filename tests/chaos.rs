//! Links that fail the way real ones do, through a proxy the test controls: nothing lost, and
//! the gate keeps deciding throughout.
use crate::common::*;
use gatehouse::metrics::Metrics;
use gatehouse::profiles::Unit;
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
    let mut h = Harness::start_with(broker.clone(), broker, proxy.url.clone(), |t| {
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
    let mut h = Harness::start_with(broker.clone(), broker, proxy.url.clone(), |t| t).await;
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
    let mut h = Harness::start_with(broker.clone(), proxy.url.clone(), broker, |t| t).await;
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
