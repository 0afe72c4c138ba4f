//! The demo: a whole gate on one machine with nothing installed — the device endpoint with
//! simulated devices connecting with their passwords (a face + temperature terminal, a
//! turnstile, a thermal station and RS-485 reader, a plate camera and a Modbus barrier), and the
//! uplink to the company's embedded broker — with each decision printed as it reaches the
//! uplink.
use crate::screen::{watch_uplink, GateSeen};

use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::metrics::Metrics;
use gatehouse::mqtt_client;
use gatehouse::mqtt_client::{BrokerUrl, DeviceLink};
use gatehouse::tools::sim;
use gatehouse::tools::sim::hikvision::{run_terminal, TerminalOptions};
use gatehouse::tools::sim::serial::{Line, Pty, Reader, TurnstileCommand};
use gatehouse::tools::sim::site::{
    write_plates, write_residents, DemoConfig, HttpLane, SerialLane, VehicleLane,
};
use gatehouse_company::broker as company_broker;
use gatehouse_contract::topics::Topics;
use rumqttc::{AsyncClient, QoS};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct DemoOptions {
    pub rate: f64,
    pub residents: u64,
    /// The fire panel's contact closes this many seconds in (0: never).
    pub fire_after_s: u64,
    /// Where the daemon's log lines go (kept after the demo stops).
    pub log: PathBuf,
    /// The company's pages (another port when it is taken).
    pub web_port: u16,
    /// The guard's console (another port when it is taken).
    pub console_port: u16,
}

