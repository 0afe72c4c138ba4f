//! Durable state on redb: one file, `{store.dir}/gatehouse.redb`.
//!
//! Tables:
//! - `meta` (&str → u64): `next_seq` (the next outbox sequence number; never reused, written in the
//!   same transaction as the records that consume it), the outbox's bytes and evictions per class,
//!   `registry_version`, `import_hash`.
//! - `outbox_routine`, `outbox_passage`, `outbox_alarm` (u64 seq → bytes): records waiting for the
//!   uplink's PUBACK, one table per [`Class`] so the oldest of a class is evicted first without a
//!   scan. A value is the record's creation time (unix ms, i64 LE) followed by the protobuf `Event`
//!   (routine, passage) or `Alarm`, already carrying its `{gateway}:{seq}` id. One seq space runs
//!   across the three tables. A record is deleted only after the uplink broker acked it, or when
//!   the outbox's byte bound or its class's time-to-live evicts it (counted and reported).
//! - `residents` (&str person id → bytes): status (1 byte), valid-until unix ms (i64 LE), household,
//!   then (after a `\n`) the resident's card/QR numbers joined by `;`.
//! - `lists` (&str name → bytes): the last accepted `passes`, `plates` and `households` files,
//!   verbatim.
//! - `state` (&str key → bytes): the decision core's counters (who is inside, pass uses, lockdown
//!   outings, the mode), written in the same transaction as the records that changed them.
//!
//! Crash behaviour: redb commits are atomic and checksummed; a commit with `Durability::Immediate`
//! has been fsynced when it returns. After a crash the file holds the last such commit, so every
//! record whose device event was acknowledged is there (acks go out only after that commit).
//! Deletions are committed without fsync: a crash may bring acked records back, which the uplink
//! sends again with the same event ids (at-least-once).
pub mod local_passes;
pub mod outbox;
/// The list files' formats live in the contract the company's tools share.
pub use gatehouse_contract::lists as residents;
pub mod spill;
pub mod sync;

use crate::decision::{Registry, RegistryBuilder, ResidentStatus};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Every key of the `meta` table (numbers the store keeps about itself), in one place, as
/// `StateKey` is for the durable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaKey {
    /// When the store was created (unix ms; 1 = before creation times were kept).
    Created,
    /// It was created on a clock not yet known to be right: the time is written once it is.
    CreatedPending,
    /// It was made anew because the one before was damaged: orders applied to that one may have
    /// been issued up to the allowed clock skew after this one's creation.
    AfterLoss,
    /// The outbox's next sequence number.
    NextSeq,
    /// Records below this seq were dropped for age: the uplink skips to it.
    AgeFloorSeq,
    /// Counted up at every start: degraded mode's seqs live in the run's own range.
    RunGeneration,
    /// The residents file imported last, by its content hash.
    ImportHash,
    /// A list file imported last, by its content hash.
    ListHash(List),
    /// The registry version in force (a snapshot or delta from above).
    RegistryVersion,
    /// The outbox's books per class: bytes held, evicted, expired.
    Bytes(Class),
    Evicted(Class),
    Expired(Class),
}

impl MetaKey {
    pub(crate) fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            MetaKey::Created => "created_ms".into(),
            MetaKey::CreatedPending => "created_pending".into(),
            MetaKey::AfterLoss => "after_loss".into(),
            MetaKey::NextSeq => "next_seq".into(),
            MetaKey::AgeFloorSeq => "age_floor_seq".into(),
            MetaKey::RunGeneration => "run_generation".into(),
            MetaKey::ImportHash => "import_hash".into(),
            MetaKey::ListHash(l) => format!("{}_hash", l.name()).into(),
            MetaKey::RegistryVersion => "registry_version".into(),
            MetaKey::Bytes(c) => format!("bytes_{}", c.as_str()).into(),
            MetaKey::Evicted(c) => format!("evicted_{}", c.as_str()).into(),
            MetaKey::Expired(c) => format!("expired_{}", c.as_str()).into(),
        }
    }
}

/// The lists kept whole, as their files came, in the `lists` table (residents have a table of
/// their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Passes,
    Plates,
    Households,
}

impl List {
    pub fn name(self) -> &'static str {
        match self {
            List::Passes => "passes",
            List::Plates => "plates",
            List::Households => "households",
        }
    }
}
pub(crate) const RESIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("residents");
pub(crate) const LISTS: TableDefinition<&str, &[u8]> = TableDefinition::new("lists");
pub(crate) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// Visitor passes and household statuses beyond this are refused (a district's list, not ours).
pub(crate) const MAX_LIST_ROWS: usize = 200_000;

