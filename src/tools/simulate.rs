//! `gatehouse simulate <profile>`: a simulator for every shipped device profile, speaking its
//! protocol as the device does, for the demo, the benches and trying a gate by hand.
use crate::device::Unit;
use crate::mqtt_client::BrokerUrl;
use crate::run::RunError;
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum SimProfile {
    /// Hikvision face + temperature terminal: publishes AccessControllerEvent JSON.
    #[command(name = "hikvision-acs-event")]
    Hikvision {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, default_value = "thermal-1")]
        device: String,
        /// The device's password on the endpoint (its username is its id); none: anonymous.
        #[arg(long, env = "GATEHOUSE_DEVICE_PASSWORD")]
        password: Option<String>,
        /// Events per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Stop after this many (0: until Ctrl-C).
        #[arg(long, default_value_t = 0)]
        count: u64,
        #[arg(long, default_value_t = 0.05)]
        fever_share: f64,
        #[arg(long, default_value_t = 0.1)]
        stranger_share: f64,
        #[arg(long, default_value_t = 1000)]
        residents: u64,
        #[arg(long, value_enum, default_value_t = UnitArg::Celsius)]
        unit: UnitArg,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Hikvision terminal in ISAPI listening mode: POSTs multipart events (and heartbeats) to
    /// gatehouse's HTTP listener; with --stored, first the records it "stored while offline".
    #[command(name = "hikvision-isapi")]
    HikvisionHttp {
        #[command(flatten)]
        push: PushArgs,
        /// A picture part of this many bytes with each event.
        #[arg(long, default_value_t = 30_000)]
        picture_bytes: usize,
    },
    /// Hikvision terminal for ISAPI arming mode: serves alertStream (Digest), httpHosts, the
    /// AcsEvent search and RemoteControl/door, and prints each door command.
    #[command(name = "hikvision-isapi-terminal")]
    HikvisionTerminal {
        #[command(flatten)]
        terminal: TerminalArgs,
    },
    /// Zhenshi plate camera in HTTP push mode: POSTs plate reads (and heartbeats) and prints
    /// each reply (the reply is the barrier command); with --stored, first its offline records.
    #[command(name = "zhenshi-ivs-http")]
    ZhenshiHttp {
        #[command(flatten)]
        push: PushArgs,
    },
    /// Gate controller: subscribes to its command topic and prints every command.
    #[command(name = "generic-gate-mqtt")]
    Gate {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, default_value = "gate-1")]
        device: String,
        #[arg(long, env = "GATEHOUSE_DEVICE_PASSWORD")]
        password: Option<String>,
    },
    /// Zhenshi plate camera over MQTT: publishes plate reads (`ivs_result`) at the rate and a
    /// keep-alive every 30 s; with --replay, each read is sent twice (its offline replay).
    #[command(name = "zhenshi-ivs")]
    Zhenshi {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, default_value = "cam-1")]
        device: String,
        #[arg(long, env = "GATEHOUSE_DEVICE_PASSWORD")]
        password: Option<String>,
        #[arg(long, default_value_t = 0.2)]
        rate: f64,
        /// Resident plates are 粤B1xxxx (every third household of the demo's list).
        #[arg(long, default_value_t = 300)]
        households: u64,
        #[arg(long)]
        replay: bool,
    },
    /// Dahua access terminal: serves eventManager.cgi (Digest; Code=AccessControl parts and a
    /// heartbeat every 5 s) and accessControl.cgi, and prints each door command.
    #[command(name = "dahua-access")]
    Dahua {
        #[command(flatten)]
        terminal: TerminalArgs,
    },
    /// ZKTeco terminal on ADMS: handshake, attendance records at the rate (with --stored, a
    /// batch dated minutes back first), a poll every second; prints each command.
    #[command(name = "zkteco-adms")]
    Zkteco {
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: String,
        #[arg(long)]
        sn: String,
        #[arg(long, default_value_t = 0.5)]
        rate: f64,
        #[arg(long, default_value_t = 1000)]
        residents: u64,
        #[arg(long, default_value_t = 0)]
        stored: u64,
    },
    /// Modbus relay barrier (unit 1) on a Modbus TCP address: the arm takes 2 s to travel, a car
    /// passes after each open; prints its counts every 10 s.
    #[command(name = "modbus-relay-barrier")]
    ModbusBarrier {
        #[arg(long, default_value = "127.0.0.1:5020")]
        listen: String,
    },
    /// The fire alarm panel's I/O module on Modbus TCP (unit 1): its contact (DI0) reads fire
    /// after --fire-after-s, normal again after --clear-after-s (0: never).
    #[command(name = "modbus-fire-input")]
    FireInput {
        #[arg(long, default_value = "127.0.0.1:5021")]
        listen: String,
        #[arg(long, default_value_t = 10)]
        fire_after_s: u64,
        #[arg(long, default_value_t = 0)]
        clear_after_s: u64,
    },
    /// RS-485 5B barrier controller on a new pseudo-terminal (its path is printed); prints every
    /// command frame it decodes and acknowledges it.
    #[command(name = "rs485-barrier-5b")]
    Barrier5b {
        /// Bit error rate on what it receives.
        #[arg(long, default_value_t = 0.0)]
        ber: f64,
    },
    /// RS-485 turnstile on a new pseudo-terminal (its path is printed: give it as the device's
    /// serial.path); prints every command frame it decodes.
    #[command(name = "rs485-turnstile-eb")]
    Turnstile {
        /// Bit error rate on what it receives.
        #[arg(long, default_value_t = 0.0)]
        ber: f64,
    },
    /// RS-485 reader on a new pseudo-terminal: sends residents' ids (R000000…) and strangers.
    #[command(name = "rs485-reader")]
    Reader {
        /// rs485-face-id or rs485-wiegand-reader (cards 10:1000…).
        #[arg(long, default_value = "rs485-face-id", value_parser = ["rs485-face-id", "rs485-wiegand-reader"])]
        profile: String,
        #[arg(long, default_value_t = 1)]
        address: u64,
        /// Identifications per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value_t = 1000)]
        residents: u64,
        /// Bit error rate on what it sends.
        #[arg(long, default_value_t = 0.0)]
        ber: f64,
    },
}

