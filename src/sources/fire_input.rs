//! A fire alarm panel's input on a Modbus I/O module, polled every 100 ms: its contact (and the
//! module's line-fault bit) debounced, and a module that stops answering supervised — three
//! misses in a row, an exception or a line fault make the reading "unknown". Each change of the
//! debounced reading goes to the decision loop; the core decides what it means
//! (`decision/fire_input.rs`).
use super::modbus::{connect, read_bits, ModbusLink, Unreadable};
use super::{DeviceLive, SourceEvent};
use crate::decision::FireInput;
use crate::device::modbus_map::FireInputSpec;
use crate::metrics::{worth_logging, Metrics};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tracing::warn;

const POLL: Duration = Duration::from_millis(100);
const MISSES_UNKNOWN: u32 = 3;

pub struct FireInputDevice {
    pub device: usize,
    pub device_id: String,
    pub link: ModbusLink,
    pub unit: u8,
    pub spec: FireInputSpec,
    pub live: Arc<DeviceLive>,
    pub timeout: Duration,
}

/// What one poll read: the reading, or why it is unknown.
fn reading(spec: &FireInputSpec, first: u16, bits: &[bool]) -> (FireInput, &'static str) {
    let at = |addr: u16| bits.get(usize::from(addr - first)).copied();
    if spec.fault.is_some_and(|f| at(f) != Some(false)) {
        return (FireInput::Unknown, "line fault reported by the module");
    }
    match at(spec.fire) {
        Some(on) if on == spec.fire_when => (FireInput::Fire, ""),
        Some(_) => (FireInput::Normal, ""),
        None => (FireInput::Unknown, "short answer"),
    }
}

pub fn spawn(
    d: FireInputDevice,
    events: mpsc::Sender<SourceEvent>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (first, count) = d.spec.span();
        let debounce = Duration::from_millis(d.spec.debounce_ms);
        // The reading reported, the one being timed, and since when.
        let mut reported: Option<FireInput> = None;
        let mut candidate: Option<(FireInput, &'static str, Instant)> = None;
        let mut misses = 0u32;
        let mut ctx = None;
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            if ctx.is_none() {
                ctx = connect(&d.link, d.timeout).await.ok();
            }
            let read = match ctx.as_mut() {
                None => None,
                Some(c) => {
                    c.set_slave(Slave(d.unit));
                    let read = read_bits(c, first, count);
                    tokio::time::timeout(d.timeout, read).await.ok()
                }
            };
            let now = match read {
                Some(Ok(Ok(bits))) => {
                    misses = 0;
                    d.live.heard();
                    reading(&d.spec, first, &bits)
                }
                Some(Ok(Err(unreadable))) => {
                    Metrics::inc(&metrics.modbus_exceptions);
                    if unreadable == Unreadable::Short {
                        (
                            FireInput::Unknown,
                            "the module answers with fewer inputs than asked for",
                        )
                    } else {
                        (FireInput::Unknown, "the module answers with an exception")
                    }
                }
                other => {
                    if matches!(other, Some(Err(_))) {
                        // The connection broke: a new one next time.
                        ctx = None;
                    }
                    Metrics::inc(&metrics.modbus_timeouts);
                    misses += 1;
                    if misses < MISSES_UNKNOWN {
                        continue;
                    }
                    (FireInput::Unknown, "the module does not answer")
                }
            };
            // Debounce: a change counts once it has held `debounce` (unknown at once: waiting
            // would only hide a dead module); one that goes back sooner is a flap, counted.
            if candidate.is_some_and(|c| c.0 != now.0) {
                let n = metrics.fire_input_flaps.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_logging(n) {
                    warn!(device = %d.device_id, flaps = n, "Fire input flapping (changed again within the debounce time).");
                }
            }
            if Some(now.0) == reported {
                candidate = None;
                continue;
            }
            let (state, why, since) = match candidate {
                Some(c) if c.0 == now.0 => c,
                _ => (now.0, now.1, Instant::now()),
            };
            candidate = Some((state, why, since));
            if since.elapsed() < debounce && state != FireInput::Unknown {
                continue;
            }
            candidate = None;
            reported = Some(state);
            if state == FireInput::Unknown {
                warn!(device = %d.device_id, why, "Fire input unknown.");
            }
            let _ = events
                .send(SourceEvent::FireInput {
                    device: d.device,
                    state,
                    detail: why.to_string(),
                })
                .await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_fire_normal_or_unknown() {
        let spec = FireInputSpec {
            fire: 0,
            fire_when: true,
            fault: Some(2),
            debounce_ms: 300,
        };
        assert_eq!(reading(&spec, 0, &[true, false, false]).0, FireInput::Fire);
        assert_eq!(
            reading(&spec, 0, &[false, false, false]).0,
            FireInput::Normal
        );
        assert_eq!(
            reading(&spec, 0, &[true, false, true]).0,
            FireInput::Unknown
        );
        assert_eq!(reading(&spec, 0, &[true]).0, FireInput::Unknown);
    }
}
