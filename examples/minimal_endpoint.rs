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
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PingResp, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::ErrorKind;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};

/// The gate's connection, once it has logged in as `gate-1`.
type Gate = Rc<RefCell<Option<Rc<TcpStream>>>>;

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: minimal_endpoint PORT");
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
            let (r, g) = (residents.clone(), gate.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = connection(Rc::new(s), r, g).await {
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
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = BytesMut::new();
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
                    if p.qos == QoS::AtLeastOnce {
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
        s.readable().await?;
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
