//! The daemon's configuration: serde structs with defaults, then an explicit [`Config::validate`]
//! that reports *every* problem with its path, so an installer fixes a file in one pass.
pub use crate::problem::Problem;

// One file a section, each with its checks beside it; validate.rs calls them in order.
mod console;
pub mod device_http;
mod device_side;
mod gateway;
mod lanes;
mod operations;
mod orders;
mod problems;
mod registry;
mod rules;
pub mod secrets;
mod store;
mod uplink;
mod validate;
pub use console::ConsoleSection;
pub use device_http::{ApiAuth, DeviceApiSection, DeviceHttpSection, PushMode};
pub use device_side::{BrokerMode, DeviceBrokerSection};
pub use gateway::GatewaySection;
pub use lanes::{DeviceSection, LaneSection, ModbusSection, Parity, SerialSettings};
pub use operations::{ClockSection, MetricsSection};
pub use orders::{KeySection, OrdersSection};
pub use registry::RegistrySection;
pub use rules::RulesSection;
use serde::Deserialize;
use std::path::{Path, PathBuf};
pub use store::StoreSection;
pub use uplink::{Security, UplinkSection};

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
    #[serde(default)]
    pub console: ConsoleSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesSection {
    /// Extra device profiles (`*.toml`, searched recursively). They add to the built-in ones and
    /// replace a built-in profile of the same name.
    pub dir: Option<PathBuf>,
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
        fix(&mut self.console.users);
        for p in [&mut self.console.tls_cert, &mut self.console.tls_key]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
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
