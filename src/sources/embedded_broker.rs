//! The embedded device-side MQTT broker (rumqttd), for a box with no broker of its own and for
//! the demo and tests. Devices connect to it; so does gatehouse itself, like any other client.
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker did not start listening on {addr} within {waited:?} (port taken?)")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("embedded broker thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("embedded broker refused the daemon's in-process link")]
    NoLink,
}

/// Largest MQTT packet the embedded broker accepts: a device payload at the decoder's limit plus
/// room for the header.
const MAX_PACKET: usize = crate::sources::mqtt::MAX_PACKET;

/// Starts rumqttd on `listen` in its own threads and returns once it accepts connections.
/// The broker lives as long as the process: rumqttd has no shutdown.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    start_with_memory(listen, 1 << 20, 3)
}

/// [`start`] with another in-memory log size per topic filter (tests that flood a broker give it
/// more, so what they measure is gatehouse, not the broker's log).
pub fn start_with_memory(
    listen: SocketAddr,
    segment_bytes: usize,
    segments: usize,
) -> Result<(), BrokerError> {
    launch(listen, segment_bytes, segments, false).map(|_| ())
}

/// An in-process connection to the embedded broker, for the daemon itself: device events come in
/// and gate commands go out without a TCP hop either way.
pub struct Local {
    pub tx: rumqttd::local::LinkTx,
    pub rx: rumqttd::local::LinkRx,
}

/// [`start`], and a [`Local`] link into it.
pub fn start_linked(listen: SocketAddr) -> Result<Local, BrokerError> {
    // The router keeps each topic's recent messages in memory; three 1 MiB segments bound the
    // broker's RSS (a subscriber more than ~3 MB behind loses data, which our own link, reading
    // as fast as messages come, never is).
    launch(listen, 1 << 20, 3, true)?.ok_or(BrokerError::NoLink)
}

fn launch(
    listen: SocketAddr,
    segment_bytes: usize,
    segments: usize,
    link: bool,
) -> Result<Option<Local>, BrokerError> {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET,
        // QoS 1 messages in flight to one client before the broker waits for its PUBACKs. Our
        // event client acks after a group commit (~10 ms), so at 5,000 events/s about 50–100
        // are in flight.
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "devices".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: segment_bytes,
            max_segment_count: segments,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("devices".to_string(), server)])),
        ..Default::default()
    };
    let (local_tx, local_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if link {
                let local = broker
                    .link("gatehouse-local")
                    .map(|(tx, rx)| Local { tx, rx });
                let _ = local_tx.send(local.ok());
            }
            // Returns only if every listener died.
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded broker stopped.");
            } else {
                tracing::error!("Embedded broker stopped: its listener failed.");
            }
        })?;
    let waited = Duration::from_secs(3);
    let deadline = Instant::now() + waited;
    let probe = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_ok() {
            return Ok(if link {
                local_rx.recv().ok().flatten()
            } else {
                None
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening {
        addr: listen,
        waited,
    })
}

/// A loopback port that was free a moment ago (for tests and the demo).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
