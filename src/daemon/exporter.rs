//! The operations team's view of a box: `/metrics` in the Prometheus text format (OpenMetrics,
//! by the `prometheus-client` crate) and `/health`, what the watchdog knows. Off unless
//! `[metrics] listen` is set; loopback unless `allow_remote` (config validation).
//!
//! Nothing here costs the decision path more than an atomic add and a histogram observation:
//! the counters the pipeline already keeps (`Metrics`, each device's `DeviceLive`, the twins,
//! the clock) are read only when scraped, by a collector.
use crate::decision::{Decision, Reason};
use crate::metrics::Metrics;
use crate::uplink::StatusSource;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

/// A loop that has not turned for this long is reported stalled (each turns at least once a
/// second, idle or not).
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// Scrapes served at once; more connections wait for the next accept.
const CONNECTIONS: usize = 4;

/// What the decision loop counts for the exporter: decisions by lane and reason, and the
/// latency from a device's message to its decision (the gate command, when one went).
#[derive(Debug)]
pub struct DecisionMetrics {
    /// `[lane][reason]`, made up front so counting takes no lock and no allocation.
    by_lane: Vec<Vec<Counter>>,
    latency: Histogram,
}

impl DecisionMetrics {
    pub fn decided(&self, d: &Decision) {
        let counter = self
            .by_lane
            .get(d.lane)
            .and_then(|l| l.get(d.reason as usize));
        debug_assert!(counter.is_some(), "Reason::ALL lacks {:?}", d.reason);
        if let Some(c) = counter {
            c.inc();
        }
        self.latency.observe(d.received.elapsed().as_secs_f64());
    }
}

