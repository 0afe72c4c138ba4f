//! The codec a profile describes: a device's JSON payload or serial frame decoded into the core's
//! observation, and a gate command encoded into the model's JSON or frame. Fields the profile does
//! not name are never looked at; bad input is a clear [`DecodeError`], never a panic.
use super::frame;
use super::pointer::at;
use super::profile::{Encoding, GateCommandName, Profile, StatusKind, Var, MAX_PAYLOAD};
use crate::decision::{CredentialKind, Decoded, Direction, StateReport};
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{pointer}: expected {expected}, got {got}")]
    WrongType {
        pointer: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("{pointer}: unknown unit {unit:?}")]
    UnknownUnit { pointer: String, unit: String },
    #[error("this profile decodes no events")]
    NoDecoder,
    #[error("{pointer}: not base64 of UTF-8 text")]
    BadEncoding { pointer: String },
    #[error("{pointer}: {text:?} is not a number")]
    NotANumber { pointer: String, text: String },
    #[error("{pointer}: confidence {value} outside 0–100")]
    BadConfidence { pointer: String, value: i64 },
}

impl Profile {
    /// Decodes one event payload (JSON). Fields the profile does not name are never looked at.
    pub fn decode(&self, payload: &[u8]) -> Result<Decoded, DecodeError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        self.decode_value(&v)
    }

    /// Decodes one event already parsed (a JSON body, or an XML one turned into JSON by
    /// [`super::xml`]). A heartbeat comes out as [`StateReport::Heartbeat`]. An event whose
    /// identity reads but some other field does not is still an event, marked `unreadable`: the
    /// person it names gets an answer (`invalid_reading`), not silence.
    pub fn decode_value(&self, v: &Value) -> Result<Decoded, DecodeError> {
        let spec = self.decode.as_ref().ok_or(DecodeError::NoDecoder)?;
        let mut out = Decoded::default();
        if let Some(p) = &spec.time {
            out.device_time_ms = time_at(v, p);
        }
        if let Some(h) = &spec.heartbeat {
            if h.matches(v) == Some(true) {
                out.state = Some(StateReport::Heartbeat);
                if let Some(p) = &h.time {
                    out.device_time_ms = time_at(v, p);
                }
                return Ok(out);
            }
        }
        if let Some(d) = &spec.door {
            let code = number_at(v, &d.pointer).ok().flatten().map(|n| n as i64);
            let arm = match code {
                Some(c) if d.opened.contains(&c) => Some(crate::decision::barrier::Arm::Up),
                Some(c) if d.closed.contains(&c) => Some(crate::decision::barrier::Arm::Down),
                _ => None,
            };
            if let Some(arm) = arm {
                out.state = Some(StateReport::Arm(arm));
                // A lock report uploaded late is what was, not what is.
                out.stored = spec.stored.as_ref().and_then(|m| m.matches(v));
                return Ok(out);
            }
        }
        if let Some(p) = &spec.event_id {
            out.event_id = id_at(v, p)?.unwrap_or_default();
        }
        if let Some(p) = &spec.id_time {
            out.id_time_ms = time_at(v, p);
        }
        out.credential = spec.credential;
        if let Some(p) = &spec.subject {
            out.subject = id_at(v, p)?.filter(|s| !s.is_empty());
            if spec.subject_encoding == Encoding::Base64 {
                out.subject = match out.subject.take() {
                    None => None,
                    Some(s) => Some(
                        decode_base64(&s)
                            .ok_or_else(|| DecodeError::BadEncoding { pointer: p.clone() })?,
                    ),
                }
                .filter(|s| !s.is_empty());
            }
        }
        if let (None, Some(p)) = (&out.subject, &spec.card) {
            // A card swipe: the terminal names the card, not the person.
            out.subject = id_at(v, p)?.filter(|s| !s.is_empty());
            if out.subject.is_some() {
                out.credential = CredentialKind::Card;
            }
        }
        out.dedupe = spec.dedupe;
        out.stored = spec.stored.as_ref().and_then(|m| m.matches(v));
        if let Err(e) = self.decode_readings(spec, v, &mut out) {
            if out.subject.is_none() {
                return Err(e);
            }
            out.unreadable = Some(e.to_string());
        }
        Ok(out)
    }

    /// The measured fields of an event: confidence, direction, the device's flag, temperature.
    fn decode_readings(
        &self,
        spec: &super::profile::Decode,
        v: &Value,
        out: &mut Decoded,
    ) -> Result<(), DecodeError> {
        if let Some(p) = &spec.confidence {
            out.confidence = match number_at(v, p)? {
                None => None,
                Some(n) => Some(
                    u8::try_from(n as i64)
                        .ok()
                        .filter(|c| *c <= 100 && n.fract() == 0.0)
                        .ok_or_else(|| DecodeError::BadConfidence {
                            pointer: p.clone(),
                            value: n as i64,
                        })?,
                ),
            };
        }
        if let Some(d) = &spec.direction {
            // An unknown or unreadable code: the lane's direction holds.
            out.direction = number_at(v, &d.pointer).ok().flatten().and_then(|n| {
                let code = n as i64;
                if d.inward.contains(&code) {
                    Some(Direction::In)
                } else if d.outward.contains(&code) {
                    Some(Direction::Out)
                } else {
                    None
                }
            });
        }
        if let Some(p) = &spec.device_abnormal {
            out.device_abnormal = match at(v, p) {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(Value::Number(n)) => Some(n.as_f64() != Some(0.0)),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
                Some(other) => return Err(wrong(p, "a boolean", other)),
            };
        }
        if let Some(t) = &spec.temperature {
            out.temperature_c = match number_at(v, &t.pointer)? {
                None => None,
                Some(n) => {
                    let unit = match t.unit_pointer.as_deref().and_then(|p| at(v, p)) {
                        None | Some(Value::Null) => t.default_unit,
                        Some(Value::String(name)) => {
                            t.unit(name).ok_or_else(|| DecodeError::UnknownUnit {
                                pointer: t.unit_pointer.clone().unwrap_or_default(),
                                unit: name.clone(),
                            })?
                        }
                        Some(other) => {
                            return Err(wrong(
                                t.unit_pointer.as_deref().unwrap_or_default(),
                                "a string",
                                other,
                            ))
                        }
                    };
                    Some(unit.to_celsius(n * t.scale))
                }
            };
        }
        Ok(())
    }

    /// Decodes a message on the profile's status topic `index`.
    pub fn decode_status(&self, index: usize, payload: &[u8]) -> Result<Decoded, DecodeError> {
        use crate::decision::barrier::Arm;
        let st = self
            .status_topics
            .get(index)
            .ok_or(DecodeError::NoDecoder)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        if st.kind == StatusKind::Heartbeat {
            return Ok(Decoded {
                state: Some(StateReport::Heartbeat),
                ..Default::default()
            });
        }
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let n = match at(&v, &st.pointer) {
            Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
            Some(other) => return Err(wrong(&st.pointer, "an integer", other)),
            None => return Err(wrong(&st.pointer, "an integer", &Value::Null)),
        };
        let state = match st.kind {
            StatusKind::Arm => {
                StateReport::Arm(match st.values.get(&n.to_string()).map(String::as_str) {
                    Some("up") => Arm::Up,
                    Some("down") => Arm::Down,
                    Some("moving") => Arm::Moving,
                    // An unknown code: the arm's position is unknown, not guessed.
                    _ => Arm::Unknown,
                })
            }
            StatusKind::Loop => StateReport::Loop(n != 0),
            StatusKind::Ack => StateReport::Ack(n),
            StatusKind::Heartbeat => StateReport::Heartbeat,
        };
        Ok(Decoded {
            state: Some(state),
            ..Default::default()
        })
    }
}

