//! Registry sync from above: a snapshot replaces every list, a delta changes them on top of its
//! base version. Either is applied in one store transaction and bumps `registry_version`; an
//! older version never replaces a newer one. The lists land where the file imports put them
//! (the residents table, the `passes` / `plates` / `households` lists), so loading is the same.
use super::{residents, status_byte, List, MetaKey, Store, StoreError, LISTS, META, RESIDENTS};
use crate::decision::ResidentStatus;
use crate::proto::v1;
use gatehouse_contract::lists::{pass_entry, plate_entry};
use redb::{ReadableDatabase, ReadableTableMetadata};
use std::collections::BTreeMap;

/// The bounds a sync is held to, as a file import is.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    /// `registry.max_residents`.
    pub max_residents: usize,
    /// `commands.max_version_step`: how far ahead of the stored version a new one may be.
    pub max_version_step: u64,
}

/// Cards and QR codes one resident may hold.
const MAX_CARDS: usize = 16;

/// Why a sync was refused, as its `cmd/result` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRefused {
    pub reason: &'static str,
    pub detail: String,
}

fn refuse(reason: &'static str, detail: String) -> SyncRefused {
    SyncRefused { reason, detail }
}

/// An id that fits in the stored lists (no separators, no line breaks).
fn id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.contains([',', ';', '\n', '\r'])
}

fn check_resident(r: &v1::ResidentEntry) -> Result<ResidentStatus, String> {
    if !id_ok(&r.person_id) || !id_ok(&r.household) || !r.cards.iter().all(|c| id_ok(c)) {
        return Err(format!(
            "resident {:?}: bad id, household or card",
            r.person_id
        ));
    }
    match r.status.as_str() {
        "" => Ok(ResidentStatus::Active),
        s => ResidentStatus::parse(s)
            .ok_or_else(|| format!("resident {:?}: status {s:?}", r.person_id)),
    }
}

fn until(ms: i64) -> String {
    if ms == 0 || ms == i64::MAX {
        String::new()
    } else {
        ms.to_string()
    }
}

fn render_passes(p: &BTreeMap<String, v1::PassEntry>) -> String {
    let mut s =
        String::from("pass_id,host_household,credentials,plates,valid_from,valid_until,uses\n");
    for e in p.values() {
        let from = if e.valid_from_ms == 0 {
            String::new()
        } else {
            e.valid_from_ms.to_string()
        };
        s.push_str(&format!(
            "{},{},{},{},{from},{},{}\n",
            e.pass_id,
            e.host_household,
            e.credentials.join(";"),
            e.plates.join(";"),
            e.valid_until_ms,
            e.uses
        ));
    }
    s
}

fn render_plates(p: &BTreeMap<String, v1::PlateEntry>) -> String {
    let mut s = String::from("plate,kind,household,valid_until,lockdown_allowed\n");
    for e in p.values() {
        s.push_str(&format!(
            "{},{},{},{},{}\n",
            e.plate,
            if e.kind.is_empty() {
                "resident"
            } else {
                &e.kind
            },
            e.household,
            until(e.valid_until_ms),
            if e.lockdown_allowed { "yes" } else { "" }
        ));
    }
    s
}

fn render_households(h: &BTreeMap<String, bool>) -> String {
    let mut s = String::from("household,status\n");
    for (id, q) in h {
        s.push_str(&format!(
            "{id},{}\n",
            if *q { "quarantined" } else { "active" }
        ));
    }
    s
}

/// The lists as they are stored now, keyed by id.
struct Lists {
    passes: BTreeMap<String, v1::PassEntry>,
    plates: BTreeMap<String, v1::PlateEntry>,
    households: BTreeMap<String, bool>,
}

