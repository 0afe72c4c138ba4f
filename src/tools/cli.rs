//! The command line: every subcommand of `gatehouse`, and what each runs. `main.rs` only parses,
//! sets up logging and maps the result to an exit code.
use crate::run::RunError;
use crate::tools::company::{self, OrderArgs, TailArgs};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Gate-side screening and access daemon for residential estates"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

impl Cli {
    /// Runs the subcommand; the exit code on success.
    pub async fn run(self) -> Result<ExitCode, RunError> {
        dispatch(self.command).await
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
        /// Use the external device broker on 127.0.0.1:PORT (and move a loopback uplink there too).
        #[arg(long, conflicts_with = "endpoint_port")]
        broker_port: Option<u16>,
        /// The device endpoint listens on 127.0.0.1:PORT (how the shared benchmark's `direct` row
        /// starts an engine).
        #[arg(long)]
        endpoint_port: Option<u16>,
        /// The HTTP device listener listens on 127.0.0.1:PORT (the shared benchmark's HTTP mode).
        #[arg(long)]
        http_port: Option<u16>,
    },
    /// Validate a config file: print every problem with its place; exit 78 if there is any.
    CheckConfig { file: PathBuf },
    /// Change the mode of the running gateway on this box: normal, epidemic, lockdown or fire.
    /// Fire opens and holds every gate; nothing but `fire-reset` ends it.
    Mode {
        mode: String,
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
    },
    /// Make an Ed25519 key pair for signing commands: the private key goes to FILE (mode 0600),
    /// the public key is printed (put it in the gateways' `[[commands.keys]]`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make and sign an order; print it as hex, or publish it to a broker. A registry snapshot
    /// larger than one message goes as signed chunks.
    Command(Box<OrderArgs>),
    /// Print what gateways send upstream (events, alarms, status, twins, stats, results) as JSON
    /// lines.
    Tail(TailArgs),
    /// A new random password for an MQTT device, and the `password_hash` for its config entry.
    DeviceSecret,
    /// For devices on an external mosquitto: write its config, password file and ACL into DIR,
    /// made from this gateway's lanes and device secrets (each device bound to its topics, no
    /// anonymous clients, queues sized to lose nothing across a gatehouse restart).
    BrokerConfig {
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
        /// Where the files go (`mosquitto.conf` names the others by this path).
        #[arg(long, default_value = "/etc/mosquitto/gatehouse")]
        out: PathBuf,
        /// The devices' listener.
        #[arg(long, default_value = "0.0.0.0:1883")]
        listen: std::net::SocketAddr,
        /// Busiest events per second across all lanes.
        #[arg(long, default_value_t = 2000)]
        peak_rate: u64,
        /// Longest gatehouse restart to ride out without loss, seconds.
        #[arg(long, default_value_t = 60)]
        restart_s: u64,
        #[arg(long, default_value = "/var/lib/mosquitto")]
        persistence_dir: String,
        /// Write nothing (and succeed) when the config's device side is not an external broker:
        /// how the package's install script keeps the snippet current.
        #[arg(long)]
        if_external: bool,
    },
    /// What the running gateway on this box is doing: mode, clock, uplink, outbox, lists, and
    /// each lane's devices with when they were last heard.
    Status {
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
        /// The daemon's reply as it came (one JSON object), not the table.
        #[arg(long)]
        json: bool,
    },
    /// End fire mode (only from the box itself): gates back to normal operation, mode normal.
    FireReset {
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
    },
    /// A whole gate on this machine: simulated devices logging in to the device endpoint, three
    /// lanes, the uplink to a stand-in company broker.
    Demo {
        /// Identifications per second.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        #[arg(long, default_value_t = 1000)]
        residents: u64,
        /// The fire alarm panel's contact closes this many seconds in (0: never); fire mode then
        /// holds until `gatehouse fire-reset --config <the demo's config>`.
        #[arg(long, default_value_t = 0)]
        fire_after_s: u64,
    },
    /// Run a device simulator against a broker.
    Simulate {
        #[command(subcommand)]
        profile: super::simulate::SimProfile,
    },
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

/// Sends one request to the running daemon's control socket and prints its reply.
async fn control(config: &std::path::Path, request: &str) -> Result<(), RunError> {
    let c = crate::config::Config::load(config).map_err(RunError::Config)?;
    let reply = crate::daemon::control::send(&c.store.dir, request).await?;
    println!("{reply}");
    if reply.starts_with("ok") {
        Ok(())
    } else {
        Err(RunError::Runtime(anyhow::anyhow!("{reply}")))
    }
}

async fn dispatch(cmd: Cmd) -> Result<ExitCode, RunError> {
    match cmd {
        Cmd::Run {
            config,
            broker_port,
            endpoint_port,
            http_port,
        } => {
            let ports = crate::run::Ports {
                broker: broker_port,
                endpoint: endpoint_port,
                http: http_port,
            };
            crate::run::run(&config, ports).await?
        }
        Cmd::CheckConfig { file } => {
            let (config, _) = crate::run::load_checked(&file, Default::default(), true)?;
            let devices: usize = config.lanes.iter().map(|l| l.devices.len()).sum();
            println!(
                "{}: ok ({} lanes, {devices} devices)",
                file.display(),
                config.lanes.len()
            );
        }
        Cmd::Keygen { out } => company::keygen(&out)?,
        Cmd::DeviceSecret => {
            let (password, hash) =
                crate::config::secrets::generate().map_err(anyhow::Error::from)?;
            println!("password      = {password}    # configure the device with this");
            println!("password_hash = \"{hash}\"    # in its [[lanes.devices]] entry");
        }
        Cmd::BrokerConfig {
            config,
            out,
            listen,
            peak_rate,
            restart_s,
            persistence_dir,
            if_external,
        } => {
            use crate::tools::broker_config;
            let (config, profiles) = crate::run::load_checked(&config, Default::default(), false)?;
            if if_external && config.device_broker.mode != crate::config::BrokerMode::External {
                println!("the device side is gatehouse's own endpoint: no mosquitto snippet");
                return Ok(ExitCode::SUCCESS);
            }
            let sizing = broker_config::Sizing {
                peak_rate,
                restart_s,
                persistence_dir,
                listen,
            };
            let files = broker_config::generate(&config, &profiles, &sizing, &out)?;
            broker_config::write(&files, &out)?;
            println!(
                "wrote {0}/mosquitto.conf, {0}/passwd (0600), {0}/acl; include mosquitto.conf from the broker's config and restart it",
                out.display()
            );
        }
        Cmd::Command(args) => company::order(*args).await?,
        Cmd::Tail(args) => company::tail(args).await?,
        Cmd::Mode { mode, config } => control(&config, &format!("mode {mode}")).await?,
        Cmd::FireReset { config } => control(&config, "fire-reset").await?,
        Cmd::Status { config, json } => {
            let c = crate::config::Config::load(&config).map_err(RunError::Config)?;
            let reply = crate::daemon::control::send(&c.store.dir, "status").await?;
            let parsed: serde_json::Value = serde_json::from_str(&reply)
                .map_err(|_| RunError::Runtime(anyhow::anyhow!("{reply}")))?;
            if json {
                println!("{reply}");
            } else {
                print!("{}", crate::tools::status::render(&parsed, crate::now_ms()));
            }
        }
        Cmd::Demo {
            rate,
            residents,
            fire_after_s,
        } => {
            crate::tools::demo::run(crate::tools::demo::DemoOptions {
                rate,
                residents,
                fire_after_s,
            })
            .await?
        }
        Cmd::Simulate { profile } => super::simulate::simulate(profile).await?,
        Cmd::BenchOutbox {
            events,
            backlog,
            replay_rate,
            dir,
        } => {
            crate::tools::bench::outbox(crate::tools::bench::OutboxBenchOptions {
                events,
                backlog,
                replay_rate,
                dir,
            })
            .await?
        }
        Cmd::BenchHttp { count, rate } => {
            let r =
                crate::tools::bench::http(crate::tools::bench::HttpBenchOptions { count, rate })
                    .await?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        Cmd::BenchVehicle { count, rate } => {
            let r = crate::tools::bench::vehicle(crate::tools::bench::VehicleBenchOptions {
                count,
                rate,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        }
        Cmd::BenchSerial {
            count,
            rate,
            residents,
            passes,
        } => {
            let r = crate::tools::bench::serial(crate::tools::bench::SerialBenchOptions {
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
        Cmd::BenchStart {
            residents,
            plates,
            runs,
            idle_seconds,
        } => {
            let r = crate::tools::bench::start(crate::tools::bench::StartBenchOptions {
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
            let r = crate::tools::bench::run(crate::tools::bench::BenchOptions {
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
    Ok(ExitCode::SUCCESS)
}
