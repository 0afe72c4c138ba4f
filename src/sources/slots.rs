//! Connection slots on a listener the gate LAN reaches (the device endpoint before login, the
//! HTTP listener). Strangers share `max` slots, at most `per_address` from one address; each
//! address the config names for a device (its `from`) has `per_address` slots of its own that
//! strangers never take. So idle sockets from one host — or a few each from many — cannot lock
//! a known device out.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    strangers: Arc<Semaphore>,
    known: HashSet<IpAddr>,
    per_address: usize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
    _stranger: Option<OwnedSemaphorePermit>,
}

impl Slots {
    pub fn new(max: usize, per_address: usize, known: HashSet<IpAddr>) -> Arc<Slots> {
        Arc::new(Slots {
            strangers: Arc::new(Semaphore::new(max)),
            known: known.into_iter().map(|ip| ip.to_canonical()).collect(),
            per_address,
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let ip = ip.to_canonical();
        let mut by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if by_address.get(&ip).is_some_and(|n| *n >= self.per_address) {
            return Err("too many connections from one address");
        }
        let stranger = match self.known.contains(&ip) {
            true => None,
            false => match self.strangers.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err("too many connections from addresses no device has"),
            },
        };
        // Entered only once it has its slot: a refused address leaves nothing behind.
        *by_address.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            ip,
            _stranger: stranger,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = (self.slots.by_address.lock()).unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_fill_their_share_and_a_known_address_still_gets_in() {
        let known: IpAddr = "192.168.1.64".parse().unwrap();
        let slots = Slots::new(4, 2, HashSet::from([known]));
        let stranger = |i: u8| IpAddr::from([192, 168, 1, 100 + i]);
        let mut held = Vec::new();
        for i in 0..2 {
            held.push(slots.take(stranger(i)).unwrap());
            held.push(slots.take(stranger(i)).unwrap());
        }
        assert!(slots.take(stranger(0)).is_err(), "per address");
        assert!(slots.take(stranger(9)).is_err(), "strangers' share full");
        let a = slots.take(known).unwrap();
        let _b = slots.take(known).unwrap();
        assert!(
            slots.take(known).is_err(),
            "a known address has its per-address cap too"
        );
        drop(a);
        assert!(slots.take(known).is_ok());
        held.pop();
        assert!(
            slots.take(stranger(9)).is_ok(),
            "a slot given back is taken again"
        );
    }
}
