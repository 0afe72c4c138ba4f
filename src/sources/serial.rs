//! Serial devices (RS-485 / RS-232): one task per port, shared by every device on that line.
//!
//! The task reads bytes, runs them through each profile's frame decoder (resynchronising after
//! noise), hands observations to the decision loop, and writes gate command frames. A port that
//! cannot be opened or that breaks (a USB adapter pulled out) is reported offline once, retried
//! with jittered, capped backoff, and reported online again when it opens.
use crate::backoff::Backoff;
use crate::config::SerialSettings;
use crate::device::frame::Decoder;
use crate::device::Profile;
use crate::metrics::{worth_logging, Metrics};
use crate::sources::{Input, LinkChange, SourceEvent};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_serial::SerialPortBuilderExt;
use tracing::{info, warn};

/// One device on a port.
pub struct SerialDevice {
    /// Index into the core's devices.
    pub device: usize,
    pub device_id: String,
    pub profile: Arc<Profile>,
    /// Its bus address; `None` takes frames of any address.
    pub address: Option<u64>,
    pub live: Arc<super::DeviceLive>,
}

pub struct Port {
    pub settings: SerialSettings,
    pub devices: Vec<SerialDevice>,
}

/// Command frames waiting for the port; a full queue refuses new commands (the gate stays shut).
pub const WRITE_QUEUE: usize = 64;

/// A command frame older than this when its turn to be written comes is dropped: an open that
/// arrives seconds late opens for whoever stands there then.
pub const MAX_FRAME_AGE: Duration = Duration::from_secs(1);

/// A gate command frame and when it was decided.
pub struct Frame {
    pub at: Instant,
    pub bytes: Vec<u8>,
}

/// Where a port's command frames go. While the port is down nothing is queued: the frame is
/// refused at once, and the gate stays shut.
#[derive(Clone)]
pub struct PortWriter {
    tx: mpsc::Sender<Frame>,
    up: Arc<AtomicBool>,
}

impl PortWriter {
    /// False when the frame was not taken (port down, queue full, task gone).
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        self.up.load(Ordering::Relaxed)
            && self
                .tx
                .try_send(Frame {
                    at: Instant::now(),
                    bytes,
                })
                .is_ok()
    }
}

