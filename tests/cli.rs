//! The `gatehouse` binary as systemd and an installer use it.
use crate::common::*;
use gatehouse::device::Unit;
use gatehouse::proto::v1;
use std::process::Command;
use std::time::{Duration, Instant};

fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

#[test]
fn a_config_with_five_mistakes_gets_five_messages_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[gateway]
id = "gw/1"                  # 1: not topic-safe
city = "3301"
district = "330106"
street = "330106001"
community = "330107001001"   # 2: not under its street

[uplink]
url = "http://company:1883"  # 3: not mqtt

[rules]
fever_threshold_c = 45.0     # 4: outside the plausible range

[[lanes]]
id = "east-1"

[[lanes.devices]]
id = "thermal-1"
role = "thermal"
profile = "hikvsion-acs-event"   # 5: misspelt; and so the lane has no gate:

[[lanes.devices]]
id = "gate-1"
role = "turnstile"
profile = "generic-gate-mqtt"
"#,
    )
    .unwrap();
    let out = gatehouse().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    for expected in [
        "gateway.id:",
        "gateway.community:",
        "uplink.url:",
        "rules.fever_threshold_c:",
        "lanes[0].devices[0].profile: unknown profile \"hikvsion-acs-event\"",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "missing {expected}: {stderr}"
        );
    }
}