pub async fn run(o: DemoOptions) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("gatehouse-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, o).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The console's port, or any free one when it is taken.
fn console_addr(port: u16) -> std::net::SocketAddr {
    let free = std::net::TcpListener::bind(("127.0.0.1", port))
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .and_then(|l| l.local_addr());
    free.unwrap_or_else(|_| ([127, 0, 0, 1], port).into())
}

/// A guard and a supervisor with fresh passwords: (name, password, role).
fn console_logins(path: &Path) -> anyhow::Result<Vec<(String, String, &'static str)>> {
    use gatehouse::daemon::console::users::{self, Role, User};
    let mut all = Vec::new();
    let mut said = Vec::new();
    for (name, role) in [("guard", Role::Guard), ("supervisor", Role::Supervisor)] {
        let password = users::new_password();
        all.push(User {
            name: name.into(),
            role,
            enabled: true,
            hash: users::hash_password(&password)?,
        });
        said.push((name.to_string(), password, role.as_str()));
    }
    users::save(path, &all)?;
    Ok(said)
}

/// A fresh password for a demo device's API.
fn demo_secret() -> String {
    gatehouse::config::secrets::generate().0
}

async fn run_in(dir: &Path, o: DemoOptions) -> anyhow::Result<()> {
    write_residents(&dir.join("residents.csv"), o.residents)?;
    // The company's broker, upstream (rumqttd stands in for it); devices connect to gatehouse.
    let company = company_broker::free_port()?;
    company_broker::start(([127, 0, 0, 1], company).into())?;
    let port = company_broker::free_port()?;
    let face_pty = Pty::new()?;
    let turnstile_pty = Pty::new()?;
    let households = o.residents / 3 + 1;
    write_plates(&dir.join("plates.csv"), households)?;
    let barrier = sim::barrier::BarrierSim::new(Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let barrier_addr = listener.local_addr()?;
    tokio::spawn(sim::barrier::serve_tcp(
        listener,
        sim::barrier::Service([(1, barrier.clone())].into()),
    ));
    let api_password = demo_secret();
    let (terminal3, mut doors) =
        sim::isapi_terminal::Terminal::start("admin", &api_password).await?;
    let http_port = company_broker::free_port()?;
    let panel = sim::fire_panel::FirePanel::default();
    let panel_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let panel_addr = panel_listener.local_addr()?;
    tokio::spawn(sim::fire_panel::serve_tcp(panel_listener, panel.clone()));
    let demo = DemoConfig {
        fire_panel: Some(panel_addr),
        plates: true,
        http_lane: Some(HttpLane {
            http_port,
            api: terminal3.addr,
            api_password,
            camera: false,
            dahua: None,
            adms_sn: None,
        }),
        serial_lane: Some(SerialLane {
            face: face_pty.path.clone(),
            turnstile: turnstile_pty.path.clone(),
            anti_passback: true,
        }),
        vehicle_lane: Some(VehicleLane {
            barrier: barrier_addr,
            auto_close: true,
        }),
        console: Some(console_addr(o.console_port)),
        ..DemoConfig::new(dir, port, company)
    };
    let logins = console_logins(&dir.join("console-users"))?;
    let config = Config::load(&demo.write()?)?;
    let topics = Topics::new(&config.gateway.path());
    let place = config.gateway.path();
    let community = place.community.clone();
    let daemon = Daemon::start(config, Profiles::builtin()).await?;
    let company_url = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: company,
    };
    println!(
        "gatehouse-demo — device endpoint on 127.0.0.1:{port} (each device with its password, \
         in {}), company broker on 127.0.0.1:{company}, {} residents; lane east-gate \
         (Hikvision terminal, MQTT turnstile), lane north-gate (thermal station + RS-485 face \
         reader {} + EB turnstile {}), lane car-gate (plate camera + Modbus TCP barrier {barrier_addr}), \
         lane west-gate (Hikvision terminal pushing over HTTP to 127.0.0.1:{http_port}, its door \
         opened over ISAPI at {})",
        dir.join("devices.secrets").display(),
        o.residents,
        face_pty.path.display(),
        turnstile_pty.path.display(),
        terminal3.addr
    );
    if let Some(addr) = demo.console {
        println!("the guard's console: http://{addr}/ — log in as");
        for (name, password, role) in &logins {
            println!("  {name:<10} password {password}   ({role})");
        }
    }
    println!(
        "uplink topics: {}/{{events,alarms,status}}    the daemon's log: {}    Ctrl-C stops.\n",
        topics.base(),
        o.log.display()
    );
    println!(
        "{:<8} {:<10} {:<9} {:>8}  {:<6} {:<22} {:>9}  gate",
        "time", "lane", "who", "temp", "", "reason", "latency"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    // The company side on its embedded default: the ingest into one SQLite file, the forms read
    // from it as the gate decides.
    let records = dir.join("records.db");
    let forms = crate::forms::start(&records, company, &place, o.web_port, stop_rx.clone()).await?;
    println!(
        "the company's ingest stores every record in {}; today's forms: gatehouse-company form \
         --form entry|temperature|visitor|vehicle|health --community {community} --database sqlite:{}\n",
        records.display(),
        records.display()
    );
    // What the simulated turnstile received, by cause, shown beside the uplink's record of it.
    let (gate_tx, mut gate_rx) = mpsc::channel(1024);
    tokio::spawn(sim::gate::run_gate(
        demo.link("gate-1"),
        "devices/gate-1/cmd".into(),
        gate_tx,
    ));
    let gate_seen = GateSeen::default();
    let watcher = tokio::spawn(watch_uplink(
        company_url,
        topics,
        gate_seen.clone(),
        stop_rx.clone(),
    ));
    let stop_rx_cars = stop_rx.clone();
    let stop_rx_lane2 = stop_rx.clone();
    let terminal = tokio::spawn(run_terminal(
        TerminalOptions {
            link: demo.link("thermal-1"),
            topic: "devices/thermal-1/event".into(),
            rate: o.rate,
            count: 0,
            fever_share: 0.08,
            stranger_share: 0.1,
            // Some ids past the list: unknown to the gate.
            residents: o.residents + o.residents / 10,
            unit: Unit::Celsius,
            seed: gatehouse::now_ms() as u64,
        },
        |_| {},
        stop_rx,
    ));
    let lane2 = tokio::spawn(serial_lane(
        face_pty,
        turnstile_pty,
        gate_seen.clone(),
        demo.link("thermal-2"),
        o.rate / 2.0,
        o.residents,
        stop_rx_lane2,
    ));
    let cars = tokio::spawn(vehicle_lane(
        barrier,
        gate_seen.clone(),
        demo.link("cam-1"),
        o.rate / 4.0,
        households,
        stop_rx_cars,
    ));
    let push = sim::http_push::PushOptions {
        addr: format!("127.0.0.1:{http_port}"),
        path: format!("/push/terminal-3/{}", demo.password("terminal-3")),
        rate: o.rate / 2.0,
        count: 0,
        picture_bytes: 30_000,
        heartbeat_s: 10,
        stored: 3,
        residents: o.residents + o.residents / 10,
        seed: gatehouse::now_ms() as u64 ^ 3,
        clock_offset_ms: 0,
    };
    let stop_http = stop_tx.subscribe();
    let http_lane = tokio::spawn(async move {
        let mut quiet = |_: &str, _: u16, _: &str| {};
        sim::http_push::run_hikvision(push, &mut quiet, stop_http).await
    });
    // The door the terminal opened, for the decision it answers.
    let seen = gate_seen.clone();
    let doors_drained = tokio::spawn(async move {
        while doors.recv().await.is_some() {
            seen.did("west-gate", true, "door opened (ISAPI)");
        }
    });
    if o.fire_after_s > 0 {
        let config = dir.join("gatehouse.toml");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(o.fire_after_s)).await;
            panel.set_fire(true);
            println!(
                "\n*** the fire alarm panel's contact closes: every gate opens and holds; reset with \
                 `gatehouse fire-reset --config {}` once the panel is back to normal ***\n",
                config.display()
            );
            tokio::time::sleep(Duration::from_secs(20)).await;
            panel.set_fire(false);
            println!("\n*** the panel is back to normal: fire mode holds until the reset ***\n");
        });
    }
    let mut gate_commands = 0u64;
    tokio::select! {
        _ = gatehouse::run::wait_for_signal() => {}
        _ = async {
            while let Some(cmd) = gate_rx.recv().await {
                gate_commands += 1;
                if let Ok(cmd) = cmd {
                    gate_seen.caused(cmd.cause, cmd.action);
                }
            }
        } => {}
    }
    let _ = stop_tx.send(true);
    let _ = terminal.await;
    let _ = http_lane.await;
    lane2.abort();
    cars.abort();
    drop(terminal3);
    doors_drained.abort();
    let m = daemon.metrics.clone();
    daemon.stop().await;
    let tally = watcher.await.unwrap_or_default();
    println!("\nstopped: {} decisions, {} gate commands sent ({gate_commands} seen by east-gate's turnstile), {} events acknowledged upstream, {} still in the outbox",
        Metrics::get(&m.decisions), Metrics::get(&m.commands_sent), Metrics::get(&m.uplink_acked), Metrics::get(&m.outbox_depth));
    for (reason, n) in tally {
        println!("  {reason:<16} {n}");
    }
    forms.finish().await;
    println!("the daemon's log: {}", o.log.display());
    Ok(())
}

