//! `[[lanes]]` and their `[[lanes.devices]]`: what stands at each gate, on which transport.
use super::problems::Problems;
use super::{DeviceApiSection, RulesSection};
use crate::decision::{Direction, Role};
use crate::device::{Profiles, Transport};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

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

/// What the lanes' checks share across lanes: ids must be unique in the whole config, and a
/// serial line shared by several devices has one set of settings.
#[derive(Default)]
pub(super) struct Seen<'a> {
    lanes: HashSet<&'a str>,
    devices: HashSet<&'a str>,
    ports: HashMap<&'a Path, &'a SerialSettings>,
}

impl LaneSection {
    pub(super) fn problems<'a>(
        &'a self,
        path: &str,
        profiles: &Profiles,
        rules: &RulesSection,
        seen: &mut Seen<'a>,
        out: &mut Problems,
    ) {
        if out.id_is_safe(path, &self.id) && !seen.lanes.insert(self.id.as_str()) {
            out.add(
                format!("{path}.id"),
                format!("duplicate lane id {:?}", self.id),
            );
        }
        if let Some(t) = self.fever_threshold_c.filter(|t| !rules.threshold_ok(*t)) {
            out.add(
                format!("{path}.fever_threshold_c"),
                format!("{t} lies outside the plausible range"),
            );
        }
        for (i, d) in self.devices.iter().enumerate() {
            d.problems(&format!("{path}.devices[{i}]"), profiles, seen, out);
        }
        let mut gates = self.devices.iter().filter(|d| d.role.is_gate()).count();
        let identifies = self
            .devices
            .iter()
            .any(|d| matches!(d.role, Role::Identifier | Role::Thermal | Role::PlateCamera));
        // A plate camera that drives the barrier from its own output (no other gate given).
        let camera_gate = self.devices.iter().any(|d| {
            d.role == Role::PlateCamera
                && profiles
                    .get(&d.profile)
                    .is_some_and(|p| p.roles.contains(&Role::Barrier) && p.command.is_some())
        });
        // A terminal that drives its own door, opened over its API.
        let terminal_door = self
            .devices
            .iter()
            .any(|d| d.api.as_ref().is_some_and(|a| a.door.is_some()) || d.adms_sn.is_some());
        if gates == 0 && (camera_gate || terminal_door) {
            gates = 1;
        }
        if identifies && gates != 1 {
            out.add(
                format!("{path}.devices"),
                format!("a lane that identifies people needs exactly one gate (turnstile or barrier), found {gates}"),
            );
        }
    }
}

impl DeviceSection {
    fn problems<'a>(
        &'a self,
        path: &str,
        profiles: &Profiles,
        seen: &mut Seen<'a>,
        out: &mut Problems,
    ) {
        if out.id_is_safe(path, &self.id) && !seen.devices.insert(self.id.as_str()) {
            out.add(
                format!("{path}.id"),
                format!("duplicate device id {:?}", self.id),
            );
        }
        self.transport_problems(path, profiles, out);
        if let Some(sp) = &self.serial {
            if ![1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200].contains(&sp.baud)
                || !(7..=8).contains(&sp.data_bits)
                || !(1..=2).contains(&sp.stop_bits)
            {
                out.add(
                    format!("{path}.serial"),
                    "baud must be a standard rate (1200–115200), data_bits 7 or 8, stop_bits 1 or 2",
                );
            }
            match seen.ports.insert(&sp.path, sp) {
                Some(other) if other != sp => out.add(
                    format!("{path}.serial"),
                    format!(
                        "{} is shared with another device under different settings",
                        sp.path.display()
                    ),
                ),
                _ => {}
            }
        }
        if !(self.calibration_offset_c.is_finite() && self.calibration_offset_c.abs() <= 3.0) {
            out.add(
                format!("{path}.calibration_offset_c"),
                format!("{} is not within ±3 °C", self.calibration_offset_c),
            );
        }
    }

    /// Its profile exists, can take its role, and its transport has what it needs (a serial
    /// port, a Modbus link and unit id) and nothing another transport takes.
    fn transport_problems(&self, path: &str, profiles: &Profiles, out: &mut Problems) {
        let Some(p) = profiles.get(&self.profile) else {
            out.add(
                format!("{path}.profile"),
                format!(
                    "unknown profile {:?} (known: {})",
                    self.profile,
                    profiles.names().join(", ")
                ),
            );
            return;
        };
        if !p.roles.contains(&self.role) {
            let roles: Vec<&str> = p.roles.iter().map(|r| r.as_str()).collect();
            out.add(
                format!("{path}.role"),
                format!(
                    "profile {:?} cannot act as {:?} (it can be: {})",
                    self.profile,
                    self.role,
                    roles.join(", ")
                ),
            );
            return;
        }
        let profile = &self.profile;
        match (p.transport, &self.serial, &self.modbus) {
            (Transport::Serial, None, _) => out.add(
                format!("{path}.serial"),
                format!("profile {profile:?} is serial: give serial = {{ path = \"/dev/ttyS1\" }}"),
            ),
            (Transport::Mqtt | Transport::Modbus | Transport::Http, Some(_), _) => out.add(
                format!("{path}.serial"),
                format!("profile {profile:?} is not a serial-frame device (modbus devices take modbus = {{ … }})"),
            ),
            (Transport::Modbus, None, None) => out.add(
                format!("{path}.modbus"),
                format!("profile {profile:?} is Modbus: give modbus = {{ tcp = \"host:502\" }} or {{ serial = {{ path = … }} }}"),
            ),
            (Transport::Modbus, None, Some(m)) if m.tcp.is_some() == m.serial.is_some() => {
                out.add(format!("{path}.modbus"), "give exactly one of tcp or serial")
            }
            (Transport::Modbus, None, Some(_))
                if !self.address.is_some_and(|a| (1..=247).contains(&a)) =>
            {
                out.add(format!("{path}.address"), "a Modbus device needs its unit id, 1–247")
            }
            (Transport::Mqtt | Transport::Serial | Transport::Http, _, Some(_)) => out.add(
                format!("{path}.modbus"),
                format!("profile {profile:?} is not a Modbus device"),
            ),
            _ => {}
        }
    }
}
