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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "calibration/shared.rs"]
mod shared;
use shared::{decide, spawn_writer, Spin, ToWriter};

/// The gate's connection, once it has logged in as `gate-1`.
type Gate = Rc<RefCell<Option<Rc<TcpStream>>>>;

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
    let spin = Spin::from_env("MINIMAL_SPIN_US");
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
                if let Err(e) = connection(Rc::new(s), r, g, w, spin).await {
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
    spin: Spin,
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
                    spin.run();
                    let mut d = decide(&p.payload, &residents);
                    let mut b = BytesMut::new();
                    Packet::Publish(Publish::new(
                        "devices/gate-1/cmd",
                        QoS::AtMostOnce,
                        std::mem::take(&mut d.command),
                    ))
                    .write(&mut b, usize::MAX)
                    .map_err(bad)?;
                    if let Some(g) = gate.borrow().as_ref() {
                        write_now(g, &b)?;
                    }
                    let ack = p.qos == QoS::AtLeastOnce;
                    if let Some(w) = &writer {
                        let d = d.durable(ack.then(|| (p.pkid, acks_tx.clone())));
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
