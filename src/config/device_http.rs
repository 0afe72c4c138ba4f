//! The config of devices that speak HTTP: the listener their pushes arrive at (`[device_http]`),
//! and, per device, where gatehouse reaches the device's own API (`api = { … }` in its
//! `[[lanes.devices]]` entry).
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[device_http]`: started when a configured device pushes over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceHttpSection {
    /// Where the pushes arrive: the device LAN's side of the box.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Connections at once from addresses no device has (a terminal keeps one or two)…
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// …and from one address. A device's `from` address has this many of its own, which
    /// strangers never take.
    #[serde(default = "default_http_per_address")]
    pub max_per_address: usize,
    /// A request's headers must be in within this; its body within `body_timeout_ms`.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// A push's whole body, pictures included (they are streamed past, never held); the event
    /// part itself is held to 256 KiB.
    #[serde(default = "default_max_body_kib")]
    pub max_body_kib: usize,
}

impl DeviceHttpSection {
    pub(super) fn problems(&self, path: &str, out: &mut super::problems::Problems) {
        let limits = [
            self.max_connections,
            self.max_per_address,
            self.max_body_kib,
            self.header_timeout_ms as usize,
            self.body_timeout_ms as usize,
        ];
        if limits.contains(&0) {
            out.add(
                path,
                "max_connections, max_per_address, max_body_kib, header_timeout_ms and body_timeout_ms must be at least 1",
            );
        }
    }
}

impl Default for DeviceHttpSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_per_address: default_http_per_address(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            max_body_kib: default_max_body_kib(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
fn default_max_connections() -> usize {
    64
}
fn default_http_per_address() -> usize {
    8
}
fn default_header_timeout_ms() -> u64 {
    5_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_max_body_kib() -> usize {
    16 * 1024
}

/// How a terminal's events reach gatehouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// The terminal POSTs them to the listener (its `httpHosts` entry).
    #[default]
    Listening,
    /// Gatehouse holds the terminal's event stream open (ISAPI `alertStream`).
    Arming,
}

/// A device's own API, as gatehouse reaches it (`api = { address = "192.168.1.64", … }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceApiSection {
    /// `host` or `host:port` (port 80 when not given).
    pub address: String,
    #[serde(default = "default_username")]
    pub username: String,
    /// The device's password: a file (first line; readable by its owner only) or, for tests
    /// and the demo, the text.
    pub password_file: Option<PathBuf>,
    pub password: Option<String>,
    #[serde(default)]
    pub mode: PushMode,
    /// The terminal drives this door itself and gatehouse opens it over the API (the lane
    /// has no other gate). Without it the terminal only identifies.
    pub door: Option<u32>,
    /// Self-configuration: the address of this box as the terminal must push to
    /// (`http://192.168.1.10:8088`); gatehouse writes its `httpHosts` entry and checks it every
    /// `recheck_s`.
    pub push_to: Option<String>,
    #[serde(default = "default_recheck_s")]
    pub recheck_s: u64,
    /// After the terminal or the link was down, fetch the events it stored (recorded late,
    /// never acted on).
    #[serde(default = "default_true")]
    pub catch_up: bool,
    /// Requests to the device time out after this.
    #[serde(default = "default_api_timeout_ms")]
    pub timeout_ms: u64,
    /// How gatehouse answers the device's 401: `digest` (the default: the password never
    /// crosses the wire) or `basic`, which hands the password to whoever answers at the
    /// device's address — only for a device that offers nothing else.
    #[serde(default)]
    pub auth: ApiAuth,
    /// With an `https://` address: the SHA-256 of the device's own certificate (hex, colons
    /// allowed), the only one taken there — an impostor at its address can neither learn the
    /// login nor stream events that open gates.
    pub tls_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiAuth {
    #[default]
    Digest,
    Basic,
}

fn default_username() -> String {
    "admin".into()
}
fn default_recheck_s() -> u64 {
    600
}
fn default_true() -> bool {
    true
}
fn default_api_timeout_ms() -> u64 {
    5_000
}

impl DeviceApiSection {
    /// `host:port` (80, or 443 for `https://`).
    pub fn host(&self) -> String {
        let address = self.address.trim_end_matches('/');
        let (bare, port) = match address.strip_prefix("https://") {
            Some(rest) => (rest, 443),
            None => (address.strip_prefix("http://").unwrap_or(address), 80),
        };
        if bare.contains(':') {
            bare.to_string()
        } else {
            format!("{bare}:{port}")
        }
    }

    /// Whether the device is reached over TLS.
    pub fn https(&self) -> bool {
        self.address.starts_with("https://")
    }

    /// The pinned certificate's SHA-256, from `tls_fingerprint`.
    pub fn fingerprint(&self) -> Result<Option<[u8; 32]>, String> {
        let Some(text) = &self.tls_fingerprint else {
            return Ok(None);
        };
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = crate::hex::parse_hex(&hex)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("{text:?} is not a SHA-256 (64 hex digits, colons allowed)"))?;
        let mut out = [0; 32];
        out.copy_from_slice(&bytes);
        Ok(Some(out))
    }

    /// The password, from its file or the config.
    pub fn read_password(&self) -> Result<String, String> {
        match (&self.password_file, &self.password) {
            (Some(f), _) => std::fs::read_to_string(f)
                .map(|t| t.lines().next().unwrap_or("").trim().to_string())
                .map_err(|e| format!("{}: {e}", f.display())),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err("api: password_file (or password) required".into()),
        }
    }
}
