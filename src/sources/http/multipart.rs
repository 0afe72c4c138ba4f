//! A streaming reader of the multipart streams devices hold open (Hikvision `alertStream`,
//! `multipart/mixed`; Dahua's `eventManager.cgi`, `multipart/x-mixed-replace`): bytes in, whole
//! parts out, memory bounded by the largest part taken plus a header block. `multer` reads a
//! finite `form-data` body; these never end, carry parts without names, and must survive garbage
//! between boundaries and a device that never sends one — so this is a small state machine of its
//! own, with no I/O, fuzzed (`fuzz/fuzz_targets/part_stream.rs`).

/// A part's headers may be no longer than this.
const MAX_HEADERS: usize = 8 * 1024;

/// What the stream gave.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A whole part: its content type (lower case, may be empty) and body.
    Part { content_type: String, body: Vec<u8> },
    /// A part over the size limit, skipped unread (a picture): its content type.
    Skipped { content_type: String },
    /// Bytes that belong to no part (between parts, broken headers), dropped.
    Garbage(usize),
}

#[derive(Debug)]
enum State {
    /// Looking for the next boundary.
    Seek,
    /// After a boundary: reading the part's headers.
    Headers,
    /// Reading a body of known length.
    Body { content_type: String, len: usize },
    /// Reading a body that ends at the next boundary.
    Open { content_type: String },
    /// Skipping `left` bytes of a part too large to take.
    Skip { left: usize },
}

pub struct PartStream {
    /// `--{boundary}`.
    delimiter: Vec<u8>,
    max_part: usize,
    buf: Vec<u8>,
    state: State,
}

impl PartStream {
    /// `boundary` as the content type names it (without the leading `--`).
    pub fn new(boundary: &str, max_part: usize) -> PartStream {
        let boundary = boundary.trim().trim_matches('"');
        let boundary = boundary.strip_prefix("--").unwrap_or(boundary);
        PartStream {
            delimiter: format!("--{boundary}").into_bytes(),
            max_part,
            buf: Vec::new(),
            state: State::Seek,
        }
    }

    /// Takes the next bytes off the connection; whatever completes comes out in `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Item>) {
        // A skipped part is dropped straight off the input, never buffered.
        if let State::Skip { left } = &mut self.state {
            let n = (*left).min(bytes.len());
            *left -= n;
            bytes = &bytes[n..];
            if *left == 0 {
                self.state = State::Seek;
            }
        }
        self.buf.extend_from_slice(bytes);
        while self.step(out) {}
    }

    /// One step of the machine; false when it needs more bytes.
    fn step(&mut self, out: &mut Vec<Item>) -> bool {
        match std::mem::replace(&mut self.state, State::Seek) {
            State::Seek => match find(&self.buf, &self.delimiter) {
                Some(at) => {
                    let garbage = self.buf[..at]
                        .iter()
                        .filter(|b| !b.is_ascii_whitespace())
                        .count();
                    if garbage > 0 {
                        out.push(Item::Garbage(garbage));
                    }
                    self.buf.drain(..at + self.delimiter.len());
                    self.state = State::Headers;
                    true
                }
                None => {
                    // Keep what could be the start of a boundary; the rest belongs to nothing.
                    let keep = self.delimiter.len().saturating_sub(1);
                    if self.buf.len() > keep {
                        let cut = self.buf.len() - keep;
                        let garbage = self.buf[..cut]
                            .iter()
                            .filter(|b| !b.is_ascii_whitespace())
                            .count();
                        if garbage > 0 {
                            out.push(Item::Garbage(garbage));
                        }
                        self.buf.drain(..cut);
                    }
                    false
                }
            },
            State::Headers => {
                // The earlier of the two ends: a body may hold the other.
                let crlf = find(&self.buf, b"\r\n\r\n").map(|i| (i, 4));
                let lf = find(&self.buf, b"\n\n").map(|i| (i, 2));
                let end = match (crlf, lf) {
                    (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                    (a, b) => a.or(b),
                };
                let Some((at, sep)) = end else {
                    if self.buf.len() > MAX_HEADERS {
                        out.push(Item::Garbage(self.buf.len()));
                        self.buf.clear();
                    } else {
                        self.state = State::Headers;
                    }
                    return false;
                };
                if at > MAX_HEADERS {
                    out.push(Item::Garbage(at));
                    self.buf.drain(..at + sep);
                    return true;
                }
                let (content_type, len) = headers(&self.buf[..at]);
                self.buf.drain(..at + sep);
                self.state = match len {
                    Some(len) if len > self.max_part => {
                        out.push(Item::Skipped { content_type });
                        let n = len.min(self.buf.len());
                        self.buf.drain(..n);
                        if len > n {
                            State::Skip { left: len - n }
                        } else {
                            State::Seek
                        }
                    }
                    Some(len) => State::Body { content_type, len },
                    None => State::Open { content_type },
                };
                true
            }
            State::Body { content_type, len } => {
                if self.buf.len() < len {
                    self.state = State::Body { content_type, len };
                    return false;
                }
                let body: Vec<u8> = self.buf.drain(..len).collect();
                out.push(Item::Part { content_type, body });
                true
            }
            State::Open { content_type } => match find(&self.buf, &self.delimiter) {
                Some(at) => {
                    let mut body: Vec<u8> = self.buf.drain(..at).collect();
                    while body.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        body.pop();
                    }
                    if body.len() > self.max_part {
                        out.push(Item::Skipped { content_type });
                    } else {
                        out.push(Item::Part { content_type, body });
                    }
                    true
                }
                None if self.buf.len() > self.max_part + self.delimiter.len() => {
                    // Too long to take: skipped up to the next boundary.
                    out.push(Item::Skipped { content_type });
                    let keep = self.delimiter.len().saturating_sub(1);
                    let cut = self.buf.len() - keep;
                    self.buf.drain(..cut);
                    false
                }
                None => {
                    self.state = State::Open { content_type };
                    false
                }
            },
            State::Skip { left } => {
                let n = left.min(self.buf.len());
                self.buf.drain(..n);
                if left > n {
                    self.state = State::Skip { left: left - n };
                    return false;
                }
                true
            }
        }
    }
}

