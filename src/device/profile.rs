//! Device profiles: one TOML file per vendor model (in `devices/`, grouped by kind) that says how
//! that model's messages decode into normalised observations and how commands encode for it.
//! A new model of a known kind is a new file, not new code.
//!
//! The shipped profiles are compiled into the binary, so a box runs with nothing installed; a
//! directory given in the config adds profiles and replaces a shipped one of the same name.
use crate::decision::{CredentialKind, Direction, Hold, Role};
use crate::device::frame::FrameSpec;
use crate::problem::Problem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The profiles that ship with gatehouse (path for messages, file text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "devices/terminal/hikvision-acs-event.toml",
        include_str!("../../devices/terminal/hikvision-acs-event.toml"),
    ),
    (
        "devices/gate/generic-gate-mqtt.toml",
        include_str!("../../devices/gate/generic-gate-mqtt.toml"),
    ),
    (
        "devices/camera/zhenshi-ivs.toml",
        include_str!("../../devices/camera/zhenshi-ivs.toml"),
    ),
    (
        "devices/gate/modbus-relay-barrier.toml",
        include_str!("../../devices/gate/modbus-relay-barrier.toml"),
    ),
    (
        "devices/gate/rs485-barrier-5b.toml",
        include_str!("../../devices/gate/rs485-barrier-5b.toml"),
    ),
    (
        "devices/gate/rs485-turnstile-eb.toml",
        include_str!("../../devices/gate/rs485-turnstile-eb.toml"),
    ),
    (
        "devices/reader/rs485-wiegand-reader.toml",
        include_str!("../../devices/reader/rs485-wiegand-reader.toml"),
    ),
    (
        "devices/reader/rs485-face-id.toml",
        include_str!("../../devices/reader/rs485-face-id.toml"),
    ),
];

/// Payloads larger than this are refused before parsing (a terminal that inlines pictures).
pub const MAX_PAYLOAD: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Mqtt,
    /// RS-485 / RS-232, binary frames described by `[frame]`.
    Serial,
    /// Modbus TCP or RTU, registers described by `[modbus]`.
    Modbus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Celsius,
    Fahrenheit,
    Kelvin,
}

impl Unit {
    pub fn to_celsius(self, v: f64) -> f64 {
        match self {
            Unit::Celsius => v,
            Unit::Fahrenheit => (v - 32.0) * 5.0 / 9.0,
            Unit::Kelvin => v - 273.15,
        }
    }
}

/// One device model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// The roles a device of this model can take at a lane.
    pub roles: Vec<Role>,
    pub transport: Transport,
    /// MQTT topic the device publishes on; `{device_id}` is replaced.
    pub event_topic: Option<String>,
    /// MQTT topic the device takes commands on; `{device_id}` is replaced.
    pub command_topic: Option<String>,
    pub decode: Option<Decode>,
    pub command: Option<Command>,
    /// Serial profiles: the frame layout.
    pub frame: Option<FrameSpec>,
    /// Serial profiles: which frames are identifications or readings, and what they carry.
    #[serde(default)]
    pub frame_events: Vec<FrameEvent>,
    /// Serial profiles: gate command → field values of its frame.
    #[serde(default)]
    pub frame_commands: BTreeMap<GateCommandName, BTreeMap<String, u64>>,
    /// Modbus profiles: where the coils and inputs are.
    pub modbus: Option<super::ModbusSpec>,
    /// Serial profiles whose device answers in another layout than the commands (a barrier's
    /// acknowledgements).
    pub reply_frame: Option<FrameSpec>,
    /// Which reply frames acknowledge a command, and the field with the result code (0 = ok).
    pub frame_ack: Option<FrameAck>,
    /// MQTT devices: further topics that report the device's state (an arm's position, a loop
    /// input, the reply to a command), each with where its value is.
    #[serde(default)]
    pub status_topics: Vec<StatusTopic>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusTopic {
    /// `{device_id}` is replaced.
    pub topic: String,
    pub kind: StatusKind,
    /// JSON pointer to the value (an integer).
    pub pointer: String,
    /// For `arm`: the device's codes → `up`, `down`, `moving`.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// The barrier arm's position.
    Arm,
    /// A loop detector wired to the device: non-zero = a vehicle is on it.
    Loop,
    /// The reply to a command: 0 = accepted.
    Ack,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameAck {
    #[serde(default)]
    pub when: BTreeMap<String, u64>,
    pub code: String,
}

/// A frame that carries an observation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameEvent {
    /// Field values the frame must have (e.g. `{ cmd = 0x21 }`).
    #[serde(default)]
    pub when: BTreeMap<String, u64>,
    /// The field holding the subject.
    pub subject: Option<String>,
    #[serde(default)]
    pub credential: CredentialKind,
    /// The field holding a temperature, an integer times `temperature_scale` °C.
    pub temperature: Option<String>,
    #[serde(default = "default_scale")]
    pub temperature_scale: f64,
    /// The frame reports someone the device does not know.
    #[serde(default)]
    pub stranger: bool,
}

