//! The uplink's pacing: the rate a backlog is replayed at, and its optional deadlines.
use std::time::Duration;
use tokio::time::Instant;

/// Events per second the uplink may publish (a backlog replays at this rate): a token bucket
/// holding one second's worth.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    pub fn available(&mut self) -> usize {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        self.tokens as usize
    }

    pub fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Until one more token.
    pub fn wait(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.001))
    }
}

/// Until `deadline`; never without one.
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
