//! The daemon's configuration: serde structs with defaults, then an explicit [`Config::validate`]
//! that reports *every* problem with its path, so an installer fixes a file in one pass.
use crate::core::{Direction, Mode};
use crate::profiles::{Profiles, Role, Transport};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(default)]
    pub device_broker: DeviceBroker,
    pub uplink: Uplink,
    #[serde(default)]
    pub store: Store,
    #[serde(default)]
    pub rules: Rules,
    #[serde(default)]
    pub registry: Registry,
    #[serde(default)]
    pub profiles: ProfilesConfig,
    #[serde(default)]
    pub lanes: Vec<Lane>,
    #[serde(default)]
    pub commands: CommandsConfig,
}

/// Commands from above: the keys trusted to sign them, and what each may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// A command issued further ahead of this gateway's clock than this is refused.
    #[serde(default = "default_max_skew_s")]
    pub max_skew_s: u64,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            max_skew_s: default_max_skew_s(),
            keys: Vec::new(),
        }
    }
}

fn default_max_skew_s() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    /// Ed25519 public key, 64 hex digits (`gatehouse keygen` prints one).
    pub public_key: String,
    /// The levels of the tree it may address: gateway, community, street, district.
    pub levels: Vec<crate::commands::Level>,
    /// What it may send: set_mode, remote_open, ping.
    pub kinds: Vec<crate::commands::Kind>,
}

/// Where this gateway sits in the administrative tree (DESIGN.md §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub id: String,
    /// 4 digits, e.g. 3301.
    pub city: String,
    /// 6 digits, e.g. 330106.
    pub district: String,
    /// 9 digits, e.g. 330106001.
    pub street: String,
    /// 12 digits, e.g. 330106001001.
    pub community: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside the daemon.
    Embedded,
    /// A broker on the box or the LAN (e.g. mosquitto), given by `url`.
    External,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBroker {
    #[serde(default = "default_broker_mode")]
    pub mode: BrokerMode,
    /// Embedded: where the broker listens for devices.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// External: `mqtt://host:port`.
    pub url: Option<String>,
    /// Our client id on the device-side broker; stable, so the broker keeps our session and
    /// redelivers events we had not acknowledged before a crash.
    #[serde(default = "default_device_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Default for DeviceBroker {
    fn default() -> Self {
        Self {
            mode: default_broker_mode(),
            listen: default_listen(),
            url: None,
            client_id: default_device_client_id(),
            username: None,
            password: None,
        }
    }
}

fn default_broker_mode() -> BrokerMode {
    BrokerMode::Embedded
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_device_client_id() -> String {
    "gatehouse-devices".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    #[serde(default = "default_store_dir")]
    pub dir: PathBuf,
    /// A group commit closes this long after its first record (or when full).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// A group commit closes at this many records.
    #[serde(default = "default_commit_max")]
    pub commit_max: usize,
    /// The outbox never holds more than this (MiB); past it the oldest records are evicted,
    /// routine first, then passage decisions, alarms last.
    #[serde(default = "default_max_mib")]
    pub max_mib: u64,
    /// Hours a record may wait for the uplink, by class.
    #[serde(default = "default_ttl_routine_h")]
    pub ttl_routine_h: u64,
    #[serde(default = "default_ttl_h")]
    pub ttl_passage_h: u64,
    #[serde(default = "default_ttl_h")]
    pub ttl_alarm_h: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            dir: default_store_dir(),
            commit_interval_ms: default_commit_interval_ms(),
            commit_max: default_commit_max(),
            max_mib: default_max_mib(),
            ttl_routine_h: default_ttl_routine_h(),
            ttl_passage_h: default_ttl_h(),
            ttl_alarm_h: default_ttl_h(),
        }
    }
}

