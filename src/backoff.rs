//! Reconnect delays shared by every link the gateway holds (device links and the uplink).
use std::time::Duration;

/// Reconnect delays: doubling from `first` to `cap`, each with up to 25% jitter so a street's
/// gateways do not reconnect to the company broker in lockstep after an outage.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// A device link (an MQTT connection on the box, a serial port, a Modbus slave): back
    /// quickly, since the gate is blind meanwhile.
    pub fn device_link() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The company broker: thousands of gateways may come back at once after its outage.
    pub fn uplink() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            next: first,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos());
        d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}
