//! The resident registry as the decision core sees it: an in-memory map built from the store at
//! start. Households are interned so 100,000 residents cost a few megabytes, not tens.
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentStatus {
    Active,
    Quarantined,
    Suspended,
}

impl ResidentStatus {
    pub fn parse(s: &str) -> Option<ResidentStatus> {
        match s {
            "active" => Some(ResidentStatus::Active),
            "quarantined" => Some(ResidentStatus::Quarantined),
            "suspended" => Some(ResidentStatus::Suspended),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResidentStatus::Active => "active",
            ResidentStatus::Quarantined => "quarantined",
            ResidentStatus::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Index into [`Registry::household_id`].
    pub household: u32,
    pub status: ResidentStatus,
    /// Unix ms after which the entry no longer admits; `i64::MAX` for no end.
    pub valid_until_ms: i64,
}

/// Person id → resident.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    residents: HashMap<Box<str>, Resident>,
    households: Vec<Box<str>>,
    /// Version of the list this came from (0 for a local file import).
    pub version: u64,
}

impl Registry {
    pub fn get(&self, person_id: &str) -> Option<&Resident> {
        self.residents.get(person_id)
    }

    pub fn household_id(&self, r: &Resident) -> &str {
        self.households.get(r.household as usize).map_or("", |h| h)
    }

    pub fn len(&self) -> usize {
        self.residents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residents.is_empty()
    }
}

/// Builds a [`Registry`], interning household ids.
#[derive(Default)]
pub struct RegistryBuilder {
    registry: Registry,
    household_index: HashMap<Box<str>, u32>,
}

impl RegistryBuilder {
    pub fn with_capacity(n: usize) -> Self {
        let mut b = Self::default();
        b.registry.residents.reserve(n);
        b
    }

    pub fn insert(
        &mut self,
        person_id: &str,
        household: &str,
        status: ResidentStatus,
        valid_until_ms: i64,
    ) {
        let next = self.registry.households.len() as u32;
        let h = *self
            .household_index
            .entry(household.into())
            .or_insert_with(|| next);
        if h == next {
            self.registry.households.push(household.into());
        }
        self.registry.residents.insert(
            person_id.into(),
            Resident {
                household: h,
                status,
                valid_until_ms,
            },
        );
    }

    pub fn build(mut self, version: u64) -> Registry {
        self.registry.version = version;
        self.registry.residents.shrink_to_fit();
        self.registry.households.shrink_to_fit();
        self.registry
    }
}
