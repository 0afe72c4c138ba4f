//! Against mosquitto, the broker a box or a company more often runs: the device side on a plain
//! listener, the uplink over mqtts (rustls) to a TLS listener with a CA made for the test.
//! Skipped, with the reason printed, where mosquitto or openssl is missing (`.ci/run` installs them).
use crate::common::*;
use gatehouse::config::{BrokerUrl, Config};
use gatehouse::daemon::Daemon;
use gatehouse::profiles::{Profiles, Unit};
use gatehouse::proto::v1;
use gatehouse::{broker, sim};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} || test -x /usr/sbin/{tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate for localhost / 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    let d = |f: &str| dir.join(f);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=gatehouse test CA",
        ])
        .arg("-keyout")
        .arg(d("ca.key"))
        .arg("-out")
        .arg(d("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(d("server.key"))
        .arg("-out")
        .arg(d("server.csr")));
    std::fs::write(d("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(d("server.csr"))
        .arg("-CA")
        .arg(d("ca.pem"))
        .arg("-CAkey")
        .arg(d("ca.key"))
        .arg("-out")
        .arg(d("server.pem"))
        .arg("-extfile")
        .arg(d("san.ext")));
}

struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `user root`: the key is private to the test's user; mosquitto must not drop to its own.
fn start_mosquitto(dir: &Path, plain: u16, tls: u16) -> Mosquitto {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "persistence false\nuser root\nallow_anonymous true\nset_tcp_nodelay true\nmax_inflight_messages 0\n\
             listener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let bin = if have("mosquitto")
        && Command::new("mosquitto")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    {
        "mosquitto"
    } else {
        "/usr/sbin/mosquitto"
    };
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto starts");
    for port in [plain, tls] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_mosquitto_on_the_device_side_and_over_tls_upstream() {
    for tool in ["mosquitto", "openssl"] {
        if !have(tool) {
            println!("SKIPPED works_with_mosquitto_on_the_device_side_and_over_tls_upstream: {tool} is not installed (apt-get install {tool})");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let (plain, tls) = (broker::free_port().unwrap(), broker::free_port().unwrap());
    let _mosquitto = start_mosquitto(dir.path(), plain, tls);
    let devices = BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: plain,
    };

    let text = config_text(dir.path(), &devices, &devices).replace(
        &format!("url = \"mqtt://127.0.0.1:{plain}\"\nbatch_max"),
        &format!("url = \"mqtts://localhost:{tls}\"\nca_file = \"ca.pem\"\nbatch_max"),
    );
    assert!(text.contains("mqtts://"), "uplink rewritten to TLS");
    std::fs::write(dir.path().join("gatehouse.toml"), text).unwrap();
    let config = Config::load(&dir.path().join("gatehouse.toml")).unwrap();

    let mut company = Uplink::connect(&devices).await;
    let mut gate = gate_sim(&devices);
    let daemon = within("start", LONG, Daemon::start(config, Profiles::builtin()))
        .await
        .unwrap();
    company.status(v1::GatewayState::Online).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let terminal = Client::connect(&devices, "mosq-terminal").await;
    let body = sim::hikvision::acs_event(7, Some("R000007"), 36.7, Unit::Celsius);
    terminal
        .publish("devices/thermal-1/event", body.into_bytes())
        .await;
    let cmd = within("gate command", LONG, gate.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cmd.action.as_str(), cmd.cause.as_str()), ("open", "7"));
    let events = company.events(1).await;
    assert_eq!(events[0].event_id, format!("{GATEWAY}:{}", events[0].seq));
    daemon.stop().await;
}
