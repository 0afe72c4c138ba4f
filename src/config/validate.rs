//! [`Config::problems`]: every problem of a config, with its path, in one pass — so an
//! installer fixes the file once, and a config error stops the start before anything runs.
use super::{BrokerMode, BrokerUrl, Config, ConfigError, Security, SerialSettings};
use crate::decision::policy::threshold_plausible;
use crate::decision::Role;
use crate::device::{Profiles, Transport};
use crate::problem::Problem;
use std::collections::HashSet;
use std::path::Path;

impl Config {
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

        if let Some(at) = self.metrics.listen {
            if !at.ip().is_loopback() && !self.metrics.allow_remote {
                bad(
                    "metrics.listen".into(),
                    format!(
                        "{at} is reachable from outside the box: metrics tell anyone how the gate \
                         is used; bind to 127.0.0.1 or set metrics.allow_remote = true"
                    ),
                );
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
        let threshold_ok = |t: f64| threshold_plausible(t, r.plausible_min_c, r.plausible_max_c);
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

        if self.orders.max_skew_s > 24 * 3600 {
            bad(
                "commands.max_skew_s".into(),
                format!("{} s; at most a day", self.orders.max_skew_s),
            );
        }
        if !(60..=7 * 24 * 3600).contains(&self.orders.max_lifetime_s) {
            bad(
                "commands.max_lifetime_s".into(),
                format!(
                    "{} s; an order may live 60 s to 7 days",
                    self.orders.max_lifetime_s
                ),
            );
        }
        if self.orders.max_version_step == 0 {
            bad(
                "commands.max_version_step".into(),
                "0 would refuse every list sync".into(),
            );
        }
        for (i, k) in self.orders.keys.iter().enumerate() {
            if let Err(e) = crate::orders::parse_public_key(&k.public_key) {
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
                        (Transport::Mqtt | Transport::Modbus | Transport::Http, Some(_)) => bad(
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
                            (Transport::Mqtt | Transport::Serial | Transport::Http, Some(_)) => bad(
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
            // A terminal that drives its own door, opened over its API.
            let terminal_door = lane
                .devices
                .iter()
                .any(|d| d.api.as_ref().is_some_and(|a| a.door.is_some()) || d.adms_sn.is_some());
            if gates == 0 && (camera_gate || terminal_door) {
                gates = 1;
            }
            if identifies && gates != 1 {
                bad(
                    format!("{lp}.devices"),
                    format!("a lane that identifies people needs exactly one gate (turnstile or barrier), found {gates}"),
                );
            }
        }
        out.extend(self.device_side_problems(profiles));
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
}

/// The file's mode if group or others may read or write it (a secret that is not private).
pub(super) fn private_file_mode(path: &Path) -> Option<u32> {
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