/// Starts the port's task. Returns where its command frames go.
pub fn spawn(
    port: Port,
    input: mpsc::Sender<Input>,
    links: mpsc::Sender<SourceEvent>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (PortWriter, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let up = Arc::new(AtomicBool::new(false));
    let join = tokio::spawn(run(port, input, links, metrics, shutdown, rx, up.clone()));
    (PortWriter { tx, up }, join)
}

async fn run(
    port: Port,
    input: mpsc::Sender<Input>,
    links: mpsc::Sender<SourceEvent>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    mut writes: mpsc::Receiver<Frame>,
    up: Arc<AtomicBool>,
) {
    let path = port.settings.path.display().to_string();
    let devices: Vec<usize> = port.devices.iter().map(|d| d.device).collect();
    let mut backoff = Backoff::device_link();
    // None until the first open attempt: a port that works from the start is no news.
    let mut online: Option<bool> = None;
    let report = |online: bool, detail: String| {
        let _ = links.try_send(SourceEvent::Link(LinkChange {
            devices: devices.clone(),
            online,
            detail,
        }));
    };
    let mut lines = Lines::new(&port, &path);
    while !*shutdown.borrow() {
        let error = match open(&port.settings) {
            Ok(stream) => {
                if online == Some(false) {
                    info!(port = %path, "Serial port back.");
                    report(true, format!("serial port {path} back"));
                }
                online = Some(true);
                backoff.reset();
                up.store(true, Ordering::Relaxed);
                let e = lines
                    .serve(stream, &input, &links, &metrics, &mut shutdown, &mut writes)
                    .await;
                up.store(false, Ordering::Relaxed);
                match e {
                    None => break,
                    Some(e) => e,
                }
            }
            Err(e) => e.to_string(),
        };
        let n = metrics.serial_link_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if online != Some(false) {
            warn!(port = %path, error = %error, "Serial port lost; its devices are offline. Retrying.");
            report(false, format!("serial port {path}: {error}"));
            online = Some(false);
        } else if worth_logging(n) {
            warn!(port = %path, error = %error, failures = n, "Serial port still unavailable.");
        }
        // Commands for an absent port are stale by the time it returns: drop what was queued
        // before it went (nothing is queued while it is down).
        while writes.try_recv().is_ok() {
            Metrics::inc(&metrics.commands_stale);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

pub(crate) fn open(s: &SerialSettings) -> tokio_serial::Result<tokio_serial::SerialStream> {
    tokio_serial::new(s.path.to_string_lossy(), s.baud)
        .data_bits(match s.data_bits {
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match s.parity {
            crate::config::Parity::None => tokio_serial::Parity::None,
            crate::config::Parity::Even => tokio_serial::Parity::Even,
            crate::config::Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match s.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        })
        .open_native_async()
}

/// The decoders of one line: one per profile on it, each with the devices that use it.
struct Lines<'a> {
    path: &'a str,
    decoders: Vec<(Decoder, Vec<&'a SerialDevice>)>,
    /// Serial devices have no event ids: `{unix ms at start}.{n}` is unique per gateway.
    epoch: i64,
    seq: u64,
}

impl<'a> Lines<'a> {
    fn new(port: &'a Port, path: &'a str) -> Self {
        let mut decoders: Vec<(Decoder, Vec<&SerialDevice>)> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for d in &port.devices {
            // What the device sends: its replies' layout if it has its own, else the frame's.
            let Some(spec) = d.profile.reply_frame.as_ref().or(d.profile.frame.as_ref()) else {
                continue;
            };
            match names.iter().position(|n| *n == d.profile.name) {
                Some(i) => decoders[i].1.push(d),
                None => {
                    names.push(&d.profile.name);
                    decoders.push((Decoder::new(spec), vec![d]));
                }
            }
        }
        Lines {
            path,
            decoders,
            epoch: crate::now_ms(),
            seq: 0,
        }
    }

    /// Serves an open port until it breaks (`Some(why)`) or shutdown (`None`).
    async fn serve(
        &mut self,
        stream: tokio_serial::SerialStream,
        input: &mpsc::Sender<Input>,
        notes: &mpsc::Sender<SourceEvent>,
        metrics: &Metrics,
        shutdown: &mut watch::Receiver<bool>,
        writes: &mut mpsc::Receiver<Frame>,
    ) -> Option<String> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) => return Some("end of file (device gone)".into()),
                    Ok(n) => {
                        let received = Instant::now();
                        for input_item in self.feed(&buf[..n], received, notes, metrics) {
                            if input.send(input_item).await.is_err() {
                                return None;
                            }
                        }
                    }
                    Err(e) => return Some(e.to_string()),
                },
                w = writes.recv() => match w {
                    Some(frame) if frame.at.elapsed() > MAX_FRAME_AGE => {
                        let n = metrics.commands_stale.fetch_add(1, Ordering::Relaxed) + 1;
                        if worth_logging(n) {
                            warn!(port = %self.path, age_ms = frame.at.elapsed().as_millis() as u64, stale = n, "Gate command too old to write; dropped.");
                        }
                    }
                    Some(frame) => {
                        if let Err(e) = wr.write_all(&frame.bytes).await {
                            return Some(e.to_string());
                        }
                    }
                    None => return None,
                },
                _ = shutdown.changed() => return None,
            }
        }
    }

    fn feed(
        &mut self,
        bytes: &[u8],
        received: Instant,
        notes: &mpsc::Sender<SourceEvent>,
        metrics: &Metrics,
    ) -> Vec<Input> {
        let mut out = Vec::new();
        for (decoder, devices) in &mut self.decoders {
            let before = decoder.discarded;
            let mut frames = Vec::new();
            decoder.push(bytes, |f| frames.push(f));
            let after = decoder.discarded;
            Metrics::add(
                &metrics.frame_noise_bytes,
                after.noise_bytes - before.noise_bytes,
            );
            Metrics::add(&metrics.frame_malformed, after.malformed - before.malformed);
            let bad = after.checksum_errors - before.checksum_errors;
            let dropped = bad + after.malformed - before.malformed;
            for d in devices.iter().filter(|_| dropped > 0) {
                d.live.frame_errors.fetch_add(dropped, Ordering::Relaxed);
            }
            if bad > 0 {
                let n = metrics
                    .frame_checksum_errors
                    .fetch_add(bad, Ordering::Relaxed)
                    + bad;
                if worth_logging(n) {
                    warn!(
                        port = self.path,
                        checksum_errors = n,
                        "Serial frames with bad checksums dropped (line noise?)."
                    );
                }
            }
            for f in frames {
                Metrics::inc(&metrics.frames);
                let profile = &devices[0].profile;
                let addr = profile
                    .reply_frame
                    .as_ref()
                    .or(profile.frame.as_ref())
                    .and_then(|s| s.address_field.as_ref())
                    .and_then(|a| f.get(a))
                    .and_then(crate::device::frame::Value::as_int);
                let Some(dev) = devices
                    .iter()
                    .find(|d| d.address.is_none() || d.address == addr)
                else {
                    continue;
                };
                if let Some(code) = dev.profile.ack_code(&f) {
                    dev.live.heard();
                    let _ = notes.try_send(SourceEvent::Ack {
                        device: dev.device,
                        code,
                    });
                    continue;
                }
                self.seq += 1;
                let event_id = format!("{}.{}", self.epoch, self.seq);
                let Some(decoded) = dev.profile.decode_frame(&f, event_id) else {
                    continue;
                };
                dev.live.heard();
                Metrics::inc(&metrics.events_received);
                out.push(Input {
                    reply: None,
                    device: dev.device,
                    decoded: Some(decoded),
                    received,
                    redelivered: false,
                    // A serial device cannot resend: there is nothing to acknowledge.
                    ack: Box::new(|| {}),
                });
            }
        }
        out
    }
}