/// Every shipped profile has a simulator (`gatehouse simulate <profile>`; the two RS-485
/// readers share `rs485-reader`).
#[test]
fn gatehouse_simulate_covers_every_shipped_profile() {
    let out = gatehouse().args(["simulate", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let profiles = gatehouse::device::Profiles::builtin();
    for name in profiles.names() {
        let command = match name {
            "rs485-face-id" | "rs485-wiegand-reader" => "rs485-reader",
            n => n,
        };
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "no simulator for {name}:\n{help}"
        );
    }
}

/// The shipped example is production (issue 27 §9), and valid once the uplink password file
/// the package makes is in place.
#[test]
fn the_shipped_example_config_is_valid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string("systemd/gatehouse.toml").unwrap();
    assert!(
        example.contains("\nsecurity = \"production\""),
        "the example is production"
    );
    let pass = dir.path().join("uplink.pass");
    std::fs::write(&pass, "the-uplink-password\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = example.replace("/etc/gatehouse/uplink.pass", &pass.display().to_string());
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    let out = gatehouse().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Issue 27 §9: in development, a device without a secret on a listener the LAN reaches starts
/// (it logs in on its id alone) — and `check-config` says so for each, instead of a bare "ok".
#[test]
fn check_config_warns_of_each_device_anyone_on_the_lan_could_be() {
    let dir = tempfile::tempdir().unwrap();
    let broker = gatehouse::mqtt_client::BrokerUrl::parse("mqtt://127.0.0.1:1883").unwrap();
    let text = config_text(dir.path(), &DeviceSide::endpoint(), &broker)
        .replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:");
    let text = strip_secrets(&text);
    let path = write_config_text(dir.path(), &text);
    let out = gatehouse().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for device in ["thermal-1", "gate-1"] {
        assert!(
            stderr.lines().any(|l| l.starts_with("warning:")
                && l.contains(&format!("device {device} has no secret"))),
            "no warning for {device}: {stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warnings)") && !stdout.contains(" 0 warnings"),
        "{stdout}"
    );
}

/// The config without its device secrets: no `password_hash` lines, no secrets file.
fn strip_secrets(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("password_hash") && !l.starts_with("secrets_file"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_offline_status_retained_and_exits_zero() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &DeviceSide::endpoint(), &broker);
    let mut watcher = Uplink::connect(&broker).await;
    let mut child = gatehouse_run(&config).spawn().unwrap();
    let online = watcher.status(v1::GatewayState::Online).await;
    assert_eq!(
        (online.gateway.as_str(), online.mode.as_str()),
        (GATEWAY, "normal")
    );
    assert_eq!(online.devices.len(), 2);

    let (status, took) = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A newcomer sees the retained status: offline.
    let mut late = Uplink::connect(&broker).await;
    let s = late.retained_status().await;
    assert_eq!(s.state(), v1::GatewayState::Offline);
}

/// A resident list with a bad line stops `check-config` (exit 78, the line named) but not the
/// gate: `run` starts on the stored list and says upstream that the new one was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resident_list_fails_check_config_but_not_the_gate() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &DeviceSide::endpoint(), &broker);
    std::fs::write(
        dir.path().join("residents.csv"),
        "person_id,household\nR1,H1\nR2\n",
    )
    .unwrap();
    let out = gatehouse()
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{out:?}"
    );

    let mut watcher = Uplink::connect(&broker).await;
    let mut child = gatehouse_run(&config).spawn().unwrap();
    let alarm = watcher.alarm_of(v1::AlarmKind::RegistryRefused).await;
    assert!(alarm.detail.contains("line 3"), "{}", alarm.detail);
    watcher.status(v1::GatewayState::Online).await;
    let (status, _) = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_is_marked_offline_by_its_will() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &DeviceSide::endpoint(), &broker);
    let mut watcher = Uplink::connect(&broker).await;
    let mut child = gatehouse_run(&config).spawn().unwrap();
    let online = watcher.status(v1::GatewayState::Online).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let will = watcher.status(v1::GatewayState::Offline).await;
    assert_eq!(will.gateway, GATEWAY);
    // The will was encoded before its connection, yet it orders after every status of that
    // connection and before the next boot's (issue 29: the company keeps the newest by
    // (boot, seq)).
    assert!(online.boot >= 1 && online.seq >= 1, "{online:?}");
    assert_eq!(
        (will.boot, will.seq),
        (online.boot, online.seq | 0xFFFF_FFFF)
    );
    let mut child = gatehouse_run(&config).spawn().unwrap();
    let again = watcher.status(v1::GatewayState::Online).await;
    assert!((again.boot, again.seq) > (will.boot, will.seq), "{again:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A stalled decision loop, device source or outbox writer stops the watchdog pings (so systemd
/// restarts the daemon). The stall is a fault injected through the environment, which only debug
/// builds read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_only_while_every_loop_turns() {
    let broker = start_broker();
    let mut runs = Vec::new();
    for part in ["DECISIONS", "SOURCE", "WRITER"] {
        let dir = tempfile::tempdir().unwrap();
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = config_text(dir.path(), &DeviceSide::endpoint(), &broker)
            + &format!("\n[metrics]\nlisten = \"{metrics}\"\n");
        let config = write_config_text(dir.path(), &text);
        let socket_path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let child = gatehouse_run(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "2400000")
            .env(format!("GATEHOUSE_TEST_STALL_{part}_AFTER_MS"), "4000")
            .spawn()
            .unwrap();
        runs.push((part, dir, socket, child, metrics));
    }
    // The three daemons side by side; each socket read in its own thread.
    let start = Instant::now();
    let watched: Vec<_> = runs
        .into_iter()
        .map(|(part, dir, socket, child, metrics)| {
            std::thread::spawn(move || {
                let mut pings = Vec::new();
                let mut ready = false;
                let mut buf = [0u8; 256];
                // `/health` says the same as the watchdog: all well at first, the stalled loop
                // named once it stopped.
                let (mut early, mut late) = (None, None);
                while start.elapsed() < Duration::from_secs(10) {
                    if early.is_none() && ready && start.elapsed() > Duration::from_secs(2) {
                        early = http_get(metrics, "/health");
                    }
                    if late.is_none() && start.elapsed() > Duration::from_millis(8500) {
                        late = http_get(metrics, "/health");
                    }
                    if let Ok(n) = socket.recv(&mut buf) {
                        match &buf[..n] {
                            b"READY=1" => ready = true,
                            b"WATCHDOG=1" => pings.push(start.elapsed()),
                            _ => {}
                        }
                    }
                }
                let mut child = child;
                child.kill().unwrap();
                child.wait().unwrap();
                drop(dir);
                (part, ready, pings, early, late)
            })
        })
        .collect();
    for w in watched {
        let (part, ready, pings, early, late) = w.join().unwrap();
        let (code, body) = early.expect("/health answered while turning");
        assert_eq!(code, 200, "{part}: {body}");
        let (code, body) = late.expect("/health answered after the stall");
        assert_eq!(code, 503, "{part}: {body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        let name = match part {
            "DECISIONS" => "decision loop",
            "SOURCE" => "device source",
            _ => "outbox writer",
        };
        assert_eq!(health["loops"][name]["ok"], false, "{part}: {body}");
        assert!(ready, "{part}: READY=1 sent");
        assert!(
            pings.iter().any(|t| *t < Duration::from_secs(4)),
            "{part}: fed while turning: {pings:?}"
        );
        // The loop stalls 4 s after its start; the check after that still sees its last turns
        // (checks come every 1.2 s), none later. Generous margins: CI runs tests side by side.
        assert!(
            pings.iter().all(|t| *t < Duration::from_millis(7000)),
            "{part}: no ping after the stall: {pings:?}"
        );
    }
}