/// What an outbox record is: decides the uplink channel and the eviction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Readings, device states: evicted first.
    Routine,
    /// Passage decisions: the entry forms.
    Passage,
    /// Alarms: evicted last, sent first.
    Alarm,
}

impl Class {
    /// In eviction order.
    pub const ALL: [Class; 3] = [Class::Routine, Class::Passage, Class::Alarm];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Routine => "routine",
            Class::Passage => "passage",
            Class::Alarm => "alarm",
        }
    }

    fn table(self) -> TableDefinition<'static, u64, &'static [u8]> {
        match self {
            Class::Routine => TableDefinition::new("outbox_routine"),
            Class::Passage => TableDefinition::new("outbox_passage"),
            Class::Alarm => TableDefinition::new("outbox_alarm"),
        }
    }
}

/// One outbox record as read back for the uplink.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: u64,
    pub class: Class,
    /// The protobuf `Event` or `Alarm`.
    pub message: Vec<u8>,
}

/// Bytes of header before the message in an outbox value.
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("store directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("{path}: {}", problems.join("; "))]
    Import {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("store: being reopened after an I/O error")]
    Reopening,
    #[error("store: cannot start the outbox's commit thread: {0}")]
    Threads(std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A handle on the store; cheap to clone. Reads may happen from any thread; all writes of the
/// outbox go through the single [`outbox::Writer`].
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` only while [`Store::reopen`] swaps it: after an I/O error (a full disk) redb
    /// refuses every further transaction until the file is opened again.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    /// The outbox records kept in memory while the file cannot be written (`spill.rs`).
    spill: spill::Spill,
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// The file is the one imported last time; nothing written.
    Unchanged,
    Replaced {
        residents: usize,
    },
}

/// A store file that could not be used and was moved aside.
#[derive(Debug, Clone)]
pub struct MovedAside {
    pub to: PathBuf,
    pub error: String,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("gatehouse.redb");
        let db = open_db(&path)?;
        // Who is inside, and when, is nobody else's business: private whatever the umask (a
        // daemon started by hand, the demo, another init than the shipped unit).
        private(dir, 0o700)?;
        private(&path, 0o600)?;
        let store = Store {
            inner: Arc::new(Inner {
                path,
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                spill: spill::Spill::default(),
            }),
        };
        store.mark_creation()?;
        Ok(store)
    }

    /// A new store's creation time is not known until a synced clock gives it
    /// ([`Store::settle_created`]). A store without either mark counts as old (from before
    /// creation times were kept) only if it shows use — records, state, lists or a sequence
    /// number; an empty one is new, whatever left it empty (a fresh file, a zero-length file
    /// after a power cut, a crash right after the tables were made).
    fn mark_creation(&self) -> Result<(), StoreError> {
        if self.meta(MetaKey::Created)? != 0 || self.meta(MetaKey::CreatedPending)? != 0 {
            return Ok(());
        }
        let used = {
            let txn = self.db()?.begin_read()?;
            let mut used = txn
                .open_table(META)?
                .get(&*MetaKey::NextSeq.name())?
                .is_some()
                || !txn.open_table(STATE)?.is_empty()?
                || !txn.open_table(RESIDENTS)?.is_empty()?
                || !txn.open_table(LISTS)?.is_empty()?;
            for c in Class::ALL {
                used |= !txn.open_table(c.table())?.is_empty()?;
            }
            used
        };
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            if used {
                meta.insert(&*MetaKey::Created.name(), 1)?;
            } else {
                meta.insert(&*MetaKey::CreatedPending.name(), 1)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// When this store was created (unix ms, from a clock known to be synced); `None` while that
    /// is not known yet. Orders issued before it cannot have been applied here.
    pub fn created_ms(&self) -> Result<Option<i64>, StoreError> {
        let created = self.meta(MetaKey::Created)?;
        Ok((created != 0).then_some(created as i64))
    }

    /// Whether this store was made anew after the one before was lost.
    pub fn made_after_loss(&self) -> Result<bool, StoreError> {
        Ok(self.meta(MetaKey::AfterLoss)? != 0)
    }

    /// Records `now_ms` as the creation time if it is still unknown; call it only with a clock
    /// known to be synced. Returns the creation time.
    pub fn settle_created(&self, now_ms: i64) -> Result<i64, StoreError> {
        if let Some(created) = self.created_ms()? {
            return Ok(created);
        }
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(&*MetaKey::Created.name(), now_ms.max(1) as u64)?;
            meta.remove(&*MetaKey::CreatedPending.name())?;
        }
        txn.commit()?;
        Ok(now_ms.max(1))
    }

    /// The database, unless a reopen is under way.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Reopening)
    }

    /// Opens the file again (after an I/O error redb refuses every transaction until then).
    /// Fails while another handle still holds the old one; the caller tries again later.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        // Dropping ours lets the file be opened again once no reader holds the old one. The
        // lock is not held across the open (a failing disk may take its time): readers get
        // `Reopening` meanwhile instead of waiting.
        self.inner
            .db
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let db = Arc::new(open_db(&self.inner.path)?);
        *self.inner.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
        Ok(())
    }

    /// Opens the store; a corrupt or unreadable file is moved aside (kept for inspection) and a
    /// fresh one created, so a damaged SD card never turns into a crash loop. The caller raises
    /// the storage-loss alarm. Errors that a fresh file would not fix (permissions, the store
    /// held by another process) are returned.
    pub fn open_or_recover(dir: &Path) -> Result<(Store, Option<MovedAside>), StoreError> {
        let error = match Store::open(dir) {
            Ok(store) => return Ok((store, None)),
            Err(e) if !is_damage(&e) => return Err(e),
            Err(e) => e.to_string(),
        };
        let path = dir.join("gatehouse.redb");
        let to = dir.join(format!("gatehouse.redb.corrupt-{}", crate::now_ms()));
        std::fs::rename(&path, &to).map_err(|source| StoreError::Dir {
            path: path.clone(),
            source,
        })?;
        tracing::error!(error = %error, moved_to = %to.display(), "Store file damaged; moved aside, starting a fresh one.");
        let store = Store::open(dir)?;
        store.set_meta(MetaKey::AfterLoss, 1)?;
        Ok((store, Some(MovedAside { to, error })))
    }

    fn set_meta(&self, key: MetaKey, value: u64) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        txn.open_table(META)?.insert(&*key.name(), value)?;
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn meta(&self, key: MetaKey) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(&*key.name())?.map_or(0, |v| v.value()))
    }

    /// Counts this run: `meta.run_generation` one up, durably. Degraded mode hands out seqs in
    /// the run's own range (`outbox_degraded.rs`), which no earlier run can have used.
    pub fn next_run_generation(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_write()?;
        let generation = {
            let mut meta = txn.open_table(META)?;
            let key = MetaKey::RunGeneration.name();
            let g = meta.get(&*key)?.map_or(0, |v| v.value()) + 1;
            meta.insert(&*key, g)?;
            g
        };
        txn.commit()?;
        Ok(generation)
    }

    /// The next sequence number to hand out.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let mut next = meta
            .get(&*MetaKey::NextSeq.name())?
            .map_or(1, |v| v.value());
        for c in Class::ALL {
            let t = txn.open_table(c.table())?;
            next = next.max(t.last()?.map_or(1, |(k, _)| k.value() + 1));
        }
        Ok(next)
    }

    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut n = 0;
        for c in Class::ALL {
            n += txn.open_table(c.table())?.len()?;
        }
        Ok(n)
    }

    /// Up to `max` records of the given classes with seq ≥ `from`, merged in seq order, stopping
    /// early past `max_bytes`.
    pub fn outbox_from(
        &self,
        classes: &[Class],
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let spilled = self.spill().rows_from(classes, from, max, max_bytes);
        let mut out = match self.stored_from(classes, from, max, max_bytes) {
            Ok(rows) => rows,
            // The file cannot be read either: what memory holds still goes (the stored rows
            // after a write-back, which sends the uplink back to the oldest record).
            Err(_) if self.spill().degraded() || !spilled.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        out.extend(spilled);
        out.sort_unstable_by_key(|r| r.seq);
        let mut bytes = 0;
        let keep = out
            .iter()
            .take_while(|r| {
                let under = bytes < max_bytes;
                bytes += r.message.len();
                under
            })
            .count()
            .min(max);
        out.truncate(keep);
        Ok(out)
    }

    /// The outbox in memory while the file cannot be written (degraded mode).
    pub fn spill(&self) -> &spill::Spill {
        &self.inner.spill
    }

    /// Each class's rows from `from` on, as stored (`outbox_from` orders and bounds them).
    fn stored_from(
        &self,
        classes: &[Class],
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut out = Vec::new();
        for &class in classes {
            let t = txn.open_table(class.table())?;
            let mut bytes = 0;
            for item in t.range(from..)?.take(max) {
                let (k, v) = item?;
                let v = v.value();
                bytes += v.len();
                out.push(Row {
                    seq: k.value(),
                    class,
                    message: v.get(HEADER..).unwrap_or_default().to_vec(),
                });
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Imports residents from a file, replacing the list, unless it is the file imported last time.
    /// A file with any bad line is refused whole and the stored list is kept.
    pub fn import_residents(&self, path: &Path, max: usize) -> Result<Imported, StoreError> {
        let text = residents::read(path, max).map_err(|problems| StoreError::Import {
            path: path.to_path_buf(),
            problems,
        })?;
        let hash = residents::content_hash(&text);
        if self.meta(MetaKey::ImportHash)? == hash {
            return Ok(Imported::Unchanged);
        }
        let rows = residents::parse(path, &text, max).map_err(|problems| StoreError::Import {
            path: path.to_path_buf(),
            problems,
        })?;
        let txn = self.db()?.begin_write()?;
        txn.delete_table(RESIDENTS)?;
        {
            let mut t = txn.open_table(RESIDENTS)?;
            let mut buf = Vec::with_capacity(64);
            for r in &rows {
                buf.clear();
                buf.push(status_byte(r.status));
                buf.extend_from_slice(&r.valid_until_ms.to_le_bytes());
                buf.extend_from_slice(r.household.as_bytes());
                if !r.cards.is_empty() {
                    buf.push(b'\n');
                    buf.extend_from_slice(r.cards.join(";").as_bytes());
                }
                t.insert(r.person_id.as_str(), buf.as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(&*MetaKey::ImportHash.name(), hash)?;
        }
        txn.commit()?;
        Ok(Imported::Replaced {
            residents: rows.len(),
        })
    }

    /// Imports a `passes` or `households` list file, replacing the stored one, unless unchanged.
    /// A file with any bad line is refused whole and the stored list kept.
    pub fn import_list(&self, list: List, path: &Path) -> Result<Imported, StoreError> {
        let refused = |problems| StoreError::Import {
            path: path.to_path_buf(),
            problems,
        };
        let text = residents::read(path, MAX_LIST_ROWS).map_err(refused)?;
        let hash = residents::content_hash(&text);
        if self.meta(MetaKey::ListHash(list))? == hash {
            return Ok(Imported::Unchanged);
        }
        let rows = match list {
            List::Passes => residents::parse_passes(&text, MAX_LIST_ROWS).map(|r| r.len()),
            List::Plates => residents::parse_plates(&text, MAX_LIST_ROWS).map(|r| r.len()),
            List::Households => residents::parse_households(&text, MAX_LIST_ROWS).map(|r| r.len()),
        }
        .map_err(refused)?;
        let txn = self.db()?.begin_write()?;
        {
            txn.open_table(LISTS)?
                .insert(list.name(), text.as_bytes())?;
            let hash_key = MetaKey::ListHash(list).name();
            txn.open_table(META)?.insert(&*hash_key, hash)?;
        }
        txn.commit()?;
        Ok(Imported::Replaced { residents: rows })
    }

    /// The decision core's durable state (see [`crate::decision::Core::restore`]).
    pub fn load_state(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(STATE)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The registry as stored, for the decision core; what could not be read is logged (see
    /// [`Store::load_registry_checked`]).
    pub fn load_registry(&self) -> Result<Registry, StoreError> {
        let (registry, problems) = self.load_registry_checked()?;
        for p in problems {
            tracing::error!(problem = %p, "Stored list unreadable.");
        }
        Ok(registry)
    }

    /// The registry as stored, and every part of it that could not be read (a damaged resident
    /// row, a list that no longer parses): what the start raises alarms for, rather than
    /// silently running with an empty list.
    pub fn load_registry_checked(&self) -> Result<(Registry, Vec<String>), StoreError> {
        let mut problems = Vec::new();
        let mut damaged_rows = 0usize;
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(RESIDENTS)?;
        let mut b = RegistryBuilder::with_capacity(t.len()? as usize);
        for item in t.iter()? {
            let (k, v) = item?;
            let v = v.value();
            // Rows are written only by `import_residents`; a short one means a damaged file.
            if v.len() < 9 {
                damaged_rows += 1;
                continue;
            }
            let status = match v[0] {
                1 => ResidentStatus::Quarantined,
                2 => ResidentStatus::Suspended,
                _ => ResidentStatus::Active,
            };
            let until = i64::from_le_bytes(v[1..9].try_into().expect("slice of 8 bytes"));
            let rest = std::str::from_utf8(&v[9..]).unwrap_or("");
            let (household, cards) = rest.split_once('\n').unwrap_or((rest, ""));
            b.insert(k.value(), household, status, until);
            for card in cards.split(';').filter(|c| !c.is_empty()) {
                b.insert_card(card, k.value());
            }
        }
        if damaged_rows > 0 {
            problems.push(format!(
                "{damaged_rows} stored resident rows are damaged and were left out"
            ));
        }
        let unreadable = |name: &str, e: Vec<String>| {
            format!(
                "the stored {name} list does not read back ({}); it is empty until the next import or sync",
                e.join("; ")
            )
        };
        let lists = txn.open_table(LISTS)?;
        if let Some(text) = lists.get(List::Passes.name())? {
            let text = String::from_utf8_lossy(text.value()).into_owned();
            let rows = residents::parse_passes(&text, MAX_LIST_ROWS).unwrap_or_else(|e| {
                problems.push(unreadable("passes", e));
                Vec::new()
            });
            for p in rows {
                b.insert_pass(crate::decision::PassRow {
                    id: &p.pass_id,
                    host_household: &p.host_household,
                    valid_from_ms: p.valid_from_ms,
                    valid_until_ms: p.valid_until_ms,
                    uses: p.uses,
                    credentials: &p.credentials,
                    plates: &p.plates,
                });
            }
        }
        if let Some(text) = lists.get(List::Plates.name())? {
            let text = String::from_utf8_lossy(text.value()).into_owned();
            let rows = residents::parse_plates(&text, MAX_LIST_ROWS).unwrap_or_else(|e| {
                problems.push(unreadable("plates", e));
                Vec::new()
            });
            b.reserve_plates(rows.len());
            for p in rows {
                b.insert_plate(
                    &p.plate,
                    p.kind,
                    &p.household,
                    p.valid_until_ms,
                    p.lockdown_allowed,
                );
            }
        }
        if let Some(text) = lists.get(List::Households.name())? {
            let text = String::from_utf8_lossy(text.value()).into_owned();
            let rows = residents::parse_households(&text, MAX_LIST_ROWS).unwrap_or_else(|e| {
                problems.push(unreadable("households", e));
                Vec::new()
            });
            for (h, quarantined) in rows {
                if quarantined {
                    b.quarantine_household(&h);
                }
            }
        }
        let version = txn
            .open_table(META)?
            .get(&*MetaKey::RegistryVersion.name())?
            .map_or(0, |v| v.value());
        drop(lists);
        drop(txn);
        // The gate's own passes last, those still running (a credential is given to a pass only
        // when no one else holds it: `decisions::credentials_free`).
        // Oldest first: a card handed out again belongs to its newest pass.
        b.close_lists();
        let now = crate::now_ms();
        let mut local = self.local_passes()?;
        local.sort_by_key(|p| p.valid_from_ms);
        for p in local.iter().filter(|p| p.valid_until_ms >= now) {
            p.as_row(|row| b.insert_pass(row));
        }
        Ok((b.build(version), problems))
    }
}

fn private(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Dir {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder()
        // The hot set is the outbox tail; the registry lives in memory. A small cache keeps
        // the box's RSS small.
        .set_cache_size(1 << 20)
        .create(path)
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
    let txn = db.begin_write()?;
    {
        txn.open_table(META)?;
        for c in Class::ALL {
            txn.open_table(c.table())?;
        }
        txn.open_table(RESIDENTS)?;
        txn.open_table(LISTS)?;
        txn.open_table(STATE)?;
    }
    txn.commit()?;
    Ok(db)
}

/// Damage to the file itself, which a fresh file cures; not a permission or locking problem.
fn is_damage(e: &StoreError) -> bool {
    use redb::{DatabaseError as D, StorageError as S};
    let storage = |s: &S| match s {
        S::Corrupted(_) => true,
        S::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    };
    match e {
        StoreError::Open { source, .. } => match source.as_ref() {
            D::Storage(s) => storage(s),
            D::UpgradeRequired(_) | D::RepairAborted => true,
            _ => false,
        },
        StoreError::Db(redb::Error::Corrupted(_)) => true,
        StoreError::Db(redb::Error::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

pub(crate) fn status_byte(s: ResidentStatus) -> u8 {
    match s {
        ResidentStatus::Active => 0,
        ResidentStatus::Quarantined => 1,
        ResidentStatus::Suspended => 2,
    }
}

#[cfg(test)]
mod tests;