impl Profile {
    /// The result code if this frame acknowledges a command.
    pub fn ack_code(&self, f: &frame::Frame) -> Option<u64> {
        let a = self.frame_ack.as_ref()?;
        let matches = a
            .when
            .iter()
            .all(|(k, v)| f.get(k).and_then(frame::Value::as_int) == Some(*v));
        if !matches {
            return None;
        }
        f.get(&a.code).and_then(frame::Value::as_int)
    }

    /// Decodes one serial frame (already checked by the frame decoder) into an observation;
    /// `None` for a frame that carries none (a status reply, a heartbeat).
    pub fn decode_frame(&self, f: &frame::Frame, event_id: String) -> Option<Decoded> {
        let e = self.frame_events.iter().find(|e| {
            e.when
                .iter()
                .all(|(k, v)| f.get(k).and_then(frame::Value::as_int) == Some(*v))
        })?;
        let subject = e
            .subject
            .as_ref()
            .and_then(|k| f.get(k))
            .map(frame::Value::to_id)
            .filter(|s| !s.is_empty());
        let temperature_c = e
            .temperature
            .as_ref()
            .and_then(|k| f.get(k))
            .and_then(frame::Value::as_int)
            .map(|n| n as f64 * e.temperature_scale);
        Some(Decoded {
            event_id,
            subject,
            credential: e.credential,
            temperature_c,
            stranger: e.stranger,
            ..Default::default()
        })
    }

