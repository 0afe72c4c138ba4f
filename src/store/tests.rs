use super::*;

#[test]
fn a_store_knows_its_age_only_from_a_synced_clock_and_an_empty_one_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.created_ms().unwrap(), None, "new: not known yet");
    assert_eq!(store.settle_created(5_000).unwrap(), 5_000);
    assert_eq!(store.settle_created(9_000).unwrap(), 5_000, "settled once");
    drop(store);
    assert_eq!(
        Store::open(dir.path()).unwrap().created_ms().unwrap(),
        Some(5_000)
    );
    // A zero-length file (a power cut while it was made) is new, not old.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("gatehouse.redb"), b"").unwrap();
    let (s, _) = Store::open_or_recover(empty.path()).unwrap();
    assert_eq!(s.created_ms().unwrap(), None);
    // A used store from before creation times were kept is old.
    let old = tempfile::tempdir().unwrap();
    let s = Store::open(old.path()).unwrap();
    let txn = s.db().unwrap().begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.remove(&*MetaKey::CreatedPending.name()).unwrap();
        meta.insert(&*MetaKey::NextSeq.name(), 42).unwrap();
    }
    txn.commit().unwrap();
    drop(s);
    assert_eq!(
        Store::open(old.path()).unwrap().created_ms().unwrap(),
        Some(1)
    );
}

#[test]
fn a_stored_list_that_no_longer_reads_back_is_reported_not_silently_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let txn = store.db().unwrap().begin_write().unwrap();
    {
        let mut lists = txn.open_table(LISTS).unwrap();
        lists
            .insert("passes", b"pass_id,host_household\nP1".as_slice())
            .unwrap();
        lists
            .insert("plates", b"plate,kind\nA1,nonsense".as_slice())
            .unwrap();
        txn.open_table(RESIDENTS)
            .unwrap()
            .insert("R1", b"\x00".as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
    let (registry, problems) = store.load_registry_checked().unwrap();
    assert_eq!(registry.passes(), 0);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("passes list")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("plates list")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("resident rows")),
        "{problems:?}"
    );
}

#[test]
fn a_garbled_or_truncated_store_is_moved_aside_and_replaced() {
    for damage in ["garbage", "truncated"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gatehouse.redb");
        if damage == "garbage" {
            std::fs::write(&file, vec![0x5a; 64 * 1024]).unwrap();
        } else {
            drop(Store::open(dir.path()).unwrap());
            let len = std::fs::metadata(&file).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            f.set_len(len / 3).unwrap();
        }
        let (store, moved) = Store::open_or_recover(dir.path()).unwrap();
        if damage == "garbage" {
            let moved = moved.expect("garbage is moved aside");
            assert!(moved.to.exists(), "{damage}: kept for inspection");
        }
        // Either way the store works.
        assert_eq!(store.outbox_len().unwrap(), 0, "{damage}");
    }
}

#[test]
fn residents_import_once_and_load_back() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("residents.csv");
    std::fs::write(
        &csv,
        "person_id,household,status,valid_until\nR1,H1,active,\nR2,H1,quarantined,2030-01-01\n",
    )
    .unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    assert_eq!(
        store.import_residents(&csv, 100).unwrap(),
        Imported::Replaced { residents: 2 }
    );
    assert_eq!(
        store.import_residents(&csv, 100).unwrap(),
        Imported::Unchanged
    );
    let reg = store.load_registry().unwrap();
    assert_eq!(reg.len(), 2);
    let r2 = reg.get("R2").unwrap();
    assert_eq!(r2.status, ResidentStatus::Quarantined);
    assert_eq!(reg.household_id(r2), "H1");
    assert_eq!(reg.get("R1").unwrap().valid_until_ms, i64::MAX);
}

#[test]
fn a_million_entry_list_is_refused_and_the_old_list_kept() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let small = dir.path().join("small.csv");
    std::fs::write(&small, "person_id,household\nR1,H1\n").unwrap();
    store.import_residents(&small, 300_000).unwrap();
    let big = dir.path().join("district.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    writeln!(f, "person_id,household").unwrap();
    for i in 0..1_000_000 {
        writeln!(f, "P{i:07},H{:06}", i / 3).unwrap();
    }
    drop(f);
    let err = store
        .import_residents(&big, 300_000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 300000 residents"), "{err}");
    // A file far past the limit is refused before it is read at all.
    let err = store.import_residents(&big, 1000).unwrap_err().to_string();
    assert!(err.contains("bytes is more than 1000 residents"), "{err}");
    assert_eq!(
        store.load_registry().unwrap().len(),
        1,
        "the old list stays"
    );
}

#[test]
fn cards_passes_and_household_statuses_import_and_load_back() {
    use crate::decision::Holder;
    let dir = tempfile::tempdir().unwrap();
    let residents = dir.path().join("r.jsonl");
    std::fs::write(
        &residents,
        "{\"person_id\":\"R1\",\"household\":\"H1\",\"cards\":[\"10:1001\",\"QR-1\"]}\n",
    )
    .unwrap();
    let passes = dir.path().join("p.csv");
    std::fs::write(
        &passes,
        "pass_id,host_household,credentials,valid_from,valid_until,uses\nP1,H1,QR-9;10:77,2027-01-01,2027-01-02T12:00:00+08:00,3\n",
    )
    .unwrap();
    let households = dir.path().join("h.csv");
    std::fs::write(&households, "household,status\nH1,quarantined\nH2,active\n").unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.import_residents(&residents, 10).unwrap();
    store.import_list(List::Passes, &passes).unwrap();
    store.import_list(List::Households, &households).unwrap();
    assert!(matches!(
        store.import_list(List::Passes, &passes),
        Ok(Imported::Unchanged)
    ));
    // A bad passes file is refused whole; the stored one stays.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "pass_id,host_household,credentials,valid_until\nP2,H1,,2027-01-01\nP3,H1,QR-3,soon\n",
    )
    .unwrap();
    let err = store
        .import_list(List::Passes, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("line 3"), "{err}");

    let r = store.load_registry().unwrap();
    let Some(&Holder::Resident(i)) = r.card("QR-1") else {
        panic!("QR-1 is R1's card")
    };
    assert_eq!(r.resident_id(i), "R1");
    let Some(Holder::Pass(i)) = r.card("10:77") else {
        panic!("pass card missing")
    };
    let p = r.pass(*i).unwrap();
    assert_eq!((p.id.as_ref(), p.uses), ("P1", 3));
    // From the start of 1 Jan (UTC+8) to noon on 2 Jan.
    assert_eq!(
        p.valid_from_ms,
        residents::parse_time_ms("2026-12-31T16:00:00Z").unwrap()
    );
    assert_eq!(
        p.valid_until_ms,
        residents::parse_time_ms("2027-01-02T04:00:00Z").unwrap()
    );
    let h1 = r.get("R1").unwrap().household;
    assert!(r.household_quarantined(h1));
}

#[test]
fn a_file_with_a_bad_line_is_refused_whole_and_the_old_list_kept() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("a.jsonl");
    std::fs::write(&good, "{\"person_id\":\"R1\",\"household\":\"H1\"}\n").unwrap();
    let bad = dir.path().join("b.jsonl");
    std::fs::write(
        &bad,
        "{\"person_id\":\"R9\",\"household\":\"H1\"}\n{\"person_id\":5}\nnot json\n",
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.import_residents(&good, 100).unwrap();
    let err = store.import_residents(&bad, 100).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("line 3"), "{err}");
    assert!(store.load_registry().unwrap().get("R1").is_some());
}
