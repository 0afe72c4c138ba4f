//! `gatehouse-company`, the property company's command line: make a signing key, make and sign
//! orders (with list snapshots and deltas from the import files, chunked under the broker's
//! message limit), publish them, and read what gateways send back (`tail`). Over `mqtts://` with
//! the company's CA and client certificate.
pub use crate::connect::BrokerArgs;
use crate::lists::{self, Envelope};
use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use gatehouse_contract::mqtt::BrokerUrl;
use gatehouse_contract::{hex, proto::v1};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse-company",
    version,
    about = "The property company's side of gatehouse: signed orders to the gateways, and what they send back"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make an Ed25519 key pair for signing orders: the private key goes to FILE (mode 0600),
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
    /// Take every gateway's records from the broker into the database (the long-running
    /// service; a shared subscription, so several instances split the stream).
    Ingest(Box<crate::records_cli::IngestArgs>),
    /// Write a form (entry register, temperature register, a street's or district's summary)
    /// for a day or a range: XLSX, CSV or text.
    Form(crate::records_cli::FormArgs),
    /// Apply the database migrations, or roll the newest back (--down).
    Migrate(crate::records_cli::MigrateArgs),
    /// Delete temperatures (health data): a person's, or all before a day.
    Forget(crate::records_cli::ForgetArgs),
    /// Check the ingest service's configuration file: every problem by its key (exit 78).
    CheckConfig { file: PathBuf },
    /// Serve the web pages: the forms for each community, street and district, the fleet and
    /// its alarms for the company.
    Serve(Box<crate::web::users::ServeArgs>),
    /// Add, disable, enable, reset and list the pages' users; read the audit trail.
    User(crate::web::users::UserArgs),
}

impl Cli {
    /// Runs the subcommand; a tail runs until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Cmd::Keygen { out } => {
                let public = keygen(&out)?;
                println!(
                    "private key written to {} (keep it secret)\npublic key: {public}",
                    out.display()
                );
            }
            Cmd::Command(args) => {
                for line in order(*args).await? {
                    println!("{line}");
                }
            }
            Cmd::Tail(args) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = stop_tx.send(true);
                });
                tail(args, stop_rx, |line| println!("{line}")).await?;
            }
            Cmd::Ingest(args) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = stop_tx.send(true);
                });
                crate::records_cli::ingest(*args, stop_rx).await?;
            }
            Cmd::Form(args) => crate::records_cli::form(args).await?,
            Cmd::Migrate(args) => crate::records_cli::migrate(args).await?,
            Cmd::Forget(args) => crate::records_cli::forget(args).await?,
            Cmd::CheckConfig { file } => crate::records_cli::check_config(&file)?,
            Cmd::Serve(args) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = stop_tx.send(true);
                });
                crate::web::users::serve(*args, stop_rx).await?;
            }
            Cmd::User(args) => crate::web::users::run(args).await?,
        }
        Ok(())
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `gatehouse-company command`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").args(["mode", "fire", "open", "threshold", "ping", "snapshot", "delta"])))]
pub struct OrderArgs {
    /// The private key file from `gatehouse-company keygen`.
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    key_id: String,
    /// `gateway:<community>/<gateway id>` (a gateway by its full path), `community:<12 digits>`,
    /// `street:<9 digits>` or `district:<6 digits>`.
    #[arg(long)]
    target: String,
    /// Set the mode: normal, epidemic, lockdown (fire has its own flag).
    #[arg(long, value_parser = ["normal", "epidemic", "lockdown"])]
    mode: Option<String>,
    /// Fire: open and hold every gate of the target until a local `gatehouse fire-reset` at each
    /// box. Needs a key with the `fire` kind.
    #[arg(long)]
    fire: bool,
    /// Open this lane's gate once (with --operator and --reason).
    #[arg(long)]
    open: Option<String>,
    /// Set the fever threshold, °C (every lane, or --lane).
    #[arg(long)]
    threshold: Option<f64>,
    #[arg(long, default_value = "")]
    lane: String,
    #[arg(long, default_value = "")]
    operator: String,
    #[arg(long, default_value = "")]
    reason: String,
    /// Just ask for a result.
    #[arg(long)]
    ping: bool,
    /// Replace every list with the files in this directory (residents.csv, households.csv,
    /// plates.csv, passes.csv), as `--version`.
    #[arg(long, requires = "version")]
    snapshot: Option<PathBuf>,
    /// Upsert the lists in this directory and remove what its remove.csv names, on top of
    /// `--base`, as `--version`.
    #[arg(long, requires_all = ["version", "base"])]
    delta: Option<PathBuf>,
    #[arg(long)]
    version: Option<u64>,
    #[arg(long)]
    base: Option<u64>,
    /// A snapshot larger than this goes in chunks of this size (stay under the company broker's
    /// message limit: EMQX's default is 1 MB).
    #[arg(long, default_value_t = 900_000)]
    chunk_bytes: usize,
    /// Seconds the order stays valid (the gateways refuse more than their max_lifetime_s).
    #[arg(long, default_value_t = 60)]
    valid_s: i64,
    /// Order id (default: time-based); chunks get `-0`, `-1`, … after it.
    #[arg(long)]
    id: Option<String>,
    /// Publish to this broker (mqtt:// or mqtts://host:port) on `--topic` (e.g.
    /// `gh/v1/3301/330106/330106001/_all/cmd` for a street) instead of printing hex.
    #[arg(long, requires = "topic")]
    publish: Option<String>,
    #[arg(long)]
    topic: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// `gatehouse-company tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// The company broker, mqtt:// or mqtts://host:port.
    #[arg(long)]
    broker: String,
    /// Which gateways: an MQTT filter over the topic tree.
    #[arg(long, default_value = "gh/v1/#")]
    filter: String,
    #[command(flatten)]
    tls: BrokerArgs,
}