fn default_max_mib() -> u64 {
    256
}
fn default_ttl_routine_h() -> u64 {
    24
}
/// Local journals are kept 30 days (DESIGN.md §6); so is what waits for the uplink.
fn default_ttl_h() -> u64 {
    30 * 24
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("/var/lib/gatehouse")
}
fn default_commit_interval_ms() -> u64 {
    10
}
fn default_commit_max() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// A reading at or above this (°C, after calibration) is a fever.
    #[serde(default = "default_fever_threshold")]
    pub fever_threshold_c: f64,
    /// Readings outside [min, max] are implausible: measure again, not fever.
    #[serde(default = "default_plausible_min")]
    pub plausible_min_c: f64,
    #[serde(default = "default_plausible_max")]
    pub plausible_max_c: f64,
    /// The mode at first start: normal, epidemic, lockdown or fire. Once running, the mode is
    /// kept in the store and changed with `gatehouse mode` (or from upstream); this value applies
    /// again only when it changes in this file.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// On lanes with a separate thermal station: a reading this long before an identification
    /// joins it…
    #[serde(default = "default_join_before_ms")]
    pub join_before_ms: u64,
    /// …and where a temperature is required, the decision waits this long after for one.
    #[serde(default = "default_join_after_ms")]
    pub join_after_ms: u64,
    /// Lockdown: a household may go out this many times…
    #[serde(default = "default_quota_outings")]
    pub quota_outings: u32,
    /// …per this many days (counted on exit).
    #[serde(default = "default_quota_days")]
    pub quota_days: u32,
    /// Lockdown: an outing longer than this raises an alarm.
    #[serde(default = "default_overdue_h")]
    pub overdue_h: u32,
    /// Plate reads below this confidence (1–100) are denied `low_confidence` and the guard is
    /// alerted.
    #[serde(default = "default_min_plate_confidence")]
    pub min_plate_confidence: u8,
    /// A barrier's arm must reach its limit switch this long after a command, or the outcome is
    /// `uncertain` (an alarm; never retried).
    #[serde(default = "default_barrier_confirm_ms")]
    pub barrier_confirm_ms: u64,
    /// Modbus devices are polled this often…
    #[serde(default = "default_modbus_poll_ms")]
    pub modbus_poll_ms: u64,
    /// …and a request not answered in this long is a miss (three in a row: offline).
    #[serde(default = "default_modbus_timeout_ms")]
    pub modbus_timeout_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            fever_threshold_c: default_fever_threshold(),
            plausible_min_c: default_plausible_min(),
            plausible_max_c: default_plausible_max(),
            mode: default_mode(),
            join_before_ms: default_join_before_ms(),
            join_after_ms: default_join_after_ms(),
            quota_outings: default_quota_outings(),
            quota_days: default_quota_days(),
            overdue_h: default_overdue_h(),
            min_plate_confidence: default_min_plate_confidence(),
            barrier_confirm_ms: default_barrier_confirm_ms(),
            modbus_poll_ms: default_modbus_poll_ms(),
            modbus_timeout_ms: default_modbus_timeout_ms(),
        }
    }
}

fn default_mode() -> Mode {
    Mode::Normal
}
fn default_join_before_ms() -> u64 {
    3000
}
fn default_join_after_ms() -> u64 {
    1500
}
/// One member of each household out every two days: the common lockdown rule.
fn default_quota_outings() -> u32 {
    1
}
fn default_quota_days() -> u32 {
    2
}
fn default_overdue_h() -> u32 {
    4
}
/// Arms take 1.5–3 s; a little more than that.
fn default_barrier_confirm_ms() -> u64 {
    4000
}
fn default_modbus_poll_ms() -> u64 {
    100
}
fn default_modbus_timeout_ms() -> u64 {
    150
}
/// Good reads score 90 and up on the cameras we know; below 80 a human should look.
fn default_min_plate_confidence() -> u8 {
    80
}

fn default_fever_threshold() -> f64 {
    37.3
}
fn default_plausible_min() -> f64 {
    30.0
}
fn default_plausible_max() -> f64 {
    43.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Residents to import at start (`.csv` or `.jsonl`); re-imported only when the file changes.
    pub import: Option<PathBuf>,
    /// A list with more residents than this is refused (and the stored one kept): it is a list
    /// meant for somewhere bigger than one estate, and would take the box's memory.
    #[serde(default = "default_max_residents")]
    pub max_residents: usize,
    /// Visitor passes to import at start (`.csv`: pass_id, host_household, credentials, plates,
    /// valid_from, valid_until, uses).
    pub passes: Option<PathBuf>,
    /// Vehicle plates to import at start (`.csv`: plate, kind, household, valid_until,
    /// lockdown_allowed).
    pub plates: Option<PathBuf>,
    /// Household statuses to import at start (`.csv`: household, status), for quarantined
    /// households.
    pub households: Option<PathBuf>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            import: None,
            max_residents: default_max_residents(),
            passes: None,
            plates: None,
            households: None,
        }
    }
}