/// `gatehouse mode` / `fire-reset` against a running daemon, and fire mode held across a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_mode_from_the_cli_holds_across_a_crash_until_the_local_reset() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let devices = DeviceSide::endpoint();
    let config = write_config(dir.path(), &devices, &broker);
    let mut watcher = Uplink::connect(&broker).await;
    let mut gate = gate_sim(&devices.link("gate-1"));
    let cli = |args: &[&str]| {
        let out = gatehouse()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let mut child = Reaped(gatehouse_run(&config).spawn().unwrap());
    watcher.status(v1::GatewayState::Online).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cli(&["mode", "fire"]), (true, "ok".to_string()));
    assert_eq!(next_action(&mut gate).await, "hold_open");
    let (ok, reply) = cli(&["mode", "normal"]);
    assert!(!ok && reply.starts_with("refused:"), "{reply}");

    // A crash does not end fire mode: the restarted daemon opens the gates again at once — also
    // when the config file's mode changed meanwhile (fire refuses it), and not only at the next
    // re-assert 5 s later (the gate is held the moment it is back on its command topic).
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[rules]\nmode = \"epidemic\"\n");
    std::fs::write(&config, text).unwrap();
    while tokio::time::timeout(Duration::from_millis(50), gate.recv())
        .await
        .is_ok()
    {}
    let started = std::time::Instant::now();
    let mut child = Reaped(gatehouse_run(&config).spawn().unwrap());
    assert_eq!(next_action(&mut gate).await, "hold_open");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(4500),
        "held open at once, not at the 5 s re-assert: {waited:?}"
    );
    watcher.status(v1::GatewayState::Online).await;
    assert_eq!(cli(&["fire-reset"]), (true, "ok".to_string()));
    loop {
        match next_action(&mut gate).await.as_str() {
            "release" => break,
            other => assert_eq!(other, "hold_open"),
        }
    }
    assert!(!cli(&["fire-reset"]).0, "not in fire mode any more");
    let (status, _) = terminate(&mut child.0).await;
    assert_eq!(status.code(), Some(0));
}

async fn next_action(
    gate: &mut tokio::sync::mpsc::Receiver<
        Result<gatehouse::tools::sim::gate::GateCommand, String>,
    >,
) -> String {
    within("a gate command", LONG, gate.recv())
        .await
        .unwrap()
        .unwrap()
        .action
}

