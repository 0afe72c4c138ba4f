//! The least engine doing gatehouse's durable work through the referee's broker: the calibration
//! for the referee's `engine` row (issue 28), as `minimal_endpoint --durable` is for `direct`.
//!
//! `minimal_client BROKER_PORT --durable DIR [--uplink]` is the referee's floor relay
//! (`../shared/bench/loadgen/src/bin/floor.rs`: one rumqttc connection on one thread, parse,
//! threshold, set lookup, the gate command published at QoS 0 from the event's read) plus what
//! gatehouse guarantees and nothing else (`calibration/shared.rs`): each event's record and
//! dedupe key group-committed to redb with an fsync, the event's PUBACK to the broker only after
//! the commit; with `--uplink`, the dedupe window kept at 4,096 keys and each commit's records read
//! back, published as one QoS 1 batch to the same broker (as the `engine` row's gatehouse sends
//! its uplink there) and deleted after its PUBACK.
//!
//! Run by `ENGINE=minimal-durable` or `ENGINE=minimal-uplink bench/compare.sh 5000 20 engine`.
//! `MINIMAL_SPIN_AFTER_US=N` in the environment adds N µs of busy work after each gate command is
//! written: what more CPU per event does to the row when no command waits for it.
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, Publish, QoS};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc;

#[path = "calibration/shared.rs"]
mod shared;

const USAGE: &str = "usage: minimal_client BROKER_PORT --durable DIR [--uplink]";

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (port, dir, uplink) = match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        [port, "--durable", dir] => (port, dir, false),
        [port, "--durable", dir, "--uplink"] => (port, dir, true),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let writer = shared::spawn_writer(std::path::Path::new(dir), uplink.then_some(port))?;
    let spin_after = shared::Spin::from_env("MINIMAL_SPIN_AFTER_US");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let residents: HashSet<String> = (0..100_000).map(|i| format!("R{i:06}")).collect();
        let mut o = MqttOptions::new("minimal-client", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(1000);
        o.set_manual_acks(true);
        let (c, mut el) = AsyncClient::new(o, 100_000);
        let mut n = NetworkOptions::new();
        n.set_tcp_nodelay(true);
        el.set_network_options(n);
        c.subscribe("devices/+/event", QoS::AtLeastOnce)
            .await
            .map_err(std::io::Error::other)?;
        let (acks_tx, mut acks) = mpsc::unbounded_channel::<u16>();
        loop {
            let ev = tokio::select! {
                ev = el.poll() => ev,
                Some(pkid) = acks.recv() => {
                    ack(&c, pkid)?;
                    while let Ok(pkid) = acks.try_recv() {
                        ack(&c, pkid)?;
                    }
                    continue;
                }
            };
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let mut d = shared::decide(&p.payload, &residents);
                    c.try_publish(
                        "devices/gate-1/cmd",
                        QoS::AtMostOnce,
                        false,
                        std::mem::take(&mut d.command),
                    )
                    .map_err(std::io::Error::other)?;
                    let ack = (p.qos == QoS::AtLeastOnce).then(|| (p.pkid, acks_tx.clone()));
                    writer
                        .send(shared::ToWriter::Event(d.durable(ack)))
                        .map_err(|_| std::io::Error::other("writer gone"))?;
                }
                // The gate command is on the wire (flushed by the poll that returns this).
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => spin_after.run(),
                Ok(_) => {}
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
    })
}

/// The broker's PUBACK for the event with this packet id (rumqttc builds it from the publish).
fn ack(c: &AsyncClient, pkid: u16) -> std::io::Result<()> {
    let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
    p.pkid = pkid;
    c.try_ack(&p).map_err(std::io::Error::other)
}
