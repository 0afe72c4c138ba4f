//! Shared helpers: an in-process broker on a free port, a gateway under test, watchers that
//! play the gate and the property company, and a TCP proxy that can cut the uplink.
#![allow(dead_code)]

use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::{Profiles, Unit};
use gatehouse::mqtt_client;
use gatehouse::mqtt_client::{BrokerUrl, DeviceLink};
use gatehouse::proto::v1;
use gatehouse::tools::company_broker;
use gatehouse::tools::sim;
use gatehouse::tools::sim::gate::GateCommand;
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
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
        gate = gatehouse::tools::demo::gate_config(GATEWAY, "east-1"),
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
        let lines: String = config
            .mqtt_devices(&profiles)
            .chain(config.devices_on(&profiles, gatehouse::device::Transport::Http))
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
        // Let the simulated gate's subscription land.
        tokio::time::sleep(Duration::from_millis(200)).await;
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

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// What the property company sees: everything published under the gateway's topic base.
pub enum Upstream {
    Events(Vec<v1::Event>),
    Alarms(Vec<v1::Alarm>),
    Status {
        status: Box<v1::Status>,
        retained: bool,
    },
    Twin(Box<v1::DeviceTwin>),
    Result(v1::CommandResult),
    Stats(v1::StatsBatch),
}

pub struct Uplink {
    pub rx: mpsc::Receiver<Upstream>,
    /// Messages passed over while waiting for another kind, in arrival order.
    stash: std::collections::VecDeque<Upstream>,
    poller: tokio::task::JoinHandle<()>,
}

impl Uplink {
    pub async fn connect(url: &BrokerUrl) -> Uplink {
        Self::connect_to(url, BASE).await
    }

    /// Watches the uplink of the gateway whose topic base is `base`.
    pub async fn connect_to(url: &BrokerUrl, base: &str) -> Uplink {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!("company-{}", N.fetch_add(1, Ordering::Relaxed));
        let (client, mut el) =
            AsyncClient::new(mqtt_client::options(url, &id, Duration::from_secs(15)), 64);
        el.set_network_options(mqtt_client::network_options());
        let (tx, rx) = mpsc::channel(100_000);
        let filter = format!("{base}/#");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let poller = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = if p.topic.ends_with("/events") {
                            Upstream::Events(
                                v1::EventBatch::decode(p.payload.as_ref())
                                    .expect("events decode")
                                    .events,
                            )
                        } else if p.topic.ends_with("/alarms") {
                            Upstream::Alarms(
                                v1::AlarmBatch::decode(p.payload.as_ref())
                                    .expect("alarms decode")
                                    .alarms,
                            )
                        } else if p.topic.ends_with("/stats") {
                            Upstream::Stats(
                                v1::StatsBatch::decode(p.payload.as_ref()).expect("stats decode"),
                            )
                        } else if p.topic.ends_with("/cmd/result") {
                            Upstream::Result(
                                v1::CommandResult::decode(p.payload.as_ref())
                                    .expect("result decode"),
                            )
                        } else if p.topic.contains("/twin/") {
                            Upstream::Twin(Box::new(
                                v1::DeviceTwin::decode(p.payload.as_ref()).expect("twin decode"),
                            ))
                        } else if p.topic.ends_with("/status") {
                            Upstream::Status {
                                status: Box::new(
                                    v1::Status::decode(p.payload.as_ref()).expect("status decode"),
                                ),
                                retained: p.retain,
                            }
                        } else {
                            continue;
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        within("uplink watcher subscribe", LONG, ready_rx)
            .await
            .unwrap();
        Uplink {
            rx,
            stash: Default::default(),
            poller,
        }
    }

    /// The next message that `pick` takes; the others are stashed for later calls.
    async fn next<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(Upstream) -> Result<T, Upstream>,
    ) -> T {
        for i in 0..self.stash.len() {
            let m = self.stash.remove(i).expect("index in range");
            match pick(m) {
                Ok(t) => return t,
                Err(m) => self.stash.insert(i, m),
            }
        }
        within(what, LONG, async {
            loop {
                let m = self.rx.recv().await.expect("watcher running");
                match pick(m) {
                    Ok(t) => return t,
                    Err(m) => self.stash.push_back(m),
                }
            }
        })
        .await
    }

    /// The next event batch, waiting as long as it takes (the caller bounds it).
    pub async fn batch_or_none(&mut self) -> Vec<v1::Event> {
        loop {
            if let Some(i) = self
                .stash
                .iter()
                .position(|m| matches!(m, Upstream::Events(_)))
            {
                if let Some(Upstream::Events(b)) = self.stash.remove(i) {
                    return b;
                }
            }
            match self.rx.recv().await {
                Some(Upstream::Events(b)) => return b,
                Some(other) => self.stash.push_back(other),
                None => return Vec::new(),
            }
        }
    }

