//! How the company's tools reach its broker: the flags (`--ca`, `--client-cert`/`--client-key`,
//! `--username`/`--password-file`) and the MQTT options made from them.
use anyhow::{anyhow, Context};
use gatehouse_contract::hex;
use gatehouse_contract::mqtt::{self as mqtt_client, BrokerUrl, TlsFiles};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub fn options(
        &self,
        url: &BrokerUrl,
        client_id: &str,
    ) -> anyhow::Result<rumqttc::MqttOptions> {
        let tls = TlsFiles {
            ca_file: self.ca.clone(),
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
        };
        let mut o = mqtt_client::client_options(url, client_id, Duration::from_secs(30), &tls)?;
        if let Some(user) = &self.username {
            let password = match &self.password_file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| f.display().to_string())?
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

/// Publishes every payload at QoS 1 and waits for all their PUBACKs.
pub(crate) async fn publish_all(
    url: &BrokerUrl,
    broker: &BrokerArgs,
    topic: &str,
    payloads: &[Vec<u8>],
) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    // Each connection its own id: two at once under one id would throw each other off.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let id = format!("gatehouse-cli-{}-{n}-{nanos:x}", std::process::id());
    let mut opts = broker.options(url, &id)?;
    let largest = payloads.iter().map(Vec::len).max().unwrap_or(0);
    // (incoming, outgoing): what we send may be as large as the largest order.
    opts.set_max_packet_size(1 << 20, largest + 4096);
    let (client, mut el) = AsyncClient::new(opts, payloads.len() + 8);
    el.set_network_options(mqtt_client::network_options());
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await?;
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
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(anyhow!("{acked} of {} PUBACKs within 30 s", payloads.len())),
    }
}

/// An order-signing key file (`gatehouse-company keygen`): the 32-byte seed in hex.
pub(crate) fn read_key(path: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let bytes = hex::parse_hex(text.trim()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{}: not a 32-byte key", path.display()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}
