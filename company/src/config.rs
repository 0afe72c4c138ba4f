//! The ingest service's configuration file (`/etc/gatehouse-company/company.toml`), and
//! `check-config`: every problem found, by its key, before the service starts.
use crate::db::Retention;
use gatehouse_contract::mqtt::BrokerUrl;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: Broker,
    pub database: Database,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub ingest: Ingest,
    /// The web pages (`gatehouse-company serve --config`).
    #[serde(default)]
    pub web: Web,
    /// Alarms that need someone now, by webhook and e-mail (none without it).
    pub notify: Option<crate::web::notify::Config>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Web {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The company's TLS proxy in front (its address): it names the client in
    /// `X-Forwarded-For`, and cookies are marked `Secure` (the browser sees HTTPS).
    pub trusted_proxy: Option<std::net::IpAddr>,
    /// Another language's labels (the built-in ones are Chinese).
    pub labels: Option<PathBuf>,
    #[serde(default = "default_connections")]
    pub connections: usize,
    #[serde(default = "default_form_cache_s")]
    pub form_cache_s: u64,
    /// Acknowledgements sent down to the gateways as signed orders (none without it).
    pub orders: Option<WebOrders>,
}

/// `[web.orders]`: the key the pages sign their orders with (`gatehouse-company keygen`); the
/// gateways list its public key for `ack_alarm` at the gateway level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebOrders {
    pub key: PathBuf,
    pub key_id: String,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: default_listen(),
            tls_cert: None,
            tls_key: None,
            trusted_proxy: None,
            labels: None,
            connections: default_connections(),
            form_cache_s: default_form_cache_s(),
            orders: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_connections() -> usize {
    4
}
fn default_form_cache_s() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// `mqtt://` or `mqtts://host:port`.
    pub url: String,
    /// This instance's client id: its persistent session. Each instance needs its own.
    pub client_id: String,
    #[serde(default = "default_group")]
    pub group: String,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite:/var/lib/gatehouse-company/records.db` or `postgres://user@host/db`.
    pub url: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    #[serde(default = "default_passages_days")]
    pub passages_days: u32,
    #[serde(default = "default_temperatures_days")]
    pub temperatures_days: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            passages_days: default_passages_days(),
            temperatures_days: default_temperatures_days(),
        }
    }
}

