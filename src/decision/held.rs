//! Observations the core holds before their outcome is decided — an identification waiting in
//! its join window, a separate thermal station's reading waiting to be joined — written to the
//! durable state with the ack of the message that brought them, and deleted with their outcome.
//! A crash in between loses nothing the device was told is safe: the next start puts them back.
//!
//! The value is a small binary record (little-endian; strings with a u32 length), so the core
//! needs no serializer crate.
use super::vocabulary::{CredentialKind, Decoded, Direction};

/// A held observation as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// An identification waiting for a reading until `until_ms`.
    Waiting {
        device: String,
        at_ms: i64,
        until_ms: i64,
        decoded: Decoded,
    },
    /// A reading waiting for an identification.
    Reading {
        device: String,
        at_ms: i64,
        temperature_c: f64,
        device_abnormal: Option<bool>,
        cause: String,
    },
}

/// The state key's id of a held observation: unique per device, time and event.
pub fn key(device: &str, at_ms: i64, event_id: &str) -> String {
    format!("{device}/{at_ms}/{event_id}")
}

impl Held {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        match self {
            Held::Waiting {
                device,
                at_ms,
                until_ms,
                decoded: d,
            } => {
                w.push(1);
                put_str(&mut w, device);
                w.extend_from_slice(&at_ms.to_le_bytes());
                w.extend_from_slice(&until_ms.to_le_bytes());
                put_str(&mut w, &d.event_id);
                put_opt_str(&mut w, d.subject.as_deref());
                w.push(match d.credential {
                    CredentialKind::Person => 0,
                    CredentialKind::Card => 1,
                    CredentialKind::Plate => 2,
                });
                put_opt_f64(&mut w, d.temperature_c);
                w.push(opt_bool(d.device_abnormal));
                w.push(u8::from(d.stranger));
                w.push(d.confidence.map_or(0, |c| c.saturating_add(1)));
                w.push(match d.direction {
                    None => 0,
                    Some(Direction::In) => 1,
                    Some(Direction::Out) => 2,
                });
                w.push(u8::from(d.dedupe));
                put_opt_f64(&mut w, d.device_time_ms.map(|t| t as f64));
            }
            Held::Reading {
                device,
                at_ms,
                temperature_c,
                device_abnormal,
                cause,
            } => {
                w.push(2);
                put_str(&mut w, device);
                w.extend_from_slice(&at_ms.to_le_bytes());
                w.extend_from_slice(&temperature_c.to_le_bytes());
                w.push(opt_bool(*device_abnormal));
                put_str(&mut w, cause);
            }
        }
        w
    }

    /// `None` for a damaged record (it is dropped; at worst one observation is decided as if
    /// it had not been held).
    pub fn decode(bytes: &[u8]) -> Option<Held> {
        let mut r = Reader(bytes);
        match r.u8()? {
            1 => {
                let device = r.string()?;
                let at_ms = r.i64()?;
                let until_ms = r.i64()?;
                let event_id = r.string()?;
                let subject = r.opt_string()?;
                let credential = match r.u8()? {
                    0 => CredentialKind::Person,
                    1 => CredentialKind::Card,
                    2 => CredentialKind::Plate,
                    _ => return None,
                };
                let temperature_c = r.opt_f64()?;
                let device_abnormal = r.opt_bool()?;
                let stranger = r.u8()? != 0;
                let confidence = r.u8()?.checked_sub(1);
                let direction = match r.u8()? {
                    0 => None,
                    1 => Some(Direction::In),
                    2 => Some(Direction::Out),
                    _ => return None,
                };
                let dedupe = r.u8()? != 0;
                let device_time_ms = r.opt_f64()?.map(|t| t as i64);
                Some(Held::Waiting {
                    device,
                    at_ms,
                    until_ms,
                    decoded: Decoded {
                        event_id,
                        subject,
                        credential,
                        temperature_c,
                        device_abnormal,
                        stranger,
                        confidence,
                        direction,
                        dedupe,
                        state: None,
                        device_time_ms,
                        // Only the dedupe key, taken before the event was held.
                        id_time_ms: None,
                        stored: None,
                        unreadable: None,
                    },
                })
            }
            2 => Some(Held::Reading {
                device: r.string()?,
                at_ms: r.i64()?,
                temperature_c: r.f64()?,
                device_abnormal: r.opt_bool()?,
                cause: r.string()?,
            }),
            _ => None,
        }
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(&(s.len() as u32).to_le_bytes());
    w.extend_from_slice(s.as_bytes());
}

fn put_opt_str(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => w.push(0),
        Some(s) => {
            w.push(1);
            put_str(w, s);
        }
    }
}

fn put_opt_f64(w: &mut Vec<u8>, v: Option<f64>) {
    match v {
        None => w.push(0),
        Some(v) => {
            w.push(1);
            w.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn opt_bool(v: Option<bool>) -> u8 {
    match v {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        Some(match self.u8()? {
            0 => None,
            _ => Some(self.string()?),
        })
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        Some(match self.u8()? {
            0 => None,
            _ => Some(self.f64()?),
        })
    }

    fn opt_bool(&mut self) -> Option<Option<bool>> {
        Some(match self.u8()? {
            0 => None,
            1 => Some(false),
            _ => Some(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn held_observations_read_back_as_written() {
        let w = Held::Waiting {
            device: "face-2".into(),
            at_ms: 1_800_000_000_000,
            until_ms: 1_800_000_001_500,
            decoded: Decoded {
                event_id: "e1".into(),
                subject: Some("R000001".into()),
                credential: CredentialKind::Card,
                temperature_c: None,
                device_abnormal: Some(false),
                stranger: false,
                confidence: Some(0),
                direction: Some(Direction::Out),
                dedupe: true,
                state: None,
                device_time_ms: Some(1_799_999_999_000),
                id_time_ms: None,
                stored: None,
                unreadable: None,
            },
        };
        assert_eq!(Held::decode(&w.encode()), Some(w));
        let r = Held::Reading {
            device: "thermal-2".into(),
            at_ms: 5,
            temperature_c: 38.25,
            device_abnormal: None,
            cause: "serial-9".into(),
        };
        assert_eq!(Held::decode(&r.encode()), Some(r));
    }

    proptest! {
        #[test]
        fn damaged_records_are_refused_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Held::decode(&bytes);
        }
    }
}
