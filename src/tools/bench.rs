//! `gatehouse bench`: open-loop load at a fixed rate over MQTT against a running gatehouse,
//! measuring event → gate-command latency with an HDR histogram, lost and wrong decisions, and
//! the daemon's memory. Without `--broker` it starts its own daemon (embedded broker, a fresh
//! store, N residents) as a child process and stops it afterwards.
//!
//! Latency runs from each event's *scheduled* send time, so a stalled engine cannot hide its
//! stall (no coordinated omission). The workload matches `shared/bench`'s loadgen: 5% fever,
//! 10% strangers, residents `R000000`…; the gate must open only for a resident below 37.3 °C.
use crate::config::{BrokerUrl, GatewaySection};
use crate::device::Unit;
use crate::mqtt_client;
use crate::tools::sim::hikvision::acs_event;
use crate::uplink::topics::Topics;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct BenchOptions {
    pub rate: u64,
    pub seconds: u64,
    pub residents: u64,
    /// A running gatehouse's device broker; none: start one.
    pub broker: Option<String>,
    /// That gatehouse's pid, for its memory.
    pub pid: Option<u32>,
    pub event_topic: String,
    pub command_filter: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub rate: u64,
    pub sent: u64,
    pub received: u64,
    pub missing: u64,
    pub wrong: u64,
    pub duplicates: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

struct Pending {
    at: Instant,
    expect_open: bool,
}

fn workload(seq: u64, residents: u64) -> (String, bool) {
    let fever = seq % 20 == 7;
    let stranger = seq % 10 == 3;
    let temp = if fever {
        37.6 + (seq % 5) as f64 * 0.1
    } else {
        36.1 + (seq % 9) as f64 * 0.1
    };
    let who = if stranger {
        format!("V{:06}", seq % 1_000_000)
    } else {
        format!("R{:06}", seq % residents.max(1))
    };
    (
        acs_event(seq, Some(&who), temp, Unit::Celsius),
        !fever && !stranger,
    )
}

/// A daemon started for the run; stopped (SIGTERM) and its files removed on drop.
struct Spawned {
    child: Child,
    dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dir/residents.csv`: `R000000`… all active, three to a household, as the workload expects.
fn write_residents(dir: &Path, n: u64) -> std::io::Result<()> {
    let mut csv = String::from("person_id,household\n");
    for i in 0..n {
        csv.push_str(&format!("R{i:06},H{:05}\n", i / 3));
    }
    std::fs::write(dir.join("residents.csv"), csv)
}

fn spawn_daemon(residents: u64) -> anyhow::Result<(Spawned, BrokerUrl)> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_residents(&dir, residents)?;
    let port = crate::sources::embedded_broker::free_port()?;
    let spawned = spawn_config(&dir, &crate::tools::demo::config(&dir, port))?;
    let url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port,
    };
    Ok((spawned, url))
}

fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(o: BenchOptions) -> anyhow::Result<Report> {
    let (spawned, url) = match &o.broker {
        Some(b) => (None, BrokerUrl::parse(b).map_err(anyhow::Error::msg)?),
        None => {
            let (s, u) = spawn_daemon(o.residents)?;
            (Some(s), u)
        }
    };
    let pid = o.pid.or(spawned.as_ref().map(|s| s.child.id()));

    let sent: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let counters = Arc::new(Mutex::new((0u64, 0u64))); // (wrong, duplicates)

    let tag = std::process::id();
    let (sub, mut sub_el) = AsyncClient::new(
        mqtt_client::options(&url, &format!("bench-sub-{tag}"), Duration::from_secs(30)),
        1024,
    );
    sub_el.set_network_options(mqtt_client::network_options());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (s2, h2, c2, filter) = (
        sent.clone(),
        hist.clone(),
        counters.clone(),
        o.command_filter.clone(),
    );
    let subscriber = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match sub_el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub.try_subscribe(filter.as_str(), QoS::AtMostOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    let seq = v["cause"].as_str().and_then(|c| c.parse::<u64>().ok());
                    let open = v["action"].as_str() == Some("open");
                    let entry =
                        seq.and_then(|s| s2.lock().unwrap_or_else(|e| e.into_inner()).remove(&s));
                    let mut c = c2.lock().unwrap_or_else(|e| e.into_inner());
                    match entry {
                        Some(e) => {
                            let us = now.duration_since(e.at).as_micros() as u64;
                            let _ = h2
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .record(us.max(1));
                            if open != e.expect_open {
                                c.0 += 1;
                            }
                        }
                        None if seq.is_none() => c.0 += 1,
                        None => c.1 += 1,
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .is_err()
    {
        bail!(
            "could not subscribe to {} on {}:{}",
            o.command_filter,
            url.host,
            url.port
        );
    }

    let mut po = mqtt_client::options(&url, &format!("bench-pub-{tag}"), Duration::from_secs(30));
    po.set_inflight(1000);
    let (publisher, mut pub_el) = AsyncClient::new(po, 100_000);
    pub_el.set_network_options(mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if pub_el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Probe until the engine answers, so start-up is not counted as loss.
    const PROBE: u64 = 1 << 50;
    let mut answered = false;
    for k in 0..300 {
        let (body, expect_open) = workload(PROBE + k, o.residents);
        sent.lock().unwrap_or_else(|e| e.into_inner()).insert(
            PROBE + k,
            Pending {
                at: Instant::now(),
                expect_open,
            },
        );
        publisher
            .publish(o.event_topic.as_str(), QoS::AtLeastOnce, false, body)
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !hist.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            answered = true;
            break;
        }
    }
    if !answered {
        bail!("the engine never answered a probe event");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sent.lock().unwrap_or_else(|e| e.into_inner()).clear();
    hist.lock().unwrap_or_else(|e| e.into_inner()).reset();
    *counters.lock().unwrap_or_else(|e| e.into_inner()) = (0, 0);

    let total = o.rate * o.seconds;
    let start = Instant::now();
    let period = Duration::from_nanos(1_000_000_000 / o.rate.max(1));
    for seq in 0..total {
        let due = start + period * seq as u32;
        let (body, expect_open) = workload(seq, o.residents);
        let at = if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, Pending { at, expect_open });
        publisher
            .publish(o.event_topic.as_str(), QoS::AtLeastOnce, false, body)
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = pid.and_then(|p| rss_kb(p, "VmRSS:"));
    let peak = pid.and_then(|p| rss_kb(p, "VmHWM:"));
    subscriber.abort();
    poller.abort();
    drop(spawned);

    let missing = sent.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let h = hist.lock().unwrap_or_else(|e| e.into_inner());
    let (wrong, duplicates) = *counters.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Report {
        rate: o.rate,
        sent: total,
        received: h.len(),
        missing,
        wrong,
        duplicates,
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        rss_kb: rss,
        peak_rss_kb: peak,
    })
}

/// `gatehouse bench-serial`: a pedestrian lane on RS-485 ptys (face-id reader → EB turnstile)
/// in a child daemon holding `residents` residents (each with a card) and `passes` visitor
/// passes. Measures identification frame written → turnstile frame read (p50/p99/max) and the
/// daemon's memory idle and under load. Ptys have no baud rate: on a real line add the frames'
/// wire time (11 bits per byte at the line's baud).
pub struct SerialBenchOptions {
    pub count: u64,
    pub rate: u64,
    pub residents: u64,
    pub passes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SerialReport {
    pub sent: u64,
    pub received: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub idle_rss_kb: Option<u64>,
    pub loaded_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

pub async fn serial(o: SerialBenchOptions) -> anyhow::Result<SerialReport> {
    use crate::tools::sim::serial::{run_turnstile, Line, Pty, Reader};
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-serial-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("person_id,household,cards\n");
    for i in 0..o.residents {
        csv.push_str(&format!("R{i:06},H{:05},10:{i}\n", i / 3));
    }
    std::fs::write(dir.join("residents.csv"), csv)?;
    let mut passes =
        String::from("pass_id,host_household,credentials,valid_from,valid_until,uses\n");
    for i in 0..o.passes {
        passes.push_str(&format!(
            "P{i:06},H{:05},QR{i:08},,2099-12-31,5\n",
            i % 30_000
        ));
    }
    std::fs::write(dir.join("passes.csv"), passes)?;
    let face = Pty::new()?;
    let turnstile = Pty::new()?;
    let port = crate::sources::embedded_broker::free_port()?;
    let residents_line = format!("import = \"{}\"", dir.join("residents.csv").display());
    let config = crate::tools::demo::config(&dir, port).replace(
        &residents_line,
        &format!(
            "{residents_line}\npasses = \"{}\"",
            dir.join("passes.csv").display()
        ),
    ) + &crate::tools::demo::serial_lane_config(&face.path, &turnstile.path)
        .replace("anti_passback = true", "anti_passback = false");
    let spawned = spawn_config(&dir, &config)?;
    let pid = spawned.child.id();

    let (tx, mut frames) = tokio::sync::mpsc::channel(100_000);
    tokio::spawn(run_turnstile(turnstile, 0.0, 1, tx));
    let mut line = Line::new(face, 0.0, 1);
    let reader = Reader::new("rs485-face-id", 1);
    // Probe until the daemon has the port open and answers.
    let mut answered = false;
    for _ in 0..300 {
        line.send(reader.id(0x21, "R000000")).await?;
        if tokio::time::timeout(Duration::from_millis(100), frames.recv())
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    if !answered {
        bail!("the daemon never answered on the serial lane");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while frames.try_recv().is_ok() {}
    let idle = rss_kb(pid, "VmRSS:");

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let sent_at: Arc<Mutex<std::collections::VecDeque<Instant>>> = Arc::default();
    let (s2, count) = (sent_at.clone(), o.count);
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(count as usize);
        while (lat.len() as u64) < count {
            match tokio::time::timeout(Duration::from_secs(5), frames.recv()).await {
                Ok(Some(_)) => {
                    let now = Instant::now();
                    // One command per identification, in order: FIFO matching is exact.
                    if let Some(at) = s2.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                        lat.push(now.duration_since(at).as_micros() as u64);
                    }
                }
                _ => break,
            }
        }
        lat
    });
    let start = Instant::now();
    let period = Duration::from_nanos(1_000_000_000 / o.rate.max(1));
    for seq in 0..o.count {
        let due = start + period * seq as u32;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let who = format!("R{:06}", seq % o.residents.max(1));
        sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Instant::now());
        line.send(reader.id(0x21, &who)).await?;
    }
    let lat = receiver.await.unwrap_or_default();
    let loaded = rss_kb(pid, "VmRSS:");
    let peak = rss_kb(pid, "VmHWM:");
    for us in &lat {
        let _ = hist.record((*us).max(1));
    }
    Ok(SerialReport {
        sent: o.count,
        received: lat.len() as u64,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        idle_rss_kb: idle,
        loaded_rss_kb: loaded,
        peak_rss_kb: peak,
    })
}

/// `gatehouse bench-outbox`: what the durable outbox sustains with a real fsync per group
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

fn passage_record(i: u64) -> crate::store::outbox::Record {
    use crate::proto::v1;
    crate::store::outbox::Record::Event(v1::Event {
        gateway_time_ms: crate::now_ms(),
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
    store: &crate::store::Store,
    commit_interval: Duration,
    n: u64,
    rate: Option<u64>,
) -> anyhow::Result<(f64, Histogram<u64>, u64)> {
    use crate::store::outbox::{self, Append, WriterConfig};
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let w = outbox::spawn(
        store.clone(),
        WriterConfig {
            gateway: "bench".into(),
            commit_interval,
            commit_max: 1024,
            max_bytes: u64::MAX,
            ttl: [Duration::from_secs(86_400 * 365); 3],
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
        crate::metrics::Metrics::get(&metrics.outbox_commits),
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
    use crate::store::Store;
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

/// Starts an embedded broker and an uplink over the store; returns the seconds from uplink
/// start until the broker has acknowledged every record and the outbox is empty (drained, as the
/// gateway sees it).
async fn drain(store: &crate::store::Store, n: u64, replay_rate: u64) -> anyhow::Result<f64> {
    use crate::uplink::{StatusSource, Uplink, UplinkConfig};
    let port = crate::sources::embedded_broker::free_port()?;
    crate::sources::embedded_broker::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    let url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port,
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let w = crate::store::outbox::spawn(
        store.clone(),
        crate::store::outbox::WriterConfig {
            gateway: "bench".into(),
            commit_interval: Duration::from_millis(10),
            commit_max: 1024,
            max_bytes: u64::MAX,
            ttl: [Duration::from_secs(86_400 * 365); 3],
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
            topics: Topics::new(&GatewaySection {
                id: "bench-gw".into(),
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
        },
    )?;
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel();
    let start = Instant::now();
    let up = tokio::spawn(uplink.run(finish_rx));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let acked = crate::metrics::Metrics::get(&metrics.uplink_acked);
        if acked >= n && crate::metrics::Metrics::get(&metrics.outbox_depth) == 0 {
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

/// `gatehouse bench-vehicle`: a vehicle lane in a child daemon (plate camera over the embedded
/// broker, a Modbus TCP barrier simulator whose arm comes down on its own), then three barriers on
/// one RTU line (a pty) with one slave dead.
pub struct VehicleBenchOptions {
    pub count: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VehicleReport {
    pub reads: u64,
    pub coil_writes: u64,
    /// Plate read published → OPEN coil write arriving at the barrier (Modbus TCP, loopback).
    pub plate_to_coil_p50_us: u64,
    pub plate_to_coil_p99_us: u64,
    pub plate_to_coil_max_us: u64,
    /// Intervals between polls of the TCP barrier (configured 100 ms).
    pub poll_interval_p50_us: u64,
    pub poll_interval_p99_us: u64,
    pub poll_interval_max_us: u64,
    /// Intervals between polls of a live slave on the RTU line: all healthy, then with a
    /// neighbour dead (150 ms timeout).
    pub rtu_healthy_p99_us: u64,
    pub rtu_healthy_max_us: u64,
    pub rtu_dead_neighbour_p50_us: u64,
    pub rtu_dead_neighbour_p99_us: u64,
    pub rtu_dead_neighbour_max_us: u64,
}

fn intervals(times: &[Instant]) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    for w in times.windows(2) {
        let _ = h.record((w[1].duration_since(w[0]).as_micros() as u64).max(1));
    }
    Ok(h)
}

fn spawn_config(dir: &Path, config: &str) -> anyhow::Result<Spawned> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("gatehouse.toml"), config)?;
    let child = spawn_run(dir, &[])?;
    Ok(Spawned {
        child,
        dir: dir.to_path_buf(),
    })
}

/// `gatehouse run` on `dir/gatehouse.toml`, its log appended to `dir/gatehouse.log`.
fn spawn_run(dir: &Path, env: &[(&str, &Path)]) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gatehouse.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["run", "--config"])
        .arg(dir.join("gatehouse.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().context("starting gatehouse run")
}

pub struct StartBenchOptions {
    pub residents: u64,
    pub plates: u64,
    pub runs: u32,
    pub idle_seconds: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct StartReport {
    /// Start → READY of the first start, which imports the lists into the store.
    pub first_ready_ms: f64,
    /// Start → READY with the lists already in the store, each run.
    pub ready_ms: Vec<f64>,
    pub idle_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

/// Start-up and idle memory: `gatehouse run` on a broker of the bench's own (so its memory is
/// the daemon's alone), the demo lane, N residents and M plates. READY is taken from the
/// systemd notification, as systemd would see it.
pub fn start(o: StartBenchOptions) -> anyhow::Result<StartReport> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = start_in(&dir, &o);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn start_in(dir: &Path, o: &StartBenchOptions) -> anyhow::Result<StartReport> {
    use std::io::Write;
    write_residents(dir, o.residents)?;
    let mut plates = std::io::BufWriter::new(std::fs::File::create(dir.join("plates.csv"))?);
    writeln!(plates, "plate,kind,household,valid_until,lockdown_allowed")?;
    for i in 0..o.plates {
        writeln!(
            plates,
            "粤B{i:05},resident,H{:05},,",
            i % (o.residents / 3).max(1)
        )?;
    }
    plates.flush()?;
    let port = crate::sources::embedded_broker::free_port()?;
    crate::sources::embedded_broker::start(([127, 0, 0, 1], port).into())?;
    let config = crate::tools::demo::config(dir, port)
        .replace("mode = \"embedded\"", "mode = \"external\"")
        .replacen(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("url = \"mqtt://127.0.0.1:{port}\""),
            1,
        )
        .replace(
            "[registry]\n",
            &format!(
                "[registry]\nplates = \"{}\"\n",
                dir.join("plates.csv").display()
            ),
        );
    std::fs::write(dir.join("gatehouse.toml"), config)?;
    let notify = dir.join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let start_once = |keep: bool| -> anyhow::Result<(f64, Option<Child>)> {
        let t0 = Instant::now();
        let mut child = spawn_run(dir, &[("NOTIFY_SOCKET", notify.as_path())])?;
        let mut buf = [0u8; 256];
        loop {
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = child.kill();
                    bail!("no READY from gatehouse run ({e}); see its log");
                }
            };
            if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                break;
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if keep {
            return Ok((ms, Some(child)));
        }
        stop(&mut child);
        Ok((ms, None))
    };
    let (first_ready_ms, _) = start_once(false)?;
    let mut ready_ms = Vec::new();
    for _ in 1..o.runs.max(1) {
        ready_ms.push(start_once(false)?.0);
    }
    let (ms, child) = start_once(true)?;
    ready_ms.push(ms);
    let Some(mut child) = child else {
        bail!("the last run was not kept");
    };
    std::thread::sleep(Duration::from_secs(o.idle_seconds));
    let idle_rss_kb = rss_kb(child.id(), "VmRSS:");
    let peak_rss_kb = rss_kb(child.id(), "VmHWM:");
    stop(&mut child);
    Ok(StartReport {
        first_ready_ms,
        ready_ms,
        idle_rss_kb,
        peak_rss_kb,
    })
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

pub async fn vehicle(o: VehicleBenchOptions) -> anyhow::Result<VehicleReport> {
    use crate::tools::sim::barrier::{serve_rtu, serve_tcp, BarrierSim, Service};
    let base = std::env::temp_dir().join(format!("gatehouse-bench-vehicle-{}", std::process::id()));
    let dir = base.join("tcp");
    std::fs::create_dir_all(&dir)?;
    crate::tools::demo::write_residents(&dir.join("residents.csv"), 300)?;
    crate::tools::demo::write_plates(&dir.join("plates.csv"), 100)?;
    let barrier = BarrierSim::new(Duration::from_millis(10));
    barrier.set_auto_fall(Some(Duration::from_millis(150)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_tcp(listener, Service([(1, barrier.clone())].into())));
    let port = crate::sources::embedded_broker::free_port()?;
    let residents_line = format!("import = \"{}\"", dir.join("residents.csv").display());
    let config = crate::tools::demo::config(&dir, port).replace(
        &residents_line,
        &format!(
            "{residents_line}\nplates = \"{}\"",
            dir.join("plates.csv").display()
        ),
    ) + &crate::tools::demo::vehicle_lane_config(addr)
        .replace("auto_close = true", "auto_close = false");
    let spawned = spawn_config(&dir, &config)?;
    let url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port,
    };
    let (camera, mut el) = AsyncClient::new(
        mqtt_client::options(&url, "bench-camera", Duration::from_secs(15)),
        256,
    );
    el.set_network_options(mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Wait until the daemon polls the barrier.
    let start = Instant::now();
    while barrier.take_logs().0.is_empty() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the daemon never polled the barrier");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    barrier.take_logs();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let period = Duration::from_secs_f64(1.0 / o.rate.max(0.1));
    let mut polls = Vec::new();
    for id in 0..o.count {
        // A resident's plate (every third household has one).
        let body = crate::tools::sim::zhenshi::ivs_result(
            id + 1,
            &format!("粤B1{:04}", (id % 30) * 3),
            95,
            4,
        );
        let sent = Instant::now();
        camera
            .publish(
                "device/cam-1/message/up/ivs_result",
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await?;
        tokio::time::sleep(period).await;
        let (reads, coils) = barrier.take_logs();
        polls.extend(reads);
        if let Some(at) = coils.iter().find(|t| **t >= sent) {
            let _ = latency.record((at.duration_since(sent).as_micros() as u64).max(1));
        }
    }
    poller.abort();
    drop(spawned);
    let poll_h = intervals(&polls)?;

    // Three barriers on one RTU line; unit 2 dies halfway.
    let dir = base.join("rtu");
    std::fs::create_dir_all(&dir)?;
    let sims: Vec<BarrierSim> = (0..3)
        .map(|_| BarrierSim::new(Duration::from_secs(2)))
        .collect();
    let pty = crate::tools::sim::serial::Pty::new()?;
    let path = pty.path.display().to_string();
    tokio::spawn(serve_rtu(
        pty,
        Service(
            sims.iter()
                .enumerate()
                .map(|(i, b)| (i as u8 + 1, b.clone()))
                .collect(),
        ),
    ));
    let mut lanes = String::new();
    for n in 1..=3 {
        lanes.push_str(&format!(
            "\n[[lanes]]\nid = \"car-{n}\"\n\n[[lanes.devices]]\nid = \"barrier-{n}\"\nrole = \"barrier\"\nprofile = \"modbus-relay-barrier\"\naddress = {n}\nmodbus = {{ serial = {{ path = \"{path}\", baud = 19200 }} }}\n"
        ));
    }
    let port = crate::sources::embedded_broker::free_port()?;
    let spawned = spawn_config(
        &dir,
        &(crate::tools::demo::config(&dir, port).replace(
            &format!("import = \"{}\"", dir.join("residents.csv").display()),
            "",
        ) + &lanes),
    )?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sims[0].take_logs();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healthy = intervals(&sims[0].take_logs().0)?;
    sims[1].set_dead(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let dead = intervals(&sims[0].take_logs().0)?;
    drop(spawned);
    let _ = std::fs::remove_dir_all(&base);
    Ok(VehicleReport {
        reads: o.count,
        coil_writes: latency.len(),
        plate_to_coil_p50_us: latency.value_at_quantile(0.5),
        plate_to_coil_p99_us: latency.value_at_quantile(0.99),
        plate_to_coil_max_us: latency.max(),
        poll_interval_p50_us: poll_h.value_at_quantile(0.5),
        poll_interval_p99_us: poll_h.value_at_quantile(0.99),
        poll_interval_max_us: poll_h.max(),
        rtu_healthy_p99_us: healthy.value_at_quantile(0.99),
        rtu_healthy_max_us: healthy.max(),
        rtu_dead_neighbour_p50_us: dead.value_at_quantile(0.5),
        rtu_dead_neighbour_p99_us: dead.value_at_quantile(0.99),
        rtu_dead_neighbour_max_us: dead.max(),
    })
}
