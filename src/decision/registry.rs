//! The resident registry as the decision core sees it: built in memory from the store at start.
//! Every kind of id (person, household, card, plate) is interned ([`Interned`]), so 100,000
//! residents and 20,000 plates cost a few megabytes.
use std::hash::BuildHasher;

pub use gatehouse_contract::lists::{PlateKind, ResidentStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Index into [`Registry::household_id`].
    pub household: u32,
    pub status: ResidentStatus,
    /// Unix ms after which the entry no longer admits; `i64::MAX` for no end.
    pub valid_until_ms: i64,
}

/// A visitor pass: a host household lets a visitor in during a window, a number of times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub id: Box<str>,
    /// Index into the registry's households.
    pub host_household: u32,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    /// Entries allowed in all.
    pub uses: u32,
}

/// Whom a card or QR number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Index of the resident (see [`Registry::resident`]).
    Resident(u32),
    /// Index into the passes.
    Pass(u32),
}

/// What a licence plate is to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateHolder {
    /// A resident household's vehicle.
    Resident { household: u32, valid_until_ms: i64 },
    /// A visitor vehicle pass (index into the passes).
    Pass(u32),
    /// Never admitted.
    Blacklisted,
    /// Admitted in lockdown only because it is on the allow-list (supplies, ambulance), not a
    /// resident's.
    AllowListed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plate {
    pub holder: PlateHolder,
    /// On the lockdown allow-list.
    pub lockdown_allowed: bool,
}

/// Strings interned to dense indices 0, 1, 2…: their bytes back to back in one arena and a hash
/// table of `u32` indices into it. 100,000 resident ids cost ~2 MB this way, against ~5 MB as
/// keys of a `HashMap` (24-byte keys in a table a quarter empty) — the difference between an
/// idle box under 16 MB and over it. A lookup is a few cache misses more; the decision core
/// still makes millions of decisions a second.
#[derive(Clone, Default)]
struct Interned {
    strings: Strings,
    /// Indices into `strings`, by the hash of the string.
    table: hashbrown::HashTable<u32>,
}

#[derive(Clone, Default)]
struct Strings {
    text: String,
    /// String `i` is `text[ends[i - 1]..ends[i]]`.
    ends: Vec<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Strings {
    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).map_or(0, |&e| e as usize),
        };
        self.ends
            .get(i)
            .and_then(|&end| self.text.get(start..end as usize))
            .unwrap_or("")
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// How the table finds an index's hash again when it grows or shrinks.
    fn rehash(&self) -> impl Fn(&u32) -> u64 + '_ {
        |&i| self.hash(self.get(i))
    }
}

impl std::fmt::Debug for Interned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interned({} strings)", self.len())
    }
}

impl Interned {
    fn get(&self, s: &str) -> Option<u32> {
        let hash = self.strings.hash(s);
        self.table
            .find(hash, |&i| self.strings.get(i) == s)
            .copied()
    }

    fn str(&self, i: u32) -> &str {
        self.strings.get(i)
    }

    /// The index of `s`, added if new (then `true`).
    fn intern(&mut self, s: &str) -> (u32, bool) {
        let hash = self.strings.hash(s);
        if let Some(&i) = self.table.find(hash, |&i| self.strings.get(i) == s) {
            return (i, false);
        }
        let i = self.len() as u32;
        let strings = &mut self.strings;
        strings.text.push_str(s);
        strings.ends.push(strings.text.len() as u32);
        self.table.insert_unique(hash, i, self.strings.rehash());
        (i, true)
    }

    fn reserve(&mut self, n: usize) {
        self.strings.ends.reserve(n);
        self.table.reserve(n, self.strings.rehash());
    }

    fn len(&self) -> usize {
        self.strings.ends.len()
    }

    fn shrink_to_fit(&mut self) {
        self.strings.text.shrink_to_fit();
        self.strings.ends.shrink_to_fit();
        self.table.shrink_to_fit(self.strings.rehash());
    }
}

/// Person id → resident; card/QR number → resident or visitor pass; plates; quarantined
/// households.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    residents: Interned,
    resident_data: Vec<Resident>,
    households: Interned,
    quarantined_households: Vec<bool>,
    cards: Interned,
    card_holders: Vec<Holder>,
    passes: Vec<Pass>,
    plates: Interned,
    plate_data: Vec<Plate>,
    /// Version of the list this came from (0 for a local file import).
    pub version: u64,
    /// Households below this index came from the lists; those after, only from the gate's own
    /// visitor passes (`None`: all from the lists).
    listed_households: Option<u32>,
}

impl Registry {
    pub fn get(&self, person_id: &str) -> Option<&Resident> {
        self.resident(self.residents.get(person_id)?)
    }

    pub fn resident(&self, index: u32) -> Option<&Resident> {
        self.resident_data.get(index as usize)
    }

    pub fn resident_id(&self, index: u32) -> &str {
        self.residents.str(index)
    }

    pub fn card(&self, number: &str) -> Option<&Holder> {
        self.card_holders.get(self.cards.get(number)? as usize)
    }

    pub fn plate(&self, plate: &str) -> Option<&Plate> {
        self.plate_data.get(self.plates.get(plate)? as usize)
    }

    pub fn plates(&self) -> usize {
        self.plates.len()
    }

    pub fn pass(&self, index: u32) -> Option<&Pass> {
        self.passes.get(index as usize)
    }

    pub fn passes(&self) -> usize {
        self.passes.len()
    }

    /// A household the lists name (a visitor's host must be one): not one only the gate's own
    /// passes named.
    pub fn knows_household(&self, household: &str) -> bool {
        let listed = |i: u32| self.listed_households.is_none_or(|n| i < n);
        self.households.get(household).is_some_and(listed)
    }

