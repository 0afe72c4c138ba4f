//! `[device_broker]`: where the gate's MQTT devices connect (gatehouse's own endpoint or an
//! external broker), and the device side's checks: device identities on the endpoint,
//! credentials that would be ignored, and what `security = "production"` refuses there.
use super::problems::{private_file_mode, Problems};
use super::secrets::{read_secrets, Secret};
use super::{ApiAuth, Config, DeviceHttpSection, DeviceSection, LaneSection, Security};
use crate::device::profile::{Api, Profile};
use crate::device::{Profiles, Transport};
use crate::mqtt_client::BrokerUrl;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

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

impl Config {
    /// The devices of the config whose profile speaks `transport`, with the path of their entry.
    pub fn devices_on<'a>(
        &'a self,
        profiles: &'a Profiles,
        transport: Transport,
    ) -> impl Iterator<Item = (String, &'a super::DeviceSection)> + 'a {
        self.lanes.iter().enumerate().flat_map(move |(li, lane)| {
            lane.devices.iter().enumerate().filter_map(move |(di, d)| {
                let p = profiles.get(&d.profile)?;
                (p.transport == transport).then(|| (format!("lanes[{li}].devices[{di}]"), d))
            })
        })
    }
}

impl DeviceBrokerSection {
    /// The section's own checks, `production` saying what `security = "production"` refuses
    /// too; returns the secrets file as read, for the devices' checks that follow.
    pub(super) fn problems(
        &self,
        path: &str,
        production: bool,
        out: &mut Problems,
    ) -> HashMap<String, String> {
        let b = self;
        let at = |name: &str| format!("{path}.{name}");
        match (b.mode, &b.url) {
            (BrokerMode::External, None) => out.add(at("url"), "required when mode = \"external\""),
            (_, Some(url)) => {
                if let Err(e) = BrokerUrl::parse(url) {
                    out.add(at("url"), e);
                }
            }
            _ => {}
        }
        let endpoint = b.mode == BrokerMode::Endpoint;
        if endpoint {
            // A credential given where it does nothing is a mistake that looks like security.
            let given = [
                ("url", b.url.is_some()),
                ("username", b.username.is_some()),
                ("password", b.password.is_some()),
                ("password_file", b.password_file.is_some()),
                ("ca_file", b.ca_file.is_some()),
                ("client_cert", b.client_cert.is_some()),
                ("client_key", b.client_key.is_some()),
            ];
            for (name, _) in given.into_iter().filter(|(_, set)| *set) {
                out.add(at(name), self.ignored(&at(name)));
            }
        } else {
            // With an external broker the secrets file is what `gatehouse broker-config` makes
            // the broker's password file from.
            if b.password.is_some() && b.password_file.is_some() {
                out.add(at("password"), "give password or password_file, not both");
            }
            if production && b.password.is_some() {
                out.add(at("password"), "security = \"production\": keep the password out of the config, in password_file (0600)");
            }
            if b.client_cert.is_some() != b.client_key.is_some() {
                out.add(at("client_cert"), "client_cert and client_key go together");
            }
        }
        let tls = [&b.tls_cert, &b.tls_key].map(Option::is_some);
        if endpoint && b.tls_listen.is_some() != (tls == [true, true]) {
            out.add(
                at("tls_listen"),
                "tls_listen, tls_cert and tls_key go together",
            );
        }
        if !endpoint || b.tls_listen.is_none() {
            let given = [
                ("tls_cert", b.tls_cert.is_some()),
                ("tls_key", b.tls_key.is_some()),
                ("client_ca", b.client_ca.is_some()),
            ];
            for (name, _) in given.into_iter().filter(|(_, set)| *set) {
                out.add(
                    at(name),
                    "ignored: the endpoint's TLS needs tls_listen (and mode = \"endpoint\")",
                );
            }
        }
        if b.max_unauthenticated == 0
            || b.max_per_address == 0
            || b.max_inflight == 0
            || b.max_inflight_kib == 0
            || b.connect_timeout_ms == 0
        {
            out.add(
                path,
                "max_unauthenticated, max_per_address, max_inflight, max_inflight_kib and connect_timeout_ms must be at least 1",
            );
        }
        if production {
            let private = [
                ("tls_key", &b.tls_key),
                ("password_file", &b.password_file),
                ("client_key", &b.client_key),
            ];
            for (name, f) in private {
                if let Some(mode) = f.as_deref().and_then(private_file_mode) {
                    out.add(
                        at(name),
                        format!("readable by others (mode {mode:o}); chmod 600 it"),
                    );
                }
            }
        }
        let Some(f) = &b.secrets_file else {
            return HashMap::new();
        };
        if let Some(mode) = private_file_mode(f) {
            let message = format!(
                "{} is readable by others (mode {mode:o}); chmod 600 it",
                f.display()
            );
            if production {
                out.add(at("secrets_file"), message);
            } else {
                tracing::warn!("device_broker.secrets_file: {message}");
            }
        }
        read_secrets(f).unwrap_or_else(|e| {
            out.add(at("secrets_file"), e);
            HashMap::new()
        })
    }

