//! `gatehouse-demo`: the whole chain on one machine with nothing installed — a gate with
//! simulated devices, its uplink to the company's embedded broker — and the benches that need a
//! broker or a child daemon. A developer's and a salesman's tool: no gate box carries it.
mod bench;
mod demo;
mod forms;
mod screen;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse-demo",
    version,
    about = "A whole gate on this machine (simulated devices, the company's embedded broker), and the benches"
)]
struct Cli {
    /// Identifications per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    #[arg(long, default_value_t = 1000)]
    residents: u64,
    /// The fire alarm panel's contact closes this many seconds in (0: never); fire mode then
    /// holds until `gatehouse fire-reset --config <the demo's config>`.
    #[arg(long, default_value_t = 0)]
    fire_after_s: u64,
    /// The company's web pages, on loopback (another port when this one is taken).
    #[arg(long, default_value_t = 8080)]
    web_port: u16,
    /// The guard's console, on loopback (another port when this one is taken).
    #[arg(long, default_value_t = 8081)]
    console_port: u16,
    /// A bench instead of the demo.
    #[command(subcommand)]
    bench: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The durable outbox: events/s with an fsync per group commit, the batch-interval trade-off,
    /// and the time to drain a backlog upstream.
    BenchOutbox {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Backlog to drain (a 1-hour outage at 500 events/s: 1,800,000).
        #[arg(long, default_value_t = 1_800_000)]
        backlog: u64,
        #[arg(long, default_value_t = 5000)]
        replay_rate: u64,
        /// Directory for the store (its disk is what is measured).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
    },
    /// A pedestrian lane on RS-485 ptys: face frame → turnstile frame latency, and memory with
    /// the residents and visitor passes loaded.
    BenchSerial {
        #[arg(long, default_value_t = 5000)]
        count: u64,
        /// Identifications per second.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 100_000)]
        residents: u64,
        #[arg(long, default_value_t = 10_000)]
        passes: u64,
    },
    /// The HTTP vendor paths in a child daemon: a Zhenshi camera's POST → reply (the barrier
    /// command), a Hikvision terminal's POST → door command over ISAPI and POST → 200.
    BenchHttp {
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Events per second, per device.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
    },
    /// A vehicle lane: plate read → OPEN coil write latency over Modbus TCP, poll-cycle jitter,
    /// and how a dead slave on a shared RTU line delays the others.
    BenchVehicle {
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Plate reads per second (the simulated arm needs ~0.4 s to come down again).
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
    },
    /// Start → READY (first start importing the lists, then with them in the store) and idle
    /// memory, with an external broker so the figure is the daemon's own.
    BenchStart {
        #[arg(long, default_value_t = 100_000)]
        residents: u64,
        #[arg(long, default_value_t = 20_000)]
        plates: u64,
        /// Starts with the lists in the store.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// How long the last one idles before its memory is read.
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
    },
    /// The company ingest into a running database from a fleet of simulated gateways on a
    /// running broker (`bench/ingest.sh` starts both): records/s, lost, duplicated, across a
    /// killed instance and a database restart.
    BenchIngest {
        #[arg(long)]
        broker_port: u16,
        /// `postgres://…` or `sqlite:PATH`.
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 2)]
        instances: u32,
        #[arg(long, default_value_t = 50)]
        communities: u32,
        /// Gateways per community.
        #[arg(long, default_value_t = 4)]
        gateways: u32,
        /// Records per second, the whole fleet.
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Records per EventBatch.
        #[arg(long, default_value_t = 50)]
        batch: u32,
        /// kill -9 one instance this many seconds in, restart it a second later (0: never).
        #[arg(long, default_value_t = 0)]
        kill_at_s: u32,
        /// Seconds in, then a shell command restarting the database.
        #[arg(long, value_parser = parse_at)]
        db_restart: Option<(u32, String)>,
    },
    /// How long the forms take on a street of many communities and millions of passages in a
    /// running database (seeded through the ingest's commit).
    BenchForms {
        /// `postgres://…` or `sqlite:PATH`.
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 50)]
        communities: u32,
        #[arg(long, default_value_t = 2_000_000)]
        passages: u64,
    },
    /// Open-loop load over MQTT; event → gate-command latency, losses, wrong decisions, memory.
    Bench {
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100_000)]
        residents: u64,
        /// Device broker of a running gatehouse (mqtt://host:port); without it, start one.
        #[arg(long)]
        broker: Option<String>,
        /// Pid of that gatehouse, to report its memory.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, default_value = "devices/thermal-1/event")]
        event_topic: String,
        #[arg(long, default_value = "devices/+/cmd")]
        command_filter: String,
        /// Junk orders per second on the gateway's order topic meanwhile (0: none).
        #[arg(long, default_value_t = 0)]
        junk_rate: u64,
        /// Bytes of each junk order.
        #[arg(long, default_value_t = 64)]
        junk_bytes: usize,
        #[arg(
            long,
            default_value = "gh/v1/3301/330106/330106001/330106001001/demo-gw/cmd"
        )]
        order_topic: String,
        /// Scrape the daemon's `/metrics` this often meanwhile (ms; 0: the endpoint is off), as
        /// a Prometheus server would.
        #[arg(long, default_value_t = 0)]
        scrape_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's table owns the terminal: the daemon's log lines go to a file it names. A bench
    // logs to stderr as any tool does.
    let log = cli
        .bench
        .is_none()
        .then(|| std::env::temp_dir().join(format!("gatehouse-demo-{}.log", std::process::id())));
    if let Err(e) = logging(log.as_deref()) {
        eprintln!("gatehouse-demo: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse-demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `SECONDS:COMMAND`.
fn parse_at(s: &str) -> Result<(u32, String), String> {
    let (at, cmd) = s.split_once(':').ok_or("SECONDS:COMMAND")?;
    Ok((
        at.parse().map_err(|e| format!("{at}: {e}"))?,
        cmd.to_string(),
    ))
}

fn logging(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".into());
    let log = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            log.with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .init();
        }
        None => log.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

async fn run(cli: Cli, log: Option<PathBuf>) -> anyhow::Result<()> {
    let Some(b) = cli.bench else {
        return demo::run(demo::DemoOptions {
            rate: cli.rate,
            residents: cli.residents,
            fire_after_s: cli.fire_after_s,
            log: log.unwrap_or_default(),
            web_port: cli.web_port,
            console_port: cli.console_port,
        })
        .await;
    };
    match b {
        Cmd::BenchOutbox {
            events,
            backlog,
            replay_rate,
            dir,
        } => {
            bench::outbox(bench::OutboxBenchOptions {
                events,
                backlog,
                replay_rate,
                dir,
            })
            .await?;
        }
        Cmd::BenchHttp { count, rate } => {
            let r = bench::http(bench::HttpBenchOptions { count, rate }).await?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        Cmd::BenchVehicle { count, rate } => {
            let r = bench::vehicle(bench::VehicleBenchOptions { count, rate }).await?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        Cmd::BenchSerial {
            count,
            rate,
            residents,
            passes,
        } => {
            let r = bench::serial(bench::SerialBenchOptions {
                count,
                rate,
                residents,
                passes,
            })
            .await?;
            println!(
                "serial lane: {} sent, {} answered, {} lost; frame → frame p50 {} µs, p99 {} µs, max {} µs; RSS idle {} kB, loaded {} kB, peak {} kB",
                r.sent,
                r.received,
                r.lost,
                r.p50_us,
                r.p99_us,
                r.max_us,
                r.idle_rss_kb.unwrap_or(0),
                r.loaded_rss_kb.unwrap_or(0),
                r.peak_rss_kb.unwrap_or(0)
            );
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Cmd::BenchIngest {
            broker_port,
            database,
            instances,
            communities,
            gateways,
            rate,
            seconds,
            batch,
            kill_at_s,
            db_restart,
        } => {
            let r = bench::ingest(bench::IngestBenchOptions {
                broker_port,
                database,
                instances,
                communities,
                gateways,
                rate,
                seconds,
                batch,
                kill_at_s,
                db_restart,
            })
            .await?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Cmd::BenchForms {
            database,
            communities,
            passages,
        } => {
            let r = bench::forms(bench::FormsBenchOptions {
                database,
                communities,
                passages,
            })
            .await?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Cmd::BenchStart {
            residents,
            plates,
            runs,
            idle_seconds,
        } => {
            let r = bench::start(bench::StartBenchOptions {
                residents,
                plates,
                runs,
                idle_seconds,
            })?;
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
        Cmd::Bench {
            rate,
            seconds,
            residents,
            broker,
            pid,
            event_topic,
            command_filter,
            junk_rate,
            junk_bytes,
            order_topic,
            scrape_ms,
        } => {
            let r = bench::run(bench::BenchOptions {
                rate,
                seconds,
                residents,
                broker,
                pid,
                event_topic,
                command_filter,
                junk_rate,
                junk_bytes,
                order_topic,
                scrape_ms,
            })
            .await?;
            let kb = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            let header = [
                "rate", "sent", "received", "missing", "wrong", "p50_us", "p90_us", "p99_us",
                "p999_us", "max_us", "rss_kb", "peak_kb",
            ];
            let values = [
                r.rate, r.sent, r.received, r.missing, r.wrong, r.p50_us, r.p90_us, r.p99_us,
                r.p999_us, r.max_us,
            ]
            .map(|v| v.to_string());
            let values: Vec<String> = values
                .into_iter()
                .chain([kb(r.rss_kb), kb(r.peak_rss_kb)])
                .collect();
            for row in [header.map(String::from).to_vec(), values] {
                println!(
                    "{}",
                    row.iter()
                        .map(|c| format!("{c:>9}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        }
    }
    Ok(())
}
