//! How the company's tools reach its broker: the flags (`--ca`, `--client-cert`/`--client-key`,
//! `--username`/`--password-file`) and the MQTT options made from them.
use anyhow::Context;
use gatehouse_contract::mqtt::{self as mqtt_client, BrokerUrl, TlsFiles};
use std::path::PathBuf;
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