    /// Said of a credential given where it does nothing.
    fn ignored(&self, what: &str) -> String {
        format!("{what} is ignored with mode = {:?}", mode_name(self.mode))
    }

    /// Reachable from the LAN without a credential: the plain listener on a LAN address, or the
    /// TLS one there without client certificates. The listener, if so.
    fn open_to_the_lan(&self) -> Option<SocketAddr> {
        let open_tls = self
            .tls_listen
            .filter(|l| !l.ip().is_loopback() && self.client_ca.is_none());
        match open_tls {
            Some(l) => Some(l),
            None => Some(self.listen).filter(|l| !l.ip().is_loopback()),
        }
    }
}

/// The devices' checks that need the device side: their credentials against the broker's mode
/// and the secrets file, their topics against each other, what production refuses. Every device
/// goes through [`DeviceSide::device`], then [`DeviceSide::finish`] checks what is left over.
pub(super) struct DeviceSide<'a> {
    broker: &'a DeviceBrokerSection,
    http: &'a DeviceHttpSection,
    production: bool,
    secrets: HashMap<String, String>,
    /// The devices that log in with a password (MQTT and HTTP).
    known: HashSet<&'a str>,
    /// Each topic is one device's: a shared one would give one device's events, or commands, to
    /// another.
    owners: HashMap<String, String>,
}

