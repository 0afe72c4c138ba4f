//! Binary frames on serial lines, described declaratively by a device profile: header bytes, typed
//! fields (one of which may give the length of a later one), a checksum and a trailer.
//!
//! ```toml
//! [frame]
//! header = "EB"
//! checksum = "xor"          # xor | sum8 | crc16-modbus | none
//! checksum_from = "start"   # start (header included) | after_header
//! fields = [{ name = "addr", type = "u8" }, { name = "cmd", type = "u8" }, { name = "arg", type = "u8" }]
//! ```
//!
//! [`Decoder`] takes bytes as they come off the line and yields whole frames. After garbage, a
//! bad checksum or a wrong trailer it drops one byte and looks for the next header, so one burst
//! of noise costs the frames it touched and nothing after. Its buffer never grows past twice the
//! profile's `max_len`.
use crate::hex::parse_hex;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checksum {
    None,
    /// XOR of every covered byte.
    Xor,
    /// Sum of every covered byte, modulo 256.
    Sum8,
    /// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
    Crc16Modbus,
}

impl Checksum {
    fn len(self) -> usize {
        match self {
            Checksum::None => 0,
            Checksum::Xor | Checksum::Sum8 => 1,
            Checksum::Crc16Modbus => 2,
        }
    }

    /// The checksum of `covered`, as it appears on the wire.
    pub fn compute(self, covered: &[u8]) -> ([u8; 2], usize) {
        match self {
            Checksum::None => ([0, 0], 0),
            Checksum::Xor => ([covered.iter().fold(0, |a, b| a ^ b), 0], 1),
            Checksum::Sum8 => ([covered.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0], 1),
            Checksum::Crc16Modbus => (crc16_modbus(covered).to_le_bytes(), 2),
        }
    }
}

pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumFrom {
    Start,
    AfterHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    U8,
    U16be,
    U16le,
    U32be,
    /// Raw bytes, `len` long or as long as `len_field` says.
    Bytes,
    /// Printable ASCII text, sized like `bytes`.
    Ascii,
    /// A Wiegand 26 or 34 number, right-aligned big-endian in `len` bytes; the bit count comes
    /// from `bits_field`. Both parity bits are checked; the value is `facility:card` in decimal.
    Wiegand,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Fixed size of a `bytes`, `ascii` or `wiegand` field.
    pub len: Option<usize>,
    /// The earlier integer field that holds this field's size.
    pub len_field: Option<String>,
    /// The earlier integer field that holds the Wiegand bit count (26 or 34).
    pub bits_field: Option<String>,
}

/// A frame layout, as written in a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameSpec {
    /// Hex, e.g. `"5B"` or `"AA55"`.
    #[serde(deserialize_with = "hex")]
    pub header: Vec<u8>,
    #[serde(default, deserialize_with = "hex")]
    pub trailer: Vec<u8>,
    pub checksum: Checksum,
    #[serde(default = "default_from")]
    pub checksum_from: ChecksumFrom,
    /// No frame is longer than this; a length field that says more is noise.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    pub fields: Vec<Field>,
    /// The field with the device's bus address: frames for other addresses on a shared line are
    /// not this device's, and commands carry it.
    pub address_field: Option<String>,
}

fn default_from() -> ChecksumFrom {
    ChecksumFrom::Start
}
fn default_max_len() -> usize {
    64
}

fn hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    parse_hex(&s).map_err(serde::de::Error::custom)
}

/// A field's value in a decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(u64),
    Bytes(Vec<u8>),
    Text(String),
}

impl Value {
    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The value as an identifier: text as is, numbers in decimal, bytes in hex.
    pub fn to_id(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
        }
    }
}

