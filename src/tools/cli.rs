//! The command line: every subcommand of `gatehouse`, and what each runs. `main.rs` only parses,
//! sets up logging and maps the result to an exit code.
use crate::run::RunError;
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
    /// `gatehouse run`: the daemon, rather than a command that prints and ends.
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Cmd::Run { .. })
    }

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
        /// Also write an nftables ruleset to this file that admits only the configured devices'
        /// addresses to the device-side ports (the endpoint's, the HTTP listener's, mosquitto's);
        /// on the endpoint, the ruleset alone.
        #[arg(long, value_name = "FILE")]
        nft: Option<PathBuf>,
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
    /// The guard's console logins (`[console] users`): add, reset, disable, enable, list.
    ConsoleUser {
        #[arg(long, default_value = "/etc/gatehouse/gatehouse.toml")]
        config: PathBuf,
        /// The users file itself, instead of the one the config names.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(subcommand)]
        action: super::console_user::ConsoleUser,
    },
    /// A self-signed certificate and key for the console (`console.crt`, `console.key` in DIR),
    /// unless they exist; what the .deb runs at install.
    ConsoleCert {
        #[arg(long, default_value = "/etc/gatehouse")]
        dir: PathBuf,
        /// Another name or address the booth reaches the box at (repeatable).
        #[arg(long)]
        name: Vec<String>,
        /// Make a new pair over existing files.
        #[arg(long)]
        force: bool,
    },
    /// Run a device simulator against a broker.
    Simulate {
        #[command(subcommand)]
        profile: super::simulate::SimProfile,
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
            let (config, _, warnings) = crate::run::load_warned(&file, Default::default(), true)?;
            for w in &warnings {
                eprintln!("warning: {}: {}", w.path, w.message);
            }
            let devices: usize = config.lanes.iter().map(|l| l.devices.len()).sum();
            println!(
                "{}: ok ({} lanes, {devices} devices, {} warnings)",
                file.display(),
                config.lanes.len(),
                warnings.len()
            );
        }
        Cmd::DeviceSecret => {
            let (password, hash) = crate::config::secrets::generate();
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
            nft,
        } => {
            use crate::tools::broker_config;
            let (config, profiles) = crate::run::load_checked(&config, Default::default(), false)?;
            let external = config.device_broker.mode == crate::config::BrokerMode::External;
            if let Some(file) = &nft {
                let mosquitto = external.then_some(listen);
                let rules = broker_config::packet_filter(&config, &profiles, mosquitto)?;
                std::fs::write(file, rules)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                println!("wrote {}; load it with nft -f {0}", file.display());
                if !external {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            if if_external && !external {
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
        Cmd::ConsoleUser {
            config,
            file,
            action,
        } => {
            let file = match file {
                Some(f) => f,
                None => super::console_user::file(&config)?,
            };
            super::console_user::run(action, &file)?;
        }
        Cmd::ConsoleCert { dir, name, force } => super::console_cert::make(&dir, &name, force)?,
        Cmd::Simulate { profile } => super::simulate::simulate(profile).await?,
    }
    Ok(ExitCode::SUCCESS)
}