impl<'a> DeviceSide<'a> {
    pub(super) fn new(config: &'a Config, secrets: HashMap<String, String>) -> DeviceSide<'a> {
        DeviceSide {
            broker: &config.device_broker,
            http: &config.device_http,
            production: config.uplink.security == Security::Production,
            secrets,
            known: HashSet::new(),
            owners: HashMap::new(),
        }
    }

    pub(super) fn device(
        &mut self,
        path: &str,
        lane: &LaneSection,
        d: &'a DeviceSection,
        profiles: &Profiles,
        out: &mut Problems,
    ) {
        let Some(p) = profiles.get(&d.profile) else {
            return;
        };
        if p.transport != Transport::Http && (d.api.is_some() || d.adms_sn.is_some()) {
            out.add(path, "api and adms_sn are for devices that speak HTTP");
        }
        let networked = matches!(p.transport, Transport::Http | Transport::Mqtt);
        if d.from.is_some() && !networked {
            out.add(
                format!("{path}.from"),
                "for devices on the network (MQTT or HTTP)",
            );
        }
        match p.transport {
            Transport::Mqtt => self.mqtt_device(path, d, p, out),
            Transport::Http => self.http_device(path, lane, d, p, out),
            _ => {}
        }
    }

    fn mqtt_device(&mut self, path: &str, d: &'a DeviceSection, p: &Profile, out: &mut Problems) {
        self.known.insert(d.id.as_str());
        let events = d.event_topic.clone().or_else(|| p.event_topic_for(&d.id));
        let commands = d
            .command_topic
            .clone()
            .or_else(|| p.command_topic_for(&d.id));
        let states = p.status_topics_for(&d.id).into_iter().map(|(t, _)| t);
        for t in events.into_iter().chain(commands).chain(states) {
            if t.contains(['+', '#']) {
                out.add(
                    path,
                    format!("topic {t:?} has a wildcard: give the device's own"),
                );
            } else if let Some(other) = self.owners.insert(t.clone(), path.to_string()) {
                out.add(
                    path,
                    format!("topic {t:?} is also {other}'s: each device needs its own"),
                );
            }
        }
        let endpoint = self.broker.mode == BrokerMode::Endpoint;
        let at = format!("{path}.password_hash");
        if let Some(h) = &d.password_hash {
            if !endpoint {
                out.add(&at, self.broker.ignored("password_hash"));
            } else if let Err(e) = Secret::parse_hash(h) {
                out.add(&at, e);
            } else if self.secrets.contains_key(&d.id) {
                out.add(
                    &at,
                    format!("{} also has a line in the secrets file: give one", d.id),
                );
            }
        }
        let lan = self.broker.open_to_the_lan();
        if let (true, false, Some(lan)) = (endpoint, self.has_secret(d), lan) {
            if self.production {
                out.add(
                    at,
                    format!(
                        "security = \"production\" refuses device {} without a secret on a listener reachable from the LAN ({lan}): give password_hash or a line in device_broker.secrets_file (or client_ca for the TLS listener)",
                        d.id
                    ),
                );
            } else {
                out.warn(at, no_secret(&d.id, &lan.to_string()));
            }
        }
    }

    fn http_device(
        &mut self,
        path: &str,
        lane: &LaneSection,
        d: &'a DeviceSection,
        p: &Profile,
        out: &mut Problems,
    ) {
        self.known.insert(d.id.as_str());
        if p.http.as_ref().and_then(|h| h.api) == Some(Api::Adms) {
            return adms_device(path, d, out);
        }
        if d.adms_sn.is_some() || d.adms_open {
            out.add(
                path,
                format!(
                    "adms_sn and adms_open are for ZKTeco ADMS profiles, not {:?}",
                    d.profile
                ),
            );
        }
        if let Some(Err(e)) = d.password_hash.as_deref().map(Secret::parse_hash) {
            out.add(format!("{path}.password_hash"), e);
        }
        let listen = self.http.listen;
        if !self.has_secret(d) && !listen.ip().is_loopback() {
            let at = format!("{path}.password_hash");
            if self.production {
                out.add(
                    at,
                    format!(
                        "security = \"production\" refuses device {} without a secret on the HTTP listener reachable from the LAN ({listen}): give password_hash or a line in device_broker.secrets_file",
                        d.id
                    ),
                );
            } else {
                out.warn(at, no_secret(&d.id, &format!("HTTP {listen}")));
            }
        }
        let Some(api) = &d.api else { return };
        let speaks_api = p.http.as_ref().is_some_and(|h| h.api.is_some());
        if !speaks_api {
            out.add(
                format!("{path}.api"),
                format!("profile {:?} has no device API gatehouse speaks", d.profile),
            );
        }
        if api.password.is_none() && api.password_file.is_none() {
            out.add(
                format!("{path}.api"),
                "password_file (or password) required",
            );
        }
        match (api.https(), api.fingerprint()) {
            (_, Err(e)) => out.add(format!("{path}.api.tls_fingerprint"), e),
            (true, Ok(None)) => out.add(
                format!("{path}.api.tls_fingerprint"),
                "an https:// address needs the device certificate's SHA-256 (its certificate is its own, signed by no CA gatehouse knows)",
            ),
            (false, Ok(Some(_))) => out.add(
                format!("{path}.api.tls_fingerprint"),
                "given, but the address is not https://",
            ),
            _ => {}
        }
        if api.auth == ApiAuth::Basic && !api.https() {
            out.warn(
                format!("{path}.api.auth"),
                format!("basic over plain http hands device {}'s password to whoever answers at its address", d.id),
            );
        }
        if api.door.is_some() && lane.devices.iter().any(|x| x.role.is_gate()) {
            out.add(
                format!("{path}.api.door"),
                "the lane has a gate of its own: the terminal's door is not driven as well",
            );
        }
        if api
            .push_to
            .as_ref()
            .is_some_and(|url| !url.starts_with("http://"))
        {
            out.add(
                format!("{path}.api.push_to"),
                "give this box as the terminal reaches it: http://HOST:PORT",
            );
        }
    }

    fn has_secret(&self, d: &DeviceSection) -> bool {
        d.password_hash.is_some() || self.secrets.contains_key(&d.id)
    }

    /// What is left over once every device was seen: a password where nothing logs in with
    /// one, a secrets file line for no device.
    pub(super) fn finish(self, lanes: &[LaneSection], out: &mut Problems) {
        for (li, lane) in lanes.iter().enumerate() {
            for (di, d) in lane.devices.iter().enumerate() {
                if d.password_hash.is_some() && !self.known.contains(d.id.as_str()) {
                    out.add(
                        format!("lanes[{li}].devices[{di}].password_hash"),
                        "only MQTT and HTTP devices log in with a password: ignored here",
                    );
                }
            }
        }
        for id in self
            .secrets
            .keys()
            .filter(|id| !self.known.contains(id.as_str()))
        {
            out.add(
                "device_broker.secrets_file",
                format!(
                    "{id} is not an MQTT or HTTP device of this config: its line would be ignored"
                ),
            );
        }
    }
}

/// ADMS has no authentication: a device is taken on its serial number and address alone, by
/// choice.
fn adms_device(path: &str, d: &DeviceSection, out: &mut Problems) {
    if !d
        .adms_sn
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s.len() <= 64)
    {
        out.add(
            format!("{path}.adms_sn"),
            "a ZKTeco ADMS device needs its serial number",
        );
    }
    if !d.adms_open || d.from.is_none() {
        out.add(path, "ADMS cannot authenticate a device: opt in with adms_open = true and bind it to its address with from = \"IP\"");
    }
    if d.api.is_some() {
        out.add(
            format!("{path}.api"),
            "an ADMS device polls gatehouse: it has no API to call",
        );
    }
}

