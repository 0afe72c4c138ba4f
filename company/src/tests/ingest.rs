//! The ingest against a real broker: shared subscription, ack after commit, quarantine, an
//! instance killed mid-stream, the database taken away mid-stream.
use super::pg::Pg;
use super::*;
use crate::db::{Db, Scope, Table};
use crate::ingest::{self, rollup::col, Counters, Settings};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const COMMUNITY_A: &str = "330106001201";

/// A gateway's stand-in: publishes QoS 1 to the broker.
async fn publisher(port: u16) -> AsyncClient {
    let mut o = MqttOptions::new("test-gateway", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1000);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client
}

/// An ingest instance with client id `id`; its task and its stop switch.
fn instance(
    port: u16,
    id: &str,
    db: Arc<Db>,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    watch::Sender<bool>,
) {
    let (stop_tx, stop) = watch::channel(false);
    let opts = MqttOptions::new(id, "127.0.0.1", port);
    let settings = Settings {
        group: "test".into(),
        batch_max: 50,
        linger: Duration::from_millis(5),
        tz: TZ,
    };
    let task = tokio::spawn(ingest::run(
        opts,
        settings,
        db,
        Arc::new(Counters::default()),
        stop,
    ));
    (task, stop_tx)
}

/// Waits until the instance is subscribed: a status published again and again is stored.
async fn subscribed(client: &AsyncClient, db: &Db, community: &str) {
    let gw = format!("3301/330106/{STREET}/{community}/gw-1");
    for seq in 1..400 {
        let s = v1::Status {
            gateway: "gw-1".into(),
            state: v1::GatewayState::Online as i32,
            boot: 1,
            seq,
            ..Default::default()
        };
        client
            .publish(
                topic(community, "gw-1", "status"),
                QoS::AtLeastOnce,
                false,
                s.encode_to_vec(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
        if db.status(&gw).await.unwrap().is_some() {
            return;
        }
    }
    panic!("the ingest never subscribed");
}

/// `n` batches of 10 residents each, seqs from `first_batch * 10 + 1`.
async fn publish_batches(client: &AsyncClient, community: &str, first_batch: u64, n: u64) {
    for b in first_batch..first_batch + n {
        let batch: Vec<_> = (1..=10)
            .map(|i| resident_in(b * 10 + i, NINE_AM + (b * 10 + i) as i64))
            .collect();
        client
            .publish(
                topic(community, "gw-1", "events"),
                QoS::AtLeastOnce,
                false,
                events(batch),
            )
            .await
            .unwrap();
    }
}

async fn wait_for_count(db: &Db, table: Table, n: i64) {
    for _ in 0..600 {
        if db.count(table).await.unwrap_or(-1) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(db.count(table).await.unwrap(), n, "{}", table.name());
}

/// The residents counted into the rollups of a community: each record exactly once.
async fn residents_rolled_up(db: &Db, community: &str) -> i64 {
    db.rollups(&Scope::Community(community.into()), 0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.counts[col("residents_in")])
        .sum()
}

#[tokio::test]
async fn the_ingest_stores_each_record_once_across_a_killed_instance_and_quarantines_garbage() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("records.db").display());
    let db = Arc::new(Db::open(&url, TZ).await.unwrap());
    let client = publisher(broker.port).await;
    let (task, _stop) = instance(broker.port, "ingest-a", db.clone());
    subscribed(&client, &db, COMMUNITY_A).await;

    publish_batches(&client, COMMUNITY_A, 0, 30).await;
    // Garbage on a gateway's channel, and a redelivered batch (the same records again).
    client
        .publish(
            topic(COMMUNITY_A, "gw-1", "alarms"),
            QoS::AtLeastOnce,
            false,
            b"\xff\xfe garbage".to_vec(),
        )
        .await
        .unwrap();
    publish_batches(&client, COMMUNITY_A, 0, 1).await;
    wait_for_count(&db, Table::Passages, 300).await;
    wait_for_count(&db, Table::Quarantine, 1).await;

    // Killed mid-stream (no DISCONNECT, nothing more acked), while the gateway goes on: the
    // same client id picks its session up again and every record is stored once.
    publish_batches(&client, COMMUNITY_A, 30, 50).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    task.abort();
    let _ = task.await;
    publish_batches(&client, COMMUNITY_A, 80, 20).await;
    // A backlog larger than any channel of the ingest's own, one record a message: it came
    // back with the broker sending it all at once, and once hung there (the connection's task
    // waiting for the batch loop, the batch loop for the connection's task to send its acks).
    for seq in 1001..=6000 {
        let e = events(vec![resident_in(seq, NINE_AM + seq as i64)]);
        client
            .publish(
                topic(COMMUNITY_A, "gw-1", "events"),
                QoS::AtLeastOnce,
                false,
                e,
            )
            .await
            .unwrap();
    }
    let (_task, _stop) = instance(broker.port, "ingest-a", db.clone());
    wait_for_count(&db, Table::Passages, 6000).await;
    assert_eq!(residents_rolled_up(&db, COMMUNITY_A).await, 6000);
    assert_eq!(db.count(Table::Quarantine).await.unwrap(), 1);
}

#[tokio::test]
async fn with_postgresql_gone_mid_stream_nothing_is_acked_and_nothing_lost() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let Some(pg) = Pg::start() else {
        return;
    };
    let community = "330106001202";
    let db = Arc::new(Db::open(&pg.url, TZ).await.unwrap());
    let client = publisher(broker.port).await;
    let (_task, _stop) = instance(broker.port, "ingest-pg", db.clone());
    subscribed(&client, &db, community).await;
    publish_batches(&client, community, 0, 20).await;
    wait_for_count(&db, Table::Passages, 200).await;

    // PostgreSQL crashes; the gateways go on publishing; it comes back 2 s later.
    pg.stop();
    publish_batches(&client, community, 20, 40).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start_again();
    publish_batches(&client, community, 60, 10).await;
    wait_for_count(&db, Table::Passages, 700).await;
    assert_eq!(residents_rolled_up(&db, community).await, 700);
}

