//! Modbus barriers (`modbus-relay-barrier`): a relay module whose coils pulse OPEN / CLOSE /
//! STOP and whose discrete inputs are the arm's limit switches and the two loops.
//!
//! One task per bus: a Modbus TCP connection, or an RTU line shared by several slaves. Each slave
//! is polled in turn every `poll_ms`; a change of inputs goes to the decision loop (the barrier
//! interlock decides what follows). A slave that stops answering is timed out, and after three
//! misses reported offline (its state unknown, a `device_offline` alarm) and polled with growing
//! backoff (up to 5 s), so a dead slave costs the others at most its own timeout now and then.
//! It is back online at its first answer. Exception responses and short answers (fewer input
//! bits than asked for) are counted and logged and make the state unknown, like silence: a
//! missing bit is never read as "clear".
//!
//! Commands (from the interlock) are written only on the link they were sent for: one sent
//! while the bus was down, or still queued when it went down, is never written after it comes
//! back, nor one older than [`COMMAND_MAX_AGE`] — a late OPEN lifts the arm for whoever stands
//! there then. A CLOSE is judged again at the moment it is written, on a fresh read of the
//! barrier's inputs ([`may_close`]): a car that rolled onto the safety loop since the interlock
//! decided is never under a falling arm. Every command not written goes back to the decision
//! loop as [`SourceEvent::NotWritten`], with why.
use crate::backoff::Backoff;
use crate::config::SerialSettings;
use crate::decision::barrier::{may_close, BarrierCommand, BarrierInputs};
use crate::device::ModbusSpec;
use crate::metrics::{worth_logging, Metrics};
use crate::sources::DeviceLive;
use crate::sources::{LinkChange, SourceEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveContext};
use tokio_modbus::Slave;
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModbusLink {
    /// `host:port`.
    Tcp(String),
    /// RTU on a serial line.
    Rtu(SerialSettings),
}

pub struct ModbusDevice {
    /// Index into the core's devices.
    pub device: usize,
    pub device_id: String,
    pub unit: u8,
    pub spec: ModbusSpec,
    pub live: Arc<DeviceLive>,
}

pub struct Bus {
    pub link: ModbusLink,
    pub devices: Vec<ModbusDevice>,
    pub poll: Duration,
    /// One request's patience.
    pub timeout: Duration,
}

/// What a barrier said on a poll: its inputs (`None`: unreadable) and fault code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierReport {
    pub device: usize,
    pub inputs: Option<BarrierInputs>,
    pub fault: Option<u16>,
}

/// Misses in a row before a slave is reported offline.
const MISSES_OFFLINE: u32 = 3;

/// A barrier command older than this when its turn to be written comes is dropped (the
/// transport's bound, as for the endpoint's and the serial ports' gate commands).
pub const COMMAND_MAX_AGE: Duration = Duration::from_secs(1);
const TOO_OLD: &str = "waited past its bound (1 s) for the bus";

/// Commands queued for one bus. Full: the command is refused at once (`Actuators::barrier`
/// reports it not written); a bus that keeps up never holds more than a few.
pub const COMMAND_QUEUE: usize = 64;

/// One command from the interlock, and when it was sent.
#[derive(Debug, Clone, Copy)]
pub struct BusCommand {
    pub device: usize,
    pub command: BarrierCommand,
    pub at: Instant,
}

