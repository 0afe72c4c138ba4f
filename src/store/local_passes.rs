//! Visitor passes registered at the gate's console, kept apart from the company's lists (table
//! `local_passes`): a list sync from above replaces the company's lists whole and never these —
//! a visitor standing at the gate is not wiped by a sync made before they came. The registry
//! adds them after the company's passes (`Store::load_registry_checked`), so a credential in
//! both stands for the local pass while it lasts. Each goes, with what it says of the visitor,
//! `[console] visitor_retention_days` after it ends.
use super::{Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub(crate) const LOCAL_PASSES: TableDefinition<&str, &[u8]> = TableDefinition::new("local_passes");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPass {
    /// `L` and the code: unique, and names the pass in records.
    pub id: String,
    /// What the visitor presents: the QR code's number or the card's.
    pub code: String,
    /// `qr` or `card`.
    pub medium: String,
    pub host_household: String,
    pub purpose: String,
    /// Kept at the box only (never upstream), for the guard; may be empty.
    pub visitor_name: String,
    pub plate: Option<String>,
    /// Entries allowed in all.
    pub uses: u32,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    /// The console login that registered it.
    pub issued_by: String,
}

impl LocalPass {
    /// The pass as the registry takes it (`insert_pass`, `add_pass`).
    pub fn as_row<R>(&self, f: impl FnOnce(crate::decision::PassRow<'_>) -> R) -> R {
        let credentials = [self.code.clone()];
        let plates: Vec<String> = self.plate.iter().cloned().collect();
        f(crate::decision::PassRow {
            id: &self.id,
            host_household: &self.host_household,
            valid_from_ms: self.valid_from_ms,
            valid_until_ms: self.valid_until_ms,
            uses: self.uses,
            credentials: &credentials,
            plates: &plates,
        })
    }
}

impl Store {
    /// Keeps a pass (a new one, or one withdrawn: its end moved to now).
    pub fn put_local_pass(&self, p: &LocalPass) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(p).expect("a pass serialises");
        let txn = self.db()?.begin_write()?;
        txn.open_table(LOCAL_PASSES)?
            .insert(p.id.as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Forgets a pass (one the decision loop refused).
    pub fn delete_local_pass(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(LOCAL_PASSES)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    /// Every pass kept; one that does not read back is left out (and logged).
    pub fn local_passes(&self) -> Result<Vec<LocalPass>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = match txn.open_table(LOCAL_PASSES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            match serde_json::from_slice(v.value()) {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::error!(pass = k.value(), error = %e, "Stored visitor pass unreadable; left out.")
                }
            }
        }
        Ok(out)
    }

    /// Deletes the passes that ended before `before_ms`; how many.
    pub fn purge_local_passes(&self, before_ms: i64) -> Result<usize, StoreError> {
        let doomed: Vec<String> = self
            .local_passes()?
            .into_iter()
            .filter(|p| p.valid_until_ms < before_ms)
            .map(|p| p.id)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(LOCAL_PASSES)?;
            for id in &doomed {
                t.remove(id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(id: &str, until: i64) -> LocalPass {
        LocalPass {
            id: id.into(),
            code: format!("99{until}"),
            medium: "qr".into(),
            host_household: "H1".into(),
            purpose: "x".into(),
            visitor_name: "李四".into(),
            plate: None,
            uses: 1,
            valid_from_ms: 0,
            valid_until_ms: until,
            issued_by: "g".into(),
        }
    }

    /// Kept apart from the lists, read back whole, and gone — with the visitor's name — once
    /// retention has passed; a withdrawn one is kept with its new end.
    #[test]
    fn passes_are_kept_until_retention_and_then_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.local_passes().unwrap().is_empty());
        store.put_local_pass(&pass("L1", 1_000)).unwrap();
        store.put_local_pass(&pass("L2", 5_000)).unwrap();
        let mut withdrawn = pass("L2", 2_000);
        withdrawn.visitor_name.clear();
        store.put_local_pass(&withdrawn).unwrap();
        assert_eq!(store.local_passes().unwrap().len(), 2);
        assert_eq!(store.purge_local_passes(1_500).unwrap(), 1);
        assert_eq!(store.local_passes().unwrap(), vec![withdrawn]);
        store.delete_local_pass("L2").unwrap();
        assert!(store.local_passes().unwrap().is_empty());
    }
}