/// A child daemon that is killed if the test fails before stopping it.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An operator's way in: a key pair from `gatehouse-company keygen`, an order from
/// `gatehouse-company command`, and it verifies with that public key.
#[tokio::test]
async fn keygen_and_command_make_a_command_the_gateway_accepts() {
    use clap::Parser;
    use gatehouse::orders::{
        parse_public_key, verify, Kind, Level, Limits, Place, StoreAge, TrustedKey,
    };
    use gatehouse_company::cli::{keygen, order, Cli, Cmd};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("company.key");
    let public = keygen(&key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(keygen(&key).is_err(), "never over an existing key");
    let cli = Cli::try_parse_from([
        "gatehouse-company",
        "command",
        "--key-id",
        "company",
        "--target",
        "street:330106001",
        "--mode",
        "lockdown",
        "--key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let Cmd::Command(args) = cli.command else {
        panic!("not a command")
    };
    let lines = order(*args).await.unwrap();
    let public = public.as_str();
    let hex = lines[0].clone();
    let bytes = gatehouse::hex::parse_hex(&hex).unwrap();
    let trusted = [TrustedKey {
        id: "company".into(),
        key: parse_public_key(public).unwrap(),
        levels: vec![Level::Street],
        kinds: vec![Kind::SetMode],
    }];
    let place = Place {
        gateway: "gw".into(),
        community: "330106001001".into(),
        street: "330106001".into(),
        district: "330106".into(),
    };
    let limits = Limits {
        max_skew_ms: 60_000,
        max_lifetime_ms: 24 * 3600 * 1000,
        store: StoreAge::Since(1),
        clock_trusted: true,
    };
    let v = verify(&bytes, &trusted, &place, gatehouse::now_ms(), &limits).unwrap();
    assert_eq!(v.kind, Kind::SetMode);
}

/// READY waits for the device side's subscription, but not forever: with the device broker
/// unreachable the daemon still comes up (within 3 s and a margin), serving what it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_even_when_the_device_broker_cannot_be_reached() {
    let uplink = start_broker();
    let nowhere = gatehouse::mqtt_client::BrokerUrl {
        tls: false,
        host: "127.0.0.1".into(),
        port: gatehouse_company::broker::free_port().unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &DeviceSide::External(nowhere), &uplink);
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut watcher = Uplink::connect(&uplink).await;
    let started = Instant::now();
    let mut child = gatehouse_run(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let mut ready = None;
    while started.elapsed() < Duration::from_secs(8) && ready.is_none() {
        if let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == b"READY=1" {
                ready = Some(started.elapsed());
            }
        }
    }
    let ready = ready.expect("READY=1 without a device broker");
    assert!(
        ready >= Duration::from_secs(2),
        "READY waited for the subscription first: {ready:?}"
    );
    // The uplink runs meanwhile.
    watcher.status(v1::GatewayState::Online).await;
    let (status, _) = terminate(&mut child).await;
    assert_eq!(status.code(), Some(0));
}

/// Started by hand with a wide-open umask, the daemon still keeps its store and control socket
/// private; and a local user who reaches the socket anyway (its directory opened by an admin)
/// is refused by its credentials — no fire mode from just anyone on the box.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_control_socket_are_private_whatever_the_umask_and_strangers_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &DeviceSide::endpoint(), &broker);
    let mut watcher = Uplink::connect(&broker).await;
    let bin = env!("CARGO_BIN_EXE_gatehouse");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {bin} run --config {}",
            config.display()
        ))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create("/tmp/umask-run.log").unwrap())
        .spawn()
        .unwrap();
    // Killed if the test fails before it stops it.
    let mut child = Reaped(child);
    let child = &mut child.0;
    let _ = std::fs::copy(dir.path().join("run.log"), "/tmp/umask-run.log");
    watcher.status(v1::GatewayState::Online).await;
    let store = dir.path().join("store");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700, "store directory");
    assert_eq!(mode(&store.join("gatehouse.redb")), 0o600, "store file");
    assert_eq!(mode(&store.join("control.sock")), 0o600, "control socket");

    // An admin opens the way; a user that is neither root nor the daemon's still gets nothing.
    let runs_as_root = unsafe { libc::geteuid() } == 0;
    if !runs_as_root || !have("setpriv") {
        skip(
            "the_store_and_control_socket_are_private_…: the stranger part",
            "needs root and setpriv to act as another user",
        );
    } else {
        for p in [dir.path(), store.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let sock = store.join("control.sock");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "mode",
                "fire",
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a stranger set the mode: {out:?}");
        // Root still may; the next status the gateway sends is that change, not fire.
        let out = std::process::Command::new(bin)
            .args(["mode", "epidemic", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let s = watcher.status(v1::GatewayState::Online).await;
        assert_eq!(s.mode, "epidemic");
    }
    let (status, _) = terminate(child).await;
    assert_eq!(status.code(), Some(0));
}

/// A commit that panics (a bug in the store or the writer) takes the daemon down — it aborts in
/// every build, as release builds do for any panic — and loses nothing: what was not acknowledged
/// the terminal sends again, and the next run decides it. (The panic is injected through a
/// debug-build test hook.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_commit_aborts_the_daemon_and_loses_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let company = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let devices = DeviceSide::endpoint();
    let config = write_config(dir.path(), &devices, &company);
    let mut up = Uplink::connect(&company).await;
    let mut child = gatehouse_run(&config)
        .env("GATEHOUSE_TEST_PANIC_COMMIT_AT", "5")
        .spawn()
        .unwrap();
    up.status(v1::GatewayState::Online).await;
    let terminal = Client::device(&devices.link("thermal-1"), "t").await;
    const N: u64 = 50;
    for serial in 1..=N {
        let body = gatehouse::tools::sim::hikvision::acs_event(
            serial,
            Some(&format!("R{serial:06}")),
            36.5,
            Unit::Celsius,
        );
        terminal
            .publish("devices/thermal-1/event", body.into_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = within(
        "the daemon aborts",
        LONG,
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let mut child = Reaped(gatehouse_run(&config).spawn().unwrap());
    let mut seen = std::collections::HashSet::new();
    within("every event upstream", Duration::from_secs(30), async {
        while (seen.len() as u64) < N {
            for e in up.batch().await {
                if let Some(v1::event::Body::Passage(p)) = e.body {
                    seen.insert(p.cause[0].parse::<u64>().unwrap());
                }
            }
        }
    })
    .await;
    let (status, _) = terminate(&mut child.0).await;
    assert_eq!(status.code(), Some(0));
}

/// The box's binary links nothing of the company's side: no broker, no database client, no
/// spreadsheet writer, no web framework, no company or demo crate, and the contract without its
/// signing feature. Read from `cargo tree` of the box alone, as `cargo build -p gatehouse` sees it.
#[test]
fn the_box_links_nothing_of_the_company_side() {
    let tree = |edges: &str| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["tree", "--offline", "-p", "gatehouse", "--prefix", "none"])
            .args(["-e", edges])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let crates = tree("normal");
    let linked: Vec<&str> = crates
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(linked.contains(&"gatehouse-contract"), "{crates}");
    let company_side = [
        "gatehouse-company",
        "gatehouse-demo",
        "rumqttd",
        "sqlx",
        "rusqlite",
        "tokio-postgres",
        "postgres",
        "libsqlite3-sys",
        "rust_xlsxwriter",
        "axum",
        "askama",
        "fantoccini",
        "thirtyfour",
    ];
    for name in company_side {
        assert!(!linked.contains(&name), "the box links {name}:\n{crates}");
    }
    let features = tree("normal,features");
    assert!(
        !features.contains("gatehouse-contract feature \"sign\""),
        "the box links the signing code:\n{features}"
    );
}

/// `gatehouse device-secret | head -c0`: a command whose reader has gone away ends quietly (as
/// Unix tools do, by SIGPIPE), never with a panic on the failed write.
#[test]
fn a_printing_command_ends_quietly_when_its_reader_is_gone() {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are ours, just made; each is owned once.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let out = gatehouse()
        .arg("device-secret")
        .stdout(write)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// Issue 27 §7: `broker-config --nft` writes a packet filter for the device-side ports that
/// admits only the configured devices' addresses; it names every device and loads (`nft -c`, in
/// a network namespace of its own); a device on the network without an address is refused.
#[test]
fn broker_config_writes_a_packet_filter_that_names_every_device_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let broker = gatehouse::mqtt_client::BrokerUrl::parse("mqtt://127.0.0.1:1883").unwrap();
    let cars = "\n[[lanes]]\nid = \"cars-1\"\n\n[[lanes.devices]]\nid = \"cam-z\"\nrole = \"plate_camera\"\nprofile = \"zhenshi-ivs-http\"\n";
    let text = config_text(dir.path(), &DeviceSide::endpoint(), &broker)
        .replace(
            "id = \"thermal-1\"\n",
            "id = \"thermal-1\"\nfrom = \"192.168.1.64\"\n",
        )
        .replace(
            "id = \"gate-1\"\n",
            "id = \"gate-1\"\nfrom = \"192.168.1.70\"\n",
        )
        + cars;
    let nft = dir.path().join("gatehouse.nft");
    let run = |text: &str| {
        let path = write_config_text(dir.path(), text);
        gatehouse()
            .args(["broker-config", "--config"])
            .arg(&path)
            .arg("--nft")
            .arg(&nft)
            .output()
            .unwrap()
    };
    let out = run(&text);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no address for cam-z"), "{stderr}");

    let text = text.replace("id = \"cam-z\"\n", "id = \"cam-z\"\nfrom = \"fd00::5\"\n");
    let out = run(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(&nft).unwrap();
    for (ip, id) in [
        ("192.168.1.64", "thermal-1"),
        ("192.168.1.70", "gate-1"),
        ("fd00::5", "cam-z"),
    ] {
        assert!(
            rules.lines().any(|l| l.contains(ip) && l.contains(id)),
            "{id}: {rules}"
        );
    }
    assert!(rules.contains("8088"), "the HTTP listener's port: {rules}");
    if !have("nft") || !have("unshare") {
        return skip(
            "broker_config_writes_a_packet_filter_that_names_every_device_and_loads",
            "nft or unshare is not installed (apt-get install nftables util-linux)",
        );
    }
    let check = std::process::Command::new("unshare")
        .args(["-n", "nft", "-c", "-f"])
        .arg(&nft)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nft -c: {}\n{rules}",
        String::from_utf8_lossy(&check.stderr)
    );
}
