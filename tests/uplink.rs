//! The uplink: nothing lost and order kept while the company broker is unreachable.
use crate::common::*;
use gatehouse::metrics::Metrics;
use gatehouse::profiles::Unit;
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