/// Starts the bus task. Returns where barrier commands go.
pub fn spawn(
    bus: Bus,
    reports: mpsc::Sender<BarrierReport>,
    links: mpsc::Sender<SourceEvent>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (mpsc::Sender<BusCommand>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let join = tokio::spawn(run(bus, reports, links, metrics, shutdown, rx));
    (tx, join)
}

/// Why a command was not written: its link went down first (or it was sent while it was down).
const LINK_DOWN: &str = "barrier link down when it was to be written";

/// Tells the decision loop that `c` was not written, and why. One kept from a lost link, or past
/// its bound, also counts as stale (`commands_stale`).
fn not_written(c: BusCommand, why: &'static str, links: &mpsc::Sender<SourceEvent>, m: &Metrics) {
    if why == LINK_DOWN || why == TOO_OLD {
        Metrics::inc(&m.commands_stale);
    }
    let _ = links.try_send(SourceEvent::NotWritten {
        device: c.device,
        command: c.command.as_str(),
        why,
    });
}

struct SlaveState {
    failures: u32,
    offline: bool,
    skip_until: Instant,
    last: Option<BarrierInputs>,
    last_fault: Option<u16>,
    /// A coil held on, and when to let it go.
    release: Option<(u16, Instant)>,
}

async fn run(
    bus: Bus,
    reports: mpsc::Sender<BarrierReport>,
    links: mpsc::Sender<SourceEvent>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    mut commands: mpsc::Receiver<BusCommand>,
) {
    let name = match &bus.link {
        ModbusLink::Tcp(a) => format!("modbus tcp {a}"),
        ModbusLink::Rtu(s) => format!("modbus rtu {}", s.path.display()),
    };
    let now = Instant::now();
    let mut slaves: Vec<SlaveState> = bus
        .devices
        .iter()
        .map(|_| SlaveState {
            failures: 0,
            offline: false,
            skip_until: now,
            last: None,
            last_fault: None,
            release: None,
        })
        .collect();
    let mut backoff = Backoff::device_link();
    while !*shutdown.borrow() {
        let connecting = connect(&bus.link, bus.timeout);
        let connected = tokio::select! {
            _ = shutdown.changed() => return,
            c = connecting => c,
        };
        let mut ctx = match connected {
            Ok(ctx) => ctx,
            Err(e) => {
                let n = metrics.serial_link_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n) {
                    warn!(bus = %name, error = %e, failures = n, "Modbus bus unreachable; its barriers are unknown. Retrying.");
                }
                for (i, d) in bus.devices.iter().enumerate() {
                    mark_offline(d, &mut slaves[i], &reports, &links, &format!("{name}: {e}"))
                        .await;
                }
                // Down: whatever the interlock sends now is refused at once, never kept.
                let pause = tokio::time::sleep(backoff.next_delay());
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = shutdown.changed() => return,
                        c = commands.recv() => match c {
                            Some(c) => not_written(c, LINK_DOWN, &links, &metrics),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        // Anything sent before this moment was sent to a link that was down.
        let up_since = Instant::now();
        backoff.reset();
        let mut poll = tokio::time::interval(bus.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let broken = loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                c = commands.recv() => {
                    let Some(c) = c else { return };
                    let Some(i) = bus.devices.iter().position(|d| d.device == c.device) else { continue };
                    let why = if c.at.elapsed() > COMMAND_MAX_AGE {
                        Some(TOO_OLD)
                    } else if c.at < up_since {
                        Some(LINK_DOWN)
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        not_written(c, why, &links, &metrics);
                        continue;
                    }
                    if let Err(e) = write(&bus, &mut ctx, i, c, &mut slaves, &reports, &links, &metrics).await {
                        break e;
                    }
                }
                _ = poll.tick() => {
                    if let Err(e) = poll_all(&bus, &mut ctx, &mut slaves, &reports, &links, &metrics, &name).await {
                        break e;
                    }
                    Metrics::inc(&metrics.source_ticks);
                }
            }
        };
        warn!(bus = %name, error = %broken, "Modbus connection lost; reconnecting.");
        // What was queued for the lost link is never written on the next one.
        while let Ok(c) = commands.try_recv() {
            not_written(c, LINK_DOWN, &links, &metrics);
        }
    }
}

/// Writes one command's coil. A CLOSE first reads the barrier afresh and goes only if
/// [`may_close`] allows it on what it reads now. Returns why the connection broke (TCP), if it
/// did.
#[allow(clippy::too_many_arguments)]
async fn write(
    bus: &Bus,
    ctx: &mut Context,
    i: usize,
    c: BusCommand,
    slaves: &mut [SlaveState],
    reports: &mpsc::Sender<BarrierReport>,
    links: &mpsc::Sender<SourceEvent>,
    metrics: &Metrics,
) -> Result<(), String> {
    let d = &bus.devices[i];
    ctx.set_slave(Slave(d.unit));
    let coil = match c.command {
        BarrierCommand::Open => d.spec.coils.open,
        BarrierCommand::Close => {
            let fresh = match read_inputs(bus, ctx, d, metrics).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    not_written(c, LINK_DOWN, links, metrics);
                    return Err(e);
                }
            };
            let s = &mut slaves[i];
            if fresh.is_some() && s.last != fresh {
                // What the close was judged on goes to the interlock too.
                s.last = fresh;
                let report = BarrierReport {
                    device: d.device,
                    inputs: fresh,
                    fault: s.last_fault,
                };
                let _ = reports.send(report).await;
            }
            if let Err(why) = may_close(fresh) {
                not_written(c, why, links, metrics);
                return Ok(());
            }
            d.spec.coils.close
        }
    };
    // A pulse still on (a close a reversal follows within `pulse_ms`) goes off first: two
    // coils on at once is a controller told to close and open, and the first would never be
    // released.
    if let Some((other, _)) = slaves[i].release.filter(|(other, _)| *other != coil) {
        let off = tokio::time::timeout(bus.timeout, ctx.write_single_coil(other, false)).await;
        if let Ok(Ok(Ok(()))) = off {
            slaves[i].release = None;
        }
    }
    let release = Instant::now() + Duration::from_millis(d.spec.pulse_ms);
    match tokio::time::timeout(bus.timeout, ctx.write_single_coil(coil, true)).await {
        Ok(Ok(Ok(()))) => {
            Metrics::inc(&metrics.commands_sent);
            slaves[i].release = Some((coil, release));
        }
        Ok(Ok(Err(exception))) => {
            // The slave answered that it did not do it.
            Metrics::inc(&metrics.command_errors);
            warn!(device = %d.device_id, command = ?c.command, ?exception, "Barrier refused the command.");
            not_written(
                c,
                "the barrier answered with a Modbus exception",
                links,
                metrics,
            );
        }
        Ok(Err(e)) => {
            Metrics::inc(&metrics.command_errors);
            not_written(c, LINK_DOWN, links, metrics);
            if matches!(bus.link, ModbusLink::Tcp(_)) {
                return Err(e.to_string());
            }
        }
        Err(_) => {
            // It may have been written and not answered: the interlock reports the outcome as
            // uncertain when the limit switch does not follow. Nothing is retried here, but the
            // coil is released as if it had been (switching off a coil that is off is harmless).
            slaves[i].release = Some((coil, release));
            let n = metrics.command_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %d.device_id, command = ?c.command, "Barrier command not answered in time.");
            }
        }
    }
    Ok(())
}

