//! A minimal engine on its own device endpoint: the calibration for the referee's `direct` row
//! (`DIRECT=minimal bench/compare.sh 5000 10 floor,direct`).
//!
//! It takes the load generator's two MQTT connections itself, answers every CONNECT, SUBSCRIBE
//! and PINGREQ, and for each event parses the JSON, applies the referee's check (a resident
//! below 37.3 °C opens) and writes the gate command straight into the gate's socket from the
//! terminal's read, then the PUBACK (QoS 0 and 1, what the referee sends). No login, no
//! durability, no uplink, no task hop, one thread. What it measures is mostly the load generator,
//! the kernel and this machine: near the floor of the row, not an engine to ship. A gate write
//! that cannot go at once ends the terminal's connection, which the referee counts as missing.
//!
//! `minimal_endpoint PORT --durable DIR` is the calibration for the durable work (issue 28): the
//! same, plus what gatehouse guarantees and nothing else — each event's record (about 200 bytes)
//! and its dedupe key written to a redb file in DIR by a writer thread that group-commits (10 ms
//! linger, up to 1,024 records, fsync per commit, as gatehouse's defaults), and the terminal's
//! PUBACK only after the commit. The gate command still goes first, straight from the read.
//!
//! `minimal_endpoint PORT --durable DIR --uplink BROKER_PORT` adds the rest of what gatehouse's
//! record does: the dedupe window kept at gatehouse's 4,096 keys (the oldest key removed in the
//! same transaction), and an uplink thread that, after each commit, reads the newly committed
//! records back, publishes them as one QoS 1 batch to the broker on BROKER_PORT, waits for its
//! PUBACK and has the writer delete them (gatehouse's outbox and uplink, least done).
//!
//! `MINIMAL_SPIN_US=N` in the environment adds N µs of busy work to each event before it is
//! decided: what more CPU per event, and nothing else, does to the row.
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The gate's connection, once it has logged in as `gate-1`.
type Gate = Rc<RefCell<Option<Rc<TcpStream>>>>;

/// One event for the writer: its record, its dedupe key, and where its PUBACK goes after the
/// commit (none for QoS 0).
struct Durable {
    record: Vec<u8>,
    key: String,
    ack: Option<(u16, mpsc::UnboundedSender<u16>)>,
}

/// What the writer takes: an event, or records the uplink's broker acknowledged (first..=last).
enum ToWriter {
    Event(Durable),
    Delete(u64, u64),
}

/// gatehouse's dedupe window (`MAX_RECENT`).
const WINDOW: usize = 4096;

const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
const SEEN: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("seen");

const USAGE: &str = "usage: minimal_endpoint PORT [--durable DIR [--uplink BROKER_PORT]]";

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = match args.get(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let uplink = match (
        args.get(4).map(String::as_str),
        args.get(5).map(|p| p.parse()),
    ) {
        (Some("--uplink"), Some(Ok(p))) => Some(p),
        (None, None) => None,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let writer = match (args.get(2).map(String::as_str), args.get(3)) {
        (Some("--durable"), Some(dir)) => Some(spawn_writer(std::path::Path::new(dir), uplink)?),
        (None, _) => None,
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let residents: Rc<HashSet<String>> =
            Rc::new((0..100_000).map(|i| format!("R{i:06}")).collect());
        let gate: Gate = Rc::default();
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            let (r, g, w) = (residents.clone(), gate.clone(), writer.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = connection(Rc::new(s), r, g, w).await {
                    eprintln!("minimal_endpoint: {e}");
                }
            });
        }
    })
}

