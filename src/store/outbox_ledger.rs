//! The outbox's books: how many bytes each class holds, what was evicted or expired, the next
//! seq and the age floor — persisted in `meta` with every commit, read back at start and after a
//! reopen.
use super::*;

/// What the outbox holds and has lost, per class; persisted in `meta` with every commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Ledger {
    pub(super) next_seq: u64,
    pub(super) bytes: [u64; 3],
    /// Evicted for room, by class.
    pub(super) evicted: [u64; 3],
    /// Past their time-to-live, by class.
    pub(super) expired: [u64; 3],
    /// Records below this seq were written on a clock not known to be right, or before a jump:
    /// their time cannot be compared with now, so they never expire — only room evicts them.
    pub(super) age_floor: u64,
}

impl Ledger {
    pub(super) fn load(store: &Store) -> Result<Ledger, StoreError> {
        let mut l = Ledger {
            next_seq: store.next_seq()?,
            age_floor: store.meta(MetaKey::AgeFloorSeq)?,
            ..Default::default()
        };
        for c in Class::ALL {
            let i = c.index();
            l.bytes[i] = store.meta(MetaKey::Bytes(c))?;
            l.evicted[i] = store.meta(MetaKey::Evicted(c))?;
            l.expired[i] = store.meta(MetaKey::Expired(c))?;
        }
        Ok(l)
    }

    pub(super) fn total(&self) -> u64 {
        self.bytes.iter().sum()
    }

    pub(super) fn lost(&self) -> u64 {
        self.evicted.iter().chain(&self.expired).sum()
    }
}
