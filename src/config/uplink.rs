//! `[uplink]`: how the gateway reaches the property company's broker, and how it sends.
use super::problems::{private_file_mode, Problems};
use crate::mqtt_client::BrokerUrl;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS with rustls).
    pub url: String,
    /// Defaults to the gateway id.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Read the password from this file instead (first line), so the config can be world-readable.
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) to trust for mqtts; without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: this gateway's certificate (PEM, with its chain) and private key.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `production` refuses to start on plain mqtt, an anonymous uplink, or a private key or
    /// password file others can read; `development` (default) allows them, for the bench.
    #[serde(default)]
    pub security: Security,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Most events in one published `EventBatch`.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How many batches may await their PUBACK at once.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Most events per second sent upstream: after an outage the backlog drains at this rate
    /// (alarms are never held back).
    #[serde(default = "default_replay_rate")]
    pub replay_rate: u64,
    /// Statistics per lane are published on `stats` at the end of every period (an hour).
    #[serde(default = "default_stats_period_s")]
    pub stats_period_s: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Development,
    Production,
}

fn default_stats_period_s() -> u64 {
    3600
}

fn default_keep_alive_s() -> u64 {
    30
}
fn default_batch_max() -> usize {
    256
}
fn default_window() -> usize {
    8
}
fn default_replay_rate() -> u64 {
    5000
}

impl UplinkSection {
    pub(super) fn problems(&self, path: &str, out: &mut Problems) {
        match BrokerUrl::parse(&self.url) {
            Err(e) => out.add(format!("{path}.url"), e),
            Ok(u) if !u.tls && self.ca_file.is_some() => out.add(
                format!("{path}.ca_file"),
                "given, but uplink.url is not mqtts://",
            ),
            Ok(_) => {}
        }
        let files = [
            ("ca_file", &self.ca_file),
            ("password_file", &self.password_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ];
        for (name, file) in files {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                out.add(
                    format!("{path}.{name}"),
                    format!("{} does not exist", f.display()),
                );
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            out.add(
                format!("{path}.client_cert"),
                "client_cert and client_key go together",
            );
        }
        if self.security == Security::Production {
            self.production_problems(path, out);
        }
        // The package makes the file empty, for the operator to fill.
        let empty = |f: &std::path::PathBuf| {
            std::fs::read_to_string(f)
                .is_ok_and(|t| t.lines().next().unwrap_or("").trim().is_empty())
        };
        if let Some(f) = self.password_file.as_ref().filter(|f| empty(f)) {
            let message = format!(
                "{} has no password on its first line: write the uplink's password there",
                f.display()
            );
            match self.security {
                Security::Production => out.add(format!("{path}.password_file"), message),
                _ => out.warn(format!("{path}.password_file"), message),
            }
        }
        if self.batch_max == 0 || self.window == 0 || self.replay_rate == 0 {
            out.add(path, "batch_max, window and replay_rate must be at least 1");
        }
    }

    /// What `security = "production"` refuses: records in clear, an anonymous uplink, secrets
    /// in the config or readable by others.
    fn production_problems(&self, path: &str, out: &mut Problems) {
        if !self.url.starts_with("mqtts://") && !self.url.starts_with("ssl://") {
            out.add(
                format!("{path}.url"),
                "security = \"production\" needs mqtts:// (TLS): plain mqtt would carry the gate's records and commands in clear",
            );
        }
        let has_password = self.password.is_some() || self.password_file.is_some();
        if self.username.is_none() && self.client_cert.is_none() {
            out.add(
                path,
                "security = \"production\" refuses an anonymous uplink: give username + password_file, or client_cert + client_key",
            );
        } else if self.username.is_some() && !has_password && self.client_cert.is_none() {
            out.add(
                format!("{path}.password_file"),
                "a username without a password is anonymous in all but name",
            );
        }
        if self.password.is_some() {
            out.add(
                format!("{path}.password"),
                "security = \"production\": keep the password out of the config, in password_file (0600)",
            );
        }
        for (name, file) in [
            ("client_key", &self.client_key),
            ("password_file", &self.password_file),
        ] {
            let Some(f) = file else { continue };
            if let Some(mode) = private_file_mode(f) {
                out.add(
                    format!("{path}.{name}"),
                    format!(
                        "{} is readable by others (mode {mode:o}); chmod 600 it",
                        f.display()
                    ),
                );
            }
        }
    }
}