impl RetentionSection {
    pub fn retention(&self) -> Retention {
        Retention {
            passages_days: self.passages_days,
            temperatures_days: self.temperatures_days,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
}

impl Default for Ingest {
    fn default() -> Self {
        Ingest {
            batch_max: default_batch_max(),
        }
    }
}

fn default_group() -> String {
    "gatehouse-ingest".into()
}
fn default_timezone() -> String {
    "Asia/Shanghai".into()
}
fn default_passages_days() -> u32 {
    Retention::default().passages_days
}
fn default_temperatures_days() -> u32 {
    Retention::default().temperatures_days
}
fn default_batch_max() -> usize {
    500
}

/// What `check-config` found: problems stop the service; warnings do not.
#[derive(Debug, Default)]
pub struct Checked {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<(Config, Checked), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let checked = check(&config);
    Ok((config, checked))
}

pub fn check(c: &Config) -> Checked {
    let mut out = Checked::default();
    let mut problem = |key: &str, what: String| out.problems.push(format!("{key}: {what}"));
    if let Err(e) = BrokerUrl::parse(&c.broker.url) {
        problem("broker.url", e);
    }
    if c.broker.client_id.is_empty() || c.broker.client_id.len() > 128 {
        problem(
            "broker.client_id",
            "1–128 characters, one per instance".into(),
        );
    }
    if c.broker.group.is_empty() || c.broker.group.contains(['/', '+', '#']) {
        problem(
            "broker.group",
            "a shared-subscription group: no '/', '+' or '#'".into(),
        );
    }
    for (key, file) in [
        ("broker.ca", &c.broker.ca),
        ("broker.client_cert", &c.broker.client_cert),
        ("broker.client_key", &c.broker.client_key),
        ("broker.password_file", &c.broker.password_file),
    ] {
        if let Some(f) = file.as_ref().filter(|f| !f.exists()) {
            problem(key, format!("{} does not exist", f.display()));
        }
    }
    if c.broker.client_cert.is_some() != c.broker.client_key.is_some() {
        problem(
            "broker.client_cert",
            "client_cert and client_key go together".into(),
        );
    }
    if c.broker.password_file.is_some() && c.broker.username.is_none() {
        problem("broker.password_file", "needs broker.username".into());
    }
    let url = &c.database.url;
    if let Some(path) = url.strip_prefix("sqlite:") {
        let dir = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = dir.filter(|d| !d.is_dir()) {
            problem(
                "database.url",
                format!("{} is not a directory", d.display()),
            );
        }
    } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problem(
            "database.url",
            "sqlite:PATH or postgres://user@host/database".into(),
        );
    }
    if c.database.timezone.parse::<chrono_tz::Tz>().is_err() {
        problem(
            "database.timezone",
            format!(
                "{:?} is not a time zone (e.g. Asia/Shanghai)",
                c.database.timezone
            ),
        );
    }
    if !(1..=10_000).contains(&c.ingest.batch_max) {
        problem("ingest.batch_max", "1–10,000 messages".into());
    }
    let w = &c.web;
    match w.listen.parse::<std::net::SocketAddr>() {
        Err(_) => problem(
            "web.listen",
            format!("{:?} is not an address:port", w.listen),
        ),
        Ok(a) if !a.ip().is_loopback() && w.tls_cert.is_none() => problem(
            "web.listen",
            format!(
                "{a} is not loopback and there is no TLS: logins would cross the network in \
                 the clear; give web.tls_cert and web.tls_key, or listen on 127.0.0.1 behind \
                 the company's TLS proxy"
            ),
        ),
        Ok(_) => {}
    }
    if w.tls_cert.is_none() && w.trusted_proxy.is_none() {
        out.warnings.push(
            "web: neither TLS (tls_cert, tls_key) nor a TLS proxy (trusted_proxy): session cookies \
             go without Secure, and every client looks like the proxy to the login limits"
                .into(),
        );
    }
    if w.tls_cert.is_some() != w.tls_key.is_some() {
        problem("web.tls_cert", "tls_cert and tls_key go together".into());
    }
    for (key, file) in [
        ("web.tls_cert", &w.tls_cert),
        ("web.tls_key", &w.tls_key),
        ("web.labels", &w.labels),
    ] {
        if let Some(f) = file.as_ref().filter(|f| !f.exists()) {
            problem(key, format!("{} does not exist", f.display()));
        }
    }
    if let Some(Err(e)) = w
        .labels
        .as_ref()
        .filter(|f| f.exists())
        .map(|f| crate::web::labels::Labels::load(f))
    {
        problem("web.labels", format!("{e:#}"));
    }
    if !(1..=64).contains(&w.connections) {
        problem("web.connections", "1–64 database connections".into());
    }
    if let Some(Err(e)) = c.notify.as_ref().map(|n| n.check()) {
        problem("notify", format!("{e:#}"));
    }
    let r = &c.retention;
    if r.passages_days == 0 {
        out.warnings
            .push("retention.passages_days = 0 keeps passages (personal data) for ever".into());
    }
    if r.temperatures_days == 0 || (r.passages_days > 0 && r.temperatures_days > r.passages_days) {
        out.warnings.push(
            "retention.temperatures_days: temperatures are health data; keep them no longer than passages".into(),
        );
    }
    if BrokerUrl::parse(&c.broker.url).is_ok_and(|u| !u.tls) {
        out.warnings
            .push("broker.url is plain mqtt://: records cross the network unencrypted".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_checks_and_every_problem_is_named_by_its_key() {
        let example: Config = toml::from_str(include_str!("../packaging/company.toml")).unwrap();
        let mut c = check(&example);
        // The example's directory exists on an installed box, not here.
        c.problems.retain(|p| !p.starts_with("database.url"));
        assert!(c.problems.is_empty(), "{:?}", c.problems);

        let bad: Config = toml::from_str(
            r#"
            [broker]
            url = "http://nope"
            client_id = ""
            group = "a/b"
            password_file = "/nonexistent"
            [database]
            url = "mysql://x"
            timezone = "Mars/Olympus"
            [retention]
            passages_days = 0
            [ingest]
            batch_max = 0
            [web]
            listen = "0.0.0.0:8080"
            connections = 0
            [notify]
            kinds = ["fever"]
            "#,
        )
        .unwrap();
        let c = check(&bad);
        for key in [
            "broker.url",
            "broker.client_id",
            "broker.group",
            "broker.password_file",
            "database.url",
            "database.timezone",
            "ingest.batch_max",
            "web.listen",
            "web.connections",
            "notify",
        ] {
            assert!(
                c.problems.iter().any(|p| p.starts_with(key)),
                "{key} in {:?}",
                c.problems
            );
        }
        assert!(c.warnings.iter().any(|w| w.contains("passages_days")));
        assert!(toml::from_str::<Config>(
            "[broker]\nurl='mqtt://x'\nclient_id='a'\nbogus=1\n[database]\nurl='sqlite:x'"
        )
        .is_err());
    }
}