/// A decoded frame: field name → value.
pub type Frame = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("checksum mismatch")]
    Checksum,
    #[error("wrong trailer")]
    Trailer,
    #[error("length {0} beyond the frame limit")]
    TooLong(usize),
    #[error("field {0}: not printable text")]
    NotText(String),
    #[error("field {0}: Wiegand parity error")]
    Parity(String),
    #[error("field {0}: Wiegand bit count {1} (expected 26 or 34)")]
    WiegandBits(String, u64),
}

impl FrameSpec {
    /// Problems with the description itself, for config validation.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.header.is_empty() {
            out.push("header: must be at least one byte (frames are found by it)".into());
        }
        if self.max_len == 0 || self.max_len > 4096 {
            out.push("max_len: must be 1–4096".into());
        }
        let mut earlier: Vec<&str> = Vec::new();
        for f in &self.fields {
            let sized = matches!(
                f.ty,
                FieldType::Bytes | FieldType::Ascii | FieldType::Wiegand
            );
            match (sized, f.len, &f.len_field) {
                (true, None, None) => out.push(format!("{}: needs len or len_field", f.name)),
                (true, Some(_), Some(_)) => {
                    out.push(format!("{}: give len or len_field, not both", f.name))
                }
                (false, Some(_), _) | (false, _, Some(_)) => {
                    out.push(format!("{}: integer fields have a fixed size", f.name))
                }
                _ => {}
            }
            for r in [&f.len_field, &f.bits_field].into_iter().flatten() {
                if !earlier.contains(&r.as_str()) {
                    out.push(format!("{}: {r:?} is not an earlier field", f.name));
                }
            }
            if f.ty == FieldType::Wiegand && f.bits_field.is_none() {
                out.push(format!("{}: a wiegand field needs bits_field", f.name));
            }
            earlier.push(&f.name);
        }
        if let Some(a) = &self.address_field {
            if !earlier.contains(&a.as_str()) {
                out.push(format!("address_field: no field {a:?}"));
            }
        }
        out
    }

    /// Parses one frame at the start of `buf`. `Ok(None)`: more bytes are needed.
    fn parse(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let mut at = self.header.len();
        let mut frame = Frame::new();
        for f in &self.fields {
            let size = match f.ty {
                FieldType::U8 => 1,
                FieldType::U16be | FieldType::U16le => 2,
                FieldType::U32be => 4,
                _ => match (f.len, &f.len_field) {
                    (Some(n), _) => n,
                    (None, Some(lf)) => {
                        let n = frame.get(lf).and_then(Value::as_int).unwrap_or(0);
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }
                    (None, None) => 0,
                },
            };
            if size > self.max_len || at + size > self.max_len {
                return Err(FrameError::TooLong(size));
            }
            let Some(raw) = buf.get(at..at + size) else {
                return Ok(None);
            };
            at += size;
            let v = match f.ty {
                FieldType::U8 => Value::Int(raw[0].into()),
                FieldType::U16be => Value::Int(u16::from_be_bytes([raw[0], raw[1]]).into()),
                FieldType::U16le => Value::Int(u16::from_le_bytes([raw[0], raw[1]]).into()),
                FieldType::U32be => {
                    Value::Int(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]).into())
                }
                FieldType::Bytes => Value::Bytes(raw.to_vec()),
                FieldType::Ascii => {
                    if !raw.iter().all(|b| b.is_ascii_graphic()) {
                        return Err(FrameError::NotText(f.name.clone()));
                    }
                    Value::Text(raw.iter().map(|&b| b as char).collect())
                }
                FieldType::Wiegand => {
                    let bits = f
                        .bits_field
                        .as_ref()
                        .and_then(|b| frame.get(b))
                        .and_then(Value::as_int)
                        .unwrap_or(0);
                    Value::Text(wiegand(raw, bits, &f.name)?)
                }
            };
            frame.insert(f.name.clone(), v);
        }
        let sum_len = self.checksum.len();
        let total = at + sum_len + self.trailer.len();
        if total > self.max_len {
            return Err(FrameError::TooLong(total));
        }
        if buf.len() < total {
            return Ok(None);
        }
        let from = match self.checksum_from {
            ChecksumFrom::Start => 0,
            ChecksumFrom::AfterHeader => self.header.len(),
        };
        let (sum, n) = self.checksum.compute(&buf[from..at]);
        if buf[at..at + sum_len] != sum[..n] {
            return Err(FrameError::Checksum);
        }
        if buf[at + sum_len..total] != self.trailer[..] {
            return Err(FrameError::Trailer);
        }
        Ok(Some((frame, total)))
    }

    /// Encodes a frame. Integer fields come from `values` (missing ones are 0); a sized field
    /// takes `data` (its length field is filled in); checksum and trailer are computed.
    pub fn encode(&self, values: &BTreeMap<String, u64>, data: &[u8]) -> Vec<u8> {
        let mut out = self.header.clone();
        let lengths: BTreeMap<&str, usize> = self
            .fields
            .iter()
            .filter_map(|f| f.len_field.as_deref().map(|lf| (lf, data.len())))
            .collect();
        for f in &self.fields {
            let n = lengths
                .get(f.name.as_str())
                .map(|&l| l as u64)
                .or_else(|| values.get(&f.name).copied())
                .unwrap_or(0);
            match f.ty {
                FieldType::U8 => out.push(n as u8),
                FieldType::U16be => out.extend_from_slice(&(n as u16).to_be_bytes()),
                FieldType::U16le => out.extend_from_slice(&(n as u16).to_le_bytes()),
                FieldType::U32be => out.extend_from_slice(&(n as u32).to_be_bytes()),
                FieldType::Bytes | FieldType::Ascii | FieldType::Wiegand => match f.len {
                    Some(fixed) => {
                        let mut d = data.to_vec();
                        d.resize(fixed, 0);
                        out.extend_from_slice(&d);
                    }
                    None => out.extend_from_slice(data),
                },
            }
        }
        let from = match self.checksum_from {
            ChecksumFrom::Start => 0,
            ChecksumFrom::AfterHeader => self.header.len(),
        };
        let (sum, n) = self.checksum.compute(&out[from..]);
        out.extend_from_slice(&sum[..n]);
        out.extend_from_slice(&self.trailer);
        out
    }
}

