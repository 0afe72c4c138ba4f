//! Liveness by silence, for every device whose profile says how it proves it is alive (its
//! events, heartbeats, keep-alive pings, polls — whatever its source counts in `heard`, on the monotonic clock): past
//! the profile's `offline_after_s` without a sign it is reported offline (`device_offline`, status
//! and twin), and online when it is heard again. Serial ports and Modbus slaves are watched by
//! their links instead.
use super::{DeviceLive, LinkChange, SourceEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often silences are checked: offline is reported at most this long after the limit.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One watched device.
pub struct Watched {
    pub device: usize,
    pub limit: Duration,
    pub live: Arc<DeviceLive>,
}

pub fn spawn(
    watched: Vec<Watched>,
    events: mpsc::Sender<SourceEvent>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if watched.is_empty() {
            return;
        }
        let start = crate::clock::mono_ms();
        let mut offline = vec![false; watched.len()];
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = crate::clock::mono_ms();
            for (w, was) in watched.iter().zip(offline.iter_mut()) {
                // A device not heard since the start counts from the start.
                let last = w.live.heard_mono.load(Ordering::Relaxed).max(start);
                let silent = now - last > w.limit.as_millis() as i64;
                if silent == *was {
                    continue;
                }
                *was = silent;
                let detail = if silent {
                    format!("nothing heard for {} s", (now - last) / 1000)
                } else {
                    "heard again".to_string()
                };
                let _ = events.try_send(SourceEvent::Link(LinkChange {
                    devices: vec![w.device],
                    online: !silent,
                    detail,
                }));
            }
        }
    })
}
