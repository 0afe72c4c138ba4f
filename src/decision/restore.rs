//! What a restart reads back into the core: the durable state its outputs wrote (mode, who is
//! inside, pass uses, outings, thresholds, the device events decided) and the observations it
//! held when it stopped, back in their lanes' queues.
use super::held::Held;
use super::machine::{Core, Reading, Waiting, MAX_RECENT};
use super::state_key::StateKey;
use super::vocabulary::{Mode, Observation};
use std::time::Instant;

/// The time restored observations are given: long past on any clock, so the first tick decides
/// or records them (and far enough from `i64::MIN` that shifting it cannot overflow).
const RESTORED_MS: i64 = i64::MIN / 4;

impl Core {
    /// Restores durable state written through [`Output::State`]. Unknown or damaged entries are
    /// skipped: at worst a counter restarts.
    pub fn restore(&mut self, entries: &[(String, Vec<u8>)]) {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        for (k, v) in entries {
            match StateKey::decode(k) {
                Some(StateKey::Seen(id)) => {
                    let at = <[u8; 8]>::try_from(v.as_slice()).map_or(0, i64::from_le_bytes);
                    seen.push((at, id));
                }
                Some(StateKey::Held(id)) => {
                    if let Some(h) = Held::decode(v) {
                        held.push((id, h));
                    }
                }
                Some(StateKey::Mode) => {
                    if let Some(m) = std::str::from_utf8(v).ok().and_then(Mode::parse) {
                        self.mode = m;
                    }
                }
                Some(StateKey::Inside(id)) => {
                    self.inside.insert(id.as_str().into());
                }
                Some(StateKey::PassUses(id)) => {
                    if let Ok(b) = <[u8; 4]>::try_from(v.as_slice()) {
                        self.pass_used.insert(id.into(), u32::from_le_bytes(b));
                    }
                }
                Some(StateKey::Outings(id)) => {
                    let times = v
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect();
                    self.outings.insert(id.into(), times);
                }
                Some(StateKey::Threshold(id)) => {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        let t = f64::from_le_bytes(b);
                        for l in self.policy.lanes.iter_mut().filter(|l| l.id == id) {
                            l.fever_threshold_c = t;
                        }
                    }
                }
                Some(StateKey::OutSince(id)) => {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        self.out_since
                            .insert(id.into(), (i64::from_le_bytes(b), false));
                    }
                }
                _ => {}
            }
        }
        seen.sort();
        for (_, id) in seen.into_iter().rev().take(MAX_RECENT).rev() {
            let id: Box<str> = id.into();
            self.recent_set.insert(id.clone());
            self.recent.push_back(id);
        }
        held.sort_by_key(|(_, h)| match h {
            Held::Waiting { at_ms, .. } | Held::Reading { at_ms, .. } => *at_ms,
        });
        for (key, h) in held {
            self.hold_again(key, h);
        }
    }

    /// An observation held when the gateway stopped, back in its lane's queue: decided (or, a
    /// reading, recorded on its own) at the first tick, as a redelivery — recorded, not acted
    /// on. Not by its old times: after a power cut the clock may read 1970, and a window that
    /// never closes — or a reading from before the stop joining the next person — must not be.
    fn hold_again(&mut self, key: String, h: Held) {
        let device_of = |id: &str| self.policy.devices.iter().position(|d| d.id == id);
        match h {
            Held::Waiting {
                device,
                at_ms,
                until_ms: _,
                mut decoded,
            } => {
                let Some(i) = device_of(&device) else {
                    return self.orphans.push(key);
                };
                let li = self.policy.devices[i].lane;
                decoded.device_time_ms = decoded.device_time_ms.or(Some(at_ms));
                let obs = Observation {
                    device: i,
                    decoded,
                    received: Instant::now(),
                    now_ms: at_ms,
                    redelivered: true,
                };
                let w = Waiting {
                    obs,
                    until_ms: RESTORED_MS,
                    held: key,
                };
                if let Some(lane) = self.lanes.get_mut(li) {
                    lane.waiting.push_back(w);
                }
            }
            Held::Reading {
                device,
                at_ms: _,
                temperature_c,
                device_abnormal,
                cause,
            } => {
                let Some(i) = device_of(&device) else {
                    return self.orphans.push(key);
                };
                let li = self.policy.devices[i].lane;
                let r = Reading {
                    device: i,
                    at_ms: RESTORED_MS,
                    temperature_c,
                    device_abnormal,
                    cause,
                    held: key,
                };
                if let Some(lane) = self.lanes.get_mut(li) {
                    lane.readings.push_back(r);
                }
            }
        }
    }
}
