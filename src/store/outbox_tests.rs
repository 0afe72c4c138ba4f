//! The outbox writer's tests: group commit, byte bound and eviction by class, time-to-live,
//! the clock.
use super::*;
use prost::Message;
use std::sync::atomic::AtomicUsize;

fn cfg(max_bytes: u64) -> WriterConfig {
    WriterConfig {
        gateway: "gw1".into(),
        degraded_after: Duration::from_secs(3600),
        commit_interval: Duration::from_millis(5),
        commit_max: 100,
        max_bytes,
        ttl: [Duration::from_secs(3600); 3],
        clock: Arc::new(ClockWatch::new(true)),
    }
}

fn passage(lane: &str) -> Record {
    Record::Event(v1::Event {
        lane: lane.into(),
        body: Some(v1::event::Body::Passage(Default::default())),
        ..Default::default()
    })
}

fn reading() -> Record {
    Record::Event(v1::Event {
        body: Some(v1::event::Body::Reading(v1::Reading {
            temperature_c: 36.5,
            cause: "x".repeat(50),
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn alarm() -> Record {
    Record::Alarm(v1::Alarm {
        detail: "x".repeat(50),
        ..Default::default()
    })
}

async fn append(h: &WriterHandle, records: Vec<Record>) {
    h.appends
        .send(Append {
            records,
            state: Vec::new(),
            ack: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn core_state_commits_with_its_records_and_reads_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let h = spawn(store.clone(), cfg(u64::MAX), metrics.clone()).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ack: Ack = Box::new(move || {
        let _ = tx.send(());
    });
    let set = |k: &str, v: &[u8]| (k.to_string(), Some(v.to_vec()));
    h.appends
        .send(Append {
            records: vec![passage("l0")],
            state: vec![set("pass/P1", &[1, 0, 0, 0]), set("in/V:P1", &[])],
            ack: None,
        })
        .await
        .unwrap();
    // A state change alone (no record, a batch of its own) is still made durable.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.appends
        .send(Append {
            records: Vec::new(),
            state: vec![("in/V:P1".into(), None), set("mode/", b"fire")],
            ack: Some(ack),
        })
        .await
        .unwrap();
    rx.await.unwrap();
    // Both commits asked for the fsync (a record; a state change alone); an ack alone does
    // not need one and gets none.
    assert_eq!(Metrics::get(&metrics.outbox_durable_commits), 2);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ack_only: Ack = Box::new(move || {
        let _ = tx.send(());
    });
    h.appends
        .send(Append {
            records: Vec::new(),
            state: Vec::new(),
            ack: Some(ack_only),
        })
        .await
        .unwrap();
    rx.await.unwrap();
    assert_eq!(Metrics::get(&metrics.outbox_durable_commits), 2);
    drop(h.appends);
    h.appends_done.await.unwrap();
    drop(h.deletes);
    h.join.await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let mut state = store.load_state().unwrap();
    state.sort();
    assert_eq!(
        state,
        vec![
            ("mode/".to_string(), b"fire".to_vec()),
            ("pass/P1".to_string(), vec![1, 0, 0, 0]),
        ]
    );
}

/// The writer sleeps through a batch's interval (no wake-up per append), yet a long interval
/// still closes the batch once `commit_max` records are queued, and a closing channel is seen:
/// with an hour's interval, both would otherwise hang the test.
#[tokio::test]
async fn a_long_interval_still_closes_a_full_batch_and_sees_the_channel_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut c = cfg(u64::MAX);
    c.commit_interval = Duration::from_secs(3600);
    c.commit_max = 10;
    let h = spawn(store.clone(), c, Arc::new(Metrics::default())).unwrap();
    let mut committed = h.committed.clone();
    append(&h, vec![passage("l0")]).await;
    // The writer is lingering on its first record when the rest arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..25 {
        append(&h, vec![passage(&format!("l{i}"))]).await;
    }
    let full = tokio::time::timeout(
        Duration::from_secs(30),
        committed.wait_for(|seq| *seq >= 20),
    );
    assert!(full.await.is_ok(), "two full batches were not committed");
    drop(h.appends);
    let closed = tokio::time::timeout(Duration::from_secs(30), h.appends_done);
    assert!(
        closed.await.is_ok(),
        "the last batch waited for its interval"
    );
    assert_eq!(*h.committed.borrow(), 25);
}

#[tokio::test]
async fn records_get_gapless_ids_acks_run_after_commit_and_seqs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let h = spawn(store.clone(), cfg(u64::MAX), metrics.clone()).unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    for i in 0..250 {
        let acked = acked.clone();
        let ack: Ack = Box::new(move || {
            acked.fetch_add(1, Ordering::SeqCst);
        });
        h.appends
            .send(Append {
                records: vec![passage(&format!("l{i}"))],
                state: Vec::new(),
                ack: Some(ack),
            })
            .await
            .unwrap();
    }
    drop(h.appends);
    h.appends_done.await.unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 250);
    assert_eq!(*h.committed.borrow(), 250);
    let rows = store
        .outbox_from(&[Class::Passage, Class::Routine], 1, 1000, usize::MAX)
        .unwrap();
    assert_eq!(rows.len(), 250);
    let first = v1::Event::decode(rows[0].message.as_slice()).unwrap();
    assert_eq!(
        (first.event_id.as_str(), first.lane.as_str()),
        ("gw1:1", "l0")
    );
    h.deletes
        .send((1..=200).map(|s| (Class::Passage, s)).collect())
        .await
        .unwrap();
    drop(h.deletes);
    h.join.await.unwrap();
    assert_eq!(store.outbox_len().unwrap(), 50);
    assert_eq!(Metrics::get(&metrics.outbox_depth), 50);
    drop(store);

    // Reopen: numbering continues after the highest seq ever handed out.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.next_seq().unwrap(), 251);
}

#[tokio::test]
async fn a_full_outbox_evicts_routine_first_then_oldest_passages_and_alarms_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    // Room for about 20 records of ~70 bytes.
    let h = spawn(store.clone(), cfg(1500), metrics.clone()).unwrap();
    append(&h, vec![alarm(), alarm()]).await;
    append(&h, (0..5).map(|_| reading()).collect()).await;
    append(&h, (0..10).map(|i| passage(&format!("{i:0>50}"))).collect()).await;
    // Nearly full. Twelve more passages push out the readings, then the oldest passages.
    for i in 10..22 {
        append(&h, vec![passage(&format!("{i:0>50}"))]).await;
    }
    drop(h.appends);
    h.appends_done.await.unwrap();
    drop(h.deletes);
    h.join.await.unwrap();
    let left = |c| store.outbox_from(&[c], 0, 1000, usize::MAX).unwrap();
    assert!(left(Class::Routine).is_empty(), "routine goes first");
    let alarms: Vec<v1::Alarm> = left(Class::Alarm)
        .iter()
        .map(|r| v1::Alarm::decode(r.message.as_slice()).unwrap())
        .collect();
    let kept = alarms
        .iter()
        .filter(|a| a.kind() == v1::AlarmKind::Unspecified)
        .count();
    assert_eq!(kept, 2, "alarms stay");
    assert!(alarms.len() > 2, "and the eviction reports join them");
    let lanes: Vec<String> = left(Class::Passage)
        .iter()
        .map(|r| v1::Event::decode(r.message.as_slice()).unwrap().lane)
        .collect();
    assert_eq!(
        lanes.last().unwrap(),
        &format!("{:0>50}", 21),
        "the newest passage is kept"
    );
    assert!(
        !lanes.contains(&format!("{:0>50}", 0)),
        "the oldest passage went"
    );
    let reports: Vec<&v1::Alarm> = alarms
        .iter()
        .filter(|a| a.kind() == v1::AlarmKind::OutboxEvicted)
        .collect();
    assert!(
        reports.iter().any(|a| a.detail.contains("routine")),
        "{reports:?}"
    );
    assert!(
        reports.iter().any(|a| a.detail.contains("passage")),
        "{reports:?}"
    );
    assert_eq!(store.meta(MetaKey::Evicted(Class::Routine)).unwrap(), 5);
    assert!(store.meta(MetaKey::Evicted(Class::Passage)).unwrap() > 0);
    assert_eq!(store.meta(MetaKey::Evicted(Class::Alarm)).unwrap(), 0);
    assert!(Metrics::get(&metrics.outbox_evicted) >= 5);
    assert!(Metrics::get(&metrics.outbox_bytes) <= 1500);
}

#[tokio::test]
async fn records_past_their_time_to_live_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut c = cfg(u64::MAX);
    c.ttl[Class::Routine.index()] = Duration::from_millis(1);
    let h = spawn(store.clone(), c, metrics.clone()).unwrap();
    append(&h, vec![reading(), passage("a")]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&h, vec![passage("b")]).await;
    drop(h.appends);
    h.appends_done.await.unwrap();
    drop(h.deletes);
    h.join.await.unwrap();
    assert!(store
        .outbox_from(&[Class::Routine], 0, 10, usize::MAX)
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .outbox_from(&[Class::Passage], 0, 10, usize::MAX)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.meta(MetaKey::Expired(Class::Routine)).unwrap(), 1);
}

/// Appends and waits for the commit.
async fn committed(h: &WriterHandle, records: Vec<Record>) {
    let (tx, rx) = oneshot::channel();
    let ack: Ack = Box::new(move || {
        let _ = tx.send(());
    });
    let a = Append {
        records,
        state: Vec::new(),
        ack: Some(ack),
    };
    h.appends.send(a).await.unwrap();
    rx.await.unwrap();
}

#[tokio::test]
async fn records_on_an_unknown_clock_or_from_before_a_jump_never_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let clock = Arc::new(ClockWatch::new(false));
    clock.test_force_synced(false);
    clock.check_sync();
    let mut c = cfg(u64::MAX);
    c.clock = clock.clone();
    c.ttl[Class::Routine.index()] = Duration::from_millis(1);
    let h = spawn(store.clone(), c, metrics.clone()).unwrap();
    // Written while the clock is unknown (a box booted in 1970), then it is synced: a
    // 56-year step that must not expire them.
    committed(&h, vec![reading()]).await;
    clock.test_force_synced(true);
    clock.check_sync();
    committed(&h, vec![reading()]).await;
    clock.test_step(56 * 365 * 86_400_000);
    committed(&h, vec![reading()]).await;
    // Past its time-to-live on the new clock, the one written after the jump expires.
    tokio::time::sleep(Duration::from_millis(50)).await;
    committed(&h, vec![reading()]).await;
    drop(h.appends);
    h.appends_done.await.unwrap();
    drop(h.deletes);
    h.join.await.unwrap();
    let left = store
        .outbox_from(&[Class::Routine], 0, 10, usize::MAX)
        .unwrap();
    let seqs: Vec<u64> = left.iter().map(|r| r.seq).collect();
    // (the last may have expired too, at the final commit)
    assert!(seqs.starts_with(&[1, 2]) && !seqs.contains(&3), "{seqs:?}");
    assert_eq!(store.meta(MetaKey::AgeFloorSeq).unwrap(), 3);
}
