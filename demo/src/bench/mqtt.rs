//! `gatehouse-demo bench`: open-loop load at a fixed rate over MQTT against a running gatehouse,
//! measuring event → gate-command latency with an HDR histogram, lost and wrong decisions, and
//! the daemon's memory. Without `--broker` it starts its own daemon (devices on its endpoint,
//! logging in as thermal-1 and gate-1; a fresh store, N residents) as a child process and stops
//! it afterwards.
//!
//! Latency runs from each event's *scheduled* send time, so a stalled engine cannot hide its
//! stall (no coordinated omission). The workload matches `shared/bench`'s loadgen: 5% fever,
//! 10% strangers, residents `R000000`…; the gate must open only for a resident below 37.3 °C.
use super::child::{demo_config, rss_kb, spawn_demo, write_residents, Spawned};
use anyhow::{bail, Context};
use gatehouse::device::Unit;
use gatehouse::mqtt_client;
use gatehouse::mqtt_client::{BrokerUrl, DeviceLink};
use gatehouse::tools::sim::hikvision::acs_event;
use gatehouse::tools::sim::site::DemoConfig;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
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
    /// Junk on the gateway's order topic meanwhile: messages per second (0: none) and bytes each
    /// (unsigned garbage, as an attacker on the company broker would send).
    pub junk_rate: u64,
    pub junk_bytes: usize,
    pub order_topic: String,
    /// Scrape the daemon's `/metrics` this often meanwhile (ms; 0: the endpoint is off).
    pub scrape_ms: u64,
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
    /// Scrapes of `/metrics` during the load, and the slowest (µs).
    pub scrapes: u64,
    pub scrape_max_us: u64,
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

/// A daemon on the demo's gate with `residents`; the terminal's and the gate's ways in, and the
/// company broker its uplink reports to (where orders from above come from).
/// With `metrics`, the daemon serves `/metrics` there.
fn spawn_daemon(
    residents: u64,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<(Spawned, DeviceLink, DeviceLink, BrokerUrl)> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_residents(&dir, residents)?;
    let demo = DemoConfig {
        metrics,
        ..demo_config(&dir)?
    };
    let spawned = spawn_demo(&demo)?;
    let company = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: demo.uplink_port,
    };
    Ok((
        spawned,
        demo.link("thermal-1"),
        demo.link("gate-1"),
        company,
    ))
}

pub async fn run(o: BenchOptions) -> anyhow::Result<Report> {
    if o.scrape_ms > 0 && o.broker.is_some() {
        bail!("--scrape-ms scrapes the daemon the bench starts itself: leave out --broker");
    }
    let metrics = (o.scrape_ms > 0)
        .then(gatehouse_company::broker::free_port)
        .transpose()?
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let (spawned, terminal, gate, company) = match &o.broker {
        Some(b) => {
            let url = BrokerUrl::parse(b).map_err(anyhow::Error::msg)?;
            let link = DeviceLink::anonymous(url.clone());
            (None, link.clone(), link, url)
        }
        None => {
            let (s, t, g, c) = spawn_daemon(o.residents, metrics)?;
            (Some(s), t, g, c)
        }
    };
    let url = terminal.url.clone();
    let pid = o.pid.or(spawned.as_ref().map(|s| s.child.id()));

    let sent: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?,
    ));
    let counters = Arc::new(Mutex::new((0u64, 0u64))); // (wrong, duplicates)

    let tag = std::process::id();
    let (sub, mut sub_el) = AsyncClient::new(
        gate.options(&format!("bench-sub-{tag}"), Duration::from_secs(30)),
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

    let mut po = terminal.options(&format!("bench-pub-{tag}"), Duration::from_secs(30));
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

    let junk = (o.junk_rate > 0).then(|| {
        let mut jo =
            mqtt_client::options(&company, &format!("bench-junk-{tag}"), Duration::from_secs(30));
        jo.set_max_packet_size(1 << 20, o.junk_bytes + 4096);
        let (junker, mut junk_el) = AsyncClient::new(jo, 1024);
        let (topic, bytes, rate) = (o.order_topic.clone(), o.junk_bytes, o.junk_rate);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let _ = junker.try_publish(topic.as_str(), QoS::AtLeastOnce, false, vec![0x5a; bytes]);
                    }
                    ev = junk_el.poll() => if ev.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    },
                }
            }
        })
    });

    let scraped: Arc<Mutex<(u64, u64)>> = Arc::default();
    let every = Duration::from_millis(o.scrape_ms.max(1));
    let scraper = metrics.map(|at| tokio::spawn(scrape(at, every, scraped.clone())));
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
    if let Some(j) = &scraper {
        j.abort();
    }
    let (scrapes, scrape_max_us) = *scraped.lock().unwrap_or_else(|e| e.into_inner());
    subscriber.abort();
    poller.abort();
    if let Some(j) = junk {
        j.abort();
    }
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
        scrapes,
        scrape_max_us,
    })
}

/// A Prometheus server's part: `GET /metrics` every `every`, each answer read to its end;
/// counts the scrapes and keeps the slowest.
async fn scrape(at: SocketAddr, every: Duration, scraped: Arc<Mutex<(u64, u64)>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tick = tokio::time::interval(every);
    let mut body = Vec::with_capacity(64 * 1024);
    loop {
        tick.tick().await;
        let t = Instant::now();
        let Ok(mut s) = tokio::net::TcpStream::connect(at).await else {
            continue;
        };
        let req = b"GET /metrics HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n";
        body.clear();
        if s.write_all(req).await.is_err() || s.read_to_end(&mut body).await.is_err() {
            continue;
        }
        let us = t.elapsed().as_micros() as u64;
        let mut c = scraped.lock().unwrap_or_else(|e| e.into_inner());
        c.0 += 1;
        c.1 = c.1.max(us);
    }
}