/// Lane north-gate: before each face, the thermal station measures (1 in 12 a fever); the face
/// reader sends the id (1 in 10 a stranger); every frame the turnstile decodes is its gate column.
async fn serial_lane(
    face: Pty,
    turnstile: Pty,
    gate: GateSeen,
    link: DeviceLink,
    rate: f64,
    residents: u64,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut frames) = mpsc::channel(256);
    tokio::spawn(sim::serial::run_turnstile(turnstile, 0.0, 1, tx));
    tokio::spawn(async move {
        while let Some(c) = frames.recv().await {
            let (opens, what) = match c.cmd {
                TurnstileCommand::OPEN_LEFT => (true, "open in"),
                TurnstileCommand::OPEN_RIGHT => (true, "open out"),
                TurnstileCommand::BAN => (false, "ban"),
                TurnstileCommand::HOLD_OPEN => (true, "hold open"),
                TurnstileCommand::RELEASE => (false, "release"),
                _ => (false, "?"),
            };
            gate.did(
                "north-gate",
                opens,
                format!("EB frame {:#04x} ({what})", c.cmd),
            );
        }
    });
    let (thermal, mut el) =
        AsyncClient::new(link.options("demo-thermal-2", Duration::from_secs(15)), 64);
    el.set_network_options(mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let _stop_poller = AbortOnDrop(poller);
    let mut line = Line::new(face, 0.0, 2);
    let reader = Reader::new("rs485-face-id", 1);
    let mut rng = sim::Rng::new(gatehouse::now_ms() as u64 ^ 0x5eed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.05)));
    let mut serial = 1_000_000u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        serial += 1;
        let t = if rng.next_u64() % 12 == 0 {
            37.9
        } else {
            36.2 + (rng.next_u64() % 8) as f64 * 0.1
        };
        let body = sim::hikvision::acs_event(serial, None, t, Unit::Celsius);
        let _ = thermal
            .publish("devices/thermal-2/event", QoS::AtLeastOnce, false, body)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = rng.next_u64() % (residents + residents / 10).max(1);
        let frame = if n >= residents {
            reader.id(0x20, "")
        } else {
            reader.id(0x21, &format!("R{n:06}"))
        };
        if line.send(frame).await.is_err() {
            return;
        }
    }
}

/// Lane car-gate: a car arrives every so often (mostly residents' plates, some unknown, now and
/// then an unsure read); the camera reads it, and when the barrier opens the car drives through.
async fn vehicle_lane(
    barrier: sim::barrier::BarrierSim,
    gate: GateSeen,
    link: DeviceLink,
    rate: f64,
    households: u64,
    mut stop: watch::Receiver<bool>,
) {
    let (camera, mut el) =
        AsyncClient::new(link.options("demo-cam-1", Duration::from_secs(15)), 64);
    el.set_network_options(mqtt_client::network_options());
    let _poller = AbortOnDrop(tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }));
    // Each OPEN coil the barrier saw switched on is the gate column of the plate read it answers.
    let coils = barrier.clone();
    let _watch_coils = AbortOnDrop(tokio::spawn(async move {
        let mut opened = 0;
        loop {
            let (opens, _, _) = coils.counts();
            for _ in opened..opens {
                gate.did("car-gate", true, "OPEN coil on");
            }
            opened = opens;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    let mut rng = sim::Rng::new(gatehouse::now_ms() as u64 ^ 0xca75);
    let mut plateid = 0u64;
    loop {
        let pause = Duration::from_secs_f64(1.0 / rate.max(0.05));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        plateid += 1;
        let roll = rng.next_u64() % 10;
        let plate = match roll {
            0 => "粤Z9".to_string() + &format!("{:04}", rng.next_u64() % 10_000),
            1 => "粤B66666".to_string(),
            _ => format!("粤B1{:04}", (rng.next_u64() % households.max(1)) / 3 * 3),
        };
        let confidence = if roll == 2 {
            55
        } else {
            90 + (rng.next_u64() % 10) as u8
        };
        let body = sim::zhenshi::ivs_result(plateid, &plate, confidence, 4);
        let _ = camera
            .publish(
                "device/cam-1/message/up/ivs_result",
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await;
        // The car waits a few seconds for the arm; if it lifts, it drives through.
        barrier.car_passes(Duration::from_secs(4)).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