    /// Encodes a gate command for this model; `None` if the profile takes no such command.
    pub fn encode_command(&self, c: &CommandArgs<'_>) -> Option<Vec<u8>> {
        if let Some(spec) = &self.frame {
            let mut values = self.frame_commands.get(&c.command)?.clone();
            if let (Some(field), Some(addr)) = (&spec.address_field, c.address) {
                values.insert(field.clone(), addr);
            }
            return Some(spec.encode(&values, &[]));
        }
        let spec = self.command.as_ref()?;
        let action = match c.command {
            GateCommandName::OpenIn | GateCommandName::OpenOut => &spec.open,
            GateCommandName::Deny => spec.deny.as_ref()?,
            GateCommandName::HoldOpen => spec.hold_open.as_ref()?,
            GateCommandName::Release => spec.release.as_ref()?,
        };
        let mut out = Vec::with_capacity(128);
        if let Some(w) = &spec.wrap {
            out.push(b'{');
            write_json_str(&mut out, w);
            out.push(b':');
        }
        let start = out.len();
        out.push(b'{');
        for (i, (field, var)) in spec.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, field);
            out.push(b':');
            match var {
                Var::Action => write_json_str(&mut out, action),
                Var::Reason => write_json_str(&mut out, c.reason),
                Var::Cause => write_json_str(&mut out, c.cause),
                Var::EventId => out.extend_from_slice(super::profile::json_id(c.cause).as_bytes()),
                Var::Lane => write_json_str(&mut out, c.lane),
                Var::Device => write_json_str(&mut out, c.device),
                Var::Ts => out.extend_from_slice(c.ts_ms.to_string().as_bytes()),
            }
        }
        for (field, value) in &spec.constants {
            if out.len() > start + 1 {
                out.push(b',');
            }
            write_json_str(&mut out, field);
            out.push(b':');
            serde_json::to_writer(&mut out, value).ok()?;
        }
        out.push(b'}');
        if spec.wrap.is_some() {
            out.push(b'}');
        }
        Some(out)
    }
}

fn decode_base64(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// What goes into a gate command.
#[derive(Debug, Clone, Copy)]
pub struct CommandArgs<'a> {
    pub command: GateCommandName,
    /// The device's bus address (serial profiles with an address field).
    pub address: Option<u64>,
    pub reason: &'a str,
    pub cause: &'a str,
    pub lane: &'a str,
    pub device: &'a str,
    pub ts_ms: i64,
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping; writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("writing JSON into a Vec cannot fail");
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(pointer: &str, expected: &'static str, got: &Value) -> DecodeError {
    DecodeError::WrongType {
        pointer: pointer.to_string(),
        expected,
        got: kind(got),
    }
}

/// An identifier: a string, or an integer that some firmware sends instead.
fn id_at(v: &Value, pointer: &str) -> Result<Option<String>, DecodeError> {
    match at(v, pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(other) => Err(wrong(pointer, "a string or an integer", other)),
    }
}

/// A number, or a string holding one (firmware that quotes its numbers: `"36.5"`). NaN and
/// infinities are refused.
fn number_at(v: &Value, pointer: &str) -> Result<Option<f64>, DecodeError> {
    let found = match at(v, pointer) {
        None | Some(Value::Null) => return Ok(None),
        Some(found) => found,
    };
    let (n, text) = match found {
        Value::Number(n) => (n.as_f64(), None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => (s.trim().parse::<f64>().ok(), Some(s)),
        other => return Err(wrong(pointer, "a number", other)),
    };
    match n.filter(|n| n.is_finite()) {
        Some(n) => Ok(Some(n)),
        None => Err(DecodeError::NotANumber {
            pointer: pointer.to_string(),
            text: text.cloned().unwrap_or_else(|| found.to_string()),
        }),
    }
}

/// A device time: RFC 3339 text, or unix seconds / ms as a number or a string. An unreadable
/// time costs the event its age, not its answer.
fn time_at(v: &Value, pointer: &str) -> Option<i64> {
    match at(v, pointer)? {
        Value::String(t) => crate::timefmt::parse_time_ms(t),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| crate::timefmt::parse_time_ms(&n.to_string())),
        _ => None,
    }
}
