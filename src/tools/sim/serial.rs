//! Simulated RS-485 devices on pseudo-terminal pairs: the daemon opens the pty's device path as
//! it would `/dev/ttyUSB0`, the simulator holds the other end. Each can add line noise (a bit
//! error rate) to what it sends or receives.
//!
//! - [`Turnstile`] (`rs485-turnstile-eb`): decodes command frames, reports each one.
//! - [`Reader`]: sends identifications as a Wiegand reader (`rs485-wiegand-reader`) or a
//!   face-id reader (`rs485-face-id`) would.
use crate::device::frame::{self, Decoder, FrameSpec};
use crate::device::Profiles;
use crate::tools::sim::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

/// One pty pair: the simulator's end and the path the daemon opens.
pub struct Pty {
    pub path: PathBuf,
    pub master: SerialStream,
    /// The daemon's side stays open here too, so the simulator's end never sees a hang-up while
    /// the daemon reopens the port.
    pub(crate) _slave: SerialStream,
}

impl Pty {
    pub fn new() -> std::io::Result<Pty> {
        let (master, slave) = SerialStream::pair().map_err(std::io::Error::other)?;
        let path = tokio_serial::SerialPort::name(&slave)
            .map(PathBuf::from)
            .ok_or_else(|| std::io::Error::other("pty without a name"))?;
        Ok(Pty {
            path,
            master,
            _slave: slave,
        })
    }
}

/// Flips each bit with probability `ber`. Returns how many bits it flipped.
pub fn add_noise(bytes: &mut [u8], ber: f64, rng: &mut Rng) -> u64 {
    if ber <= 0.0 {
        return 0;
    }
    let mut flipped = 0;
    for b in bytes.iter_mut() {
        for bit in 0..8 {
            if rng.unit() < ber {
                *b ^= 1 << bit;
                flipped += 1;
            }
        }
    }
    flipped
}

fn spec(profile: &str) -> FrameSpec {
    Profiles::builtin()
        .get(profile)
        .and_then(|p| p.frame.clone())
        .expect("built-in serial profile")
}

/// A command as the simulated turnstile decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnstileCommand {
    pub addr: u8,
    pub cmd: u8,
}

impl TurnstileCommand {
    pub const OPEN_LEFT: u8 = 0x40;
    pub const OPEN_RIGHT: u8 = 0x41;
    pub const BAN: u8 = 0x42;
    pub const HOLD_OPEN: u8 = 0x43;
    pub const RELEASE: u8 = 0x44;

    pub fn opens(&self) -> bool {
        matches!(
            self.cmd,
            Self::OPEN_LEFT | Self::OPEN_RIGHT | Self::HOLD_OPEN
        )
    }
}

/// Runs an `rs485-turnstile-eb` controller on the pty until `out` is dropped or the line
/// closes. `ber` corrupts what it receives, as a noisy line would; corrupted frames fail their
/// checksum here, as in the real controller. Returns the checksum errors it saw.
pub async fn run_turnstile(
    pty: Pty,
    ber: f64,
    seed: u64,
    out: mpsc::Sender<TurnstileCommand>,
) -> u64 {
    controller(pty, "rs485-turnstile-eb", ber, seed, None, out, |field| {
        TurnstileCommand {
            addr: field("addr"),
            cmd: field("cmd"),
        }
    })
    .await
}

/// A simulated controller: decodes the command frames of `profile` off the pty (through `ber`
/// noise, as the line delivers them), answers each with `reply` if given, and reports it as
/// `report` makes it of the frame's fields. Returns the checksum errors it saw.
async fn controller<T>(
    mut pty: Pty,
    profile: &str,
    ber: f64,
    seed: u64,
    reply: Option<Vec<u8>>,
    out: mpsc::Sender<T>,
    report: impl Fn(&dyn Fn(&str) -> u8) -> T,
) -> u64 {
    let mut decoder = Decoder::new(&spec(profile));
    let mut rng = Rng::new(seed);
    let mut buf = [0u8; 256];
    loop {
        let n = match pty.master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        add_noise(&mut buf[..n], ber, &mut rng);
        let mut got = Vec::new();
        decoder.push(&buf[..n], |f| got.push(f));
        for f in got {
            if let Some(r) = &reply {
                if pty.master.write_all(r).await.is_err() {
                    return decoder.discarded.checksum_errors;
                }
            }
            let field = |k: &str| f.get(k).and_then(frame::Value::as_int).unwrap_or(0) as u8;
            if out.send(report(&field)).await.is_err() {
                return decoder.discarded.checksum_errors;
            }
        }
    }
    decoder.discarded.checksum_errors
}

/// The sending side of a line (readers write here), with optional noise.
pub struct Line {
    pty: Pty,
    ber: f64,
    rng: Rng,
    /// Bits flipped so far by the noise.
    pub flipped: u64,
}

impl Line {
    pub fn new(pty: Pty, ber: f64, seed: u64) -> Line {
        Line {
            pty,
            ber,
            rng: Rng::new(seed),
            flipped: 0,
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.pty.path
    }

    /// Writes bytes to the line, through the noise.
    pub async fn send(&mut self, mut bytes: Vec<u8>) -> std::io::Result<()> {
        self.flipped += add_noise(&mut bytes, self.ber, &mut self.rng);
        self.pty.master.write_all(&bytes).await?;
        self.pty.master.flush().await
    }
}

/// Builds a reader's identification frames.
pub struct Reader {
    spec: FrameSpec,
    addr: u64,
}

impl Reader {
    /// `profile`: `rs485-wiegand-reader` or `rs485-face-id`.
    pub fn new(profile: &str, addr: u64) -> Reader {
        Reader {
            spec: spec(profile),
            addr,
        }
    }

    /// The frame for a Wiegand card (`bits` 26 or 34).
    pub fn wiegand(&self, bits: u32, facility: u32, card: u16) -> Vec<u8> {
        let values = BTreeMap::from([("addr".into(), self.addr), ("bits".into(), bits.into())]);
        self.spec
            .encode(&values, &frame::wiegand_encode(bits, facility, card, 5))
    }

    /// The frame of a face-id reader: `cmd` 0x21 face matched (`id` = person id), 0x22 card or
    /// QR number, 0x20 a stranger (empty id).
    pub fn id(&self, cmd: u8, id: &str) -> Vec<u8> {
        let values = BTreeMap::from([("addr".into(), self.addr), ("cmd".into(), cmd.into())]);
        self.spec.encode(&values, id.as_bytes())
    }
}

/// A frame as the simulated 5B barrier controller decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierFrame {
    pub cmd: u8,
    pub param: u8,
}

/// Runs an `rs485-barrier-5b` controller on the pty: decodes command frames (through `ber` noise,
/// as the line delivers them), answers each with `5B AB 00 00 AB 5D` (accepted), and reports it.
pub async fn run_barrier_5b(pty: Pty, ber: f64, seed: u64, out: mpsc::Sender<BarrierFrame>) -> u64 {
    let reply = Profiles::builtin()
        .get("rs485-barrier-5b")
        .and_then(|p| p.reply_frame.clone())
        .expect("built-in profile")
        .encode(&BTreeMap::from([("cmd".into(), 0xAB)]), &[]);
    controller(
        pty,
        "rs485-barrier-5b",
        ber,
        seed,
        Some(reply),
        out,
        |field| BarrierFrame {
            cmd: field("cmd"),
            param: field("param"),
        },
    )
    .await
}