/// Decodes a Wiegand number right-aligned in `raw`. W26: even parity over the first 12 data
/// bits, 8-bit facility, 16-bit card, odd parity over the last 12. W34: the same with 16-bit
/// facility and 16-bit halves.
fn wiegand(raw: &[u8], bits: u64, name: &str) -> Result<String, FrameError> {
    if bits != 26 && bits != 34 {
        return Err(FrameError::WiegandBits(name.into(), bits));
    }
    if raw.len() > 8 {
        return Err(FrameError::TooLong(raw.len()));
    }
    let v = raw.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let n = bits as u32;
    if v >> n != 0 {
        return Err(FrameError::Parity(name.into()));
    }
    let data_bits = n - 2;
    let data = (v >> 1) & ((1 << data_bits) - 1);
    let half = data_bits / 2;
    let first = data >> half;
    let second = data & ((1 << half) - 1);
    let even_ok = ((v >> (n - 1)) & 1) as u32 == first.count_ones() % 2;
    let odd_ok = ((v & 1) as u32 + second.count_ones()) % 2 == 1;
    if !even_ok || !odd_ok {
        return Err(FrameError::Parity(name.into()));
    }
    let card_bits = 16;
    let facility = data >> card_bits;
    let card = data & 0xFFFF;
    Ok(format!("{facility}:{card}"))
}

/// Encodes a Wiegand number (for simulators and tests): `bits` 26 or 34, in `len` bytes.
pub fn wiegand_encode(bits: u32, facility: u32, card: u16, len: usize) -> Vec<u8> {
    let data_bits = bits - 2;
    let data = (u64::from(facility) << 16 | u64::from(card)) & ((1 << data_bits) - 1);
    let half = data_bits / 2;
    let first = data >> half;
    let second = data & ((1 << half) - 1);
    let even = u64::from(first.count_ones() % 2);
    let odd = u64::from(second.count_ones() % 2 == 0);
    let v = even << (bits - 1) | data << 1 | odd;
    v.to_be_bytes()[8 - len..].to_vec()
}