fn mode_name(m: BrokerMode) -> &'static str {
    match m {
        BrokerMode::Endpoint => "endpoint",
        BrokerMode::External => "external",
    }
}

/// The warning for a device without a secret on a listener the LAN reaches (development).
fn no_secret(id: &str, listener: &str) -> String {
    format!(
        "device {id} has no secret on a listener reachable from the LAN ({listener}): it is taken on its id alone, so anyone on the gate LAN can be it — give it a password_hash or a line in device_broker.secrets_file (security = \"production\" refuses this)"
    )
}

#[cfg(test)]
mod tests {
    use crate::config::tests_support::MINIMAL;
    use crate::config::Config;
    use crate::device::Profiles;
    use std::os::unix::fs::PermissionsExt;

    /// The problems of MINIMAL under `security = "production"` with a TLS, authenticated uplink,
    /// `device_broker` as given and `extra` after the devices; files resolve in `dir`.
    fn problems(dir: &std::path::Path, device_broker: &str, extra: &str) -> Vec<String> {
        std::fs::write(dir.join("gw.key"), "k").unwrap();
        std::fs::set_permissions(dir.join("gw.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(dir.join("gw.pem"), "c").unwrap();
        let text = MINIMAL.replace(
            "[uplink]\nurl = \"mqtt://127.0.0.1:1883\"",
            "[uplink]\nurl = \"mqtts://h\"\nclient_cert = \"gw.pem\"\nclient_key = \"gw.key\"\nsecurity = \"production\"",
        ) + extra
            + "\n[device_broker]\n"
            + device_broker;
        let path = dir.join("g.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
            .unwrap()
            .problems(&Profiles::builtin())
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn production_refuses_an_open_device_listener_and_readable_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // On the LAN with no device secrets: each device named.
        let p = problems(d, "listen = \"0.0.0.0:1883\"", "");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.contains("without a secret")), "{p:?}");
        // On loopback only, development-style devices are allowed.
        assert_eq!(
            problems(d, "listen = \"127.0.0.1:1883\"", ""),
            Vec::<String>::new()
        );
        // Secrets others can read.
        std::fs::write(d.join("devices.secrets"), "thermal-1 a\ngate-1 b\n").unwrap();
        let secrets = d.join("devices.secrets");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
        let lan = "listen = \"0.0.0.0:1883\"\nsecrets_file = \"devices.secrets\"";
        let p = problems(d, lan, "");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("readable by others (mode 644)"), "{p:?}");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(problems(d, lan, ""), Vec::<String>::new());
    }