fn check_lists(l: &Lists) -> Result<(), SyncRefused> {
    let bad = |d: String| refuse("malformed", d);
    for p in l.passes.values() {
        if !id_ok(&p.pass_id) || !id_ok(&p.host_household) || p.valid_until_ms <= 0 {
            return Err(bad(format!(
                "pass {:?}: bad id, host or valid_until",
                p.pass_id
            )));
        }
        if !p.credentials.iter().chain(&p.plates).all(|c| id_ok(c))
            || p.credentials.len() + p.plates.len() == 0
        {
            return Err(bad(format!("pass {:?}: credentials or plates", p.pass_id)));
        }
    }
    for p in l.plates.values() {
        if !id_ok(&p.plate)
            || !matches!(p.kind.as_str(), "" | "resident" | "blacklist" | "allowlist")
        {
            return Err(bad(format!("plate {:?}: bad plate or kind", p.plate)));
        }
        if matches!(p.kind.as_str(), "" | "resident") && !id_ok(&p.household) {
            return Err(bad(format!(
                "plate {:?}: a resident plate needs a household",
                p.plate
            )));
        }
    }
    if !l.households.keys().all(|h| id_ok(h)) {
        return Err(bad("a household id is bad".into()));
    }
    Ok(())
}

/// A version far ahead of the stored one would leave no room for the next (`u64::MAX` freezes
/// sync for good), so the step is bounded.
fn check_version(current: u64, version: u64, limits: SyncLimits) -> Result<(), SyncRefused> {
    // A gateway with no lists yet (new, or rebuilt) takes any version up to the ceiling: the
    // company's counter may be far along. Above half the range there would be no room left.
    let too_far = if current == 0 {
        version > u64::MAX / 2
    } else {
        version - current > limits.max_version_step
    };
    if too_far {
        return Err(refuse(
            "version_too_far",
            format!(
                "version {version} is more than {} ahead of {current} (commands.max_version_step)",
                limits.max_version_step
            ),
        ));
    }
    Ok(())
}

/// The same bounds as a file import: residents, plates, passes, households; cards per resident.
fn check_sizes(
    [residents, plates, passes, households]: [usize; 4],
    cards: usize,
    limits: SyncLimits,
) -> Result<(), SyncRefused> {
    let too_many =
        |what: &str, n: usize, max: usize| refuse("too_many", format!("{n} {what}; at most {max}"));
    if residents > limits.max_residents {
        return Err(too_many(
            "residents (registry.max_residents)",
            residents,
            limits.max_residents,
        ));
    }
    for (what, n) in [
        ("plates", plates),
        ("passes", passes),
        ("households", households),
    ] {
        if n > super::MAX_LIST_ROWS {
            return Err(too_many(what, n, super::MAX_LIST_ROWS));
        }
    }
    if cards > MAX_CARDS {
        return Err(too_many("cards on one resident", cards, MAX_CARDS));
    }
    Ok(())
}

/// The ids that stand more than once, each named once, with what they are.
fn duplicates<'a>(ids: impl Iterator<Item = &'a str>, what: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut twice = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            twice.insert(id);
        }
    }
    twice.into_iter().map(|id| format!("{what} {id}")).collect()
}

fn resident_value(r: &v1::ResidentEntry, status: ResidentStatus) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32);
    buf.push(status_byte(status));
    let until = if r.valid_until_ms == 0 {
        i64::MAX
    } else {
        r.valid_until_ms
    };
    buf.extend_from_slice(&until.to_le_bytes());
    buf.extend_from_slice(r.household.as_bytes());
    if !r.cards.is_empty() {
        buf.push(b'\n');
        buf.extend_from_slice(r.cards.join(";").as_bytes());
    }
    buf
}

impl Store {
    pub fn registry_version(&self) -> Result<u64, StoreError> {
        self.meta(MetaKey::RegistryVersion)
    }

