//! The simulated site: the gate the demo, the benches and the tests run, as typed options that
//! write its config, device secrets and lists. Nothing here runs; `gatehouse-demo` and the tests
//! start what it describes.
use crate::mqtt_client::{BrokerUrl, DeviceLink};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The gate the demo, `gatehouse-demo bench` and the tests run: its place in the tree and one lane
/// (a Hikvision face + temperature terminal `thermal-1`, an MQTT turnstile `gate-1`).
pub fn gate_config(gateway: &str, lane: &str) -> String {
    format!(
        r#"
[gateway]
id = "{gateway}"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"

# A simulation: this machine's clock is taken as right (a real box waits for NTP, or vouches for
# its battery-backed clock here).
[clock]
trusted = true

[[lanes]]
id = "{lane}"

[[lanes.devices]]
id = "thermal-1"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "gate-1"
role = "turnstile"
profile = "generic-gate-mqtt"
"#
    )
}

/// Lane `fire-panel`: the fire alarm panel's contact on a Modbus TCP I/O module at `addr`
/// (unit 1), as the demo and the tests wire it.
pub fn fire_panel_lane(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[[lanes]]
id = "fire-panel"

[[lanes.devices]]
id = "fire-1"
role = "fire_input"
profile = "modbus-fire-input"
address = 1
modbus = {{ tcp = "{addr}" }}
"#
    )
}

/// The demo's second lane, on RS-485: a face-id reader and an EB turnstile on these serial
/// paths, beside a separate Hikvision thermal station whose readings join the faces.
#[derive(Debug, Clone)]
pub struct SerialLane {
    pub face: PathBuf,
    pub turnstile: PathBuf,
    pub anti_passback: bool,
}

/// The demo's HTTP lane: a Hikvision terminal pushing its events to the HTTP listener on
/// `http_port` (ISAPI listening mode) whose door gatehouse opens over its API at `api`.
#[derive(Debug, Clone)]
pub struct HttpLane {
    pub http_port: u16,
    pub api: std::net::SocketAddr,
    pub api_password: String,
    /// Also lane `cam-gate`: a Zhenshi camera pushing over HTTP, its barrier lifted by the reply.
    pub camera: bool,
    /// Also lane `dahua-gate`: a Dahua terminal at this address (same API password), its door
    /// opened over CGI.
    pub dahua: Option<std::net::SocketAddr>,
    /// Also lane `zk-gate`: a ZKTeco terminal on ADMS with this serial number, from 127.0.0.1.
    pub adms_sn: Option<String>,
}

/// The demo's vehicle lane: a Zhenshi plate camera and a Modbus TCP relay barrier at `barrier`.
#[derive(Debug, Clone)]
pub struct VehicleLane {
    pub barrier: std::net::SocketAddr,
    /// The arm comes down on its own once the car has cleared the safety loop.
    pub auto_close: bool,
}

/// The demo's gate as typed options. The demo, the benches and the tests change a field here;
/// none of them edits the TOML text, so rewording it cannot silently change a benchmark.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Holds the store and the lists (`residents.csv`, `passes.csv`, `plates.csv`).
    pub dir: PathBuf,
    /// The device side's port: gatehouse's device endpoint, or a broker already there
    /// (`external_broker`).
    pub port: u16,
    /// The company broker the uplink reports to (with `external_broker` it may be `port`).
    pub uplink_port: u16,
    /// Devices connect to a broker already on `port` (anonymous) instead of the endpoint.
    pub external_broker: bool,
    /// The devices' passwords on the endpoint are derived from this; fresh for every demo.
    pub secret_seed: String,
    pub residents: bool,
    pub passes: bool,
    pub plates: bool,
    pub serial_lane: Option<SerialLane>,
    pub vehicle_lane: Option<VehicleLane>,
    pub http_lane: Option<HttpLane>,
    /// Lane `fire-panel`: the fire alarm panel's input on a Modbus TCP I/O module here.
    pub fire_panel: Option<std::net::SocketAddr>,
    /// Lanes of Modbus RTU barriers: (slave address, serial path) each.
    pub rtu_barriers: Vec<(u8, PathBuf)>,
    /// `/metrics` and `/health` here (off when none).
    pub metrics: Option<std::net::SocketAddr>,
    /// The guard's console here, its logins in `console-users` (off when none).
    pub console: Option<std::net::SocketAddr>,
}

