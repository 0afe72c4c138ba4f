//! Device twins: each device's last known state (online, last seen, barrier arm and loops, fault
//! code, uncertain commands), published retained on `{base}/twin/{device}`. The decision loop
//! updates them; the uplink publishes what changed, and all of them on (re)connect and with each
//! status, so the property company's view converges even after an outage.
use crate::proto::v1;
use crate::sources::DeviceLive;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Twins {
    map: Mutex<BTreeMap<usize, Entry>>,
    pub changed: Notify,
}

#[derive(Debug)]
struct Entry {
    twin: v1::DeviceTwin,
    live: Arc<DeviceLive>,
    dirty: bool,
}

impl Twins {
    pub fn add(&self, device: usize, twin: v1::DeviceTwin, live: Arc<DeviceLive>) {
        self.lock().insert(
            device,
            Entry {
                twin,
                live,
                dirty: true,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes a twin; publishes it soon if anything changed.
    pub fn update(&self, device: usize, f: impl FnOnce(&mut v1::DeviceTwin)) {
        let mut map = self.lock();
        let Some(e) = map.get_mut(&device) else {
            return;
        };
        let before = e.twin.clone();
        f(&mut e.twin);
        if e.twin != before {
            e.dirty = true;
            drop(map);
            self.changed.notify_one();
        }
    }

    /// Every twin as it is now, leaving what is to be published as it was.
    pub fn all(&self) -> Vec<v1::DeviceTwin> {
        self.lock()
            .values()
            .map(|e| {
                let mut t = e.twin.clone();
                t.last_seen_ms = e.live.last_seen.load(Ordering::Relaxed);
                t.online = t.online && !e.live.offline.load(Ordering::Relaxed);
                t
            })
            .collect()
    }

    /// The twins changed since the last call (`all`: every one), with fresh last-seen times.
    pub fn take(&self, all: bool) -> Vec<v1::DeviceTwin> {
        let now = crate::now_ms();
        let mut out = Vec::new();
        for e in self.lock().values_mut() {
            if all || e.dirty {
                e.dirty = false;
                let mut t = e.twin.clone();
                t.last_seen_ms = e.live.last_seen.load(Ordering::Relaxed);
                t.online = t.online && !e.live.offline.load(Ordering::Relaxed);
                t.gateway_time_ms = now;
                out.push(t);
            }
        }
        out
    }
}
