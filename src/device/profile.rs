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
        "devices/terminal/hikvision-isapi.toml",
        include_str!("../../devices/terminal/hikvision-isapi.toml"),
    ),
    (
        "devices/terminal/dahua-access.toml",
        include_str!("../../devices/terminal/dahua-access.toml"),
    ),
    (
        "devices/terminal/zkteco-adms.toml",
        include_str!("../../devices/terminal/zkteco-adms.toml"),
    ),
    (
        "devices/camera/zhenshi-ivs-http.toml",
        include_str!("../../devices/camera/zhenshi-ivs-http.toml"),
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
        "devices/io/modbus-fire-input.toml",
        include_str!("../../devices/io/modbus-fire-input.toml"),
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
    /// The device pushes its events over HTTP to gatehouse's device listener (and may be
    /// reached by its vendor's API, `[http] api`).
    Http,
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
    /// Modbus profiles of a fire panel's input: which discrete inputs say fire and line fault.
    pub fire_input: Option<super::modbus_map::FireInputSpec>,
    /// Serial profiles whose device answers in another layout than the commands (a barrier's
    /// acknowledgements).
    pub reply_frame: Option<FrameSpec>,
    /// Which reply frames acknowledge a command, and the field with the result code (0 = ok).
    pub frame_ack: Option<FrameAck>,
    /// MQTT devices: further topics that report the device's state (an arm's position, a loop
    /// input, the reply to a command), each with where its value is.
    #[serde(default)]
    pub status_topics: Vec<StatusTopic>,
    /// HTTP devices: how the device pushes and how its push is answered.
    pub http: Option<HttpSpec>,
    /// How the device proves it is alive: silence (no event, heartbeat, keep-alive ping, poll)
    /// longer than this and it is reported offline (`device_offline`, status and twin), and
    /// `device_online` when it is heard again. 0: not watched this way (serial ports and Modbus
    /// slaves are watched by their link).
    #[serde(default)]
    pub offline_after_s: u64,
}

/// How an HTTP device pushes its events, and what answers them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The `multipart/form-data` part that holds the event (Hikvision: `event_log`); the other
    /// parts (pictures) are skipped unread. A body that is not multipart is the event itself.
    #[serde(default = "default_event_part")]
    pub event_part: String,
    /// What answers a push: `ack` — 200 once its decision is durable (the device only learns
    /// "delivered"); `command` — the reply is the gate command (a camera that lifts its barrier
    /// when told "ok"): it goes at once, and `ack_body` once durable when nothing opens.
    #[serde(default)]
    pub reply: Reply,
    /// The body of an answer that opens nothing (a duplicate, a stored record, a heartbeat).
    /// `{event_id}` in it stands for the event's id (a number as a number, else a JSON string);
    /// an answer to a push with no id (a heartbeat) is then empty.
    #[serde(default)]
    pub ack_body: String,
    /// The answer to a record the device kept while offline (its `stored` marker), once it is
    /// stored, where it differs from `ack_body`: Zhenshi's `ContinuePushOffline`, which the camera
    /// waits for before it sends the next one.
    pub stored_ack_body: Option<String>,
    /// The body's character set where the device mislabels it (`gb18030`, `gbk`, `gb2312`,
    /// `utf-8`); otherwise the `charset` of its Content-Type says, UTF-8 without one.
    pub charset: Option<String>,
    /// A multipart body with this field and no event part is the device's heartbeat (Zhenshi's
    /// registration form: `device_name`, `ipaddr`, …, `serialno`): answered empty, and the
    /// device heard.
    pub heartbeat_field: Option<String>,
    /// The vendor API gatehouse speaks to the device itself, where it does (`isapi`: arming
    /// stream, `httpHosts` self-configuration, catch-up, door control).
    pub api: Option<Api>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    #[default]
    Ack,
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Hikvision ISAPI.
    Isapi,
    /// Dahua CGI (`eventManager.cgi` stream, `accessControl.cgi` door).
    Dahua,
    /// ZKTeco ADMS ("iclock"): the device polls gatehouse (`sources/http/adms.rs`).
    Adms,
}