fn default_max_residents() -> usize {
    300_000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesConfig {
    /// Extra device profiles (`*.toml`, searched recursively). They add to the built-in ones and
    /// replace a built-in profile of the same name.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    pub id: String,
    /// Overrides `rules.fever_threshold_c` for this lane.
    pub fever_threshold_c: Option<f64>,
    /// Which way its identifiers let people through: in (default) or out.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// Refuse entry to a subject already inside until it has exited.
    #[serde(default)]
    pub anti_passback: bool,
    /// Vehicle lanes: close the barrier once the vehicle has cleared the safety loop.
    #[serde(default)]
    pub auto_close: bool,
    #[serde(default)]
    pub devices: Vec<Device>,
}

fn default_direction() -> Direction {
    Direction::In
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: String,
    pub role: Role,
    pub profile: String,
    /// Added to every temperature this device reports, °C.
    #[serde(default)]
    pub calibration_offset_c: f64,
    /// Overrides the profile's event topic (MQTT devices).
    pub event_topic: Option<String>,
    /// Overrides the profile's command topic (MQTT devices).
    pub command_topic: Option<String>,
    /// Overrides the lane's direction (an exit reader on a turnstile shared with the entry).
    pub direction: Option<Direction>,
    /// Serial devices: the port. Devices on one RS-485 line share it (same settings).
    pub serial: Option<SerialSettings>,
    /// Serial devices: the bus address (for profiles with an address field); Modbus devices:
    /// the unit (slave) id.
    pub address: Option<u64>,
    /// Modbus devices: `{ tcp = "host:port" }` or `{ serial = { path = … } }` (RTU; devices on one
    /// line share it).
    pub modbus: Option<ModbusConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    pub tcp: Option<String>,
    pub serial: Option<SerialSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    pub path: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

fn default_baud() -> u32 {
    9600
}
fn default_stop_bits() -> u8 {
    1
}
fn default_data_bits() -> u8 {
    8
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`, the only URL shapes the config takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not a URL (expected mqtt://host:port)"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("unknown scheme {other:?} (expected mqtt or mqtts)")),
        };
        let hostport = rest.trim_end_matches('/');
        if hostport.contains('@') || hostport.contains('/') {
            return Err(format!(
                "{s:?}: give only scheme://host:port (credentials go in username/password)"
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port {p:?} in {s:?}"))?,
            ),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("no host in {s:?}"));
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl Config {
    /// Reads and parses a config file; does not validate (see [`Config::validate`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Relative paths in a config file are relative to that file, not to the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.store.dir);
        for p in [
            &mut self.registry.import,
            &mut self.registry.passes,
            &mut self.registry.plates,
            &mut self.registry.households,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(p) = self.profiles.dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.uplink.ca_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.uplink.password_file.as_mut() {
            fix(p);
        }
        for p in [&mut self.uplink.client_cert, &mut self.uplink.client_key]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
    }

    /// Every problem in the config, each with its path. Empty means valid.
    pub fn problems(&self, profiles: &Profiles) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |path: String, message: String| out.push(Problem { path, message });

        let g = &self.gateway;
        if !is_topic_safe(&g.id) {
            bad(
                "gateway.id".into(),
                format!("{:?} must be non-empty letters, digits, '-' or '_'", g.id),
            );
        }
        let codes = [
            ("gateway.city", &g.city, 4, None),
            ("gateway.district", &g.district, 6, Some(&g.city)),
            ("gateway.street", &g.street, 9, Some(&g.district)),
            ("gateway.community", &g.community, 12, Some(&g.street)),
        ];
        for (path, code, len, parent) in codes {
            if code.len() != len || !code.bytes().all(|b| b.is_ascii_digit()) {
                bad(path.into(), format!("{code:?} must be {len} digits"));
            } else if let Some(parent) = parent {
                if !code.starts_with(parent.as_str()) {
                    bad(
                        path.into(),
                        format!("{code:?} does not lie under {parent:?}"),
                    );
                }
            }
        }

        let b = &self.device_broker;
        match (b.mode, &b.url) {
            (BrokerMode::External, None) => bad(
                "device_broker.url".into(),
                "required when mode = \"external\"".into(),
            ),
            (_, Some(url)) => {
                if let Err(e) = BrokerUrl::parse(url) {
                    bad("device_broker.url".into(), e);
                }
            }
            _ => {}
        }

        match BrokerUrl::parse(&self.uplink.url) {
            Err(e) => bad("uplink.url".into(), e),
            Ok(u) if !u.tls && self.uplink.ca_file.is_some() => bad(
                "uplink.ca_file".into(),
                "given, but uplink.url is not mqtts://".into(),
            ),
            Ok(_) => {}
        }
        for (path, file) in [
            ("uplink.ca_file", &self.uplink.ca_file),
            ("uplink.password_file", &self.uplink.password_file),
            ("uplink.client_cert", &self.uplink.client_cert),
            ("uplink.client_key", &self.uplink.client_key),
            ("registry.import", &self.registry.import),
            ("registry.passes", &self.registry.passes),
            ("registry.plates", &self.registry.plates),
            ("registry.households", &self.registry.households),
        ] {
            if let Some(f) = file {
                if !f.is_file() {
                    bad(path.into(), format!("{} does not exist", f.display()));
                }
            }
        }
        let u = &self.uplink;
        if u.client_cert.is_some() != u.client_key.is_some() {
            bad(
                "uplink.client_cert".into(),
                "client_cert and client_key go together".into(),
            );
        }
        if u.security == Security::Production {
            if !u.url.starts_with("mqtts://") && !u.url.starts_with("ssl://") {
                bad(
                    "uplink.url".into(),
                    "security = \"production\" needs mqtts:// (TLS): plain mqtt would carry the gate's records and commands in clear".into(),
                );
            }
            let has_password = u.password.is_some() || u.password_file.is_some();
            if u.username.is_none() && u.client_cert.is_none() {
                bad(
                    "uplink".into(),
                    "security = \"production\" refuses an anonymous uplink: give username + password_file, or client_cert + client_key".into(),
                );
            } else if u.username.is_some() && !has_password && u.client_cert.is_none() {
                bad(
                    "uplink.password_file".into(),
                    "a username without a password is anonymous in all but name".into(),
                );
            }
            if u.password.is_some() {
                bad(
                    "uplink.password".into(),
                    "security = \"production\": keep the password out of the config, in password_file (0600)".into(),
                );
            }
            for (path, file) in [
                ("uplink.client_key", &u.client_key),
                ("uplink.password_file", &u.password_file),
            ] {
                if let Some(f) = file {
                    if let Some(mode) = private_file_mode(f) {
                        bad(
                            path.into(),
                            format!(
                                "{} is readable by others (mode {mode:o}); chmod 600 it",
                                f.display()
                            ),
                        );
                    }
                }
            }
        }
        if self.uplink.batch_max == 0 || self.uplink.window == 0 || self.uplink.replay_rate == 0 {
            bad(
                "uplink".into(),
                "batch_max, window and replay_rate must be at least 1".into(),
            );
        }
        if self.store.commit_max == 0 {
            bad("store.commit_max".into(), "must be at least 1".into());
        }
        if self.store.max_mib == 0 {
            bad("store.max_mib".into(), "must be at least 1".into());
        }

        let r = &self.rules;
        if r.plausible_min_c >= r.plausible_max_c {
            bad(
                "rules.plausible_min_c".into(),
                format!(
                    "{} must be below plausible_max_c ({})",
                    r.plausible_min_c, r.plausible_max_c
                ),
            );
        }
        let threshold_ok =
            |t: f64| t.is_finite() && t > r.plausible_min_c && t <= r.plausible_max_c;
        if !threshold_ok(r.fever_threshold_c) {
            bad(
                "rules.fever_threshold_c".into(),
                format!(
                    "{} lies outside the plausible range {}–{} °C",
                    r.fever_threshold_c, r.plausible_min_c, r.plausible_max_c
                ),
            );
        }

        if r.quota_outings == 0 || r.quota_days == 0 || r.overdue_h == 0 {
            bad(
                "rules".into(),
                "quota_outings, quota_days and overdue_h must be at least 1".into(),
            );
        }
        if r.join_before_ms > 60_000 || r.join_after_ms > 10_000 {
            bad(
                "rules".into(),
                "join_before_ms is at most 60000 and join_after_ms at most 10000 (a person waits at the gate)".into(),
            );
        }

        for (i, k) in self.commands.keys.iter().enumerate() {
            if let Err(e) = crate::commands::parse_public_key(&k.public_key) {
                bad(format!("commands.keys[{i}].public_key"), e);
            }
            if k.levels.is_empty() || k.kinds.is_empty() {
                bad(
                    format!("commands.keys[{i}]"),
                    "levels and kinds must name at least one each".into(),
                );
            }
        }

        let mut lane_ids = HashSet::new();
        let mut device_ids = HashSet::new();
        let mut ports: std::collections::HashMap<&Path, &SerialSettings> = Default::default();
        for (li, lane) in self.lanes.iter().enumerate() {
            let lp = format!("lanes[{li}]");
            if !is_topic_safe(&lane.id) {
                bad(
                    format!("{lp}.id"),
                    format!(
                        "{:?} must be non-empty letters, digits, '-' or '_'",
                        lane.id
                    ),
                );
            } else if !lane_ids.insert(lane.id.as_str()) {
                bad(
                    format!("{lp}.id"),
                    format!("duplicate lane id {:?}", lane.id),
                );
            }
            if let Some(t) = lane.fever_threshold_c {
                if !threshold_ok(t) {
                    bad(
                        format!("{lp}.fever_threshold_c"),
                        format!("{t} lies outside the plausible range"),
                    );
                }
            }
            let mut gates = 0;
            let mut identifies = false;
            for (di, d) in lane.devices.iter().enumerate() {
                let dp = format!("{lp}.devices[{di}]");
                if !is_topic_safe(&d.id) {
                    bad(
                        format!("{dp}.id"),
                        format!("{:?} must be non-empty letters, digits, '-' or '_'", d.id),
                    );
                } else if !device_ids.insert(d.id.as_str()) {
                    bad(
                        format!("{dp}.id"),
                        format!("duplicate device id {:?}", d.id),
                    );
                }
                match profiles.get(&d.profile) {
                    None => bad(
                        format!("{dp}.profile"),
                        format!(
                            "unknown profile {:?} (known: {})",
                            d.profile,
                            profiles.names().join(", ")
                        ),
                    ),
                    Some(p) if !p.roles.contains(&d.role) => bad(
                        format!("{dp}.role"),
                        format!(
                            "profile {:?} cannot act as {:?} (it can be: {})",
                            d.profile,
                            d.role,
                            p.roles
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                    Some(p) => match (p.transport, &d.serial) {
                        (Transport::Serial, None) => bad(
                            format!("{dp}.serial"),
                            format!(
                                "profile {:?} is serial: give serial = {{ path = \"/dev/ttyS1\" }}",
                                d.profile
                            ),
                        ),
                        (Transport::Mqtt | Transport::Modbus, Some(_)) => bad(
                            format!("{dp}.serial"),
                            format!("profile {:?} is not a serial-frame device (modbus devices take modbus = {{ … }})", d.profile),
                        ),
                        _ => match (p.transport, &d.modbus) {
                            (Transport::Modbus, None) => bad(
                                format!("{dp}.modbus"),
                                format!("profile {:?} is Modbus: give modbus = {{ tcp = \"host:502\" }} or {{ serial = {{ path = … }} }}", d.profile),
                            ),
                            (Transport::Modbus, Some(m)) if m.tcp.is_some() == m.serial.is_some() => bad(
                                format!("{dp}.modbus"),
                                "give exactly one of tcp or serial".into(),
                            ),
                            (Transport::Modbus, Some(_)) if !d.address.is_some_and(|a| (1..=247).contains(&a)) => bad(
                                format!("{dp}.address"),
                                "a Modbus device needs its unit id, 1–247".into(),
                            ),
                            (Transport::Mqtt | Transport::Serial, Some(_)) => bad(
                                format!("{dp}.modbus"),
                                format!("profile {:?} is not a Modbus device", d.profile),
                            ),
                            _ => {}
                        },
                    },
                }
                if let Some(sp) = &d.serial {
                    if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&sp.baud)
                        || !(7..=8).contains(&sp.data_bits)
                        || !(1..=2).contains(&sp.stop_bits)
                    {
                        bad(
                            format!("{dp}.serial"),
                            "baud must be a standard rate (1200–115200), data_bits 7 or 8, stop_bits 1 or 2".into(),
                        );
                    }
                    match ports.insert(&sp.path, sp) {
                        Some(other) if other != sp => bad(
                            format!("{dp}.serial"),
                            format!(
                                "{} is shared with another device under different settings",
                                sp.path.display()
                            ),
                        ),
                        _ => {}
                    }
                }
                if !(d.calibration_offset_c.is_finite() && d.calibration_offset_c.abs() <= 3.0) {
                    bad(
                        format!("{dp}.calibration_offset_c"),
                        format!("{} is not within ±3 °C", d.calibration_offset_c),
                    );
                }
                gates += usize::from(d.role.is_gate());
                identifies |=
                    matches!(d.role, Role::Identifier | Role::Thermal | Role::PlateCamera);
            }
            // A plate camera that drives the barrier from its own output (no other gate given).
            let camera_gate = lane.devices.iter().any(|d| {
                d.role == Role::PlateCamera
                    && profiles
                        .get(&d.profile)
                        .is_some_and(|p| p.roles.contains(&Role::Barrier) && p.command.is_some())
            });
            if gates == 0 && camera_gate {
                gates = 1;
            }
            if identifies && gates != 1 {
                bad(
                    format!("{lp}.devices"),
                    format!("a lane that identifies people needs exactly one gate (turnstile or barrier), found {gates}"),
                );
            }
        }
        out
    }

    /// [`Config::problems`] as a `Result`.
    pub fn validate(&self, profiles: &Profiles) -> Result<(), ConfigError> {
        let problems = self.problems(profiles);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// `gh/v1/{city}/{district}/{street}/{community}/{gateway}`; channels hang below it.
    pub fn topic_base(&self) -> String {
        let g = &self.gateway;
        format!(
            "gh/v1/{}/{}/{}/{}/{}",
            g.city, g.district, g.street, g.community, g.id
        )
    }
}

/// The file's mode if group or others may read or write it (a secret that is not private).
fn private_file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Safe inside an MQTT topic level and a file name.
fn is_topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_security_refuses_plain_mqtt_anonymity_and_readable_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("gw.key");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.path().join("gw.pem"), "c").unwrap();
        let text = |uplink: &str| {
            format!(
                "[gateway]\nid = \"gw\"\ncity = \"3301\"\ndistrict = \"330106\"\nstreet = \"330106001\"\ncommunity = \"330106001001\"\n[uplink]\nsecurity = \"production\"\n{uplink}\n"
            )
        };
        let problems = |uplink: &str| -> Vec<String> {
            let path = dir.path().join("g.toml");
            std::fs::write(&path, text(uplink)).unwrap();
            Config::load(&path)
                .unwrap()
                .problems(&Profiles::builtin())
                .iter()
                .map(|p| p.to_string())
                .collect()
        };
        let p = problems("url = \"mqtt://h:1883\"");
        assert!(p.iter().any(|p| p.contains("needs mqtts://")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("anonymous uplink")), "{p:?}");
        let p = problems("url = \"mqtts://h\"\nclient_cert = \"gw.pem\"\nclient_key = \"gw.key\"");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("readable by others (mode 644)"), "{p:?}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            problems("url = \"mqtts://h\"\nclient_cert = \"gw.pem\"\nclient_key = \"gw.key\""),
            Vec::<String>::new()
        );
    }

    #[test]
    fn serial_devices_need_a_port_with_sane_settings_shared_alike() {
        let text = r#"
[gateway]
id = "gw"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"
[uplink]
url = "mqtt://127.0.0.1:1883"
[[lanes]]
id = "l1"
[[lanes.devices]]
id = "face"
role = "identifier"
profile = "rs485-face-id"
[[lanes.devices]]
id = "card"
role = "identifier"
profile = "rs485-wiegand-reader"
serial = { path = "/dev/ttyS1", baud = 9601 }
[[lanes.devices]]
id = "card2"
role = "identifier"
profile = "rs485-wiegand-reader"
serial = { path = "/dev/ttyS1", baud = 9600 }
[[lanes.devices]]
id = "gate"
role = "turnstile"
profile = "generic-gate-mqtt"
serial = { path = "/dev/ttyS2" }
"#;
        let c: Config = toml::from_str(text).unwrap();
        let problems: Vec<String> = c
            .problems(&Profiles::builtin())
            .iter()
            .map(|p| p.to_string())
            .collect();
        let expect = [
            "lanes[0].devices[0].serial: profile \"rs485-face-id\" is serial",
            "lanes[0].devices[1].serial: baud must be a standard rate",
            "lanes[0].devices[2].serial: /dev/ttyS1 is shared with another device under different settings",
            "lanes[0].devices[3].serial: profile \"generic-gate-mqtt\" is not a serial-frame device",
        ];
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
        for (p, e) in problems.iter().zip(expect) {
            assert!(p.starts_with(e), "{p:?} should start with {e:?}");
        }
    }

    #[test]
    fn broker_urls_parse_with_default_ports_and_credentials() {
        assert_eq!(
            BrokerUrl::parse("mqtts://iot.example.com").unwrap(),
            BrokerUrl {
                tls: true,
                host: "iot.example.com".into(),
                port: 8883
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:2883").unwrap().port,
            2883
        );
        assert!(BrokerUrl::parse("http://x:1").is_err());
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
        assert!(BrokerUrl::parse("localhost:1883").is_err());
        assert!(BrokerUrl::parse("mqtt://u:p@h:1").is_err());
    }
}