/// A slave's answer that says nothing about its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// It answered with a Modbus exception.
    Exception(ExceptionCode),
    /// It answered with fewer input bits than asked for (or with another function's answer).
    Short,
}

/// Reads `count` discrete inputs from `first`. Fewer bits than asked for is an answer that
/// cannot be trusted, never padded with "off". The outer error is the transport's.
pub(crate) async fn read_bits(
    ctx: &mut Context,
    first: u16,
    count: u16,
) -> Result<Result<Vec<bool>, Unreadable>, tokio_modbus::Error> {
    // Through `call`, not `read_discrete_inputs`: that one asserts the count in debug builds,
    // and pads nothing in release ones.
    Ok(
        match ctx.call(Request::ReadDiscreteInputs(first, count)).await? {
            Ok(Response::ReadDiscreteInputs(mut bits)) if bits.len() >= usize::from(count) => {
                bits.truncate(usize::from(count));
                Ok(bits)
            }
            Ok(_) => Err(Unreadable::Short),
            Err(e) => Err(Unreadable::Exception(e)),
        },
    )
}

/// One slave's inputs now: `Ok(None)` when it could not be read (silence, an exception, a short
/// answer), `Err` when the TCP connection broke.
async fn read_inputs(
    bus: &Bus,
    ctx: &mut Context,
    d: &ModbusDevice,
    metrics: &Metrics,
) -> Result<Option<BarrierInputs>, String> {
    let Some((first, count)) = d.spec.inputs.span() else {
        return Ok(None);
    };
    ctx.set_slave(Slave(d.unit));
    let read = tokio::time::timeout(bus.timeout, read_bits(ctx, first, count)).await;
    let bits = match read {
        Ok(Ok(Ok(bits))) => bits,
        Ok(Ok(Err(unreadable))) => {
            let n = metrics.modbus_exceptions.fetch_add(1, Ordering::Relaxed) + 1;
            if worth_logging(n) {
                warn!(device = %d.device_id, ?unreadable, exceptions = n, "Barrier's answer does not say its inputs; its state is unknown.");
            }
            return Ok(None);
        }
        Ok(Err(e)) => {
            if matches!(bus.link, ModbusLink::Tcp(_)) {
                return Err(e.to_string());
            }
            return Ok(None);
        }
        Err(_) => {
            Metrics::inc(&metrics.modbus_timeouts);
            return Ok(None);
        }
    };
    let bit = |a: u16| bits[usize::from(a - first)];
    Ok(Some(BarrierInputs {
        arm_up: bit(d.spec.inputs.arm_up),
        arm_down: bit(d.spec.inputs.arm_down),
        safety_loop: bit(d.spec.inputs.safety_loop),
        arming_loop: bit(d.spec.inputs.arming_loop),
    }))
}