    /// Every alarm received so far (set aside while waiting for events, or waiting now).
    pub fn alarms_so_far(&mut self) -> Vec<v1::Alarm> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            self.stash.push_back(m);
        }
        self.stash.retain(|m| match m {
            Upstream::Alarms(a) => {
                out.extend(a.iter().cloned());
                false
            }
            _ => true,
        });
        out
    }

    pub async fn batch(&mut self) -> Vec<v1::Event> {
        self.next("an event batch", |m| match m {
            Upstream::Events(b) => Ok(b),
            m => Err(m),
        })
        .await
    }

    /// Collects passage events until `n` distinct seqs arrived (duplicates are kept, in order).
    pub async fn events(&mut self, n: usize) -> Vec<v1::Event> {
        let mut out: Vec<v1::Event> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < n {
            for e in self.batch().await {
                seen.insert(e.seq);
                out.push(e);
            }
        }
        out
    }

    /// The next passage decision made on `device`'s identification (other events are set aside).
    pub async fn passage_from(&mut self, device: &str) -> (v1::Event, v1::PassageDecision) {
        let mut aside = Vec::new();
        let found = loop {
            let mut found = None;
            for e in self.batch().await {
                match &e.body {
                    Some(v1::event::Body::Passage(d)) if e.device == device && found.is_none() => {
                        found = Some((e.clone(), d.clone()))
                    }
                    _ => aside.push(e),
                }
            }
            if let Some(f) = found {
                break f;
            }
        };
        if !aside.is_empty() {
            self.stash.push_front(Upstream::Events(aside));
        }
        found
    }

    /// The next alarm of `kind` (others are set aside).
    pub async fn alarm_of(&mut self, kind: v1::AlarmKind) -> v1::Alarm {
        let (first, others) = self
            .next(&format!("a {kind:?} alarm"), |m| match m {
                Upstream::Alarms(a) => match a.iter().position(|x| x.kind() == kind) {
                    Some(i) => {
                        let mut others = a;
                        let first = others.remove(i);
                        Ok((first, others))
                    }
                    None => Err(Upstream::Alarms(a)),
                },
                m => Err(m),
            })
            .await;
        // Alarms that came in the same message wait for the next call.
        if !others.is_empty() {
            self.stash.push_front(Upstream::Alarms(others));
        }
        first
    }

    /// The next statistics batch.
    pub async fn stats(&mut self) -> v1::StatsBatch {
        self.next("a stats batch", |m| match m {
            Upstream::Stats(s) => Ok(s),
            m => Err(m),
        })
        .await
    }

    /// The next command result.
    pub async fn result(&mut self) -> v1::CommandResult {
        self.next("a command result", |m| match m {
            Upstream::Result(r) => Ok(r),
            m => Err(m),
        })
        .await
    }

    /// The next twin of `device` that `ok` accepts (earlier ones are dropped).
    pub async fn twin(
        &mut self,
        device: &str,
        mut ok: impl FnMut(&v1::DeviceTwin) -> bool,
    ) -> v1::DeviceTwin {
        self.next(&format!("a twin of {device}"), |m| match m {
            Upstream::Twin(t) if t.device == device && ok(&t) => Ok(*t),
            Upstream::Twin(t) if t.device == device => {
                // An older state of that device: set aside as an empty twin nobody asks for.
                Err(Upstream::Twin(Box::default()))
            }
            m => Err(m),
        })
        .await
    }

    pub async fn alarm(&mut self) -> v1::Alarm {
        self.next("an alarm", |m| match m {
            Upstream::Alarms(mut a) if !a.is_empty() => Ok(a.remove(0)),
            m => Err(m),
        })
        .await
    }

    pub async fn status(&mut self, state: v1::GatewayState) -> v1::Status {
        self.next(&format!("status {state:?}"), |m| match m {
            Upstream::Status { status, .. } if status.state() == state => Ok(*status),
            m => Err(m),
        })
        .await
    }

    pub async fn retained_status(&mut self) -> v1::Status {
        self.next("a retained status", |m| match m {
            Upstream::Status {
                status,
                retained: true,
            } => Ok(*status),
            m => Err(m),
        })
        .await
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// What the proxy does to the link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    Up,
    /// Every open connection dropped, new ones refused (a broker killed and not yet back).
    Cut,
    /// Bytes stop flowing, connections stay open, no RST (a pulled cable, a stateful firewall).
    Blackhole,
    /// Every chunk held this long before it goes on (a congested 4G uplink).
    Slow(Duration),
    /// The broker's PUBACKs never reach the client; everything else flows (a broker that took
    /// the messages but whose acknowledgements are lost).
    DropPubAcks,
    /// The next bytes towards the broker get through by half, then the connection drops: a
    /// batch cut in the middle of its packet (the link dying mid-write).
    CutMidWrite,
}

