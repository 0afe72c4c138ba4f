//! The codec a profile describes: a device's JSON payload or serial frame decoded into the core's
//! observation, and a gate command encoded into the model's JSON or frame. Fields the profile does
//! not name are never looked at; bad input is a clear [`DecodeError`], never a panic.
use super::frame;
use super::profile::{Encoding, GateCommandName, Profile, StatusKind, Var, MAX_PAYLOAD};
use crate::decision::{Decoded, Direction, StateReport};
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
    #[error("{pointer}: confidence {value} outside 0–100")]
    BadConfidence { pointer: String, value: i64 },
}

impl Profile {
    /// Decodes one event payload. Fields the profile does not name are never looked at.
    pub fn decode(&self, payload: &[u8]) -> Result<Decoded, DecodeError> {
        let spec = self.decode.as_ref().ok_or(DecodeError::NoDecoder)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let mut out = Decoded::default();
        if let Some(p) = &spec.event_id {
            out.event_id = id_at(&v, p)?.unwrap_or_default();
        }
        if let Some(p) = &spec.subject {
            out.subject = id_at(&v, p)?.filter(|s| !s.is_empty());
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
        out.credential = spec.credential;
        out.dedupe = spec.dedupe;
        if let Some(p) = &spec.confidence {
            out.confidence = match v.pointer(p) {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => {
                    let value = n.as_i64().unwrap_or(-1);
                    Some(
                        u8::try_from(value)
                            .ok()
                            .filter(|c| *c <= 100)
                            .ok_or_else(|| DecodeError::BadConfidence {
                                pointer: p.clone(),
                                value,
                            })?,
                    )
                }
                Some(other) => return Err(wrong(p, "a number", other)),
            };
        }
        if let Some(d) = &spec.direction {
            out.direction = match v.pointer(&d.pointer) {
                Some(Value::Number(n)) => n.as_i64().and_then(|code| {
                    if d.inward.contains(&code) {
                        Some(Direction::In)
                    } else if d.outward.contains(&code) {
                        Some(Direction::Out)
                    } else {
                        // An unknown code: the lane's direction holds.
                        None
                    }
                }),
                _ => None,
            };
        }
        if let Some(p) = &spec.time {
            // An unreadable time costs the event its age, not its answer.
            out.device_time_ms = match v.pointer(p) {
                Some(Value::String(t)) => crate::timefmt::parse_time_ms(t),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(|n| crate::timefmt::parse_time_ms(&n.to_string())),
                _ => None,
            };
        }
        if let Some(p) = &spec.device_abnormal {
            out.device_abnormal = match v.pointer(p) {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => return Err(wrong(p, "a boolean", other)),
            };
        }
        if let Some(t) = &spec.temperature {
            out.temperature_c = match v.pointer(&t.pointer) {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => {
                    let raw = n.as_f64().unwrap_or(f64::NAN) * t.scale;
                    let unit = match t.unit_pointer.as_deref().and_then(|p| v.pointer(p)) {
                        None | Some(Value::Null) => t.default_unit,
                        Some(Value::String(name)) => {
                            *t.units
                                .get(name.as_str())
                                .ok_or_else(|| DecodeError::UnknownUnit {
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
                    Some(unit.to_celsius(raw))
                }
                Some(other) => return Err(wrong(&t.pointer, "a number", other)),
            };
        }
        Ok(out)
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
        let v: Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        let n = match v.pointer(&st.pointer) {
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
                Var::Lane => write_json_str(&mut out, c.lane),
                Var::Device => write_json_str(&mut out, c.device),
                Var::Ts => out.extend_from_slice(c.ts_ms.to_string().as_bytes()),
            }
        }
        for (field, value) in &spec.constants {
            if out.len() > 1 {
                out.push(b',');
            }
            write_json_str(&mut out, field);
            out.push(b':');
            serde_json::to_writer(&mut out, value).ok()?;
        }
        out.push(b'}');
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
    match v.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(other) => Err(wrong(pointer, "a string or an integer", other)),
    }
}
