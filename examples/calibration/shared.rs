//! What the calibrations share (`examples/minimal_endpoint.rs`, `examples/minimal_client.rs`):
//! the referee's check on an event, and the durable work gatehouse guarantees for it and nothing
//! else — its record and dedupe key group-committed to redb with an fsync, the device's PUBACK
//! only after the commit, and (with an uplink) the records read back, sent upstream at QoS 1 and
//! deleted after the broker's PUBACK.
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use std::collections::HashSet;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One event for the writer: its record, its dedupe key, and where its PUBACK goes after the
/// commit (none for QoS 0).
pub struct Durable {
    pub record: Vec<u8>,
    pub key: String,
    pub ack: Option<(u16, mpsc::UnboundedSender<u16>)>,
}

/// What the writer takes: an event, or records the uplink's broker acknowledged (first..=last).
pub enum ToWriter {
    Event(Durable),
    Delete(u64, u64),
}

/// gatehouse's dedupe window (`MAX_RECENT`).
const WINDOW: usize = 4096;

const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");
const SEEN: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("seen");

/// One event put through the referee's check: a resident below 37.3 °C opens.
pub struct Decided {
    doc: serde_json::Value,
    pub open: bool,
    /// The gate command, as the referee reads it.
    pub command: String,
}

pub fn decide(payload: &[u8], residents: &HashSet<String>) -> Decided {
    let doc: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let e = &doc["AccessControllerEvent"];
    let person = e["employeeNoString"].as_str().unwrap_or("");
    let celsius = e["currTemperature"].as_f64().unwrap_or(f64::MAX);
    let open = celsius < 37.3 && residents.contains(person);
    let command = format!(
        r#"{{"action":"{}","cause":"{}"}}"#,
        if open { "open" } else { "deny" },
        e["serialNo"]
    );
    Decided { doc, open, command }
}

impl Decided {
    /// The event's record (about 200 bytes) and dedupe key, for the writer.
    pub fn durable(&self, ack: Option<(u16, mpsc::UnboundedSender<u16>)>) -> Durable {
        let e = &self.doc["AccessControllerEvent"];
        let (serial, open) = (&e["serialNo"], self.open);
        let person = e["employeeNoString"].as_str().unwrap_or("");
        let celsius = e["currTemperature"].as_f64().unwrap_or(f64::MAX);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Durable {
            record: format!(
                r#"{{"serial":{serial},"person":"{person}","celsius":{celsius},"open":{open},"at":{at}}}"#
            )
            .into_bytes(),
            key: format!("seen/thermal-1/{serial}"),
            ack,
        }
    }
}

/// Busy work on the calling thread (the calibrations' `MINIMAL_SPIN_*` knobs): more CPU per
/// event and nothing else.
#[derive(Clone, Copy)]
pub struct Spin(Duration);

impl Spin {
    /// From the environment variable `name`, in µs (unset: none). A value that is not a number
    /// ends the calibration, rather than measuring without the spin it asked for.
    pub fn from_env(name: &str) -> Spin {
        let us = match std::env::var(name) {
            Err(_) => 0,
            Ok(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("calibration: {name}={v:?} is not a number of µs");
                std::process::exit(2);
            }),
        };
        Spin(Duration::from_micros(us))
    }

    pub fn run(self) {
        if self.0.is_zero() {
            return;
        }
        let end = std::time::Instant::now() + self.0;
        while std::time::Instant::now() < end {
            std::hint::spin_loop();
        }
    }
}

/// The group-committing writer: waits for a first message, lingers 10 ms asleep, takes what came
/// (at most 1,024 in all), writes them in one redb transaction with an fsync, then sends their
/// PUBACKs and tells the uplink (if any) how far the store is committed.
pub fn spawn_writer(
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
                    eprintln!("calibration: commit failed: {e}");
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
                    eprintln!("calibration: uplink: {e}");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(tx)
}