    /// Replaces every list with `s`, if `s.version` is newer than the stored one.
    pub fn apply_snapshot(
        &self,
        s: &v1::RegistrySnapshot,
        limits: SyncLimits,
    ) -> Result<Result<(), SyncRefused>, StoreError> {
        let current = self.registry_version()?;
        if s.version <= current {
            return Ok(Err(refuse(
                "stale_version",
                format!("version {} is not newer than {current}", s.version),
            )));
        }
        if let Err(e) = check_version(current, s.version, limits) {
            return Ok(Err(e));
        }
        if let Err(e) = check_sizes(
            [
                s.residents.len(),
                s.plates.len(),
                s.passes.len(),
                s.households.len(),
            ],
            s.residents.iter().map(|r| r.cards.len()).max().unwrap_or(0),
            limits,
        ) {
            return Ok(Err(e));
        }
        let duplicates = [
            duplicates(s.residents.iter().map(|r| r.person_id.as_str()), "resident"),
            duplicates(s.plates.iter().map(|p| p.plate.as_str()), "plate"),
            duplicates(s.passes.iter().map(|p| p.pass_id.as_str()), "pass"),
            duplicates(
                s.households.iter().map(|h| h.household.as_str()),
                "household",
            ),
        ]
        .concat();
        if !duplicates.is_empty() {
            let shown: Vec<_> = duplicates.iter().take(10).collect();
            return Ok(Err(refuse(
                "duplicate_ids",
                format!(
                    "{} ids stand twice or more: {shown:?}{}",
                    duplicates.len(),
                    if duplicates.len() > 10 { " …" } else { "" }
                ),
            )));
        }
        let mut statuses = Vec::with_capacity(s.residents.len());
        for r in &s.residents {
            match check_resident(r) {
                Ok(st) => statuses.push(st),
                Err(e) => return Ok(Err(refuse("malformed", e))),
            }
        }
        let lists = Lists {
            passes: s
                .passes
                .iter()
                .map(|p| (p.pass_id.clone(), p.clone()))
                .collect(),
            plates: s
                .plates
                .iter()
                .map(|p| (p.plate.clone(), p.clone()))
                .collect(),
            households: s
                .households
                .iter()
                .map(|h| (h.household.clone(), h.quarantined))
                .collect(),
        };
        if let Err(e) = check_lists(&lists) {
            return Ok(Err(e));
        }
        let txn = self.db()?.begin_write()?;
        txn.delete_table(RESIDENTS)?;
        {
            let mut t = txn.open_table(RESIDENTS)?;
            for (r, st) in s.residents.iter().zip(statuses) {
                t.insert(r.person_id.as_str(), resident_value(r, st).as_slice())?;
            }
            write_lists(&txn, &lists)?;
            txn.open_table(META)?
                .insert(&*MetaKey::RegistryVersion.name(), s.version)?;
        }
        txn.commit()?;
        Ok(Ok(()))
    }

    /// Applies `d` on top of its base version.
    pub fn apply_delta(
        &self,
        d: &v1::RegistryDelta,
        limits: SyncLimits,
    ) -> Result<Result<(), SyncRefused>, StoreError> {
        let current = self.registry_version()?;
        if d.base_version != current || d.version <= current {
            return Ok(Err(refuse(
                "wrong_base",
                format!(
                    "delta {} → {} does not apply to version {current}; send a snapshot",
                    d.base_version, d.version
                ),
            )));
        }
        if let Err(e) = check_version(current, d.version, limits) {
            return Ok(Err(e));
        }
        let mut statuses = Vec::with_capacity(d.upsert_residents.len());
        for r in &d.upsert_residents {
            match check_resident(r) {
                Ok(st) => statuses.push(st),
                Err(e) => return Ok(Err(refuse("malformed", e))),
            }
        }
        let mut lists = self.lists()?;
        for id in &d.remove_passes {
            lists.passes.remove(id);
        }
        for p in &d.upsert_passes {
            lists.passes.insert(p.pass_id.clone(), p.clone());
        }
        for id in &d.remove_plates {
            lists.plates.remove(id);
        }
        for p in &d.upsert_plates {
            lists.plates.insert(p.plate.clone(), p.clone());
        }
        for id in &d.remove_households {
            lists.households.remove(id);
        }
        for h in &d.upsert_households {
            lists.households.insert(h.household.clone(), h.quarantined);
        }
        if let Err(e) = check_lists(&lists) {
            return Ok(Err(e));
        }
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(RESIDENTS)?;
            for id in &d.remove_residents {
                t.remove(id.as_str())?;
            }
            for (r, st) in d.upsert_residents.iter().zip(statuses) {
                t.insert(r.person_id.as_str(), resident_value(r, st).as_slice())?;
            }
            let residents = t.len()? as usize;
            let cards = d.upsert_residents.iter().map(|r| r.cards.len()).max();
            let sizes = [
                residents,
                lists.plates.len(),
                lists.passes.len(),
                lists.households.len(),
            ];
            if let Err(e) = check_sizes(sizes, cards.unwrap_or(0), limits) {
                // Dropping the transaction uncommitted leaves the stored lists as they were.
                return Ok(Err(e));
            }
            write_lists(&txn, &lists)?;
            txn.open_table(META)?
                .insert(&*MetaKey::RegistryVersion.name(), d.version)?;
        }
        txn.commit()?;
        Ok(Ok(()))
    }

    fn lists(&self) -> Result<Lists, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(LISTS)?;
        let text = |name: &str| -> Result<String, StoreError> {
            Ok(t.get(name)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned())
                .unwrap_or_default())
        };
        let max = usize::MAX;
        let passes = residents::parse_passes(&text("passes")?, max).unwrap_or_default();
        let plates = residents::parse_plates(&text("plates")?, max).unwrap_or_default();
        let households = residents::parse_households(&text("households")?, max).unwrap_or_default();
        Ok(Lists {
            passes: passes
                .into_iter()
                .map(|p| (p.pass_id.clone(), pass_entry(p)))
                .collect(),
            plates: plates
                .into_iter()
                .map(|p| (p.plate.clone(), plate_entry(p)))
                .collect(),
            households: households.into_iter().collect(),
        })
    }
}