/// Where and what a pushing simulator sends.
#[derive(clap::Args)]
pub struct PushArgs {
    /// gatehouse's HTTP device listener.
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
    #[arg(long)]
    device: String,
    /// The device's password (it goes in the push path).
    #[arg(long, env = "GATEHOUSE_DEVICE_PASSWORD")]
    password: String,
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    #[arg(long, default_value_t = 0)]
    count: u64,
    #[arg(long, default_value_t = 30)]
    heartbeat_s: u64,
    #[arg(long, default_value_t = 0)]
    stored: u64,
    #[arg(long, default_value_t = 1000)]
    residents: u64,
    /// The device's clock this many seconds ahead (negative: behind) of the true time.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_s: i64,
}

impl PushArgs {
    fn options(self, picture_bytes: usize) -> crate::tools::sim::http_push::PushOptions {
        crate::tools::sim::http_push::PushOptions {
            addr: self.listen,
            path: format!("/push/{}/{}", self.device, self.password),
            rate: self.rate,
            count: self.count,
            picture_bytes,
            heartbeat_s: self.heartbeat_s,
            stored: self.stored,
            residents: self.residents,
            seed: crate::now_ms() as u64,
            clock_offset_ms: self.clock_offset_s.saturating_mul(1000),
        }
    }
}

/// A simulated terminal's own server (the side gatehouse calls).
#[derive(clap::Args)]
pub struct TerminalArgs {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, env = "GATEHOUSE_DEVICE_PASSWORD")]
    password: String,
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Drop the stream this often, as real terminals do every ~40 s and at reboots (0: never).
    #[arg(long, default_value_t = 40)]
    drop_every_s: u64,
}

