//! Shared helpers: an in-process broker on a free port, a gateway under test, watchers that
//! play the gate and the property company, and a TCP proxy that can cut the uplink.
#![allow(dead_code)]

mod proxy;
mod uplink;
pub use proxy::{Link, Proxy, TcpCut};
pub use uplink::{Uplink, Upstream};

use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::mqtt_client;
use gatehouse::mqtt_client::{BrokerUrl, DeviceLink};
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use gatehouse::tools::sim::gate::GateCommand;
use gatehouse_company::broker as company_broker;
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

pub const GATEWAY: &str = "gw-test";
/// How an order addresses this gateway: its community, then its id.
pub const GATEWAY_PATH: &str = "330106001001/gw-test";
pub const BASE: &str = "gh/v1/3301/330106/330106001/330106001001/gw-test";
pub const LONG: Duration = Duration::from_secs(10);

/// Held by the tests that load the machine (crash cycles, floods), so they do not run at the
/// same time on CI's two cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every await in a test has a deadline.
pub async fn within<T>(what: &str, d: Duration, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// A fresh embedded broker on a free loopback port, with room in its log for the load tests
/// (64 MiB per topic filter) so a test measures gatehouse, not the broker's log.
pub fn start_broker() -> BrokerUrl {
    let port = company_broker::free_port().expect("a free port");
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    company_broker::start_with_memory(listen, 8 << 20, 8).expect("broker starts");
    BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port,
    }
}

/// How the test gateway's devices reach it.
#[derive(Debug, Clone)]
pub enum DeviceSide {
    /// gatehouse's own device endpoint on this loopback port; devices log in with
    /// [`device_password`].
    Endpoint(u16),
    /// A broker at this URL (mosquitto, or a proxy), anonymous.
    External(BrokerUrl),
    /// A mosquitto at this URL set up by `gatehouse broker-config`: gatehouse logs in as
    /// `gatehouse` (password in `gatehouse.pw`), each device with [`device_password`].
    Mosquitto(BrokerUrl),
}

impl DeviceSide {
    /// The endpoint on a free port.
    pub fn endpoint() -> DeviceSide {
        DeviceSide::Endpoint(company_broker::free_port().expect("a free port"))
    }

    pub fn url(&self) -> BrokerUrl {
        match self {
            DeviceSide::Endpoint(port) => BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: *port,
            },
            DeviceSide::External(url) | DeviceSide::Mosquitto(url) => url.clone(),
        }
    }

    /// How device `id` (or its simulator) logs in.
    pub fn link(&self, id: &str) -> DeviceLink {
        match self {
            DeviceSide::Endpoint(_) | DeviceSide::Mosquitto(_) => {
                DeviceLink::new(self.url(), id, &device_password(id))
            }
            DeviceSide::External(url) => DeviceLink::anonymous(url.clone()),
        }
    }
}

/// The test devices' passwords on the endpoint.
pub fn device_password(id: &str) -> String {
    format!("pw-{id}-0f3a")
}

/// The test gateway's config: one lane (Hikvision terminal + MQTT gate), residents R000000–R000099
/// (R000050 suspended, R000060 quarantined), devices on `devices`, uplink to `uplink`.
pub fn config_text(dir: &Path, devices: &DeviceSide, uplink: &BrokerUrl) -> String {
    let mut csv = String::from("person_id,household,status,valid_until\n");
    for i in 0..100 {
        let status = match i {
            50 => "suspended",
            60 => "quarantined",
            _ => "active",
        };
        csv.push_str(&format!("R{i:06},H{:03},{status},\n", i / 4));
    }
    std::fs::write(dir.join("residents.csv"), csv).unwrap();
    let device_broker = match devices {
        DeviceSide::Endpoint(port) => format!(
            "listen = \"127.0.0.1:{port}\"\nsecrets_file = \"{}\"",
            dir.join("devices.secrets").display()
        ),
        DeviceSide::External(url) => {
            format!(
                "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"",
                url.port
            )
        }
        DeviceSide::Mosquitto(url) => {
            let pw = dir.join("gatehouse.pw");
            std::fs::write(&pw, "gh-test-secret\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!(
                "mode = \"external\"\nurl = \"mqtt://127.0.0.1:{}\"\nusername = \"gatehouse\"\npassword_file = \"{}\"\nsecrets_file = \"{}\"",
                url.port,
                pw.display(),
                dir.join("devices.secrets").display()
            )
        }
    };
    format!(
        r#"
[device_broker]
{device_broker}

[uplink]
url = "mqtt://127.0.0.1:{uport}"
batch_max = 16

[store]
dir = "store"

[registry]
import = "residents.csv"
{gate}"#,
        uport = uplink.port,
        gate = gatehouse::tools::sim::site::gate_config(GATEWAY, "east-1"),
    )
}

