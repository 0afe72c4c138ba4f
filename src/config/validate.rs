//! [`Config::problems`]: every problem of a config, with its path, in one pass — so an
//! installer fixes the file once, and a config error stops the start before anything runs. Each
//! section checks itself beside its definition (`problems(&self, path, out)`); this is the one
//! place that calls them, in order.
use super::device_side::DeviceSide;
use super::lanes::Seen;
use super::problems::Problems;
use super::{Config, ConfigError, Security};
use crate::device::Profiles;
use crate::problem::Problem;

impl Config {
    /// Every problem in the config, each with its path. Empty means valid.
    pub fn problems(&self, profiles: &Profiles) -> Vec<Problem> {
        self.check(profiles).0
    }

    /// The problems (it does not start) and the warnings (it starts, but should not at a real
    /// gate: a device anyone on the LAN can be).
    pub fn check(&self, profiles: &Profiles) -> (Vec<Problem>, Vec<Problem>) {
        let mut out = Problems::default();
        self.gateway.problems("gateway", &mut out);
        self.metrics.problems("metrics", &mut out);
        let production = self.uplink.security == Security::Production;
        let secrets = self
            .device_broker
            .problems("device_broker", production, &mut out);
        self.device_http.problems("device_http", &mut out);
        self.uplink.problems("uplink", &mut out);
        self.registry.problems("registry", &mut out);
        self.store.problems("store", &mut out);
        self.rules.problems("rules", &mut out);
        self.orders.problems("commands", &mut out);
        self.console.problems("console", production, &mut out);
        let mut seen = Seen::default();
        // What spans sections: each device against the device side and the security level.
        let mut side = DeviceSide::new(self, secrets);
        for (i, lane) in self.lanes.iter().enumerate() {
            let path = format!("lanes[{i}]");
            lane.problems(&path, profiles, &self.rules, &mut seen, &mut out);
            for (j, d) in lane.devices.iter().enumerate() {
                side.device(&format!("{path}.devices[{j}]"), lane, d, profiles, &mut out);
            }
        }
        side.finish(&self.lanes, &mut out);
        (out.found, out.warnings)
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
}