impl TerminalArgs {
    async fn run(self, vendor: crate::tools::sim::isapi_terminal::Vendor) -> Result<(), RunError> {
        crate::tools::sim::isapi_terminal::run(
            vendor,
            &self.listen,
            &self.username,
            &self.password,
            self.rate,
            self.drop_every_s,
            stop_on_signal(),
        )
        .await
        .map_err(|e| RunError::Runtime(e.into()))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum UnitArg {
    Celsius,
    Fahrenheit,
    Kelvin,
}

/// A simulated device's way in: as itself with a password, else anonymous.
fn device_link(
    broker: &str,
    device: &str,
    password: Option<String>,
) -> Result<crate::mqtt_client::DeviceLink, RunError> {
    let url = url(broker)?;
    Ok(match password {
        Some(p) => crate::mqtt_client::DeviceLink::new(url, device, &p),
        None => crate::mqtt_client::DeviceLink::anonymous(url),
    })
}

fn url(s: &str) -> Result<BrokerUrl, RunError> {
    BrokerUrl::parse(s).map_err(|e| RunError::Runtime(anyhow::anyhow!(e)))
}

/// A watch that fires on SIGTERM or Ctrl-C.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::run::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

pub async fn simulate(profile: SimProfile) -> Result<(), RunError> {
    use crate::tools::sim;
    match profile {
        SimProfile::Hikvision {
            broker,
            device,
            password,
            rate,
            count,
            fever_share,
            stranger_share,
            residents,
            unit,
            seed,
        } => {
            let unit = match unit {
                UnitArg::Celsius => Unit::Celsius,
                UnitArg::Fahrenheit => Unit::Fahrenheit,
                UnitArg::Kelvin => Unit::Kelvin,
            };
            let o = sim::hikvision::TerminalOptions {
                link: device_link(&broker, &device, password)?,
                topic: format!("devices/{device}/event"),
                rate,
                count,
                fever_share,
                stranger_share,
                residents,
                unit,
                seed,
            };
            let stop_rx = stop_on_signal();
            let n = sim::hikvision::run_terminal(
                o,
                |s| {
                    println!(
                        "sent serialNo={} subject={} temperature={:.1}",
                        s.serial,
                        s.subject.as_deref().unwrap_or("(stranger)"),
                        s.temperature_c
                    );
                },
                stop_rx,
            )
            .await;
            println!("{n} events sent");
        }
        SimProfile::HikvisionHttp {
            push,
            picture_bytes,
        } => {
            let mut print =
                |what: &str, status: u16, body: &str| println!("{what}: {status} {body}");
            let n = sim::http_push::run_hikvision(
                push.options(picture_bytes),
                &mut print,
                stop_on_signal(),
            )
            .await;
            println!("{n} events pushed");
        }
        SimProfile::ZhenshiHttp { push } => {
            let mut print =
                |what: &str, status: u16, body: &str| println!("{what}: {status} {body}");
            let n =
                sim::http_push::run_zhenshi(push.options(0), &mut print, stop_on_signal()).await;
            println!("{n} reads pushed");
        }
        SimProfile::HikvisionTerminal { terminal } => {
            terminal.run(sim::isapi_terminal::Vendor::Isapi).await?
        }
        SimProfile::Gate {
            broker,
            device,
            password,
        } => {
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(sim::gate::run_gate(
                device_link(&broker, &device, password)?,
                format!("devices/{device}/cmd"),
                tx,
            ));
            loop {
                tokio::select! {
                    _ = crate::run::wait_for_signal() => break,
                    cmd = rx.recv() => match cmd {
                        Some(Ok(c)) => println!("{} reason={} cause={} lane={} ts={}", c.action, c.reason, c.cause, c.lane, c.ts),
                        Some(Err(e)) => println!("malformed command: {e}"),
                        None => break,
                    },
                }
            }
        }
        SimProfile::Zhenshi {
            broker,
            device,
            password,
            rate,
            households,
            replay,
        } => {
            sim::zhenshi::run(
                device_link(&broker, &device, password)?,
                &device,
                rate,
                households,
                replay,
                stop_on_signal(),
            )
            .await;
        }
        SimProfile::Dahua { terminal } => terminal.run(sim::isapi_terminal::Vendor::Dahua).await?,
        SimProfile::Zkteco {
            listen,
            sn,
            rate,
            residents,
            stored,
        } => {
            sim::adms::run(&listen, &sn, rate, residents, stored, stop_on_signal())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        SimProfile::ModbusBarrier { listen } => {
            let barrier = sim::barrier::BarrierSim::new(std::time::Duration::from_secs(2));
            barrier.set_auto_fall(Some(std::time::Duration::from_secs(6)));
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(anyhow::Error::from)?;
            println!("modbus-relay-barrier, unit 1, on {listen}");
            tokio::spawn(sim::barrier::serve_tcp(
                listener,
                sim::barrier::Service([(1, barrier.clone())].into()),
            ));
            let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
            let mut stop = stop_on_signal();
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = every.tick() => {
                        let (opens, closes, unsafe_closes) = barrier.counts();
                        println!("opens {opens}, closes {closes}, closes on an occupied loop {unsafe_closes}, arm up {}", barrier.is_up());
                    }
                }
            }
        }
        SimProfile::FireInput {
            listen,
            fire_after_s,
            clear_after_s,
        } => {
            let panel = sim::fire_panel::FirePanel::default();
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(anyhow::Error::from)?;
            println!("modbus-fire-input, unit 1, on {listen}: fire in {fire_after_s} s");
            tokio::spawn(sim::fire_panel::serve_tcp(listener, panel.clone()));
            let mut stop = stop_on_signal();
            let secs = std::time::Duration::from_secs;
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = tokio::time::sleep(secs(fire_after_s)) => {}
            }
            panel.set_fire(true);
            println!("the panel's contact reads fire");
            if clear_after_s > 0 {
                tokio::select! {
                    _ = stop.changed() => return Ok(()),
                    _ = tokio::time::sleep(secs(clear_after_s)) => {}
                }
                panel.set_fire(false);
                println!("the panel's contact is back to normal (fire mode holds until the reset)");
            }
            let _ = stop.changed().await;
        }
        SimProfile::Barrier5b { ber } => {
            let pty = sim::serial::Pty::new().map_err(anyhow::Error::from)?;
            println!("barrier on {} (rs485-barrier-5b)", pty.path.display());
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let run = tokio::spawn(sim::serial::run_barrier_5b(pty, ber, 1, tx));
            loop {
                tokio::select! {
                    _ = crate::run::wait_for_signal() => break,
                    f = rx.recv() => match f {
                        Some(f) => println!("cmd={:#04x} param={:#04x}", f.cmd, f.param),
                        None => break,
                    },
                }
            }
            run.abort();
        }
        SimProfile::Turnstile { ber } => {
            let pty = sim::serial::Pty::new().map_err(anyhow::Error::from)?;
            println!("turnstile on {} (rs485-turnstile-eb)", pty.path.display());
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let run = tokio::spawn(sim::serial::run_turnstile(pty, ber, 1, tx));
            loop {
                tokio::select! {
                    _ = crate::run::wait_for_signal() => break,
                    c = rx.recv() => match c {
                        Some(c) => println!("addr={} cmd={:#04x}{}", c.addr, c.cmd, if c.opens() { " (open)" } else { "" }),
                        None => break,
                    },
                }
            }
            run.abort();
        }
        SimProfile::Reader {
            profile,
            address,
            rate,
            residents,
            ber,
        } => {
            let pty = sim::serial::Pty::new().map_err(anyhow::Error::from)?;
            println!("reader on {} ({profile})", pty.path.display());
            let mut line = sim::serial::Line::new(pty, ber, 1);
            let reader = sim::serial::Reader::new(&profile, address);
            let mut rng = sim::Rng::new(crate::now_ms() as u64);
            let mut tick =
                tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / rate.max(0.01)));
            loop {
                tokio::select! {
                    _ = crate::run::wait_for_signal() => break,
                    _ = tick.tick() => {
                        let n = rng.next_u64() % (residents + residents / 10).max(1);
                        let frame = if profile == "rs485-wiegand-reader" {
                            reader.wiegand(26, 10, 1000u16.wrapping_add(n as u16))
                        } else if n >= residents {
                            reader.id(0x20, "")
                        } else {
                            reader.id(0x21, &format!("R{n:06}"))
                        };
                        line.send(frame).await.map_err(anyhow::Error::from)?;
                    }
                }
            }
        }
    }
    Ok(())
}
