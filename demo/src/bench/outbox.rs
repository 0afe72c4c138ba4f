use anyhow::bail;
use gatehouse::mqtt_client::BrokerUrl;
use gatehouse_contract::topics::{GatewayPath, Topics};
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `gatehouse-demo bench-outbox`: what the durable outbox sustains with a real fsync per group
/// commit, how batch interval trades ack latency for throughput, and how long a backlog takes to
/// drain to a broker once the uplink is back.
pub struct OutboxBenchOptions {
    /// Records per throughput run.
    pub events: u64,
    /// Records in the backlog (a 1-hour outage at 500 events/s is 1,800,000).
    pub backlog: u64,
    /// The uplink's replay rate for the drain (events/s).
    pub replay_rate: u64,
    /// Where the store goes (its disk is what is measured).
    pub dir: PathBuf,
}

fn passage_record(i: u64) -> gatehouse::store::outbox::Record {
    use gatehouse::proto::v1;
    gatehouse::store::outbox::Record::Event(v1::Event {
        gateway_time_ms: gatehouse::now_ms(),
        lane: "east-1".into(),
        device: "thermal-1".into(),
        body: Some(v1::event::Body::Passage(v1::PassageDecision {
            subject_kind: v1::SubjectKind::Resident as i32,
            subject_id: format!("R{:06}", i % 100_000),
            temperature_c: Some(36.6),
            verdict: v1::Verdict::Allow as i32,
            reason: "ok".into(),
            decision_latency_us: 180,
            cause: vec![i.to_string()],
            rule: "resident".into(),
            device_flag_disagrees: false,
            direction: v1::Direction::In as i32,
            mode: "normal".into(),
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// Appends `n` records one per append (as the decision loop does), as fast as the writer takes
/// them or paced at `rate` per second, and waits for every ack. Returns (events/s made durable,
/// ack latency histogram in µs, commits).
async fn fill_outbox(
    store: &gatehouse::store::Store,
    commit_interval: Duration,
    n: u64,
    rate: Option<u64>,
) -> anyhow::Result<(f64, Histogram<u64>, u64)> {
    use gatehouse::store::outbox::{self, Append, WriterConfig};
    let metrics = Arc::new(gatehouse::metrics::Metrics::default());
    let w = outbox::spawn(
        store.clone(),
        WriterConfig {
            gateway: "bench".into(),
            degraded_after: Duration::from_secs(5),
            commit_interval,
            commit_max: 1024,
            max_bytes: u64::MAX,
            ttl: [Duration::from_secs(86_400 * 365); 3],
            clock: Arc::new(gatehouse::clock::ClockWatch::new(true)),
        },
        metrics.clone(),
    )?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let start = Instant::now();
    let period = rate.map(|r| Duration::from_nanos(1_000_000_000 / r.max(1)));
    for i in 0..n {
        if let Some(p) = period {
            tokio::time::sleep_until((start + p * i as u32).into()).await;
        }
        let (h, sent) = (hist.clone(), Instant::now());
        let ack: outbox::Ack = Box::new(move || {
            let us = sent.elapsed().as_micros() as u64;
            let _ = h
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(us.max(1));
        });
        w.appends
            .send(Append {
                records: vec![passage_record(i)],
                state: Vec::new(),
                ack: Some(ack),
            })
            .await
            .map_err(|_| anyhow::anyhow!("writer stopped"))?;
    }
    drop(w.appends);
    w.appends_done.await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(w.deletes);
    w.join.await?;
    let h = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((
        rate,
        h,
        gatehouse::metrics::Metrics::get(&metrics.outbox_commits),
    ))
}

pub async fn outbox(o: OutboxBenchOptions) -> anyhow::Result<()> {
    let base = o
        .dir
        .join(format!("gatehouse-bench-outbox-{}", std::process::id()));
    let result = outbox_in(&base, &o).await;
    let _ = std::fs::remove_dir_all(&base);
    result
}

async fn outbox_in(base: &Path, o: &OutboxBenchOptions) -> anyhow::Result<()> {
    use gatehouse::store::Store;
    println!(
        "durable outbox (one fsync per group commit), store in {}",
        base.display()
    );
    println!(
        "{:>8} {:>12} {:>9} {:>12} {:>10} {:>12} {:>12} {:>12}",
        "load",
        "interval_ms",
        "records",
        "events/s",
        "commits",
        "ack_p50_us",
        "ack_p99_us",
        "ack_max_us"
    );
    // Flat out: how many events/s the outbox makes durable. Then at 5,000 events/s: what each
    // commit interval costs in ack latency and buys in fewer fsyncs.
    let runs = [
        (None, 10u64, o.events),
        (Some(5000u64), 1, 10_000),
        (Some(5000), 5, 10_000),
        (Some(5000), 10, 10_000),
        (Some(5000), 20, 10_000),
    ];
    for (rate, interval_ms, n) in runs {
        let dir = base.join(format!("run-{interval_ms}-{}", rate.unwrap_or(0)));
        let store = Store::open(&dir)?;
        let (eps, h, commits) =
            fill_outbox(&store, Duration::from_millis(interval_ms), n, rate).await?;
        let load = rate.map_or("max".to_string(), |r| format!("{r}/s"));
        println!(
            "{load:>8} {interval_ms:>12} {n:>9} {eps:>12.0} {commits:>10} {:>12} {:>12} {:>12}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // The backlog: an outage's worth of records, then the uplink comes back.
    let dir = base.join("backlog");
    let store = Store::open(&dir)?;
    let t = Instant::now();
    fill_outbox(&store, Duration::from_millis(10), o.backlog, None).await?;
    println!(
        "\nbacklog: {} records written in {:.1} s ({} MB on disk)",
        o.backlog,
        t.elapsed().as_secs_f64(),
        std::fs::metadata(dir.join("gatehouse.redb"))
            .map(|m| m.len() >> 20)
            .unwrap_or(0)
    );
    let secs = drain(&store, o.backlog, o.replay_rate).await?;
    println!(
        "drained {} records upstream in {secs:.1} s ({:.0} events/s, replay_rate {})",
        o.backlog,
        o.backlog as f64 / secs,
        o.replay_rate
    );
    Ok(())
}

/// Starts a stand-in company broker and an uplink over the store; returns the seconds from uplink
/// start until the broker has acknowledged every record and the outbox is empty (drained, as the
/// gateway sees it).
async fn drain(store: &gatehouse::store::Store, n: u64, replay_rate: u64) -> anyhow::Result<f64> {
    use gatehouse::uplink::{StatusSource, Uplink, UplinkConfig};
    let port = gatehouse_company::broker::free_port()?;
    gatehouse_company::broker::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    let url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port,
    };
    let metrics = Arc::new(gatehouse::metrics::Metrics::default());
    let w = gatehouse::store::outbox::spawn(
        store.clone(),
        gatehouse::store::outbox::WriterConfig {
            gateway: "bench".into(),
            degraded_after: Duration::from_secs(5),
            commit_interval: Duration::from_millis(10),
            commit_max: 1024,
            max_bytes: u64::MAX,
            ttl: [Duration::from_secs(86_400 * 365); 3],
            clock: Arc::new(gatehouse::clock::ClockWatch::new(true)),
        },
        metrics.clone(),
    )?;
    let uplink = Uplink::new(
        UplinkConfig {
            url,
            client_id: "bench-gw".into(),
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            keep_alive: Duration::from_secs(30),
            batch_max: 256,
            window: 8,
            replay_rate,
            topics: Topics::new(&GatewayPath {
                gateway: "bench-gw".into(),
                city: "3301".into(),
                district: "330106".into(),
                street: "330106001".into(),
                community: "330106001001".into(),
            }),
            status_interval: Duration::from_secs(60),
        },
        store.clone(),
        w.committed.clone(),
        w.deletes.clone(),
        StatusSource {
            gateway: "bench-gw".into(),
            mode: Default::default(),
            twins: Default::default(),
            changed: Default::default(),
            registry_version: Default::default(),
            devices: Vec::new(),
            metrics: metrics.clone(),
            clock: std::sync::Arc::new(gatehouse::clock::ClockWatch::new(true)),
            boot: w.generation,
            seq: Default::default(),
            period_ms: 0,
        },
    )?;
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel();
    let start = Instant::now();
    let up = tokio::spawn(uplink.run(finish_rx));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let acked = gatehouse::metrics::Metrics::get(&metrics.uplink_acked);
        if acked >= n && gatehouse::metrics::Metrics::get(&metrics.outbox_depth) == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("drain did not finish within an hour ({acked} of {n} acknowledged)");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = finish_tx.send(tokio::time::Instant::now());
    let _ = up.await;
    drop(w.appends);
    drop(w.deletes);
    Ok(secs)
}