/// A TCP proxy in front of a broker whose link the test can cut, blackhole, slow and restore.
pub struct Proxy {
    pub url: BrokerUrl,
    link: tokio::sync::watch::Sender<(Link, u64)>,
}

impl Proxy {
    pub async fn start(target: BrokerUrl) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // (mode, how many cuts so far): a cut is seen by every connection, even a later restore.
        let (link, _) = tokio::sync::watch::channel((Link::Up, 0u64));
        let l = link.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (mode, cuts) = *l.borrow();
                if mode == Link::Cut {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let _ = inbound.set_nodelay(true);
                let target = format!("{}:{}", target.host, target.port);
                let rx = l.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, rx.clone(), cuts, false) => {}
                        _ = pump(ro, wi, rx, cuts, true) => {}
                    }
                });
            }
        });
        Proxy {
            url: BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port,
            },
            link,
        }
    }

    pub fn set(&self, mode: Link) {
        self.link.send_modify(|(m, cuts)| {
            *m = mode;
            if mode == Link::Cut {
                *cuts += 1;
            }
        });
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Link::Cut);
    }

    pub fn restore(&self) {
        self.set(Link::Up);
    }
}

/// A plain TCP forwarder (any protocol: a Modbus TCP barrier's link) that the test can cut: while
/// cut, every open connection is dropped and nothing listens on its address (connections are
/// refused, as when a cable is pulled from a Modbus gateway's switch port and it reboots).
pub struct TcpCut {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl TcpCut {
    pub async fn start(target: std::net::SocketAddr) -> TcpCut {
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap();
        let (up, _) = tokio::sync::watch::channel(true);
        let mut rx = up.subscribe();
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => {
                        // Cut: wait for the restore, then listen on the same address again.
                        while !*rx.borrow_and_update() {
                            if rx.changed().await.is_err() {
                                return;
                            }
                        }
                        match TcpListener::bind(addr).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        }
                    }
                };
                loop {
                    tokio::select! {
                        a = l.accept() => {
                            let Ok((mut inbound, _)) = a else { continue };
                            let mut cut = rx.clone();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = TcpStream::connect(target).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = cut.wait_for(|up| !*up) => {}
                                }
                            });
                        }
                        c = rx.changed() => {
                            if c.is_err() {
                                return;
                            }
                            if !*rx.borrow_and_update() {
                                break;
                            }
                        }
                    }
                }
                drop(l);
            }
        });
        TcpCut { addr, up }
    }

    /// Drops every open connection and stops listening.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// Copies one direction, obeying the link's mode; ends on EOF, an error or a cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<(Link, u64)>,
    cuts_at_start: u64,
    to_client: bool,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    // Towards the client the stream is cut into MQTT packets, so PUBACKs can be dropped whole.
    let mut frames = Frames::default();
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = link.changed() => {
                if link.borrow().1 != cuts_at_start {
                    return;
                }
                continue;
            }
        };
        // Hold the bytes while blackholed; drop the connection if it is cut meanwhile.
        loop {
            let (mode, cuts) = *link.borrow_and_update();
            if cuts != cuts_at_start {
                return;
            }
            match mode {
                Link::Blackhole => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
                Link::Slow(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Link::Up | Link::Cut | Link::DropPubAcks | Link::CutMidWrite => break,
            }
        }
        let out = if to_client {
            let drop_acks = link.borrow().0 == Link::DropPubAcks;
            frames.pass(&buf[..n], drop_acks)
        } else if link.borrow().0 == Link::CutMidWrite {
            // Whole packets up to the first PUBLISH, half of it, and the connection drops.
            let out = frames.pass(&buf[..n], false);
            let mut at = 0;
            while let Some((header, body)) = packet_len(&out[at..]) {
                if out[at] & 0xF0 == 0x30 {
                    let _ = to.write_all(&out[..at + (header + body) / 2]).await;
                    return;
                }
                at += header + body;
            }
            out
        } else {
            frames.pass(&buf[..n], false)
        };
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Cuts a byte stream into MQTT packets (fixed header, remaining length) across reads.
#[derive(Default)]
struct Frames {
    pending: Vec<u8>,
}

impl Frames {
    /// The complete packets so far, without PUBACKs if `drop_acks`; a partial one waits.
    fn pass(&mut self, bytes: &[u8], drop_acks: bool) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((header, body)) = packet_len(&self.pending[at..]) {
            let end = at + header + body;
            if !(drop_acks && self.pending[at] & 0xF0 == 0x40) {
                out.extend_from_slice(&self.pending[at..end]);
            }
            at = end;
        }
        self.pending.drain(..at);
        out
    }
}

/// (fixed header length, remaining length) of the packet at the start of `b`, once complete.
fn packet_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *b.get(1 + i)?;
        len |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            return (b.len() >= header + len).then_some((header, len));
        }
    }
    None
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
    gatehouse::tools::company_broker::free_port().unwrap()
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
