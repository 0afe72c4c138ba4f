//! A store that stops working must not stop the gate (degraded mode, `store/spill.rs`): with the
//! store's disk failing (EIO) or filled to the last byte by something else, the gate keeps
//! deciding, opening and acknowledging; a storage alarm goes up and the status says the records
//! are not durable; and when the disk works again, nothing that was acknowledged is missing
//! upstream.
use crate::common::*;
use bytes::BytesMut;
use gatehouse::device::Unit;
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the disk stays broken (s); `GATEHOUSE_DEGRADED_S` makes it minutes.
fn broken_for() -> Duration {
    let s = std::env::var("GATEHOUSE_DEGRADED_S")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(s.unwrap_or(8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_with_eio_never_stops_the_gate_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let fail = dir.path().join("fail-commits");
    let broken = Fault::Eio(fail.clone());
    run(dir.path(), None, broken).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_to_the_last_byte_never_stops_the_gate_and_loses_nothing_acknowledged() {
    let Some(disk) = SmallDisk::mount("24m") else {
        skip(
            "degraded on a full tmpfs",
            "cannot mount a tmpfs here (needs root)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let filler = disk.0.path().join("filler");
    run(dir.path(), Some(disk.0.path()), Fault::Full(filler)).await;
}

enum Fault {
    /// Commits fail with EIO while this file exists (the daemon's debug-build hook).
    Eio(std::path::PathBuf),
    /// This file fills the store's filesystem to the last byte.
    Full(std::path::PathBuf),
}

impl Fault {
    fn on(&self) {
        match self {
            Fault::Eio(f) => std::fs::write(f, b"").unwrap(),
            Fault::Full(f) => {
                use std::io::Write;
                let mut file = std::fs::File::create(f).unwrap();
                let chunk = vec![0u8; 64 * 1024];
                while file.write_all(&chunk).is_ok() {}
                while file.write_all(&[0]).is_ok() {}
                let _ = file.sync_all();
            }
        }
    }

    fn off(&self) {
        let (Fault::Eio(f) | Fault::Full(f)) = self;
        std::fs::remove_file(f).unwrap();
    }
}

async fn run(dir: &std::path::Path, store_dir: Option<&std::path::Path>, fault: Fault) {
    let broker = start_broker();
    let proxy = Proxy::start(broker.clone()).await;
    let devices = DeviceSide::endpoint();
    let mut text = config_text(dir, &devices, &proxy.url)
        .replace("[store]\n", "[store]\ndegraded_after_s = 1\n");
    if let Some(s) = store_dir {
        text = text.replace("dir = \"store\"", &format!("dir = \"{}\"", s.display()));
    }
    let config = write_config_text(dir, &text);
    let store = store_dir.map_or_else(|| dir.join("store"), std::path::Path::to_path_buf);
    let mut company = Uplink::connect(&broker).await;
    let mut gate = gate_sim(&devices.link("gate-1"));
    let mut run = gatehouse_run(&config);
    if let Fault::Eio(f) = &fault {
        run.env("GATEHOUSE_TEST_FAIL_COMMITS_WHILE", f);
    }
    let mut child = run.spawn().unwrap();
    company.status(v1::GatewayState::Online).await;
    let opens = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = opens.clone();
    tokio::spawn(async move {
        while let Some(c) = gate.recv().await {
            if c.is_ok_and(|c| c.action == "open") {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // A terminal: an identification every 20 ms, QoS 1; what was acknowledged, by serial.
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let terminal = tokio::spawn(terminal(devices.clone(), acked.clone(), stop.clone()));
    let status = |store: std::path::PathBuf| async move {
        let s = gatehouse::daemon::control::send(&store, "status")
            .await
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&s).unwrap()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The uplink drops, then the disk breaks: what is acknowledged now waits in memory (and
    // no delete frees a page the store could reuse).
    proxy.cut();
    fault.on();
    // Past `degraded_after` (1 s here) the gate goes on from memory.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (acks_then, opens_then) = (acked.lock().unwrap().len(), opens.load(Ordering::Relaxed));
    tokio::time::sleep(broken_for()).await;
    let (acks_now, opens_now) = (acked.lock().unwrap().len(), opens.load(Ordering::Relaxed));
    // At one every 20 ms: at least half of them over the broken time, acknowledged and opened.
    let expected = broken_for().as_millis() as usize / 40;
    assert!(
        acks_now - acks_then >= expected,
        "acks {acks_then} → {acks_now}"
    );
    assert!(
        opens_now - opens_then >= expected as u64,
        "opens {opens_then} → {opens_now}"
    );

    let a = within("degraded", LONG, async {
        loop {
            let s = status(store.clone()).await;
            if s["outbox"]["durable"] == false {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    println!("degraded: {a}");
    // The disk works again, then the uplink: durable again, and everything acknowledged arrives.
    fault.off();
    within("durable again", Duration::from_secs(20), async {
        while status(store.clone()).await["outbox"]["durable"] != true {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    proxy.restore();
    stop.store(true, Ordering::Relaxed);
    let _terminal = within("the terminal to stop", LONG, terminal).await;
    let acked = acked.lock().unwrap().clone();
    let mut upstream: HashMap<u64, bool> = HashMap::new();
    within(
        "every acknowledged event upstream",
        Duration::from_secs(30),
        async {
            while !acked.iter().all(|s| upstream.contains_key(s)) {
                for e in company.batch().await {
                    if let Some(v1::event::Body::Passage(p)) = e.body {
                        if let Some(serial) = p.cause.first().and_then(|c| c.parse().ok()) {
                            let not_durable = upstream.entry(serial).or_default();
                            *not_durable |= e.not_durable;
                        }
                    }
                }
            }
        },
    )
    .await;
    let in_memory = upstream.values().filter(|&&n| n).count();
    println!(
        "{} acknowledged, all upstream; {in_memory} of them acknowledged from memory",
        acked.len()
    );
    assert!(in_memory > 0, "some were acknowledged while degraded");
    let alarms = company.alarms_so_far();
    let storage: Vec<_> = alarms
        .iter()
        .filter(|a| a.kind() == v1::AlarmKind::StorageLoss)
        .map(|a| a.detail.as_str())
        .collect();
    assert!(
        storage.iter().any(|d| d.contains("cannot be written"))
            && storage.iter().any(|d| d.contains("can be written again")),
        "{storage:?}"
    );
    let (code, _) = terminate(&mut child).await;
    assert!(code.success(), "{code:?}");
}

/// QoS 1 identifications every 20 ms (serial n, a resident), PUBACKs read by packet id.
async fn terminal(devices: DeviceSide, acked: Arc<Mutex<HashSet<u64>>>, stop: Arc<AtomicBool>) {
    let link = devices.link("thermal-1");
    let mut s = tokio::net::TcpStream::connect((link.url.host.as_str(), link.url.port))
        .await
        .unwrap();
    let mut c = Connect::new("thermal-1");
    let (user, password) = link.login.clone().unwrap();
    c.set_login(user, password);
    let mut out = BytesMut::new();
    Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
    s.write_all(&out).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while rd.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                while let Ok(p) = Packet::read(&mut buf, 1 << 20) {
                    if let Packet::PubAck(a) = p {
                        acked.lock().unwrap().insert(u64::from(a.pkid));
                    }
                }
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut serial = 0u16;
    while !stop.load(Ordering::Relaxed) && serial < u16::MAX {
        tick.tick().await;
        serial += 1;
        let who = format!("R{:06}", serial % 90);
        let ev = sim::hikvision::acs_event(u64::from(serial), Some(&who), 36.5, Unit::Celsius);
        let mut p = Publish::new("devices/thermal-1/event", QoS::AtLeastOnce, ev);
        p.pkid = serial;
        let mut out = BytesMut::new();
        Packet::Publish(p).write(&mut out, usize::MAX).unwrap();
        wr.write_all(&out).await.unwrap();
    }
    // The last acks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.abort();
}