/// Writes `text` as the config in `dir`, and the secrets file with a line for each of its MQTT
/// devices (when it names one).
pub fn write_config_text(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    let config: Config = toml::from_str(text).expect("test config parses");
    if let Some(f) = &config.device_broker.secrets_file {
        let profiles = Profiles::builtin();
        use gatehouse::device::Transport;
        let lines: String = config
            .devices_on(&profiles, Transport::Mqtt)
            .chain(config.devices_on(&profiles, Transport::Http))
            .map(|(_, d)| format!("{} {}\n", d.id, device_password(&d.id)))
            .collect();
        std::fs::write(dir.join(f), lines).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

pub fn write_config(dir: &Path, devices: &DeviceSide, uplink: &BrokerUrl) -> std::path::PathBuf {
    write_config_text(dir, &config_text(dir, devices, uplink))
}

/// A gateway running in this process, with its own company broker, gate and uplink watcher.
pub struct Harness {
    pub dir: tempfile::TempDir,
    /// The company's broker (the uplink and the orders from above).
    pub broker: BrokerUrl,
    /// Where the devices connect.
    pub devices: DeviceSide,
    pub daemon: Daemon,
    pub gate: mpsc::Receiver<Result<GateCommand, String>>,
    pub uplink: Uplink,
    pub terminal: Client,
    /// Connections of other devices, made on first use by [`Harness::publish_as`].
    others: tokio::sync::Mutex<std::collections::HashMap<String, Client>>,
}

impl Harness {
    pub async fn start() -> Harness {
        let broker = start_broker();
        Self::start_with_uplink(broker.clone(), broker).await
    }

    pub async fn start_with_uplink(broker: BrokerUrl, uplink_url: BrokerUrl) -> Harness {
        Self::start_with(broker, uplink_url, |t| t).await
    }

    /// Devices on the endpoint; the gateway reaches the uplink at `uplink_url` (maybe a proxy),
    /// the company watcher uses `broker`. `edit` may change the config text first.
    pub async fn start_with(
        broker: BrokerUrl,
        uplink_url: BrokerUrl,
        edit: impl FnOnce(String) -> String,
    ) -> Harness {
        Self::start_on(DeviceSide::endpoint(), broker, uplink_url, edit).await
    }

    /// [`Harness::start_with`] with the devices on `devices`.
    pub async fn start_on(
        devices: DeviceSide,
        broker: BrokerUrl,
        uplink_url: BrokerUrl,
        edit: impl FnOnce(String) -> String,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config_text(
            dir.path(),
            &edit(config_text(dir.path(), &devices, &uplink_url)),
        );
        let uplink = Uplink::connect(&broker).await;
        // Straight to the company broker (not through a proxy a test may cut).
        let uplink_reachable = uplink_url == broker;
        let config = Config::load(&path).unwrap();
        let profiles = Profiles::load(config.profiles.dir.as_deref()).0;
        let daemon = within("daemon start", LONG, Daemon::start(config, profiles))
            .await
            .unwrap();
        // The devices: on an external broker the gateway's own address may be a proxy; the
        // simulated devices go to the broker itself.
        let sims = match &devices {
            DeviceSide::External(_) => DeviceSide::External(broker.clone()),
            d => d.clone(),
        };
        let gate = gate_sim(&sims.link("gate-1"));
        let terminal = Client::device(&sims.link("thermal-1"), "test-terminal").await;
        // Let the simulated gate's subscription land, and the gateway's order topics'.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut uplink = uplink;
        if uplink_reachable {
            uplink.online().await;
        }
        Harness {
            dir,
            broker,
            devices: sims,
            daemon,
            gate,
            uplink,
            terminal,
            others: Default::default(),
        }
    }

    /// Publishes as device `id` (each device may publish only on its own topics).
    pub async fn publish_as(&self, id: &str, topic: &str, payload: Vec<u8>) {
        if id == "thermal-1" {
            return self.terminal.publish(topic, payload).await;
        }
        let mut others = self.others.lock().await;
        if !others.contains_key(id) {
            let c = Client::device(&self.link(id), &format!("test-{id}")).await;
            others.insert(id.to_string(), c);
        }
        others[id].publish(topic, payload).await;
    }

    /// How device `id` logs in to this gateway's device side.
    pub fn link(&self, id: &str) -> DeviceLink {
        self.devices.link(id)
    }

    /// Publishes a terminal event on thermal-1.
    pub async fn identify(&self, serial: u64, who: Option<&str>, temperature_c: f64, unit: Unit) {
        let body = sim::hikvision::acs_event(serial, who, temperature_c, unit);
        self.terminal
            .publish("devices/thermal-1/event", body.into_bytes())
            .await;
    }

    pub async fn next_command(&mut self) -> GateCommand {
        within("a gate command", LONG, self.gate.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

/// The lane's simulated turnstile (`gate-1`): every command it receives, as it received it.
pub fn gate_sim(link: &DeviceLink) -> mpsc::Receiver<Result<GateCommand, String>> {
    gate_sim_on(link, "devices/gate-1/cmd")
}

/// A simulated `generic-gate-mqtt` turnstile taking its commands on `topic`.
pub fn gate_sim_on(link: &DeviceLink, topic: &str) -> mpsc::Receiver<Result<GateCommand, String>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(sim::gate::run_gate(link.clone(), topic.into(), tx));
    rx
}

/// A plain MQTT client that publishes with QoS 1.
pub struct Client {
    pub client: AsyncClient,
    poller: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Anonymous, on a broker (the company's, or an external device broker).
    pub async fn connect(url: &BrokerUrl, id: &str) -> Client {
        Self::device(&DeviceLink::anonymous(url.clone()), id).await
    }

    /// As a device, with its login.
    pub async fn device(link: &DeviceLink, id: &str) -> Client {
        Self::subscriber(link, id, None).await.0
    }

    /// As a device that also takes messages on `filter` (its commands): what arrives there.
    pub async fn subscriber(
        link: &DeviceLink,
        id: &str,
        filter: Option<&str>,
    ) -> (Client, mpsc::Receiver<Vec<u8>>) {
        let (client, mut el) = AsyncClient::new(link.options(id, Duration::from_secs(15)), 1024);
        el.set_network_options(mqtt_client::network_options());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (in_tx, in_rx) = mpsc::channel(1024);
        let (c, filter) = (client.clone(), filter.map(str::to_string));
        let poller = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(f) = &filter {
                            let _ = c.try_subscribe(f.as_str(), QoS::AtLeastOnce);
                        } else if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = in_tx.try_send(p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        within("client connect", LONG, rx).await.unwrap();
        (Client { client, poller }, in_rx)
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

impl Client {
    /// Stops it for good: no more reconnecting. A test that logs in as this device itself
    /// needs it quiet — a client's reconnect takes the device's connection over (one
    /// connection per device), which on a loaded machine came mid-test and cut the test's own
    /// connection, its later messages written to a closed socket.
    pub fn stop(&self) {
        self.poller.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// `gatehouse run --config FILE` as systemd would start it. Its log is off unless asked for:
/// `GATEHOUSE_TEST_CHILD_LOG=info GATEHOUSE_TEST_CHILD_LOG_FILE=/tmp/child.log` (a crash test's
/// daemons, one after another).
pub fn gatehouse_run(config: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    c.arg("run")
        .arg("--config")
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("GATEHOUSE_TEST_CHILD_LOG").unwrap_or("error".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(match std::env::var("GATEHOUSE_TEST_CHILD_LOG_FILE") {
            Ok(f) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                    .unwrap(),
            ),
            Err(_) => std::process::Stdio::null(),
        });
    c
}

/// Sends SIGTERM and waits (at most 6 s) for the exit; returns its status and how long it took.
pub async fn terminate(
    child: &mut std::process::Child,
) -> (std::process::ExitStatus, std::time::Duration) {
    let t = std::time::Instant::now();
    let sent = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM");
    let status = within("exit after SIGTERM", Duration::from_secs(6), async {
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    (status, t.elapsed())
}

/// A test that cannot run here (a tool or a privilege missing) says so and is skipped; in CI
/// (`GATEHOUSE_NO_SKIP=1`, set by `.ci/run`) that is a failure instead, so a skip never passes
/// for a pass where the tool should be there.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("GATEHOUSE_NO_SKIP").is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} (GATEHOUSE_NO_SKIP=1: skips fail)");
    }
    println!("SKIPPED {test}: {why}");
}

/// Runs `gatehouse broker-config` for the config in `dir` and starts mosquitto with what it
/// wrote (its listener on 127.0.0.1:`port`, persistence in `dir`).
pub fn generated_mosquitto(dir: &Path, config: &Path, port: u16) -> Mosquitto {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["broker-config", "--config"])
        .arg(config)
        .arg("--out")
        .arg(dir.join("broker"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--persistence-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = std::fs::read_to_string(dir.join("broker/mosquitto.conf")).unwrap();
    // `user root`: the files are private to the test's user; mosquitto must not drop to its own.
    spawn_mosquitto(dir, &format!("user root\n{generated}"), &[port])
}

/// Whether a command is installed (on the PATH, or in /usr/sbin as Debian puts mosquitto).
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} || test -x /usr/sbin/{tool}"))
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub struct Mosquitto(pub std::process::Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// mosquitto on `conf`, once every port in `ports` takes connections.
pub fn spawn_mosquitto(dir: &Path, conf: &str, ports: &[u16]) -> Mosquitto {
    let path = dir.join("mosquitto.conf");
    std::fs::write(&path, conf).unwrap();
    let bin = if have("mosquitto")
        && std::process::Command::new("mosquitto")
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    {
        "mosquitto"
    } else {
        "/usr/sbin/mosquitto"
    };
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto starts");
    for &port in ports {
        let mut up = false;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            up,
            "mosquitto listens on {port}: {}",
            std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
        );
    }
    Mosquitto(child)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    gatehouse_company::broker::free_port().unwrap()
}

/// `GET path` on `addr` (blocking, 5 s at most): the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let code = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// A small filesystem of its own (tmpfs), unmounted on drop. Needs root (CI is); `None` when the
/// mount is not allowed here.
pub struct SmallDisk(pub tempfile::TempDir);

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}