/// The commands a gate takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateCommandName {
    OpenIn,
    OpenOut,
    Deny,
    HoldOpen,
    Release,
}

impl GateCommandName {
    pub fn as_str(self) -> &'static str {
        match self {
            GateCommandName::OpenIn | GateCommandName::OpenOut => "open",
            GateCommandName::Deny => "deny",
            GateCommandName::HoldOpen => "hold_open",
            GateCommandName::Release => "release",
        }
    }

    pub fn of(open: Option<Direction>, hold: Option<Hold>) -> GateCommandName {
        match (hold, open) {
            (Some(Hold::Open), _) => GateCommandName::HoldOpen,
            (Some(Hold::Release), _) => GateCommandName::Release,
            (None, Some(Direction::In)) => GateCommandName::OpenIn,
            (None, Some(Direction::Out)) => GateCommandName::OpenOut,
            (None, None) => GateCommandName::Deny,
        }
    }
}

/// How an event payload maps to an observation: JSON pointers (RFC 6901) into the payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decode {
    pub format: Format,
    /// The device's id for this event (string or number).
    pub event_id: Option<String>,
    /// Who was identified (string or number); absent or empty means nobody was recognised.
    pub subject: Option<String>,
    /// What `subject` holds: a person id (default) or a card / QR number.
    #[serde(default)]
    pub credential: CredentialKind,
    /// The device's own "abnormal temperature" flag (bool).
    pub device_abnormal: Option<String>,
    pub temperature: Option<TemperatureField>,
    /// How `subject` is written: `plain` (default) or `base64` (of UTF-8, e.g. a plate 粤B12345).
    #[serde(default)]
    pub subject_encoding: Encoding,
    /// A plate reader's confidence (integer, 1–100).
    pub confidence: Option<String>,
    /// The direction the device saw, as codes mapped to in / out (others: unknown).
    pub direction: Option<DirectionField>,
    /// Kept for profiles that still say it: every event with an id is decided once now (the
    /// core remembers them durably), whether or not the device replays its records.
    #[serde(default)]
    pub dedupe: bool,
    /// When the device saw it, by its own clock (RFC 3339 text, or unix seconds / ms): part of
    /// the event's identity (terminals restart their serial numbers) and its age.
    pub time: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Plain,
    Base64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionField {
    pub pointer: String,
    #[serde(rename = "in", default)]
    pub inward: Vec<i64>,
    #[serde(rename = "out", default)]
    pub outward: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureField {
    pub pointer: String,
    /// Where the device names the unit; without it, `default_unit`.
    pub unit_pointer: Option<String>,
    #[serde(default = "default_unit")]
    pub default_unit: Unit,
    /// The device's unit names → units.
    #[serde(default)]
    pub units: BTreeMap<String, Unit>,
    /// Multiply the raw number by this first (a device that sends tenths of a degree: 0.1).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

fn default_unit() -> Unit {
    Unit::Celsius
}
fn default_scale() -> f64 {
    1.0
}

/// How a gate command encodes for this model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub format: Format,
    /// The value of the `action` variable for an open and for a deny. A gate without `deny` is
    /// sent nothing on a denial (a barrier relay).
    pub open: String,
    pub deny: Option<String>,
    /// Fields with fixed values (e.g. a camera's `io = 0, value = 2, delay = 1500` pulse).
    #[serde(default)]
    pub constants: BTreeMap<String, serde_json::Value>,
    /// For fire mode: open and stay open; back to normal. A gate without them is opened once.
    pub hold_open: Option<String>,
    pub release: Option<String>,
    /// Output field name → the variable that fills it.
    pub fields: BTreeMap<String, Var>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Var {
    Action,
    Reason,
    Cause,
    Lane,
    Device,
    Ts,
}

impl Profile {
    /// The status topics of a device of this model: (topic, index).
    pub fn status_topics_for(&self, device_id: &str) -> Vec<(String, usize)> {
        self.status_topics
            .iter()
            .enumerate()
            .map(|(i, s)| (s.topic.replace("{device_id}", device_id), i))
            .collect()
    }

    /// The event topic of a device of this model, unless its config overrides it.
    pub fn event_topic_for(&self, device_id: &str) -> Option<String> {
        self.event_topic
            .as_ref()
            .map(|t| t.replace("{device_id}", device_id))
    }

    pub fn command_topic_for(&self, device_id: &str) -> Option<String> {
        self.command_topic
            .as_ref()
            .map(|t| t.replace("{device_id}", device_id))
    }

    /// Checks what serde cannot: pointers well-formed, the pieces a role needs present.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.roles.is_empty() {
            out.push("roles: must name at least one role".to_string());
        }
        let mut pointers = Vec::new();
        if let Some(d) = &self.decode {
            pointers.extend([
                ("decode.event_id", d.event_id.as_deref()),
                ("decode.subject", d.subject.as_deref()),
                ("decode.device_abnormal", d.device_abnormal.as_deref()),
            ]);
            if let Some(t) = &d.temperature {
                pointers.push(("decode.temperature.pointer", Some(&t.pointer)));
                pointers.push(("decode.temperature.unit_pointer", t.unit_pointer.as_deref()));
                if !(t.scale.is_finite() && t.scale > 0.0) {
                    out.push(format!(
                        "decode.temperature.scale: {} must be positive",
                        t.scale
                    ));
                }
            }
            if self.event_topic.is_none() {
                out.push("event_topic: required when the profile decodes events".into());
            }
        }
        for (path, p) in pointers {
            if let Some(p) = p {
                if !p.is_empty() && !p.starts_with('/') {
                    out.push(format!(
                        "{path}: {p:?} is not a JSON pointer (must start with '/')"
                    ));
                }
            }
        }
        let senses = self.roles.iter().any(|r| !r.is_gate());
        let gates = self.roles.iter().any(|r| r.is_gate());
        match self.transport {
            Transport::Mqtt => {
                if senses && self.decode.is_none() {
                    out.push("decode: required for a profile with a sensing role".into());
                }
                if gates && (self.command.is_none() || self.command_topic.is_none()) {
                    out.push(
                        "command, command_topic: required for a turnstile or barrier profile"
                            .into(),
                    );
                }
            }
            Transport::Modbus => match &self.modbus {
                None => out.push("modbus: required for a modbus profile".into()),
                // One read covers every input: Modbus allows at most 2000 in a request.
                Some(m) if m.inputs.span().is_none() => {
                    out.push("modbus.inputs: must lie within 2000 consecutive addresses".into())
                }
                Some(_) => {}
            },
            Transport::Serial => {
                let Some(f) = &self.frame else {
                    out.push("frame: required for a serial profile".into());
                    return out;
                };
                out.extend(f.problems().into_iter().map(|p| format!("frame.{p}")));
                let known = |name: &str| f.fields.iter().any(|x| x.name == name);
                for (i, e) in self.frame_events.iter().enumerate() {
                    let named = e.when.keys().chain(&e.subject).chain(&e.temperature);
                    for name in named {
                        if !known(name) {
                            out.push(format!("frame_events[{i}]: no field {name:?}"));
                        }
                    }
                }
                for (c, values) in &self.frame_commands {
                    for name in values.keys() {
                        if !known(name) {
                            out.push(format!("frame_commands.{c:?}: no field {name:?}"));
                        }
                    }
                }
                if senses && self.frame_events.is_empty() {
                    out.push("frame_events: required for a profile with a sensing role".into());
                }
                // A barrier is sent nothing on a denial; a turnstile shows it.
                let turnstile = self.roles.contains(&Role::Turnstile);
                let needed: &[GateCommandName] = if turnstile {
                    &[
                        GateCommandName::OpenIn,
                        GateCommandName::OpenOut,
                        GateCommandName::Deny,
                    ]
                } else {
                    &[GateCommandName::OpenIn, GateCommandName::OpenOut]
                };
                if gates && !needed.iter().all(|c| self.frame_commands.contains_key(c)) {
                    out.push(format!(
                        "frame_commands: this gate needs {}",
                        needed
                            .iter()
                            .map(|c| format!("{c:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if let Some(rf) = &self.reply_frame {
                    out.extend(
                        rf.problems()
                            .into_iter()
                            .map(|p| format!("reply_frame.{p}")),
                    );
                }
                if let Some(a) = &self.frame_ack {
                    let spec = self.reply_frame.as_ref().unwrap_or(f);
                    for name in a.when.keys().chain(std::iter::once(&a.code)) {
                        if !spec.fields.iter().any(|x| &x.name == name) {
                            out.push(format!("frame_ack: no field {name:?}"));
                        }
                    }
                }
            }
        }
        out
    }
}

/// All known profiles, by name.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The built-in profiles, plus those under `dir`. Every malformed file is a problem with its
    /// path; the good ones still load so the caller can report everything at once.
    pub fn load(dir: Option<&Path>) -> (Profiles, Vec<Problem>) {
        let mut profiles = Profiles::default();
        let mut problems = Vec::new();
        for (path, text) in BUILTIN {
            profiles.add(path, text, &mut problems);
        }
        if let Some(dir) = dir {
            let mut files = Vec::new();
            if let Err(e) = toml_files(dir, &mut files) {
                problems.push(Problem {
                    path: dir.display().to_string(),
                    message: format!("cannot read profile directory: {e}"),
                });
            }
            files.sort();
            for f in files {
                match std::fs::read_to_string(&f) {
                    Ok(text) => profiles.add(&f.display().to_string(), &text, &mut problems),
                    Err(e) => problems.push(Problem {
                        path: f.display().to_string(),
                        message: format!("cannot read: {e}"),
                    }),
                }
            }
        }
        (profiles, problems)
    }

    /// Only the built-in profiles (which are tested to be valid).
    pub fn builtin() -> Profiles {
        Profiles::load(None).0
    }

    fn add(&mut self, path: &str, text: &str, problems: &mut Vec<Problem>) {
        match toml::from_str::<Profile>(text) {
            Err(e) => problems.push(Problem {
                path: path.to_string(),
                message: e.to_string().trim_end().replace('\n', " "),
            }),
            Ok(p) => {
                let bad = p.problems();
                if bad.is_empty() {
                    self.by_name.insert(p.name.clone(), p);
                }
                problems.extend(bad.into_iter().map(|message| Problem {
                    path: path.to_string(),
                    message,
                }));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

fn toml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            toml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::frame;
    use crate::device::{CommandArgs, DecodeError};
    use serde_json::Value;

    fn hik() -> Profile {
        Profiles::builtin()
            .get("hikvision-acs-event")
            .unwrap()
            .clone()
    }

    #[test]
    fn the_terminals_own_time_is_read_and_a_bad_one_costs_only_the_time() {
        let p = hik();
        let at = br#"{"dateTime":"2026-11-29T16:00:00+08:00","AccessControllerEvent":{"serialNo":7,"employeeNoString":"R1"}}"#;
        let d = p.decode(at).unwrap();
        assert_eq!(
            d.device_time_ms,
            crate::timefmt::parse_time_ms("2026-11-29T08:00:00Z")
        );
        let bad = br#"{"dateTime":"yesterday-ish","AccessControllerEvent":{"serialNo":7,"employeeNoString":"R1"}}"#;
        let d = p.decode(bad).unwrap();
        assert_eq!((d.device_time_ms, d.subject.as_deref()), (None, Some("R1")));
    }

    #[test]
    fn builtin_profiles_load_without_problems() {
        let (p, problems) = Profiles::load(None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.names(),
            vec![
                "generic-gate-mqtt",
                "hikvision-acs-event",
                "modbus-relay-barrier",
                "rs485-barrier-5b",
                "rs485-face-id",
                "rs485-turnstile-eb",
                "rs485-wiegand-reader",
                "zhenshi-ivs"
            ]
        );
    }

    #[test]
    fn hikvision_fahrenheit_and_kelvin_become_celsius_and_names_are_dropped() {
        let f = br#"{"AccessControllerEvent":{"serialNo":12,"employeeNoString":"R000001","name":"Zhang San",
            "pictureURL":"http://x/y.jpg","currTemperature":99.5,"thermometryUnit":"fahrenheit","isAbnomalTemperature":true}}"#;
        let d = hik().decode(f).unwrap();
        assert_eq!(d.event_id, "12");
        assert_eq!(d.subject.as_deref(), Some("R000001"));
        assert!((d.temperature_c.unwrap() - 37.5).abs() < 1e-9);
        assert_eq!(d.device_abnormal, Some(true));
        let k = br#"{"AccessControllerEvent":{"serialNo":"a","currTemperature":310.15,"thermometryUnit":"kelvin"}}"#;
        let d = hik().decode(k).unwrap();
        assert!((d.temperature_c.unwrap() - 37.0).abs() < 1e-9);
        assert_eq!(d.subject, None);
    }

    #[test]
    fn wrong_types_and_garbage_are_clear_errors() {
        let e = hik()
            .decode(br#"{"AccessControllerEvent":{"currTemperature":"hot"}}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/AccessControllerEvent/currTemperature: expected a number, got a string"
        );
        assert!(matches!(
            hik().decode(b"\x00\xff{").unwrap_err(),
            DecodeError::NotJson(_)
        ));
        let e = hik()
            .decode(br#"{"AccessControllerEvent":{"currTemperature":36.5,"thermometryUnit":"rankine"}}"#)
            .unwrap_err();
        assert!(matches!(e, DecodeError::UnknownUnit { .. }));
        assert!(matches!(
            hik().decode(&vec![b' '; MAX_PAYLOAD + 1]).unwrap_err(),
            DecodeError::TooLarge(_)
        ));
    }

    #[test]
    fn gate_command_encodes_as_the_documented_json() {
        let p = Profiles::builtin()
            .get("generic-gate-mqtt")
            .unwrap()
            .clone();
        let out = p
            .encode_command(&CommandArgs {
                command: GateCommandName::Deny,
                address: None,
                reason: "fever",
                cause: "12\"x",
                lane: "east-1",
                device: "gate-1",
                ts_ms: 1700000000000,
            })
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action":"deny","reason":"fever","cause":"12\"x","lane":"east-1","ts":1700000000000i64})
        );
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/device_json.rs`: bounded, no nightly needed.
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = hik().decode(&data);
        }

        #[test]
        fn decoders_never_panic_on_json_of_any_shape(
            serial in proptest::prelude::any::<i64>(),
            t in proptest::prelude::any::<f64>(),
            unit in "[a-z]{0,12}",
            who in proptest::option::of("\\PC{0,40}"),
            flag in proptest::prelude::any::<bool>(),
        ) {
            let v = serde_json::json!({"AccessControllerEvent": {
                "serialNo": serial, "currTemperature": t, "thermometryUnit": unit,
                "employeeNoString": who, "isAbnomalTemperature": flag }});
            if let Ok(d) = hik().decode(v.to_string().as_bytes()) {
                proptest::prop_assert_eq!(d.event_id, serial.to_string());
            }
        }
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/serial_frames.rs`: every serial profile's
        // decoder and event mapping on arbitrary line bytes in arbitrary chunks.
        #[test]
        fn serial_decoders_never_panic_and_stay_bounded(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            chunk in 1usize..64,
        ) {
            let profiles = Profiles::builtin();
            for name in profiles.names() {
                let Some(p) = profiles.get(name) else { continue };
                let Some(spec) = &p.frame else { continue };
                let mut d = frame::Decoder::new(spec);
                for piece in line.chunks(chunk) {
                    d.push(piece, |f| {
                        let _ = p.decode_frame(&f, String::new());
                    });
                    proptest::prop_assert!(
                        d.buffered() <= 2 * spec.max_len,
                        "{name}: {} bytes held, max_len {}",
                        d.buffered(),
                        spec.max_len
                    );
                }
            }
        }
    }

    #[test]
    fn the_serial_profiles_frames_decode_to_observations() {
        let profiles = Profiles::builtin();
        let wiegand = profiles.get("rs485-wiegand-reader").unwrap();
        let spec = wiegand.frame.as_ref().unwrap();
        let values = [("addr".to_string(), 2u64), ("bits".to_string(), 34)].into();
        let bytes = spec.encode(&values, &frame::wiegand_encode(34, 4321, 555, 5));
        let mut got = Vec::new();
        frame::Decoder::new(spec).push(&bytes, |f| got.push(wiegand.decode_frame(&f, "e".into())));
        let d = got.remove(0).unwrap();
        assert_eq!(
            (d.subject.as_deref(), d.credential),
            (Some("4321:555"), CredentialKind::Card)
        );
        let face = profiles.get("rs485-face-id").unwrap();
        let spec = face.frame.as_ref().unwrap();
        let bytes = spec.encode(&[("cmd".to_string(), 0x20u64)].into(), b"");
        frame::Decoder::new(spec).push(&bytes, |f| got.push(face.decode_frame(&f, "e".into())));
        let d = got.remove(0).unwrap();
        assert!(d.stranger && d.subject.is_none());
        // The turnstile's documented open-left frame.
        let eb = profiles.get("rs485-turnstile-eb").unwrap();
        let out = eb
            .encode_command(&CommandArgs {
                command: GateCommandName::OpenIn,
                address: Some(1),
                reason: "ok",
                cause: "",
                lane: "",
                device: "",
                ts_ms: 0,
            })
            .unwrap();
        assert_eq!(out, crate::hex::parse_hex("EB 01 40 00 AA").unwrap());
        // The 5B barrier's documented open, and no command at all on a denial.
        let b5 = profiles.get("rs485-barrier-5b").unwrap();
        let args = |command| CommandArgs {
            command,
            address: None,
            reason: "",
            cause: "",
            lane: "",
            device: "",
            ts_ms: 0,
        };
        assert_eq!(
            b5.encode_command(&args(GateCommandName::OpenIn)).unwrap(),
            crate::hex::parse_hex("5B B2 01 00 00 B3 5D").unwrap()
        );
        assert_eq!(b5.encode_command(&args(GateCommandName::Deny)), None);
        let ack = crate::hex::parse_hex("5B AB 00 00 AB 5D").unwrap();
        let mut codes = Vec::new();
        frame::Decoder::new(b5.reply_frame.as_ref().unwrap())
            .push(&ack, |f| codes.push(b5.ack_code(&f)));
        assert_eq!(codes, vec![Some(0)]);
    }

    #[test]
    fn another_json_terminal_is_a_new_file_not_new_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("acme.toml"),
            r#"
name = "acme-thermal-face"
roles = ["thermal", "identifier"]
transport = "mqtt"
event_topic = "acme/{device_id}/events"
[decode]
format = "json"
event_id = "/data/recordId"
subject = "/data/personCode"
[decode.temperature]
pointer = "/data/temp"
unit_pointer = "/data/unit"
units = { C = "celsius", F = "fahrenheit" }
scale = 0.1
"#,
        )
        .unwrap();
        let (profiles, problems) = Profiles::load(Some(dir.path()));
        assert!(problems.is_empty(), "{problems:?}");
        let p = profiles.get("acme-thermal-face").unwrap();
        assert_eq!(p.event_topic_for("t9").as_deref(), Some("acme/t9/events"));
        let d = p
            .decode(br#"{"data":{"recordId":"a-1","personCode":"R7","temp":995,"unit":"F"}}"#)
            .unwrap();
        assert_eq!(
            (d.event_id.as_str(), d.subject.as_deref()),
            ("a-1", Some("R7"))
        );
        assert!((d.temperature_c.unwrap() - 37.5).abs() < 1e-9);
    }

    #[test]
    fn a_malformed_profile_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("terminal")).unwrap();
        let f = dir.path().join("terminal/bad.toml");
        std::fs::write(&f, "name = \"bad\"\nroles = [\"thermal\"]\ntransport = \"mqtt\"\nevent_topic = \"x\"\n[decode]\nformat = \"json\"\nsubject = \"no-slash\"\n").unwrap();
        std::fs::write(dir.path().join("broken.toml"), "name = ").unwrap();
        let (p, problems) = Profiles::load(Some(dir.path()));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|x| x.path.ends_with("terminal/bad.toml")
                    && x.message.contains("decode.subject"))
        );
        assert!(problems.iter().any(|x| x.path.ends_with("broken.toml")));
        assert!(p.get("bad").is_none());
    }
}