impl DemoConfig {
    /// The first lane only, devices on the endpoint at `port`, uplink to `uplink_port`, with
    /// the residents.
    pub fn new(dir: &Path, port: u16, uplink_port: u16) -> DemoConfig {
        let secret_seed = crate::config::secrets::generate().0;
        DemoConfig {
            dir: dir.to_path_buf(),
            port,
            uplink_port,
            external_broker: false,
            secret_seed,
            residents: true,
            passes: false,
            plates: false,
            serial_lane: None,
            vehicle_lane: None,
            http_lane: None,
            fire_panel: None,
            rtu_barriers: Vec::new(),
            metrics: None,
            console: None,
        }
    }

    /// The devices of this gate that log in with a password (to the endpoint, or in their
    /// HTTP pushes).
    pub fn password_devices(&self) -> Vec<&'static str> {
        let mut v = vec!["thermal-1", "gate-1"];
        if self.serial_lane.is_some() {
            v.push("thermal-2");
        }
        if self.vehicle_lane.is_some() {
            v.push("cam-1");
        }
        if let Some(l) = &self.http_lane {
            v.push("terminal-3");
            if l.camera {
                v.push("cam-3");
            }
        }
        v
    }

    /// Device `id`'s password on the endpoint.
    pub fn password(&self, id: &str) -> String {
        let h = crate::config::secrets::Secret::hash_of(self.secret_seed.as_bytes(), id);
        crate::hex::to_hex(&h[..16])
    }

    /// How the simulator of device `id` reaches the device side.
    pub fn link(&self, id: &str) -> DeviceLink {
        let url = BrokerUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: self.port,
        };
        if self.external_broker {
            DeviceLink::anonymous(url)
        } else {
            DeviceLink::new(url, id, &self.password(id))
        }
    }

    /// Writes `gatehouse.toml` and, for the endpoint, `devices.secrets` (0600) into `dir`;
    /// returns the config's path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        if !self.external_broker {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(self.dir.join("devices.secrets"))?;
            for id in self.password_devices() {
                writeln!(f, "{id} {}", self.password(id))?;
            }
        }
        let path = self.dir.join("gatehouse.toml");
        std::fs::write(&path, self.toml())?;
        Ok(path)
    }

    pub fn toml(&self) -> String {
        let port = self.port;
        let device_broker = if self.external_broker {
            format!("mode = \"external\"\nurl = \"mqtt://127.0.0.1:{port}\"")
        } else {
            format!(
                "mode = \"endpoint\"\nlisten = \"127.0.0.1:{port}\"\nsecrets_file = \"{}\"",
                self.dir.join("devices.secrets").display()
            )
        };
        let mut registry = String::new();
        for (on, key, file) in [
            (self.residents, "import", "residents.csv"),
            (self.passes, "passes", "passes.csv"),
            (self.plates, "plates", "plates.csv"),
        ] {
            if on {
                let path = self.dir.join(file);
                registry.push_str(&format!("{key} = \"{}\"\n", path.display()));
            }
        }
        let mut text = format!(
            r#"
[device_broker]
{device_broker}

[uplink]
url = "mqtt://127.0.0.1:{uplink_port}"

[store]
dir = "{store}"

[registry]
{registry}{gate}"#,
            uplink_port = self.uplink_port,
            store = self.dir.join("store").display(),
            gate = gate_config("demo-gw", "east-gate"),
        );
        if let Some(l) = &self.serial_lane {
            text.push_str(&format!(
                r#"
[[lanes]]
id = "north-gate"
anti_passback = {}

[[lanes.devices]]
id = "thermal-2"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "face-2"
role = "identifier"
profile = "rs485-face-id"
address = 1
serial = {{ path = "{}" }}

[[lanes.devices]]
id = "turnstile-2"
role = "turnstile"
profile = "rs485-turnstile-eb"
address = 1
serial = {{ path = "{}" }}
"#,
                l.anti_passback,
                l.face.display(),
                l.turnstile.display()
            ));
        }
        if let Some(l) = &self.vehicle_lane {
            text.push_str(&format!(
                r#"
[[lanes]]
id = "car-gate"
auto_close = {}

[[lanes.devices]]
id = "cam-1"
role = "plate_camera"
profile = "zhenshi-ivs"

[[lanes.devices]]
id = "barrier-1"
role = "barrier"
profile = "modbus-relay-barrier"
address = 1
modbus = {{ tcp = "{}" }}
"#,
                l.auto_close, l.barrier
            ));
        }
        if let Some(l) = &self.http_lane {
            text.push_str(&format!(
                r#"
[device_http]
listen = "127.0.0.1:{port}"

[[lanes]]
id = "west-gate"

[[lanes.devices]]
id = "terminal-3"
role = "thermal"
profile = "hikvision-isapi"
api = {{ address = "{api}", username = "admin", password = "{pw}", door = 1, push_to = "http://127.0.0.1:{port}" }}
"#,
                port = l.http_port,
                api = l.api,
                pw = l.api_password,
            ));
            if l.camera {
                text.push_str(
                    r#"
[[lanes]]
id = "cam-gate"

[[lanes.devices]]
id = "cam-3"
role = "plate_camera"
profile = "zhenshi-ivs-http"
"#,
                );
            }
            if let Some(addr) = l.dahua {
                text.push_str(&format!(
                    r#"
[[lanes]]
id = "dahua-gate"

[[lanes.devices]]
id = "dahua-4"
role = "identifier"
profile = "dahua-access"
api = {{ address = "{addr}", username = "admin", password = "{}", door = 1 }}
"#,
                    l.api_password
                ));
            }
            if let Some(sn) = &l.adms_sn {
                text.push_str(&format!(
                    r#"
[[lanes]]
id = "zk-gate"

[[lanes.devices]]
id = "zk-5"
role = "identifier"
profile = "zkteco-adms"
adms_sn = "{sn}"
adms_open = true
from = "127.0.0.1"
"#
                ));
            }
        }
        if let Some(addr) = self.fire_panel {
            text.push_str(&fire_panel_lane(addr));
        }
        if let Some(addr) = self.metrics {
            text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
        }
        if let Some(addr) = self.console {
            let users = self.dir.join("console-users");
            text.push_str(&format!(
                "\n[console]\nlisten = \"{addr}\"\nusers = \"{}\"\n",
                users.display()
            ));
        }
        for (n, path) in &self.rtu_barriers {
            text.push_str(&format!(
                r#"
[[lanes]]
id = "car-{n}"

[[lanes.devices]]
id = "barrier-{n}"
role = "barrier"
profile = "modbus-relay-barrier"
address = {n}
modbus = {{ serial = {{ path = "{}", baud = 19200 }} }}
"#,
                path.display()
            ));
        }
        text
    }
}

/// Resident plates for the demo: 粤B1xxxx for every third household, one blacklisted.
pub fn write_plates(path: &Path, households: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "plate,kind,household,valid_until,lockdown_allowed")?;
    for h in (0..households).step_by(3) {
        writeln!(f, "粤B1{h:04},resident,H{h:05},,")?;
    }
    writeln!(f, "粤B66666,blacklist,,,")?;
    f.flush()
}

/// Writes `R000000` … as residents; every 50th is quarantined and every 70th suspended, so the
/// demo shows those reasons too.
pub fn write_residents(path: &Path, n: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "person_id,household,status,valid_until")?;
    for i in 0..n {
        let status = match i {
            _ if i % 50 == 49 => "quarantined",
            _ if i % 70 == 69 => "suspended",
            _ => "active",
        };
        writeln!(f, "R{i:06},H{:05},{status},", i / 3)?;
    }
    f.flush()
}
