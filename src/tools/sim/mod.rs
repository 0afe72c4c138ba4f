//! Device simulators, one per supported profile, usable from tests, the demo, the benchmark and
//! the command line (`gatehouse simulate <profile> …`). They speak the real protocol over a real
//! broker; nothing in them reaches into the daemon.
pub mod adms;
pub mod barrier;
pub mod fire_panel;
pub mod gate;
pub mod hikvision;
pub mod http_push;
pub mod isapi_terminal;
pub mod serial;
pub mod site;
pub mod zhenshi;

/// A small deterministic generator (xorshift64*), so a simulated run can be replayed by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