pub(crate) async fn connect(link: &ModbusLink, timeout: Duration) -> std::io::Result<Context> {
    match link {
        ModbusLink::Tcp(addr) => {
            let stream = tokio::time::timeout(timeout * 10, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            stream.set_nodelay(true)?;
            Ok(tokio_modbus::client::tcp::attach(stream))
        }
        ModbusLink::Rtu(settings) => {
            let stream = crate::sources::serial::open(settings).map_err(std::io::Error::other)?;
            Ok(tokio_modbus::client::rtu::attach(stream))
        }
    }
}

/// One round: coil releases that are due, then every slave not backing off. Returns why the
/// connection broke (TCP), if it did.
async fn poll_all(
    bus: &Bus,
    ctx: &mut Context,
    slaves: &mut [SlaveState],
    reports: &mpsc::Sender<BarrierReport>,
    links: &mpsc::Sender<SourceEvent>,
    metrics: &Metrics,
    name: &str,
) -> Result<(), String> {
    for (i, d) in bus.devices.iter().enumerate() {
        let now = Instant::now();
        if let Some((coil, at)) = slaves[i].release {
            if now >= at {
                ctx.set_slave(Slave(d.unit));
                if let Ok(Ok(Ok(()))) =
                    tokio::time::timeout(bus.timeout, ctx.write_single_coil(coil, false)).await
                {
                    slaves[i].release = None;
                }
            }
        }
        if now < slaves[i].skip_until {
            continue;
        }
        let inputs = read_inputs(bus, ctx, d, metrics).await?;
        let s = &mut slaves[i];
        let Some(inputs) = inputs else {
            s.failures += 1;
            if s.failures >= MISSES_OFFLINE {
                // Degraded: try again after a growing pause, so it never stalls the others.
                let exp = (s.failures - MISSES_OFFLINE).min(6);
                let pause = (bus.poll * 2u32.pow(exp)).min(Duration::from_secs(5));
                s.skip_until = Instant::now() + pause;
                mark_offline(
                    d,
                    s,
                    reports,
                    links,
                    &format!("{name}: slave {} not answering", d.unit),
                )
                .await;
            }
            continue;
        };
        let mut fault = s.last_fault;
        if let Some(reg) = d.spec.fault_register {
            if let Ok(Ok(Ok(words))) =
                tokio::time::timeout(bus.timeout, ctx.read_holding_registers(reg, 1)).await
            {
                fault = words.first().copied().filter(|&f| f != 0);
            }
        }
        d.live.heard();
        s.failures = 0;
        s.skip_until = Instant::now();
        if s.offline {
            s.offline = false;
            d.live.offline.store(false, Ordering::Relaxed);
            info!(device = %d.device_id, "Barrier answering again.");
            let _ = links.try_send(SourceEvent::Link(LinkChange {
                devices: vec![d.device],
                online: true,
                detail: format!("{name}: slave {} answering again", d.unit),
            }));
        }
        if s.last != Some(inputs) || s.last_fault != fault {
            s.last = Some(inputs);
            s.last_fault = fault;
            let _ = reports
                .send(BarrierReport {
                    device: d.device,
                    inputs: Some(inputs),
                    fault,
                })
                .await;
        }
    }
    Ok(())
}

async fn mark_offline(
    d: &ModbusDevice,
    s: &mut SlaveState,
    reports: &mpsc::Sender<BarrierReport>,
    links: &mpsc::Sender<SourceEvent>,
    detail: &str,
) {
    if s.offline {
        return;
    }
    s.offline = true;
    s.last = None;
    d.live.offline.store(true, Ordering::Relaxed);
    warn!(device = %d.device_id, detail, "Barrier offline; its state is unknown and nothing will close it.");
    let _ = reports
        .send(BarrierReport {
            device: d.device,
            inputs: None,
            fault: None,
        })
        .await;
    let _ = links.try_send(SourceEvent::Link(LinkChange {
        devices: vec![d.device],
        online: false,
        detail: detail.to_string(),
    }));
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_modbus::client::Reader;

    /// What a discrete-input read makes of `answer` coming back from the slave.
    fn read_with(answer: Vec<u8>, rtu: bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client_side, mut slave_side) = tokio::io::duplex(4096);
            tokio::spawn(async move {
                let mut req = [0u8; 64];
                let _ = slave_side.read(&mut req).await;
                let _ = slave_side.write_all(&answer).await;
            });
            let mut ctx = if rtu {
                tokio_modbus::client::rtu::attach_slave(client_side, tokio_modbus::Slave(1))
            } else {
                tokio_modbus::client::tcp::attach_slave(client_side, tokio_modbus::Slave(1))
            };
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                ctx.read_discrete_inputs(0, 4),
            )
            .await;
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        // The plain-test side of `fuzz/fuzz_targets/modbus_responses.rs`: whatever a slave
        // answers, the read ends in a value or an error.
        #[test]
        fn arbitrary_slave_answers_never_panic(
            answer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            rtu in proptest::prelude::any::<bool>(),
        ) {
            read_with(answer, rtu);
        }
    }
}
