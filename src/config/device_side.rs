//! Checks of the device side: device identities on the endpoint, credentials that would be
//! ignored, and what `security = "production"` refuses there.
use super::secrets::{read_secrets, Secret};
use super::validate::private_file_mode;
use super::{BrokerMode, Config, Security};
use crate::device::{Profiles, Transport};
use crate::problem::Problem;

impl Config {
    /// The MQTT devices of the config, with the path of their entry.
    pub fn mqtt_devices<'a>(
        &'a self,
        profiles: &'a Profiles,
    ) -> impl Iterator<Item = (String, &'a super::DeviceSection)> + 'a {
        self.lanes.iter().enumerate().flat_map(move |(li, lane)| {
            lane.devices.iter().enumerate().filter_map(move |(di, d)| {
                let p = profiles.get(&d.profile)?;
                (p.transport == Transport::Mqtt).then(|| (format!("lanes[{li}].devices[{di}]"), d))
            })
        })
    }

    pub(super) fn device_side_problems(&self, profiles: &Profiles) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |path: &str, message: String| {
            out.push(Problem {
                path: path.into(),
                message,
            })
        };
        let b = &self.device_broker;
        let production = self.uplink.security == Security::Production;
        let endpoint = b.mode == BrokerMode::Endpoint;
        // A credential given where it does nothing is a mistake that looks like security.
        let ignored = |what: &str| format!("{what} is ignored with mode = {:?}", mode_name(b.mode));
        if endpoint {
            for (path, set) in [
                ("device_broker.url", b.url.is_some()),
                ("device_broker.username", b.username.is_some()),
                ("device_broker.password", b.password.is_some()),
                ("device_broker.password_file", b.password_file.is_some()),
                ("device_broker.ca_file", b.ca_file.is_some()),
                ("device_broker.client_cert", b.client_cert.is_some()),
                ("device_broker.client_key", b.client_key.is_some()),
            ] {
                if set {
                    bad(path, ignored(path));
                }
            }
        } else {
            if b.secrets_file.is_some() {
                bad("device_broker.secrets_file", ignored("secrets_file"));
            }
            if b.password.is_some() && b.password_file.is_some() {
                bad(
                    "device_broker.password",
                    "give password or password_file, not both".into(),
                );
            }
            if production && b.password.is_some() {
                bad("device_broker.password", "security = \"production\": keep the password out of the config, in password_file (0600)".into());
            }
            if b.client_cert.is_some() != b.client_key.is_some() {
                bad(
                    "device_broker.client_cert",
                    "client_cert and client_key go together".into(),
                );
            }
        }
        if b.max_unauthenticated == 0
            || b.max_per_address == 0
            || b.max_inflight == 0
            || b.max_inflight_kib == 0
            || b.connect_timeout_ms == 0
        {
            bad(
                "device_broker",
                "max_unauthenticated, max_per_address, max_inflight, max_inflight_kib and connect_timeout_ms must be at least 1".into(),
            );
        }
        let secrets = match &b.secrets_file {
            Some(f) => {
                if let Some(mode) = private_file_mode(f) {
                    let message = format!(
                        "{} is readable by others (mode {mode:o}); chmod 600 it",
                        f.display()
                    );
                    if production {
                        bad("device_broker.secrets_file", message);
                    } else {
                        tracing::warn!("device_broker.secrets_file: {message}");
                    }
                }
                match read_secrets(f) {
                    Ok(s) => s,
                    Err(e) => {
                        bad("device_broker.secrets_file", e);
                        Default::default()
                    }
                }
            }
            None => Default::default(),
        };
        if production {
            for (path, f) in [
                ("device_broker.password_file", &b.password_file),
                ("device_broker.client_key", &b.client_key),
            ] {
                if let Some(mode) = f.as_deref().and_then(private_file_mode) {
                    bad(
                        path,
                        format!("readable by others (mode {mode:o}); chmod 600 it"),
                    );
                }
            }
        }
        let mut known = std::collections::HashSet::new();
        for (dp, d) in self.mqtt_devices(profiles) {
            known.insert(d.id.as_str());
            if let Some(h) = &d.password_hash {
                if !endpoint {
                    bad(&format!("{dp}.password_hash"), ignored("password_hash"));
                } else if let Err(e) = Secret::parse_hash(h) {
                    bad(&format!("{dp}.password_hash"), e);
                } else if secrets.contains_key(&d.id) {
                    bad(
                        &format!("{dp}.password_hash"),
                        format!("{} also has a line in the secrets file: give one", d.id),
                    );
                }
            }
            let has_secret = d.password_hash.is_some() || secrets.contains_key(&d.id);
            if endpoint && production && !has_secret && !b.listen.ip().is_loopback() {
                bad(
                    &format!("{dp}.password_hash"),
                    format!(
                        "security = \"production\" refuses device {} without a secret on a listener reachable from the LAN ({}): give password_hash or a line in device_broker.secrets_file",
                        d.id, b.listen
                    ),
                );
            }
        }
        for (li, lane) in self.lanes.iter().enumerate() {
            for (di, d) in lane.devices.iter().enumerate() {
                if d.password_hash.is_some() && !known.contains(d.id.as_str()) {
                    bad(
                        &format!("lanes[{li}].devices[{di}].password_hash"),
                        "only MQTT devices connect to the endpoint: ignored here".into(),
                    );
                }
            }
        }
        for id in secrets.keys() {
            if !known.contains(id.as_str()) {
                bad(
                    "device_broker.secrets_file",
                    format!("{id} is not an MQTT device of this config: its line would be ignored"),
                );
            }
        }
        out
    }
}

fn mode_name(m: BrokerMode) -> &'static str {
    match m {
        BrokerMode::Endpoint => "endpoint",
        BrokerMode::External => "external",
    }
}