/// Counts of what a [`Decoder`] threw away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// Bytes before a header: line noise, or the tail of a broken frame.
    pub noise_bytes: u64,
    /// Frames that failed their checksum.
    pub checksum_errors: u64,
    /// Frames with a wrong trailer, an impossible length, bad text or Wiegand parity.
    pub malformed: u64,
}

/// A streaming decoder for one line.
pub struct Decoder {
    spec: FrameSpec,
    buf: Vec<u8>,
    pub discarded: Discarded,
}

impl Decoder {
    /// Bytes held waiting for the rest of a frame: never more than twice the profile's
    /// `max_len`, whatever the line sends.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl Decoder {
    pub fn new(spec: &FrameSpec) -> Self {
        Decoder {
            spec: spec.clone(),
            buf: Vec::with_capacity(spec.max_len * 2),
            discarded: Discarded::default(),
        }
    }

    /// Feeds bytes; calls `on_frame` for each whole, valid frame.
    pub fn push(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(Frame)) {
        let cap = self.spec.max_len * 2;
        while !bytes.is_empty() {
            let room = cap.saturating_sub(self.buf.len()).max(1);
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = later;
            self.drain(&mut on_frame);
            // `drain` leaves less than one frame, so the buffer stays within `cap`.
        }
    }

    fn drain(&mut self, on_frame: &mut impl FnMut(Frame)) {
        let header = self.spec.header.clone();
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            // Find the next header; keep a partial one at the end.
            let found = rest.windows(header.len()).position(|w| w == &header[..]);
            let skip = match found {
                Some(p) => p,
                None => {
                    // Keep the longest tail that could still begin a header.
                    let keep = (1..header.len())
                        .rev()
                        .find(|&k| rest.len() >= k && header.starts_with(&rest[rest.len() - k..]))
                        .unwrap_or(0);
                    rest.len() - keep
                }
            };
            self.discarded.noise_bytes += skip as u64;
            start += skip;
            if found.is_none() {
                break;
            }
            match self.spec.parse(&self.buf[start..]) {
                Ok(Some((frame, used))) => {
                    on_frame(frame);
                    start += used;
                }
                Ok(None) => break,
                Err(e) => {
                    match e {
                        FrameError::Checksum => self.discarded.checksum_errors += 1,
                        _ => self.discarded.malformed += 1,
                    }
                    // Resynchronise: the next header may lie inside what looked like a frame.
                    start += 1;
                    self.discarded.noise_bytes += 1;
                }
            }
        }
        self.buf.drain(..start);
        let cap = self.spec.max_len * 2;
        if self.buf.len() >= cap {
            // Cannot happen with a valid spec (a frame needs at most max_len), but a buffer that
            // only grows is the one thing a line decoder must never have.
            self.discarded.noise_bytes += self.buf.len() as u64;
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(text: &str) -> FrameSpec {
        let s: FrameSpec = toml::from_str(text).unwrap();
        assert_eq!(s.problems(), Vec::<String>::new());
        s
    }

    fn eb() -> FrameSpec {
        spec(
            r#"header = "EB"
checksum = "xor"
fields = [{ name = "addr", type = "u8" }, { name = "cmd", type = "u8" }, { name = "arg", type = "u8" }]"#,
        )
    }

    fn five_b() -> FrameSpec {
        spec(
            r#"header = "5B"
trailer = "5D"
checksum = "xor"
checksum_from = "after_header"
fields = [{ name = "cmd", type = "u8" }, { name = "param", type = "u8" },
          { name = "len", type = "u16be" }, { name = "data", type = "bytes", len_field = "len" }]"#,
        )
    }

    fn decode_all(s: &FrameSpec, bytes: &[u8]) -> (Vec<Frame>, Discarded) {
        let mut d = Decoder::new(s);
        let mut out = Vec::new();
        d.push(bytes, |f| out.push(f));
        (out, d.discarded)
    }

    fn vals(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_documented_frames_encode_byte_for_byte() {
        // docs/ARCHITECTURE.md, "Contracts": open-left is EB 01 40 00 AA; the 5B open is 5B B2 01 00 00 B3 5D.
        assert_eq!(
            eb().encode(&vals(&[("addr", 1), ("cmd", 0x40)]), &[]),
            parse_hex("EB 01 40 00 AA").unwrap()
        );
        assert_eq!(
            five_b().encode(&vals(&[("cmd", 0xB2), ("param", 1)]), &[]),
            parse_hex("5B B2 01 00 00 B3 5D").unwrap()
        );
        assert_eq!(crc16_modbus(b"123456789"), 0x4B37);
    }

    #[test]
    fn frames_are_found_after_noise_and_a_bad_checksum_is_counted_not_decoded() {
        let s = five_b();
        let good = s.encode(&vals(&[("cmd", 0xB2), ("param", 1)]), b"hi");
        let mut bad = good.clone();
        bad[5] ^= 0x10;
        let mut line = b"\x00\x5B\xFF garbage".to_vec();
        line.extend_from_slice(&bad);
        line.extend_from_slice(&good);
        let (frames, d) = decode_all(&s, &line);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["data"], Value::Bytes(b"hi".to_vec()));
        assert_eq!(d.checksum_errors, 1);
        assert!(d.noise_bytes > 0);
    }

    #[test]
    fn a_frame_split_across_reads_decodes_once() {
        let s = eb();
        let f = s.encode(&vals(&[("addr", 2), ("cmd", 0x41)]), &[]);
        let mut d = Decoder::new(&s);
        let mut n = 0;
        for b in &f {
            d.push(std::slice::from_ref(b), |_| n += 1);
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn wiegand_26_and_34_round_trip_and_a_flipped_bit_fails_parity() {
        for (bits, fac, card, len) in [(26, 123, 45678, 4), (34, 4321, 65535, 5)] {
            let raw = wiegand_encode(bits, fac, card, len);
            assert_eq!(
                wiegand(&raw, bits.into(), "c").unwrap(),
                format!("{fac}:{card}")
            );
            for bit in 0..bits {
                let mut r = raw.clone();
                let byte = len - 1 - (bit / 8) as usize;
                r[byte] ^= 1 << (bit % 8);
                // One flipped bit always breaks a parity half (or the bit count).
                assert!(wiegand(&r, bits.into(), "c").is_err(), "bit {bit}");
            }
        }
    }

    #[test]
    fn a_length_field_beyond_max_len_is_noise_not_an_allocation() {
        let s = five_b();
        let (frames, d) = decode_all(&s, &parse_hex("5B B2 01 FF FF").unwrap());
        assert!(frames.is_empty());
        assert_eq!(d.malformed, 1);
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let s = five_b();
            let mut d = Decoder::new(&s);
            d.push(&bytes, |_| {});
            prop_assert!(d.buf.len() < s.max_len * 2);
        }

        #[test]
        fn every_good_frame_survives_noise_between_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..10),
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no header", |b| *b != 0x5B), 0..10), 10),
        ) {
            let s = five_b();
            let mut line = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                line.extend_from_slice(&noise[i]);
                line.extend_from_slice(&s.encode(&vals(&[("cmd", 0xB2)]), p));
            }
            let (frames, _) = decode_all(&s, &line);
            let got: Vec<Value> = frames.into_iter().map(|mut f| f.remove("data").unwrap()).collect();
            let want: Vec<Value> = payloads.into_iter().map(Value::Bytes).collect();
            prop_assert_eq!(got, want);
        }
    }
}