async fn connection(
    s: Rc<TcpStream>,
    residents: Rc<HashSet<String>>,
    gate: Gate,
    writer: Option<std_mpsc::Sender<ToWriter>>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = BytesMut::new();
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<u16>();
    let bad = |e: rumqttc::mqttbytes::Error| std::io::Error::other(e.to_string());
    loop {
        loop {
            let p = match Packet::read(&mut buf, 1 << 20) {
                Ok(p) => p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(bad(e)),
            };
            match p {
                Packet::Connect(c) => {
                    if c.login.as_ref().map(|l| l.username.as_str()) == Some("gate-1") {
                        *gate.borrow_mut() = Some(s.clone());
                    }
                    Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false))
                        .write(&mut out, usize::MAX)
                        .map_err(bad)?;
                }
                Packet::Subscribe(sub) => {
                    let codes = sub
                        .filters
                        .iter()
                        .map(|_| SubscribeReasonCode::Success(QoS::AtMostOnce))
                        .collect();
                    Packet::SubAck(SubAck::new(sub.pkid, codes))
                        .write(&mut out, usize::MAX)
                        .map_err(bad)?;
                }
                Packet::PingReq => {
                    PingResp.write(&mut out).map_err(bad)?;
                }
                Packet::Publish(p) => {
                    spin();
                    let v: serde_json::Value =
                        serde_json::from_slice(&p.payload).unwrap_or_default();
                    let e = &v["AccessControllerEvent"];
                    let person = e["employeeNoString"].as_str().unwrap_or("");
                    let celsius = e["currTemperature"].as_f64().unwrap_or(f64::MAX);
                    let open = celsius < 37.3 && residents.contains(person);
                    let command = format!(
                        r#"{{"action":"{}","cause":"{}"}}"#,
                        if open { "open" } else { "deny" },
                        e["serialNo"]
                    );
                    let mut b = BytesMut::new();
                    Packet::Publish(Publish::new("devices/gate-1/cmd", QoS::AtMostOnce, command))
                        .write(&mut b, usize::MAX)
                        .map_err(bad)?;
                    if let Some(g) = gate.borrow().as_ref() {
                        write_now(g, &b)?;
                    }
                    let ack = p.qos == QoS::AtLeastOnce;
                    if let Some(w) = &writer {
                        let record = format!(
                            r#"{{"serial":{},"person":"{person}","celsius":{celsius},"open":{open},"at":{}}}"#,
                            e["serialNo"],
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap_or_default()
                                .as_millis()
                        );
                        let d = Durable {
                            record: record.into_bytes(),
                            key: format!("seen/thermal-1/{}", e["serialNo"]),
                            ack: ack.then(|| (p.pkid, acks_tx.clone())),
                        };
                        w.send(ToWriter::Event(d))
                            .map_err(|_| std::io::Error::other("writer gone"))?;
                    } else if ack {
                        Packet::PubAck(PubAck::new(p.pkid))
                            .write(&mut out, usize::MAX)
                            .map_err(bad)?;
                    }
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            write_now(&s, &out)?;
            out.clear();
        }
        buf.reserve(8192);
        tokio::select! {
            r = s.readable() => r?,
            Some(pkid) = acks.recv() => {
                PubAck::new(pkid).write(&mut out).map_err(bad)?;
                while let Ok(pkid) = acks.try_recv() {
                    PubAck::new(pkid).write(&mut out).map_err(bad)?;
                }
                continue;
            }
        }
        match s.try_read_buf(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// A write that never waits: a socket buffer that cannot take a few hundred bytes at once would
/// make this calibration meaningless, so it says so instead of blocking.
fn write_now(s: &TcpStream, b: &[u8]) -> std::io::Result<()> {
    match s.try_write(b) {
        Ok(n) if n == b.len() => Ok(()),
        Ok(n) => Err(std::io::Error::other(format!(
            "short write ({n} of {} bytes): calibration invalid",
            b.len()
        ))),
        Err(e) => Err(e),
    }
}

/// The group-committing writer: waits for a first message, lingers 10 ms asleep, takes what came
/// (at most 1,024 in all), writes them in one redb transaction with an fsync, then sends their
/// PUBACKs and tells the uplink (if any) how far the store is committed.
fn spawn_writer(
    dir: &std::path::Path,
    uplink: Option<u16>,
) -> std::io::Result<std_mpsc::Sender<ToWriter>> {
    std::fs::create_dir_all(dir)?;
    let db = redb::Database::create(dir.join("minimal.redb")).map_err(std::io::Error::other)?;
    let db = std::sync::Arc::new(db);
    let (tx, rx) = std_mpsc::channel::<ToWriter>();
    let committed = match uplink {
        Some(port) => Some(spawn_uplink(port, db.clone(), tx.clone())?),
        None => None,
    };
    std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let mut seq: u64 = 0;
            let mut window = std::collections::VecDeque::<String>::new();
            while let Ok(first) = rx.recv() {
                // Asleep through the linger, not woken by every event: a wake-up per event
                // would be the cost measured, not the commit's.
                std::thread::sleep(Duration::from_millis(10));
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(1023));
                let result = (|| -> Result<(), redb::Error> {
                    let txn = db.begin_write()?;
                    {
                        let mut records = txn.open_table(RECORDS)?;
                        let mut seen = txn.open_table(SEEN)?;
                        for m in &batch {
                            match m {
                                ToWriter::Event(d) => {
                                    seq += 1;
                                    records.insert(seq, d.record.as_slice())?;
                                    seen.insert(d.key.as_str(), seq)?;
                                    if uplink.is_some() {
                                        window.push_back(d.key.clone());
                                        if window.len() > WINDOW {
                                            if let Some(old) = window.pop_front() {
                                                seen.remove(old.as_str())?;
                                            }
                                        }
                                    }
                                }
                                ToWriter::Delete(first, last) => {
                                    for s in *first..=*last {
                                        records.remove(s)?;
                                    }
                                }
                            }
                        }
                    }
                    txn.commit()?;
                    Ok(())
                })();
                if let Err(e) = result {
                    eprintln!("minimal_endpoint: commit failed: {e}");
                    std::process::exit(1);
                }
                for m in batch {
                    if let ToWriter::Event(Durable {
                        ack: Some((pkid, to)),
                        ..
                    }) = m
                    {
                        let _ = to.send(pkid);
                    }
                }
                if let Some(c) = &committed {
                    let _ = c.send(seq);
                }
            }
        })?;
    Ok(tx)
}

