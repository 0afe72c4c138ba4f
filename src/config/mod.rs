//! The daemon's configuration: serde structs with defaults, then an explicit [`Config::validate`]
//! that reports *every* problem with its path, so an installer fixes a file in one pass.
use crate::decision::Role;
use crate::decision::{Direction, Mode};
use crate::mqtt_client::BrokerUrl;
pub use crate::problem::Problem;

pub mod device_http;
mod operations;
pub use operations::{ClockSection, MetricsSection};
mod device_side;
pub use device_http::{DeviceApiSection, DeviceHttpSection, PushMode};
pub mod secrets;
mod validate;
use serde::Deserialize;
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub device_broker: DeviceBrokerSection,
    #[serde(default)]
    pub device_http: DeviceHttpSection,
    pub uplink: UplinkSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub rules: RulesSection,
    #[serde(default)]
    pub registry: RegistrySection,
    #[serde(default)]
    pub profiles: ProfilesSection,
    #[serde(default)]
    pub lanes: Vec<LaneSection>,
    /// The TOML section keeps its name `[commands]`; in the code these are "orders from above",
    /// so that "command" means only what goes to a gate.
    #[serde(default, rename = "commands")]
    pub orders: OrdersSection,
    #[serde(default)]
    pub clock: ClockSection,
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// Signed orders from above (`[commands]`): the keys trusted to sign them, and what each may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersSection {
    /// A command issued further ahead of this gateway's clock than this is refused.
    #[serde(default = "default_max_skew_s")]
    pub max_skew_s: u64,
    /// An order valid for longer than this, or issued longer ago, is refused; so replay ids are
    /// kept at most this long.
    #[serde(default = "default_max_lifetime_s")]
    pub max_lifetime_s: u64,
    /// A list snapshot or delta whose version is further ahead of the gateway's than this is
    /// refused (a version near the top of the range would freeze sync for good).
    #[serde(default = "default_max_version_step")]
    pub max_version_step: u64,
    /// Deprecated: `[clock] trusted` (what it meant before the clock had a section of its own);
    /// still read, so a config written for an older gatehouse keeps starting after an upgrade.
    #[serde(default)]
    pub trust_clock: bool,
    #[serde(default)]
    pub keys: Vec<KeySection>,
}

impl Default for OrdersSection {
    fn default() -> Self {
        Self {
            max_skew_s: default_max_skew_s(),
            max_lifetime_s: default_max_lifetime_s(),
            max_version_step: default_max_version_step(),
            trust_clock: false,
            keys: Vec::new(),
        }
    }
}

fn default_max_skew_s() -> u64 {
    60
}

fn default_max_lifetime_s() -> u64 {
    24 * 3600
}

fn default_max_version_step() -> u64 {
    1_000_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub id: String,
    /// Ed25519 public key, 64 hex digits (`gatehouse keygen` prints one).
    pub public_key: String,
    /// The levels of the tree it may address: gateway, community, street, district.
    pub levels: Vec<crate::orders::Level>,
    /// What it may send: set_mode, fire, remote_open, registry, set_threshold, ping. `fire` is
    /// apart from `set_mode`: give it to the company's emergency key only.
    pub kinds: Vec<crate::orders::Kind>,
}

/// Where this gateway sits in the administrative tree (docs/ARCHITECTURE.md, "Contracts").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
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

