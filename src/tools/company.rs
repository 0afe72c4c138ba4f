//! The property company's tools: make and sign orders (with list snapshots and deltas from the
//! import files, chunked under the broker's message limit), publish them, and read what gateways
//! send back (`tail`). Over `mqtts://` with the company's CA and client certificate.
use crate::mqtt_client::{self, BrokerUrl, TlsFiles};
use crate::proto::v1;
use crate::run::RunError;
use crate::tools::lists::{self, Envelope};
use std::path::PathBuf;
use std::time::Duration;

fn fail(e: impl std::fmt::Display) -> RunError {
    RunError::Runtime(anyhow::anyhow!("{e}"))
}

/// Where to publish or read, and how to prove who we are.
#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// CA certificate (PEM) for `mqtts://`; the system's roots without it.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS, with --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Username and a file holding the password, if the broker asks for them.
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn options(&self, url: &BrokerUrl, client_id: &str) -> Result<rumqttc::MqttOptions, RunError> {
        let tls = TlsFiles {
            ca_file: self.ca.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
        };
        let mut o = mqtt_client::client_options(url, client_id, Duration::from_secs(30), &tls)
            .map_err(fail)?;
        if let Some(user) = &self.username {
            let password = match &self.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .map_err(|e| fail(format!("{}: {e}", f.display())))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                None => String::new(),
            };
            o.set_credentials(user, password);
        }
        Ok(o)
    }
}

/// `gatehouse command`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").args(["mode", "fire", "open", "threshold", "ping", "snapshot", "delta"])))]
pub struct OrderArgs {
    /// The private key file from `gatehouse keygen`.
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

/// `gatehouse tail`.
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

fn target(t: &str) -> Result<v1::Scope, RunError> {
    let (level, code) = t
        .split_once(':')
        .ok_or_else(|| fail("--target is level:code, e.g. street:330106001"))?;
    let level = match level {
        "gateway" if !code.contains('/') => {
            return Err(fail(
                "a gateway is addressed by its full path: gateway:<community>/<gateway id>",
            ))
        }
        "gateway" => v1::Level::Gateway,
        "community" => v1::Level::Community,
        "street" => v1::Level::Street,
        "district" => v1::Level::District,
        other => {
            return Err(fail(format!(
                "unknown level {other:?} (gateway, community, street, district)"
            )))
        }
    };
    Ok(v1::Scope {
        level: level as i32,
        code: code.to_string(),
    })
}

pub async fn order(a: OrderArgs) -> Result<(), RunError> {
    use v1::command::Payload;
    let key = read_key(&a.key)?;
    let now = crate::now_ms();
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
        let s = lists::snapshot(dir, version).map_err(fail)?;
        lists::snapshot_orders(s, a.chunk_bytes, &e).map_err(fail)?
    } else {
        let payload = if let Some(dir) = &a.delta {
            let d = lists::delta(dir, a.base.unwrap_or(0), version).map_err(fail)?;
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
    match (a.publish, a.topic) {
        (Some(broker), Some(topic)) => {
            let url = BrokerUrl::parse(&broker).map_err(fail)?;
            publish_all(&url, &a.broker, &topic, &payloads).await?;
            println!("published {id} to {topic} ({} message(s))", payloads.len());
        }
        _ => {
            for p in payloads {
                println!("{}", crate::hex::to_hex(&p));
            }
        }
    }
    Ok(())
}

/// Publishes every payload at QoS 1 and waits for all their PUBACKs.
async fn publish_all(
    url: &BrokerUrl,
    broker: &BrokerArgs,
    topic: &str,
    payloads: &[Vec<u8>],
) -> Result<(), RunError> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mut opts = broker.options(url, &format!("gatehouse-cli-{}", std::process::id()))?;
    let largest = payloads.iter().map(Vec::len).max().unwrap_or(0);
    // (incoming, outgoing): what we send may be as large as the largest order.
    opts.set_max_packet_size(1 << 20, largest + 4096);
    let (client, mut el) = AsyncClient::new(opts, payloads.len() + 8);
    el.set_network_options(mqtt_client::network_options());
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await
            .map_err(fail)?;
    }
    let mut acked = 0;
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while acked < payloads.len() {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    match all {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(fail(format!(
            "{acked} of {} PUBACKs within 30 s",
            payloads.len()
        ))),
    }
}

pub async fn tail(a: TailArgs) -> Result<(), RunError> {
    let url = BrokerUrl::parse(&a.broker).map_err(fail)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::run::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let opts = a
        .tls
        .options(&url, &format!("gatehouse-tail-{}", std::process::id()))?;
    crate::tools::tail::run(opts, &a.filter, stop_rx)
        .await
        .map_err(RunError::Runtime)
}

pub fn keygen(out: &std::path::Path) -> Result<(), RunError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| RunError::Runtime(anyhow::anyhow!("/dev/urandom: {e}")))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| RunError::Runtime(anyhow::anyhow!("{}: {e}", out.display())))?;
    writeln!(f, "{}", crate::hex::to_hex(&seed)).map_err(|e| RunError::Runtime(e.into()))?;
    println!(
        "private key written to {} (keep it secret)\npublic key: {}",
        out.display(),
        crate::hex::to_hex(key.verifying_key().as_bytes())
    );
    Ok(())
}

fn read_key(path: &std::path::Path) -> Result<ed25519_dalek::SigningKey, RunError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Runtime(anyhow::anyhow!("{}: {e}", path.display())))?;
    let bytes =
        crate::hex::parse_hex(text.trim()).map_err(|e| RunError::Runtime(anyhow::anyhow!(e)))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| RunError::Runtime(anyhow::anyhow!("{}: not a 32-byte key", path.display())))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}