/// The registry to serve, and the decision loop's counters in it.
pub fn registry(lanes: &[String], status: StatusSource) -> (Registry, Arc<DecisionMetrics>) {
    let mut registry = Registry::default();
    let decisions = Family::<[(&'static str, String); 2], Counter>::default();
    let by_lane = lanes
        .iter()
        .map(|lane| {
            Reason::ALL
                .iter()
                .map(|r| {
                    decisions
                        .get_or_create(&[("lane", lane.clone()), ("reason", r.as_str().into())])
                        .clone()
                })
                .collect()
        })
        .collect();
    registry.register(
        "gatehouse_decisions",
        "Decisions by lane and reason code",
        decisions,
    );
    // 25 µs … 0.4 s: the fast path lives at the bottom, a join window's wait near the top.
    let latency = Histogram::new(exponential_buckets(0.000_025, 2.0, 15));
    registry.register(
        "gatehouse_decision_latency_seconds",
        "Device message received to its decision (and gate command) handed on",
        latency.clone(),
    );
    registry.register_collector(Box::new(Pipeline(status)));
    registry.register_collector(Box::new(Process));
    (registry, Arc::new(DecisionMetrics { by_lane, latency }))
}

/// Serves `/metrics` and `/health` on `listen` until shutdown.
pub async fn serve(
    listen: SocketAddr,
    registry: Registry,
    status: StatusSource,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("metrics listener on {listen}: {e}"))?;
    info!(%listen, "Metrics on /metrics, health on /health.");
    let shared = Arc::new(Shared {
        registry,
        loops: Loops::new(&status.metrics),
        status,
    });
    Ok(tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(CONNECTIONS));
        let mut sample = tokio::time::interval(Duration::from_millis(500));
        loop {
            let stream = tokio::select! {
                _ = shutdown.changed() => break,
                _ = sample.tick() => {
                    shared.loops.sample(&shared.status.metrics);
                    continue;
                }
                a = listener.accept() => match a {
                    Ok((s, _)) => s,
                    Err(e) => {
                        warn!(error = %e, "Metrics listener: accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Scrapers past the limit are turned away, not queued: the sampler must keep turning.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(|req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(shared.answer(req.method(), req.uri().path())) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            });
        }
    }))
}

struct Shared {
    registry: Registry,
    loops: Loops,
    status: StatusSource,
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

impl Shared {
    fn answer(&self, method: &Method, path: &str) -> Answer {
        if method != Method::GET {
            return answer(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match path {
            "/metrics" => {
                let mut text = String::with_capacity(16 * 1024);
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => answer(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(_) => answer(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "encoding failed\n".into(),
                    ),
                }
            }
            "/health" => {
                let (healthy, body) = self.health();
                let code = if healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                answer(code, "application/json", body)
            }
            _ => answer(
                StatusCode::NOT_FOUND,
                "text/plain",
                "/metrics or /health\n".into(),
            ),
        }
    }

    /// Healthy while every loop turns; the uplink and the clock are said, not judged (a gate
    /// without its uplink still decides).
    fn health(&self) -> (bool, String) {
        let turned = self.loops.since_turned();
        let healthy = turned.iter().all(|(_, d)| *d < STALLED_AFTER);
        let loops: serde_json::Map<String, serde_json::Value> = turned
            .iter()
            .map(|(name, d)| {
                let v = serde_json::json!({
                    "turned_ms_ago": d.as_millis() as u64,
                    "ok": *d < STALLED_AFTER,
                });
                (name.to_string(), v)
            })
            .collect();
        let m = &self.status.metrics;
        let body = serde_json::json!({
            "ok": healthy,
            "loops": loops,
            "uplink_connected": m.uplink_connected.load(Ordering::Relaxed),
            "clock_synced": self.status.clock.trusted(),
            "mode": self.status.mode.lock().map_or("", |m| *m),
        });
        (healthy, body.to_string())
    }
}

/// When each loop last turned, sampled twice a second.
struct Loops {
    last: Mutex<Vec<(&'static str, u64, Instant)>>,
}

impl Loops {
    fn new(m: &Metrics) -> Loops {
        let now = Instant::now();
        Loops {
            last: Mutex::new(m.progress().iter().map(|&(n, t)| (n, t, now)).collect()),
        }
    }

    fn sample(&self, m: &Metrics) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for ((_, ticks, at), (_, now)) in last.iter_mut().zip(m.progress()) {
            if now != *ticks {
                *ticks = now;
                *at = Instant::now();
            }
        }
    }

    fn since_turned(&self) -> Vec<(&'static str, Duration)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.iter().map(|&(n, _, at)| (n, at.elapsed())).collect()
    }
}

/// The pipeline's own counters, read at scrape time.
#[derive(Debug)]
struct Pipeline(StatusSource);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Pipeline {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0.metrics;
        let get = Metrics::get;
        let counters = [
            ("gatehouse_events_received", "Device messages received", get(&m.events_received)),
            ("gatehouse_bad_messages", "Device messages that did not decode", get(&m.decode_errors)),
            ("gatehouse_device_refusals", "Device clients and requests refused (unknown, wrong password, foreign topic, limits)", get(&m.device_refusals)),
            ("gatehouse_device_redeliveries", "Device messages sent again after a reconnect", get(&m.device_redeliveries)),
            ("gatehouse_commands_sent", "Gate commands handed to their transport", get(&m.commands_sent)),
            ("gatehouse_command_errors", "Gate commands not handed on (link down): the passage was denied", get(&m.command_errors)),
            ("gatehouse_commands_stale", "Gate commands dropped as too old to write", get(&m.commands_stale)),
            ("gatehouse_serial_frames", "Serial frames decoded", get(&m.frames)),
            ("gatehouse_serial_checksum_errors", "Serial frames dropped for a bad checksum", get(&m.frame_checksum_errors)),
            ("gatehouse_serial_malformed_frames", "Serial frames dropped for their shape", get(&m.frame_malformed)),
            ("gatehouse_serial_noise_bytes", "Bytes between frames thrown away", get(&m.frame_noise_bytes)),
            ("gatehouse_serial_link_errors", "Serial ports that failed to open or broke", get(&m.serial_link_errors)),
            ("gatehouse_modbus_exceptions", "Modbus requests answered with an exception", get(&m.modbus_exceptions)),
            ("gatehouse_modbus_timeouts", "Modbus requests not answered in time", get(&m.modbus_timeouts)),
            ("gatehouse_fire_input_flaps", "Fire-panel readings that changed back within the debounce time", get(&m.fire_input_flaps)),
            ("gatehouse_outbox_appended", "Records written to the outbox", get(&m.outbox_appended)),
            ("gatehouse_outbox_commits", "Outbox commits", get(&m.outbox_commits)),
            ("gatehouse_outbox_commit_errors", "Outbox commits that failed (retried)", get(&m.outbox_commit_errors)),
            ("gatehouse_outbox_evicted", "Records dropped for room or age since the store was made", get(&m.outbox_evicted)),
            ("gatehouse_outbox_spilled", "Records kept in memory only: the store could not be written (degraded)", get(&m.outbox_spilled)),
            ("gatehouse_uplink_published", "Records published upstream", get(&m.uplink_published)),
            ("gatehouse_uplink_acked", "Records the company broker acknowledged", get(&m.uplink_acked)),
            ("gatehouse_orders_dropped", "Orders from above dropped at the door (queue full)", get(&m.orders_dropped)),
            ("gatehouse_order_topics_poisoned", "Messages on a command topic the uplink could not take (too large, not MQTT)", get(&m.order_topics_poisoned)),
            ("gatehouse_order_refusals_unanswered", "Order refusals not answered (rate limit)", get(&m.orders_refusals_unanswered)),
            ("gatehouse_clock_jumps", "Steps of the wall clock seen", self.0.clock.jumps.load(Ordering::Relaxed)),
        ];
        for (name, help, v) in counters {
            counter(&mut e, name, help, v)?;
        }
        let gauges = [
            (
                "gatehouse_outbox_records",
                "Records waiting for the company's acknowledgement (the uplink's replay backlog)",
                get(&m.outbox_depth) as i64,
            ),
            (
                "gatehouse_outbox_bytes",
                "Bytes the outbox holds",
                get(&m.outbox_bytes) as i64,
            ),
            (
                "gatehouse_store_degraded",
                "1 while the store cannot be written: devices acknowledged from memory, records in memory only",
                i64::from(m.store_degraded.load(Ordering::Relaxed)),
            ),
            (
                "gatehouse_outbox_in_memory",
                "Records held in memory only (degraded): waiting for the uplink or the store",
                get(&m.outbox_in_memory) as i64,
            ),
            (
                "gatehouse_uplink_connected",
                "1 while the uplink is connected",
                i64::from(m.uplink_connected.load(Ordering::Relaxed)),
            ),
            (
                "gatehouse_device_side_connected",
                "1 while the device broker or endpoint is up",
                i64::from(m.device_broker_connected.load(Ordering::Relaxed)),
            ),
            (
                "gatehouse_clock_synced",
                "1 while the wall clock is known to be right",
                i64::from(self.0.clock.trusted()),
            ),
        ];
        for (name, help, v) in gauges {
            gauge(&mut e, name, help, v)?;
        }
        self.orders(&mut e)?;
        self.devices(&mut e)
    }
}

impl Pipeline {
    fn orders(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let results = self
            .0
            .metrics
            .orders_by_result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let help = "Orders from above by result: applied, or the refusal's reason";
        let mut family = e.encode_descriptor(
            "gatehouse_orders",
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in results {
            let labels = [("result", result.as_str())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn devices(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::metrics::MetricType;
        let twins = self.0.twins.all();
        let mono = crate::clock::mono_ms();
        let per_device: [(&str, &str, MetricType); 4] = [
            ("gatehouse_device_online", "1 while the device is online (its link, or heard within its profile's offline_after_s)", MetricType::Gauge),
            ("gatehouse_device_last_seen_age_seconds", "Seconds since the device was last heard (absent: never since the start)", MetricType::Gauge),
            ("gatehouse_device_bad_messages", "The device's messages that did not decode", MetricType::Counter),
            ("gatehouse_device_frame_errors", "Frames dropped on the device's serial line", MetricType::Counter),
        ];
        for (i, (name, help, kind)) in per_device.into_iter().enumerate() {
            let mut family = e.encode_descriptor(name, help, None, kind)?;
            for (t, (_, live)) in twins.iter().zip(&self.0.devices) {
                let labels = [("device", t.device.as_str()), ("lane", t.lane.as_str())];
                let f = family.encode_family(&labels)?;
                match i {
                    0 => ConstGauge::new(i64::from(t.online)).encode(f)?,
                    // On the monotonic clock: a step of the wall clock is no silence.
                    1 if t.last_seen_ms > 0 => {
                        let heard = live.heard_mono.load(Ordering::Relaxed);
                        ConstGauge::new((mono - heard).max(0) as f64 / 1000.0).encode(f)?
                    }
                    1 => {}
                    2 => ConstCounter::new(live.bad_messages.load(Ordering::Relaxed)).encode(f)?,
                    _ => ConstCounter::new(live.frame_errors.load(Ordering::Relaxed)).encode(f)?,
                }
            }
        }
        Ok(())
    }
}

/// The process's own figures, from `/proc/self` (Linux; none elsewhere): CPU seconds, resident
/// and virtual memory, threads, open descriptors, start time.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(p) = read_proc() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let start = ConstGauge::new(p.start_time_seconds);
        start.encode(e.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the epoch, seconds",
            None,
            start.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory",
                p.rss_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory",
                p.virtual_bytes,
            ),
            ("process_threads", "Threads", p.threads),
            ("process_open_fds", "Open file descriptors", p.open_fds),
        ];
        for (name, help, v) in gauges {
            gauge(&mut e, name, help, v)?;
        }
        Ok(())
    }
}

struct ProcStat {
    cpu_seconds: f64,
    rss_bytes: i64,
    virtual_bytes: i64,
    threads: i64,
    start_time_seconds: f64,
    open_fds: i64,
}

fn read_proc() -> Option<ProcStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
        )
    };
    // Fields 14, 15 (utime, stime), 20 (threads), 22 (starttime), 23 (vsize), 24 (rss), counted
    // from 1 with pid and comm; here from 0 after comm, so each is 3 less.
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })?;
    Some(ProcStat {
        cpu_seconds: (num(11)? + num(12)?) / ticks,
        threads: num(17)? as i64,
        start_time_seconds: boot + num(19)? / ticks,
        virtual_bytes: num(20)? as i64,
        rss_bytes: (num(21)? * page) as i64,
        open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as i64,
    })
}