/// The uplink: for each commit, the records past its cursor read back from the store as one
/// batch (at most 256 KiB), published at QoS 1, its PUBACK awaited, then deleted by the writer.
fn spawn_uplink(
    port: u16,
    db: std::sync::Arc<redb::Database>,
    writer: std_mpsc::Sender<ToWriter>,
) -> std::io::Result<std_mpsc::Sender<u64>> {
    use redb::ReadableDatabase;
    use rumqttc::mqttbytes::v4::Connect;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let bad = |e: rumqttc::mqttbytes::Error| std::io::Error::other(e.to_string());
    let mut out = BytesMut::new();
    let mut connect = Connect::new("minimal-uplink");
    // No pings from this thread: the broker must not drop a quiet uplink.
    connect.keep_alive = 0;
    Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .map_err(bad)?;
    s.write_all(&out)?;
    let mut buf = BytesMut::with_capacity(4096);
    // The next packet from the broker (CONNACK, then PUBACKs).
    let mut next = move |s: &mut std::net::TcpStream| -> std::io::Result<Packet> {
        loop {
            match Packet::read(&mut buf, 1 << 20) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(bad(e)),
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("uplink broker closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    match next(&mut s)? {
        Packet::ConnAck(a) if a.code == ConnectReturnCode::Success => {}
        p => return Err(std::io::Error::other(format!("uplink refused: {p:?}"))),
    }
    let (tx, rx) = std_mpsc::channel::<u64>();
    std::thread::Builder::new()
        .name("uplink".into())
        .spawn(move || {
            let mut cursor: u64 = 0;
            let mut pkid: u16 = 0;
            let mut send = |s: &mut std::net::TcpStream, committed: u64| -> std::io::Result<()> {
                while cursor < committed {
                    let mut batch = Vec::new();
                    let first = cursor + 1;
                    {
                        let txn = db.begin_read().map_err(std::io::Error::other)?;
                        let records = txn.open_table(RECORDS).map_err(std::io::Error::other)?;
                        for r in records
                            .range(first..=committed)
                            .map_err(std::io::Error::other)?
                        {
                            let (k, v) = r.map_err(std::io::Error::other)?;
                            batch.extend_from_slice(v.value());
                            cursor = k.value();
                            if batch.len() >= 256 * 1024 {
                                break;
                            }
                        }
                    }
                    if batch.is_empty() {
                        return Err(std::io::Error::other("committed records missing"));
                    }
                    pkid = pkid % u16::MAX + 1;
                    let mut p = Publish::new("gh/v1/minimal/events", QoS::AtLeastOnce, batch);
                    p.pkid = pkid;
                    let mut out = BytesMut::new();
                    Packet::Publish(p)
                        .write(&mut out, usize::MAX)
                        .map_err(bad)?;
                    s.write_all(&out)?;
                    match next(s)? {
                        Packet::PubAck(a) if a.pkid == pkid => {}
                        p => return Err(std::io::Error::other(format!("not our PUBACK: {p:?}"))),
                    }
                    let _ = writer.send(ToWriter::Delete(first, cursor));
                }
                Ok(())
            };
            while let Ok(mut committed) = rx.recv() {
                committed = rx.try_iter().last().unwrap_or(committed);
                if let Err(e) = send(&mut s, committed) {
                    eprintln!("minimal_endpoint: uplink: {e}");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(tx)
}

/// `MINIMAL_SPIN_US`: busy work per event, read once.
fn spin() {
    static US: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let us = *US.get_or_init(|| {
        std::env::var("MINIMAL_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    if us > 0 {
        let end = std::time::Instant::now() + Duration::from_micros(us);
        while std::time::Instant::now() < end {
            std::hint::spin_loop();
        }
    }
}