/// The content type (lower case) and length a part's headers give.
fn headers(block: &[u8]) -> (String, Option<usize>) {
    let text = String::from_utf8_lossy(block);
    let mut content_type = String::new();
    let mut len = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-type") {
            content_type = value.to_ascii_lowercase();
        } else if name.trim().eq_ignore_ascii_case("content-length") {
            len = value.parse().ok();
        }
    }
    (content_type, len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(items: &[Item]) -> Vec<(String, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Part { content_type, body } => Some((
                    content_type.clone(),
                    String::from_utf8_lossy(body).into_owned(),
                )),
                _ => None,
            })
            .collect()
    }

    const STREAM: &str = "--boundary\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\n\
        Content-Length: 9\r\n\r\n<a>1</a>\n\r\n--boundary\r\nContent-Type: application/json\r\n\r\n\
        {\"b\":2}\r\n--boundary\r\nContent-Type: image/jpeg\r\nContent-Length: 20\r\n\r\n\
        01234567890123456789\r\n--boundary\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"c\":3}";

    #[test]
    fn parts_come_out_whole_however_the_bytes_are_cut() {
        for chunk in [1, 2, 3, 7, 64, 4096] {
            let mut p = PartStream::new("boundary", 16);
            let mut out = Vec::new();
            for piece in STREAM.as_bytes().chunks(chunk) {
                p.feed(piece, &mut out);
            }
            p.feed(b"\r\n--boundary", &mut out);
            assert_eq!(
                parts(&out),
                vec![
                    (
                        "application/xml; charset=\"utf-8\"".into(),
                        "<a>1</a>\n".into()
                    ),
                    ("application/json".into(), "{\"b\":2}".into()),
                    ("application/json".into(), "{\"c\":3}".into()),
                ],
                "chunk {chunk}"
            );
            assert!(out.contains(&Item::Skipped {
                content_type: "image/jpeg".into()
            }));
        }
    }

    #[test]
    fn garbage_and_a_stream_without_boundaries_cost_bounded_memory() {
        let mut p = PartStream::new("--boundary", 1024);
        let mut out = Vec::new();
        for _ in 0..1000 {
            p.feed(&[b'x'; 1000], &mut out);
        }
        assert!(p.buf.len() < 64, "{}", p.buf.len());
        assert!(out.iter().all(|i| matches!(i, Item::Garbage(_))));
        // An open part that never ends is skipped, not buffered.
        p.feed(b"--boundary\r\nContent-Type: text/plain\r\n\r\n", &mut out);
        for _ in 0..100 {
            p.feed(&[b'y'; 1000], &mut out);
        }
        assert!(p.buf.len() < 2048, "{}", p.buf.len());
        // Headers that never end are dropped too.
        let mut p = PartStream::new("b", 1024);
        p.feed(b"--b\r\n", &mut out);
        for _ in 0..100 {
            p.feed(&[b'h'; 1000], &mut out);
        }
        assert!(p.buf.len() <= MAX_HEADERS + 1000);
        // And it recovers at the next boundary.
        let mut out = Vec::new();
        p.feed(b"\r\n\r\njunk--b\r\nContent-Length: 2\r\n\r\nok", &mut out);
        assert_eq!(parts(&out), vec![(String::new(), "ok".into())]);
    }

    proptest::proptest! {
        // The plain-test side of `fuzz/fuzz_targets/part_stream.rs`: bounded, no nightly needed.
        #[test]
        fn any_bytes_cut_anywhere_never_panic_and_stay_bounded(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            cut in 1usize..64,
        ) {
            let mut p = PartStream::new("b", 256);
            let mut out = Vec::new();
            for piece in data.chunks(cut) {
                p.feed(piece, &mut out);
                proptest::prop_assert!(p.buf.len() <= MAX_HEADERS + 256 + 64);
            }
        }
    }
}