    #[test]
    fn a_credential_that_would_be_ignored_is_refused_each_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // External-broker settings on the endpoint.
        let p = problems(
            d,
            "listen = \"127.0.0.1:1883\"\nusername = \"u\"\npassword = \"p\"",
            "",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .all(|p| p.contains("is ignored with mode = \"endpoint\"")),
            "{p:?}"
        );
        // A secrets line for a device that is not there; a hash on a serial device.
        std::fs::write(d.join("s"), "thermal-1 a\nthermal-9 b\n").unwrap();
        std::fs::set_permissions(d.join("s"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let serial = "\n[[lanes]]\nid = \"l2\"\n[[lanes.devices]]\nid = \"face\"\nrole = \"identifier\"\nprofile = \"rs485-face-id\"\nserial = { path = \"/dev/null\" }\npassword_hash = \"sha256:00:0000000000000000000000000000000000000000000000000000000000000000\"\n";
        let p = problems(d, "secrets_file = \"s\"", serial);
        assert!(
            p.iter()
                .any(|p| p.contains("thermal-9 is not an MQTT or HTTP device")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("only MQTT and HTTP devices log in")),
            "{p:?}"
        );
        // The endpoint's secrets on an external broker; an inline broker password in production.
        let p = problems(
            d,
            "mode = \"external\"\nurl = \"mqtt://b:1883\"\nusername = \"g\"\npassword = \"p\"\nsecrets_file = \"s\"",
            "",
        );
        assert!(
            p.iter().any(|p| p.contains("password_file (0600)")),
            "{p:?}"
        );
    }

    #[test]
    fn an_open_tls_listener_and_shared_topics_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("s.pem"), "c").unwrap();
        std::fs::write(d.join("s.key"), "k").unwrap();
        std::fs::set_permissions(d.join("s.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // Loopback for plain MQTT, but TLS on the LAN with no client certificates.
        let tls = "tls_listen = \"0.0.0.0:8883\"\ntls_cert = \"s.pem\"\ntls_key = \"s.key\"";
        let p = problems(d, tls, "");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.contains("without a secret")), "{p:?}");
        // Two gates answering on one command topic.
        let twin = "\n[[lanes]]\nid = \"l2\"\n[[lanes.devices]]\nid = \"thermal-2\"\nrole = \"thermal\"\nprofile = \"hikvision-acs-event\"\n[[lanes.devices]]\nid = \"gate-2\"\nrole = \"turnstile\"\nprofile = \"generic-gate-mqtt\"\ncommand_topic = \"devices/gate-1/cmd\"\n";
        let p = problems(d, "listen = \"127.0.0.1:1883\"", twin);
        assert!(
            p.iter()
                .any(|p| p.contains("is also lanes[0].devices[1]'s")),
            "{p:?}"
        );
    }

    #[test]
    fn http_devices_are_checked_like_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lane = |device: &str| {
            format!(
                "\n[device_http]\nlisten = \"0.0.0.0:8088\"\n\n[[lanes]]\nid = \"h\"\n\n[[lanes.devices]]\n{device}"
            )
        };
        let hashed = "password_hash = \"sha256:00:0000000000000000000000000000000000000000000000000000000000000000\"";
        // A terminal without a secret on the LAN: refused in production, named.
        let p = problems(
            d,
            "listen = \"127.0.0.1:1883\"",
            &lane("id = \"t\"\nrole = \"thermal\"\nprofile = \"hikvision-isapi\"\napi = { address = \"10.0.0.2\", password = \"x\", door = 1 }"),
        );
        assert!(
            p.iter()
                .any(|p| p.contains("device t without a secret on the HTTP listener")),
            "{p:?}"
        );
        // With its hash it passes; an api on a profile without one, a door beside a turnstile,
        // `from` on an MQTT device and a push_to that is no URL are each named.
        let p = problems(
            d,
            "listen = \"127.0.0.1:1883\"",
            &(lane(&format!("id = \"t\"\nrole = \"thermal\"\nprofile = \"hikvision-isapi\"\n{hashed}\napi = {{ address = \"10.0.0.2\", password = \"x\", door = 1, push_to = \"10.0.0.1\" }}"))
                + &format!("\n[[lanes.devices]]\nid = \"g\"\nrole = \"turnstile\"\nprofile = \"generic-gate-mqtt\"\n\n[[lanes.devices]]\nid = \"c\"\nrole = \"plate_camera\"\nprofile = \"zhenshi-ivs-http\"\n{hashed}\napi = {{ address = \"10.0.0.3\", password = \"x\" }}\n")),
        );
        for want in [
            "api.door: the lane has a gate of its own",
            "api.push_to: give this box",
            "profile \"zhenshi-ivs-http\" has no device API",
        ] {
            assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
        }
        assert!(!p.iter().any(|p| p.contains("without a secret")), "{p:?}");
    }
}