    /// A visitor pass added to a running registry (one registered at the gate's console): its
    /// credentials and plates now stand for it, over any the lists gave.
    pub fn add_pass(&mut self, pass: PassRow<'_>) {
        let mut b = RegistryBuilder {
            registry: std::mem::take(self),
        };
        b.close_lists();
        b.insert_pass(pass);
        *self = b.registry;
    }

    pub fn household_id(&self, r: &Resident) -> &str {
        self.household_name(r.household)
    }

    pub fn household_name(&self, index: u32) -> &str {
        self.households.str(index)
    }

    pub fn household_quarantined(&self, index: u32) -> bool {
        self.quarantined_households
            .get(index as usize)
            .copied()
            .unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.residents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residents.len() == 0
    }
}

/// Builds a [`Registry`]. A later entry for the same id replaces the earlier one.
#[derive(Default)]
pub struct RegistryBuilder {
    registry: Registry,
}

impl RegistryBuilder {
    pub fn with_capacity(n: usize) -> Self {
        let mut b = Self::default();
        b.registry.residents.reserve(n);
        b.registry.resident_data.reserve(n);
        b
    }

    /// Room for `n` more plates: a table grown by doubling leaves its old copies behind as holes
    /// in the heap, which an idle box then carries for good.
    pub fn reserve_plates(&mut self, n: usize) {
        self.registry.plates.reserve(n);
        self.registry.plate_data.reserve(n);
    }

    fn household(&mut self, household: &str) -> u32 {
        let (h, new) = self.registry.households.intern(household);
        if new {
            self.registry.quarantined_households.push(false);
        }
        h
    }

    pub fn quarantine_household(&mut self, household: &str) {
        let h = self.household(household);
        self.registry.quarantined_households[h as usize] = true;
    }

    /// A card or QR number that stands for a resident (the non-face way in). Insert the resident
    /// first: a card of nobody in the registry is left out (it could admit no one).
    pub fn insert_card(&mut self, number: &str, person_id: &str) {
        if let Some(person) = self.registry.residents.get(person_id) {
            self.card(number, Holder::Resident(person));
        }
    }

    fn card(&mut self, number: &str, holder: Holder) {
        let r = &mut self.registry;
        set(&mut r.card_holders, r.cards.intern(number), holder);
    }

    fn plate(&mut self, plate: &str, value: Plate) {
        let r = &mut self.registry;
        set(&mut r.plate_data, r.plates.intern(plate), value);
    }

    /// A resident vehicle, a blacklisted or an allow-listed plate.
    pub fn insert_plate(
        &mut self,
        plate: &str,
        kind: PlateKind,
        household: &str,
        valid_until_ms: i64,
        lockdown_allowed: bool,
    ) {
        let holder = match kind {
            PlateKind::Resident => PlateHolder::Resident {
                household: self.household(household),
                valid_until_ms,
            },
            PlateKind::Blacklist => PlateHolder::Blacklisted,
            PlateKind::AllowList => PlateHolder::AllowListed,
        };
        self.plate(
            plate,
            Plate {
                holder,
                lockdown_allowed: lockdown_allowed || kind == PlateKind::AllowList,
            },
        );
    }

    pub fn insert_pass(&mut self, pass: PassRow<'_>) {
        let host_household = self.household(pass.host_household);
        let index = self.registry.passes.len() as u32;
        self.registry.passes.push(Pass {
            id: pass.id.into(),
            host_household,
            valid_from_ms: pass.valid_from_ms,
            valid_until_ms: pass.valid_until_ms,
            uses: pass.uses,
        });
        for c in pass.credentials {
            self.card(c, Holder::Pass(index));
        }
        for p in pass.plates {
            self.plate(
                p,
                Plate {
                    holder: PlateHolder::Pass(index),
                    lockdown_allowed: false,
                },
            );
        }
    }

    pub fn insert(
        &mut self,
        person_id: &str,
        household: &str,
        status: ResidentStatus,
        valid_until_ms: i64,
    ) {
        let resident = Resident {
            household: self.household(household),
            status,
            valid_until_ms,
        };
        let r = &mut self.registry;
        set(
            &mut r.resident_data,
            r.residents.intern(person_id),
            resident,
        );
    }

    /// What follows is the gate's own (visitor passes registered at the console), not the
    /// lists': its hosts are no hosts for a new pass.
    pub fn close_lists(&mut self) {
        let n = self.registry.households.len() as u32;
        self.registry.listed_households.get_or_insert(n);
    }

    pub fn build(mut self, version: u64) -> Registry {
        let r = &mut self.registry;
        r.version = version;
        r.residents.shrink_to_fit();
        r.resident_data.shrink_to_fit();
        r.households.shrink_to_fit();
        r.quarantined_households.shrink_to_fit();
        r.cards.shrink_to_fit();
        r.card_holders.shrink_to_fit();
        r.plates.shrink_to_fit();
        r.plate_data.shrink_to_fit();
        r.passes.shrink_to_fit();
        self.registry
    }
}

/// The value for an interned key: appended for a new one, replaced for a known one.
fn set<T>(values: &mut Vec<T>, (index, new): (u32, bool), value: T) {
    if new {
        values.push(value);
    } else if let Some(v) = values.get_mut(index as usize) {
        *v = value;
    }
}

/// A visitor pass as a list file or a sync command gives it.
pub struct PassRow<'a> {
    pub id: &'a str,
    pub host_household: &'a str,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub uses: u32,
    /// Card or QR numbers that present this pass.
    pub credentials: &'a [String],
    /// Licence plates it admits (a visitor vehicle pass).
    pub plates: &'a [String],
}