fn default_event_part() -> String {
    "event_log".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusTopic {
    /// `{device_id}` is replaced.
    pub topic: String,
    pub kind: StatusKind,
    /// JSON pointer to the value (an integer); not read for a heartbeat.
    #[serde(default)]
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
    /// A keep-alive: the message itself is the sign of life (its value is not read).
    Heartbeat,
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

    /// It lets someone through.
    pub fn opens(self) -> bool {
        matches!(
            self,
            GateCommandName::OpenIn | GateCommandName::OpenOut | GateCommandName::HoldOpen
        )
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
    /// A time the device stamps its events with, read only as part of the event's identity —
    /// never as its age — where the device's clock cannot be trusted as one (`time` does both).
    pub id_time: Option<String>,
    /// A card number (string or number), read as the card credential when `subject` names
    /// nobody: a terminal reports a card swipe by the card, not the person.
    pub card: Option<String>,
    /// The device's own marker of a stored event (uploaded late, after it was offline): the
    /// field, and the values that mean "stored"; any other value means live.
    pub stored: Option<Marker>,
    /// How the device's heartbeat is told from an event: the field, and the values that mean
    /// "heartbeat" (none: the field being there does). `time` says where its clock is.
    pub heartbeat: Option<Marker>,
    /// A terminal's report of its own door lock: the field, and the codes for opened and
    /// closed. An opening no open of gatehouse's explains raises the tamper alarm (the terminal
    /// opened its door itself, bypassing the rules).
    pub door: Option<DoorField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorField {
    pub pointer: String,
    pub opened: Vec<i64>,
    pub closed: Vec<i64>,
}

/// A field whose value marks a message as something (a stored event, a heartbeat).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub pointer: String,
    /// The values that mean yes (compared as JSON); empty: the field's presence does.
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
    /// Heartbeats: where the device's clock is in it.
    pub time: Option<String>,
}

impl Marker {
    /// `None` when the field is absent; else whether its value means yes.
    pub fn matches(&self, v: &serde_json::Value) -> Option<bool> {
        let found = super::pointer::at(v, &self.pointer).filter(|x| !x.is_null())?;
        Some(self.values.is_empty() || self.values.contains(found))
    }
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

impl TemperatureField {
    /// The unit a device names, matched without regard to case (`Celsius`, `celsius`).
    pub fn unit(&self, name: &str) -> Option<Unit> {
        let name = name.trim();
        self.units
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, u)| *u)
    }
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
    /// The fields go inside an object of this name (`{"RemoteControlDoor":{"cmd":"open"}}`).
    pub wrap: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Var {
    Action,
    Reason,
    Cause,
    /// The id of the event that caused it: a number as a number, else a string (a camera that
    /// wants its read's id back, as Zhenshi's `plateid`).
    EventId,
    Lane,
    Device,
    Ts,
}

impl HttpSpec {
    /// The body that answers a push that opens nothing: the stored answer for a record the
    /// device kept while offline, with the event's id filled in.
    pub fn ack_for(&self, event_id: &str, stored: bool) -> String {
        let template = match (&self.stored_ack_body, stored) {
            (Some(body), true) => body,
            _ => &self.ack_body,
        };
        if !template.contains("{event_id}") {
            return template.clone();
        }
        if event_id.is_empty() {
            return String::new();
        }
        template.replace("{event_id}", &json_id(event_id))
    }
}

/// An event id as JSON: a number stays a number.
pub fn json_id(id: &str) -> String {
    // Only an id written as a number is one ("007" stays the string it was).
    match id.parse::<u64>() {
        Ok(n) if n.to_string() == id => id.to_string(),
        _ => serde_json::Value::from(id).to_string(),
    }
}

impl Profile {
    /// Whether the device sends a heartbeat of its own (in its events or on a status topic): how
    /// it can be heard alive where gatehouse does not see its connection.
    pub fn has_heartbeat(&self) -> bool {
        self.decode.as_ref().is_some_and(|d| d.heartbeat.is_some())
            || self
                .status_topics
                .iter()
                .any(|t| t.kind == StatusKind::Heartbeat)
    }

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
                ("decode.card", d.card.as_deref()),
                ("decode.time", d.time.as_deref()),
                (
                    "decode.stored.pointer",
                    d.stored.as_ref().map(|m| m.pointer.as_str()),
                ),
                (
                    "decode.heartbeat.pointer",
                    d.heartbeat.as_ref().map(|m| m.pointer.as_str()),
                ),
                (
                    "decode.door.pointer",
                    d.door.as_ref().map(|m| m.pointer.as_str()),
                ),
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
            if self.event_topic.is_none() && self.transport == Transport::Mqtt {
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
            Transport::Http => {
                if self.http.is_none() {
                    out.push("http: required for an http profile".into());
                }
                let charset = self.http.as_ref().and_then(|h| h.charset.as_deref());
                if let Some(c) = charset {
                    if encoding_rs::Encoding::for_label(c.as_bytes()).is_none() {
                        out.push(format!("http.charset: {c:?} is not a character set"));
                    }
                }
                if senses && self.decode.is_none() {
                    out.push("decode: required for a profile with a sensing role".into());
                }
            }
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
                None if self.fire_input.is_some() => {
                    if let Some(f) = &self.fire_input {
                        if f.span().1 > 2000 {
                            out.push(
                                "fire_input: fire and fault must lie within 2000 inputs".into(),
                            );
                        }
                    }
                }
                None => out.push("modbus or fire_input: required for a modbus profile".into()),
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