/// The README's backup and restore: `pg_dump -Fc`, then `pg_restore` into a new database, which
/// the service opens and reads as it was.
#[tokio::test]
async fn a_pg_dump_restores_into_a_new_database() {
    let Some(pg) = Pg::start() else {
        return;
    };
    let community = "330106001203";
    let db = Db::open(&pg.url, TZ).await.unwrap();
    let batch = events(
        (1..=25)
            .map(|i| resident_in(i, NINE_AM + i as i64))
            .collect(),
    );
    let mut b = crate::db::Batch {
        received_ms: NINE_AM,
        ..Default::default()
    };
    if let crate::ingest::decode::Decoded::Rows(rows) =
        crate::ingest::decode::decode(&topic(community, "gw-1", "events"), &batch)
    {
        b.rows = rows;
    }
    db.apply(&b).await.unwrap();
    // The day's partition and the next two days', made ahead of their first record.
    let (c, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let parts: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'passages' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        parts,
        [
            "passages_20261207",
            "passages_20261208",
            "passages_20261209",
            "passages_default"
        ]
    );
    let dump = pg.dir().join("records.dump");
    let port = pg.port().to_string();
    let run = |mut c: std::process::Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let mut c = pg.tool("pg_dump");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-Fc",
        "-f",
    ])
    .arg(&dump)
    .arg("postgres");
    run(c);
    let mut c = pg.tool("createdb");
    c.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "restored"]);
    run(c);
    let mut c = pg.tool("pg_restore");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "restored",
    ])
    .arg(&dump);
    run(c);
    let url = format!("postgres://postgres@127.0.0.1:{port}/restored");
    let restored = Db::open(&url, TZ).await.unwrap();
    assert_eq!(restored.count(Table::Passages).await.unwrap(), 25);
    assert_eq!(residents_rolled_up(&restored, community).await, 25);
}

/// The demo's embedded broker (rumqttd) keys a shared group by its name alone: with one group
/// over every channel, interleaved events and alarms were skipped. Each channel has a group of
/// its own now, and every record of either kind is stored.
#[tokio::test]
async fn on_the_embedded_broker_interleaved_events_and_alarms_are_all_stored() {
    let port = crate::broker::free_port().unwrap();
    crate::broker::start(([127, 0, 0, 1], port).into()).unwrap();
    wait_for_port(port);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("records.db").display());
    let db = Arc::new(Db::open(&url, TZ).await.unwrap());
    let client = publisher(port).await;
    let (_task, _stop) = instance(port, "ingest-embedded", db.clone());
    subscribed(&client, &db, COMMUNITY_A).await;
    for i in 1..=40u64 {
        publish_batches(&client, COMMUNITY_A, i, 1).await;
        let alarm = v1::AlarmBatch {
            alarms: vec![v1::Alarm {
                seq: 10_000 + i,
                gateway_time_ms: NINE_AM + i as i64,
                kind: v1::AlarmKind::Fever as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        client
            .publish(
                topic(COMMUNITY_A, "gw-1", "alarms"),
                QoS::AtLeastOnce,
                false,
                alarm.encode_to_vec(),
            )
            .await
            .unwrap();
    }
    wait_for_count(&db, Table::Passages, 400).await;
    wait_for_count(&db, Table::Alarms, 40).await;
}