impl GatewaySection {
    /// This gateway's place in the uplink's topic tree.
    pub fn path(&self) -> gatehouse_contract::topics::GatewayPath {
        gatehouse_contract::topics::GatewayPath {
            city: self.city.clone(),
            district: self.district.clone(),
            street: self.street.clone(),
            community: self.community.clone(),
            gateway: self.id.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// gatehouse takes the devices' MQTT connections itself (the device endpoint): each device
    /// with its own identity, bound to its topics. `embedded` is the old name.
    #[serde(alias = "embedded")]
    Endpoint,
    /// A broker on the box or the LAN (e.g. mosquitto), given by `url`.
    External,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBrokerSection {
    #[serde(default = "default_broker_mode")]
    pub mode: BrokerMode,
    /// Endpoint: where devices connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Endpoint: device passwords, one `DEVICE_ID PASSWORD` per line; readable by its owner only.
    /// (A device may instead have `password_hash` in its `[[lanes.devices]]` entry.)
    pub secrets_file: Option<PathBuf>,
    /// Endpoint: sockets not yet authenticated, in all and from one address; and the time a
    /// socket has to send its CONNECT.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated: usize,
    #[serde(default = "default_per_address")]
    pub max_per_address: usize,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Endpoint: a device's QoS 1 messages awaiting their decision's commit, by count and bytes;
    /// past either its socket is not read until acks go out.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    #[serde(default = "default_max_inflight_kib")]
    pub max_inflight_kib: usize,
    /// Endpoint over TLS as well, on this address (e.g. `0.0.0.0:8883`), with our certificate
    /// and key (PEM). With `client_ca` every device there must present a certificate that CA
    /// signed, naming its device id (as a DNS subject alternative name): the certificate is then
    /// its credential, and a password is not asked for.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    /// External: `mqtt://host:port`.
    pub url: Option<String>,
    /// Our client id on the device-side broker; stable, so the broker keeps our session and
    /// redelivers events we had not acknowledged before a crash.
    #[serde(default = "default_device_client_id")]
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// External: read the password from this file instead (first line; 0600).
    pub password_file: Option<PathBuf>,
    /// External over `mqtts://`: the CA to trust (the system's roots without it) and, for mutual
    /// TLS, our certificate and key (PEM). `mqtts://` is TLS or a start error, never plain text.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Default for DeviceBrokerSection {
    fn default() -> Self {
        Self {
            mode: default_broker_mode(),
            listen: default_listen(),
            secrets_file: None,
            max_unauthenticated: default_max_unauthenticated(),
            max_per_address: default_per_address(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_inflight: default_max_inflight(),
            max_inflight_kib: default_max_inflight_kib(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            url: None,
            client_id: default_device_client_id(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

fn default_broker_mode() -> BrokerMode {
    BrokerMode::Endpoint
}
fn default_max_unauthenticated() -> usize {
    64
}
fn default_per_address() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_inflight() -> usize {
    256
}
fn default_max_inflight_kib() -> usize {
    4096
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_device_client_id() -> String {
    "gatehouse-devices".into()
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default = "default_store_dir")]
    pub dir: PathBuf,
    /// A group commit closes this long after its first record (or, within 10 ms, when full).
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// A group commit closes at this many records (seen within 10 ms).
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
    /// After commits have failed this long (s), the box goes on from memory (degraded mode):
    /// devices acknowledged without the disk, records kept in memory until the uplink has them
    /// or the store works again. 0: at the first failure.
    #[serde(default = "default_degraded_after_s")]
    pub degraded_after_s: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            dir: default_store_dir(),
            commit_interval_ms: default_commit_interval_ms(),
            commit_max: default_commit_max(),
            max_mib: default_max_mib(),
            ttl_routine_h: default_ttl_routine_h(),
            ttl_passage_h: default_ttl_h(),
            ttl_alarm_h: default_ttl_h(),
            degraded_after_s: default_degraded_after_s(),
        }
    }
}

fn default_max_mib() -> u64 {
    256
}
fn default_ttl_routine_h() -> u64 {
    24
}
/// Local journals are kept 30 days (docs/ARCHITECTURE.md, "Contracts"); so is what waits for the uplink.
fn default_ttl_h() -> u64 {
    30 * 24
}

/// Long enough for a transient error (a full disk's eviction, a reopen) to pass; short enough
/// that devices' in-flight windows and the appends queue do not fill at a busy gate.
fn default_degraded_after_s() -> u64 {
    5
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
pub struct RulesSection {
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
    /// An event older than this, by the device's clock as gatehouse learned it, is recorded but
    /// never opens a gate (`stale_event`): a terminal re-uploading what it stored while offline.
    /// 0 turns the age check off (the device's own stored marker still counts).
    #[serde(default = "default_stale_event_s")]
    pub stale_event_s: u64,
    /// Modbus devices are polled this often…
    #[serde(default = "default_modbus_poll_ms")]
    pub modbus_poll_ms: u64,
    /// …and a request not answered in this long is a miss (three in a row: offline).
    #[serde(default = "default_modbus_timeout_ms")]
    pub modbus_timeout_ms: u64,
}

impl Default for RulesSection {
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
            stale_event_s: default_stale_event_s(),
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
fn default_stale_event_s() -> u64 {
    30
}
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
pub struct RegistrySection {
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

impl Default for RegistrySection {
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
pub struct ProfilesSection {
    /// Extra device profiles (`*.toml`, searched recursively). They add to the built-in ones and
    /// replace a built-in profile of the same name.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSection {
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
    pub devices: Vec<DeviceSection>,
}

fn default_direction() -> Direction {
    Direction::In
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
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
    /// MQTT devices on the endpoint: `sha256:SALT:HASH` of the device's password (`gatehouse
    /// device-secret` prints one), instead of a line in `device_broker.secrets_file`.
    pub password_hash: Option<String>,
    /// Overrides the lane's direction (an exit reader on a turnstile shared with the entry).
    pub direction: Option<Direction>,
    /// Serial devices: the port. Devices on one RS-485 line share it (same settings).
    pub serial: Option<SerialSettings>,
    /// Serial devices: the bus address (for profiles with an address field); Modbus devices:
    /// the unit (slave) id.
    pub address: Option<u64>,
    /// Modbus devices: `{ tcp = "host:port" }` or `{ serial = { path = … } }` (RTU; devices on one
    /// line share it).
    pub modbus: Option<ModbusSection>,
    /// HTTP devices: pushes are taken only from this address.
    pub from: Option<std::net::IpAddr>,
    /// HTTP devices with a vendor API (Hikvision ISAPI): where gatehouse reaches the device.
    pub api: Option<DeviceApiSection>,
    /// ZKTeco ADMS devices: the serial number it identifies itself by, and the explicit opt-in
    /// to a protocol without authentication (`adms_open = true`; `from` is then required).
    pub adms_sn: Option<String>,
    #[serde(default)]
    pub adms_open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSection {
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
        for p in [
            &mut self.device_broker.ca_file,
            &mut self.device_broker.secrets_file,
            &mut self.device_broker.tls_cert,
            &mut self.device_broker.tls_key,
            &mut self.device_broker.client_ca,
            &mut self.device_broker.password_file,
            &mut self.device_broker.client_cert,
            &mut self.device_broker.client_key,
        ]
        .into_iter()
        .flatten()
        {
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
}

/// A small valid config for the unit tests of the parts built from one.
#[cfg(test)]
pub(crate) mod tests_support {
    pub const MINIMAL: &str = r#"
[gateway]
id = "gw-1"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"

[uplink]
url = "mqtt://127.0.0.1:1883"

[store]
dir = "store"

[[lanes]]
id = "east-1"

[[lanes.devices]]
id = "thermal-1"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "gate-1"
role = "turnstile"
profile = "generic-gate-mqtt"
"#;
}

#[cfg(test)]
mod tests;