fn target(t: &str) -> anyhow::Result<v1::Scope> {
    let (level, code) = t
        .split_once(':')
        .ok_or_else(|| anyhow!("--target is level:code, e.g. street:330106001"))?;
    let level = match level {
        "gateway" if !code.contains('/') => {
            return Err(anyhow!(
                "a gateway is addressed by its full path: gateway:<community>/<gateway id>"
            ))
        }
        "gateway" => v1::Level::Gateway,
        "community" => v1::Level::Community,
        "street" => v1::Level::Street,
        "district" => v1::Level::District,
        other => {
            return Err(anyhow!(
                "unknown level {other:?} (gateway, community, street, district)"
            ))
        }
    };
    Ok(v1::Scope {
        level: level as i32,
        code: code.to_string(),
    })
}

/// Makes and signs the order `a` describes; publishes it, or returns it as hex lines (a chunked
/// snapshot is several). What it published is said in the one line returned.
pub async fn order(a: OrderArgs) -> anyhow::Result<Vec<String>> {
    use v1::command::Payload;
    let key = crate::connect::read_key(&a.key)?;
    let now = now_ms();
    let id = a.id.clone().unwrap_or_else(|| format!("cmd-{now}"));
    let e = Envelope {
        id: &id,
        issued_at_ms: now,
        expires_at_ms: now.saturating_add(a.valid_s.saturating_mul(1000)),
        target: target(&a.target)?,
        key_id: &a.key_id,
        key: &key,
    };
    let version = a.version.unwrap_or(0);
    let orders = if let Some(dir) = &a.snapshot {
        let s = lists::snapshot(dir, version).map_err(|e| anyhow!(e))?;
        lists::snapshot_orders(s, a.chunk_bytes, &e).map_err(|e| anyhow!(e))?
    } else {
        let payload = if let Some(dir) = &a.delta {
            let d = lists::delta(dir, a.base.unwrap_or(0), version).map_err(|e| anyhow!(e))?;
            Payload::RegistryDelta(d)
        } else if a.fire {
            Payload::SetMode(v1::SetMode {
                mode: "fire".into(),
            })
        } else if let Some(mode) = a.mode {
            Payload::SetMode(v1::SetMode { mode })
        } else if let Some(lane) = a.open {
            Payload::RemoteOpen(v1::RemoteOpen {
                lane,
                operator_id: a.operator,
                reason: a.reason,
            })
        } else if let Some(t) = a.threshold {
            Payload::SetThreshold(v1::SetThreshold {
                fever_threshold_c: t,
                lane: a.lane,
            })
        } else {
            Payload::Ping(v1::Ping {})
        };
        vec![e.sign(id.clone(), payload)]
    };
    let payloads: Vec<Vec<u8>> = orders.iter().map(prost::Message::encode_to_vec).collect();
    Ok(match (a.publish, a.topic) {
        (Some(broker), Some(topic)) => {
            let url = BrokerUrl::parse(&broker).map_err(|e| anyhow!(e))?;
            crate::connect::publish_all(&url, &a.broker, &topic, &payloads).await?;
            vec![format!(
                "published {id} to {topic} ({} message(s))",
                payloads.len()
            )]
        }
        _ => payloads.iter().map(|p| hex::to_hex(p)).collect(),
    })
}

/// Hands every record under the filter to `out` as a JSON line, until `stop`.
pub async fn tail(
    a: TailArgs,
    stop: watch::Receiver<bool>,
    out: impl FnMut(String),
) -> anyhow::Result<()> {
    let url = BrokerUrl::parse(&a.broker).map_err(|e| anyhow!(e))?;
    let opts = a
        .tls
        .options(&url, &format!("gatehouse-tail-{}", std::process::id()))?;
    crate::tail::run(opts, &a.filter, stop, out).await
}

/// Writes a new private key to `out` (mode 0600, never over an existing file); returns the public
/// key in hex.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("/dev/urandom")?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| out.display().to_string())?;
    writeln!(f, "{}", hex::to_hex(&seed)).with_context(|| out.display().to_string())?;
    Ok(hex::to_hex(key.verifying_key().as_bytes()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