fn write_lists(txn: &redb::WriteTransaction, l: &Lists) -> Result<(), StoreError> {
    let mut t = txn.open_table(LISTS)?;
    t.insert(List::Passes.name(), render_passes(&l.passes).as_bytes())?;
    t.insert(List::Plates.name(), render_plates(&l.plates).as_bytes())?;
    t.insert(
        List::Households.name(),
        render_households(&l.households).as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(version: u64, residents: u32, plates: u32) -> v1::RegistrySnapshot {
        v1::RegistrySnapshot {
            version,
            residents: (0..residents)
                .map(|i| v1::ResidentEntry {
                    person_id: format!("R{i:06}"),
                    household: format!("H{:05}", i / 3),
                    status: if i % 50 == 0 {
                        "quarantined".into()
                    } else {
                        String::new()
                    },
                    valid_until_ms: 0,
                    cards: vec![format!("10:{i}")],
                })
                .collect(),
            households: vec![v1::HouseholdEntry {
                household: "H00001".into(),
                quarantined: true,
            }],
            plates: (0..plates)
                .map(|i| v1::PlateEntry {
                    plate: format!("粤B{i:05}"),
                    kind: "resident".into(),
                    household: format!("H{:05}", i),
                    valid_until_ms: 0,
                    lockdown_allowed: false,
                })
                .collect(),
            passes: vec![v1::PassEntry {
                pass_id: "P1".into(),
                host_household: "H00002".into(),
                credentials: vec!["QR-1".into()],
                plates: vec!["沪C11111".into()],
                valid_from_ms: 0,
                valid_until_ms: 4_000_000_000_000,
                uses: 2,
            }],
        }
    }

    const LIMITS: SyncLimits = SyncLimits {
        max_residents: 200_000,
        max_version_step: 1_000_000,
    };

    #[test]
    fn a_sync_is_bounded_as_an_import_is_and_cannot_freeze_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let refused = |s: &v1::RegistrySnapshot, limits| {
            let r = store.apply_snapshot(s, limits).unwrap().unwrap_err();
            (r.reason, r.detail)
        };
        let (reason, _) = refused(&snapshot(u64::MAX, 1, 0), LIMITS);
        assert_eq!(reason, "version_too_far");
        let small = SyncLimits {
            max_residents: 10,
            ..LIMITS
        };
        assert_eq!(refused(&snapshot(1, 11, 0), small).0, "too_many");
        let mut many_cards = snapshot(1, 1, 0);
        many_cards.residents[0].cards = (0..17).map(|i| format!("c{i}")).collect();
        assert_eq!(refused(&many_cards, LIMITS).0, "too_many");
        let mut twice = snapshot(1, 3, 2);
        twice.residents.push(twice.residents[1].clone());
        twice.plates.push(twice.plates[0].clone());
        let (reason, detail) = refused(&twice, LIMITS);
        assert_eq!(reason, "duplicate_ids");
        assert!(
            detail.contains("resident R000001") && detail.contains("plate"),
            "{detail}"
        );
        // Nothing of them was written; a sane one still applies, and a delta over the bound is
        // refused whole.
        assert_eq!(store.registry_version().unwrap(), 0);
        // A gateway with no lists takes a company counter far along; after that the step counts.
        store
            .apply_snapshot(&snapshot(5_000_000, 10, 0), small)
            .unwrap()
            .unwrap();
        assert_eq!(
            refused(&snapshot(7_000_000, 1, 0), LIMITS).0,
            "version_too_far"
        );
        let grow = v1::RegistryDelta {
            base_version: 5_000_000,
            version: 5_000_001,
            upsert_residents: vec![v1::ResidentEntry {
                person_id: "N1".into(),
                household: "H9".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            store.apply_delta(&grow, small).unwrap().unwrap_err().reason,
            "too_many"
        );
        assert_eq!(store.load_registry().unwrap().len(), 10);
        assert_eq!(store.registry_version().unwrap(), 5_000_000);
    }

    #[test]
    fn a_large_snapshot_applies_in_one_transaction_and_a_delta_only_on_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        store
            .apply_snapshot(&snapshot(5, 100_000, 20_000), LIMITS)
            .unwrap()
            .unwrap();
        let r = store.load_registry().unwrap();
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        println!(
            "snapshot of 100,000 residents + 20,000 plates: written and loaded in {:?}; process {peak}",
            started.elapsed()
        );
        assert_eq!((r.len(), r.plates(), r.passes()), (100_000, 20_001, 1));
        assert!(r.card("10:99999").is_some());
        assert_eq!(store.registry_version().unwrap(), 5);
        // Older or equal: refused, nothing changes.
        let stale = store
            .apply_snapshot(&snapshot(5, 1, 0), LIMITS)
            .unwrap()
            .unwrap_err();
        assert_eq!(stale.reason, "stale_version");
        let wrong = v1::RegistryDelta {
            base_version: 4,
            version: 6,
            ..Default::default()
        };
        assert_eq!(
            store
                .apply_delta(&wrong, LIMITS)
                .unwrap()
                .unwrap_err()
                .reason,
            "wrong_base"
        );
        let delta = v1::RegistryDelta {
            base_version: 5,
            version: 6,
            remove_residents: vec!["R000001".into()],
            upsert_residents: vec![v1::ResidentEntry {
                person_id: "N1".into(),
                household: "H9".into(),
                ..Default::default()
            }],
            remove_plates: vec!["粤B00000".into()],
            upsert_households: vec![v1::HouseholdEntry {
                household: "H00001".into(),
                quarantined: false,
            }],
            ..Default::default()
        };
        store.apply_delta(&delta, LIMITS).unwrap().unwrap();
        let r = store.load_registry().unwrap();
        assert!(r.get("R000001").is_none() && r.get("N1").is_some());
        assert!(r.plate("粤B00000").is_none() && r.plate("粤B00001").is_some());
        assert!(
            r.plate("沪C11111").is_some(),
            "the pass's plate survives the round trip"
        );
        let h1 = r.get("R000003").unwrap().household;
        assert!(!r.household_quarantined(h1));
        assert_eq!(store.registry_version().unwrap(), 6);
        // A bad entry refuses the whole delta.
        let bad = v1::RegistryDelta {
            base_version: 6,
            version: 7,
            upsert_residents: vec![v1::ResidentEntry {
                person_id: "a,b".into(),
                household: "H".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            store.apply_delta(&bad, LIMITS).unwrap().unwrap_err().reason,
            "malformed"
        );
        assert_eq!(store.registry_version().unwrap(), 6);
    }
}
