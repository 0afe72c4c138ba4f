//! Whom an identification names: a face, card, QR code or plate resolved against the registry.
use super::id::Id;
use super::registry::{Holder, Plate, PlateHolder, Registry, Resident};
use super::vocabulary::CredentialKind;

/// Whom a decision is about; the id is in [`Decision::subject_id`].
#[derive(Clone, Copy)]
pub enum Subject {
    Resident(Resident),
    /// Index into the registry's passes.
    Visitor(u32),
    /// A plate the registry knows (resident, blacklisted, allow-listed).
    Vehicle(Plate),
}

impl Subject {
    /// Its key in the inside set and the durable state.
    #[inline]
    pub fn key(&self, id: &str) -> Id {
        let prefix = match self {
            Subject::Resident(_) => "R:",
            Subject::Visitor(_) => "V:",
            Subject::Vehicle(_) => "C:",
        };
        Id::joined(prefix, id)
    }

    #[inline]
    pub fn rule(&self) -> &'static str {
        match self {
            Subject::Resident(..) => "resident",
            Subject::Visitor(..) => "visitor_pass",
            Subject::Vehicle(..) => "resident_vehicle",
        }
    }
}

/// A face gives a person id; a card or QR number may stand for a resident or a visitor pass.
/// The subject's registry id (person id or pass id) and what it is.
pub fn resolve(registry: &Registry, kind: CredentialKind, id: String) -> Option<(String, Subject)> {
    match kind {
        CredentialKind::Person => {
            let r = *registry.get(&id)?;
            Some((id, Subject::Resident(r)))
        }
        CredentialKind::Card => match registry.card(&id)? {
            Holder::Resident(i) => registry
                .resident(*i)
                .map(|r| (registry.resident_id(*i).to_string(), Subject::Resident(*r))),
            Holder::Pass(i) => registry
                .pass(*i)
                .map(|p| (p.id.to_string(), Subject::Visitor(*i))),
        },
        CredentialKind::Plate => {
            let plate = *registry.plate(&id)?;
            match plate.holder {
                PlateHolder::Pass(i) => registry
                    .pass(i)
                    .map(|p| (p.id.to_string(), Subject::Visitor(i))),
                _ => Some((id, Subject::Vehicle(plate))),
            }
        }
    }
}
