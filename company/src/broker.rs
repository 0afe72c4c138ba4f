//! The company's broker embedded (rumqttd, in-process): what the demo, the benches and the tests
//! stand up in place of a real one (EMQX, mosquitto). The gateways' uplinks report to it and the
//! company's tools read it. Devices never connect to it — they log in to each gateway's own
//! endpoint. It lives here, on the company's side, so no gate box ever links a broker.
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest message it takes: a device event's bound (256 KiB) and its MQTT framing, as the
/// gateways' uplink batches stay under it.
const MAX_PAYLOAD: usize = 256 * 1024 + 4096;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("company broker did not start listening on {addr} within {waited:?} (port taken?)")]
    NotListening { addr: SocketAddr, waited: Duration },
    #[error("company broker thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Starts rumqttd on `listen` in its own threads and returns once it accepts connections.
/// The broker lives as long as the process: rumqttd has no shutdown.
pub fn start(listen: SocketAddr) -> Result<(), BrokerError> {
    start_with_memory(listen, 1 << 20, 3)
}

/// [`start`] with another in-memory log size per topic filter (the router keeps each filter's
/// recent messages; tests that flood the uplink give it more, so what they measure is gatehouse,
/// not the broker's log).
pub fn start_with_memory(
    listen: SocketAddr,
    segment_bytes: usize,
    segments: usize,
) -> Result<(), BrokerError> {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "company".into(),
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
        v4: Some(HashMap::from([("company".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("company-broker".into())
        .spawn(move || {
            // Returns only if every listener died.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %e, "Company broker stopped.");
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
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(BrokerError::NotListening {
        addr: listen,
        waited,
    })
}

/// A loopback port that was free a moment ago (for the demo, the benches and the tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
