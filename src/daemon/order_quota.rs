//! How many orders one key may have applied. Every applied id is kept, in memory and in the
//! store, until its order expires (up to a day) so that it cannot be replayed: a key that floods
//! valid orders — captured, or a company tool gone wrong — would grow both without end. So each
//! key has a rate (a burst, then one a second) and a cap on the ids it applied since the start
//! (ids restored from the store count against no key; they expire within a day); past either
//! its orders are refused `too_many_orders`, and other keys' orders are untouched. A mode change
//! is not held back by the rate (a flood of pings on its key must not delay a lockdown), only by
//! the cap.
use std::collections::HashMap;
use std::time::Instant;

/// A snapshot sent as 1,024 chunks, twice over.
pub const BURST: f64 = 2048.0;
pub const PER_SECOND: f64 = 1.0;
/// About 2 MB of ids (with their durable copies) per key.
pub const MAX_HELD: usize = 20_000;

#[derive(Default)]
pub struct Quotas {
    keys: HashMap<String, Quota>,
}

struct Quota {
    tokens: f64,
    at: Instant,
    /// Applied ids of this key not yet expired.
    held: usize,
}

impl Quotas {
    /// Takes one order of `key`, or says why it is refused; an `urgent` one passes the rate.
    pub fn take(&mut self, key: &str, urgent: bool, now: Instant) -> Result<(), String> {
        let q = self.keys.entry(key.to_string()).or_insert(Quota {
            tokens: BURST,
            at: now,
            held: 0,
        });
        let elapsed = now.saturating_duration_since(q.at).as_secs_f64();
        q.tokens = (q.tokens + elapsed * PER_SECOND).min(BURST);
        q.at = now;
        if q.held >= MAX_HELD {
            return Err(format!(
                "key {key:?} holds {MAX_HELD} applied ids until their orders expire: send orders with shorter lifetimes, or wait"
            ));
        }
        if urgent {
            return Ok(());
        }
        if q.tokens < 1.0 {
            return Err(format!(
                "key {key:?} sent more than {BURST} orders at once, or more than {PER_SECOND} a second since"
            ));
        }
        q.tokens -= 1.0;
        Ok(())
    }

    /// An id of `key` is held against replay (applied now, or restored at start).
    pub fn hold(&mut self, key: &str) {
        if let Some(q) = self.keys.get_mut(key) {
            q.held += 1;
            return;
        }
        let q = Quota {
            tokens: BURST,
            at: Instant::now(),
            held: 1,
        };
        self.keys.insert(key.to_string(), q);
    }

    /// An id of `key` expired.
    pub fn release(&mut self, key: &str) {
        if let Some(q) = self.keys.get_mut(key) {
            q.held = q.held.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_gets_its_burst_then_one_a_second_and_another_key_is_untouched() {
        let t0 = Instant::now();
        let mut q = Quotas::default();
        for _ in 0..BURST as usize {
            assert!(q.take("ping-only", false, t0).is_ok());
        }
        assert!(q.take("ping-only", false, t0).is_err());
        assert!(
            q.take("ping-only", true, t0).is_ok(),
            "a mode change passes the rate"
        );
        assert!(q.take("company", false, t0).is_ok());
        let t1 = t0 + Duration::from_secs(3);
        let taken = (0..10)
            .filter(|_| q.take("ping-only", false, t1).is_ok())
            .count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn a_key_holding_its_cap_is_refused_until_ids_expire() {
        let t0 = Instant::now();
        let mut q = Quotas::default();
        for _ in 0..MAX_HELD {
            q.hold("k");
        }
        let refused = q.take("k", true, t0).unwrap_err();
        assert!(refused.contains("20000 applied ids"), "{refused}");
        q.release("k");
        assert!(q.take("k", false, t0).is_ok());
    }
}
