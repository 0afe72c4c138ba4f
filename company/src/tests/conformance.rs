//! One suite, both databases: what the ingest stores, what it refuses to store twice, and what
//! the forms read back.
use super::pg::Pg;
use super::*;
use crate::db::{Applied, Batch, Db, Quarantined, Retention, Scope, Table};
use crate::forms::{self, export, Cell, Kind};
use crate::ingest::decode::{decode, Decoded};
use chrono::NaiveDate;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 7).unwrap()
}

/// Stores one message as the ingest would, received at `received_ms`.
pub(super) async fn put(db: &Db, topic: &str, payload: &[u8], received_ms: i64) -> Applied {
    let mut b = Batch {
        received_ms,
        ..Default::default()
    };
    match decode(topic, payload) {
        Decoded::Rows(rows) => b.rows = rows,
        Decoded::Quarantine(error) => b.quarantine.push(Quarantined {
            topic: topic.into(),
            error,
            payload: payload.to_vec(),
        }),
        Decoded::Skipped => {}
    }
    db.apply(&b).await.unwrap()
}

/// A form of the test day, as of two days later.
async fn form_of(db: &Db, kind: Kind, scope: &Scope) -> forms::Form {
    forms::build(db, kind, scope, TZ, (day(), day()), NINE_AM + 48 * HOUR)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_and_postgresql_pass_the_same_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.db");
    let db = Db::open(&format!("sqlite:{}", path.display()), TZ)
        .await
        .unwrap();
    suite(&db, "sqlite").await;
    rollback(db, &format!("sqlite:{}", path.display())).await;
    if let Some(pg) = Pg::start() {
        let db = Db::open(&pg.url, TZ).await.unwrap();
        suite(&db, "postgres").await;
        rollback(db, &pg.url).await;
    }
}

async fn suite(db: &Db, name: &str) {
    eprintln!("conformance on {name}");
    a_redelivered_batch_changes_nothing(db).await;
    garbage_is_quarantined_and_the_rest_stored(db).await;
    the_newest_status_and_twin_win(db).await;
    records_are_keyed_by_the_full_path(db).await;
    the_entry_register_shows_a_withheld_records_gap_exactly(db).await;
    the_temperature_register_lists_every_fever(db).await;
    a_streets_summary_has_a_row_per_community(db).await;
    the_days_lists(db).await;
    retention_and_forgetting(db).await;
}

async fn a_redelivered_batch_changes_nothing(db: &Db) {
    let t = topic("330106001101", "gw-1", "events");
    let batch = events(vec![
        resident_in(1, NINE_AM + 60_000),
        resident_in(2, NINE_AM + 120_000),
        passage(
            3,
            NINE_AM + 180_000,
            v1::SubjectKind::Unknown,
            "",
            "",
            false,
            "unknown_subject",
        ),
    ]);
    let first = put(db, &t, &batch, NINE_AM + HOUR).await;
    // Three passages and their three temperatures.
    assert_eq!((first.stored, first.duplicates), (6, 0));
    let scope = Scope::Community("330106001101".into());
    let before = db.rollups(&scope, NINE_AM, NINE_AM + HOUR).await.unwrap();
    let again = put(db, &t, &batch, NINE_AM + HOUR).await;
    assert_eq!((again.stored, again.duplicates), (0, 6));
    assert_eq!(
        db.rollups(&scope, NINE_AM, NINE_AM + HOUR).await.unwrap(),
        before
    );
    let c = before[0].counts;
    use crate::ingest::rollup::col;
    assert_eq!(
        (c[col("residents_in")], c[col("denied")], c[col("screened")]),
        (2, 1, 3)
    );
}

async fn garbage_is_quarantined_and_the_rest_stored(db: &Db) {
    let before = db.count(Table::Quarantine).await.unwrap();
    let a = put(
        db,
        &topic("330106001102", "gw-1", "events"),
        b"\x0a\xff\xff",
        NINE_AM,
    )
    .await;
    assert_eq!(a.quarantined, 1);
    let a = put(
        db,
        &topic("330106001102", "gw-1", "events"),
        &events(vec![resident_in(1, NINE_AM)]),
        NINE_AM,
    )
    .await;
    assert_eq!(a.stored, 2);
    assert_eq!(db.count(Table::Quarantine).await.unwrap(), before + 1);
    // Redelivered, the same garbage is kept once.
    let a = put(
        db,
        &topic("330106001102", "gw-1", "events"),
        b"\x0a\xff\xff",
        NINE_AM,
    )
    .await;
    assert_eq!(a.quarantined, 0);
    assert_eq!(db.count(Table::Quarantine).await.unwrap(), before + 1);
    // A temperature the gateway could not use (NaN) is no temperature; the passage is kept.
    let mut nan = passage(
        2,
        NINE_AM,
        v1::SubjectKind::Resident,
        "R1",
        "H1",
        false,
        "invalid_reading",
    );
    if let Some(v1::event::Body::Passage(p)) = &mut nan.body {
        p.temperature_c = Some(f32::NAN);
    }
    let a = put(
        db,
        &topic("330106001102", "gw-1", "events"),
        &events(vec![nan]),
        NINE_AM,
    )
    .await;
    assert_eq!((a.stored, a.quarantined), (1, 0));
    // Statistics from a gateway before the batch's seq (0): two batches of one hour are both
    // kept, a redelivered one once.
    let t = topic("330106001102", "gw-1", "stats");
    let before = db.count(Table::Stats).await.unwrap();
    for b in [
        stats(0, NINE_AM, 5, &[]),
        stats(0, NINE_AM, 2, &[]),
        stats(0, NINE_AM, 5, &[]),
    ] {
        put(db, &t, &b, NINE_AM).await;
    }
    assert_eq!(db.count(Table::Stats).await.unwrap(), before + 2);
}

async fn the_newest_status_and_twin_win(db: &Db) {
    let t = topic("330106001103", "gw-1", "status");
    let gw = "3301/330106/330106001/330106001103/gw-1";
    let status = |boot: u64, seq: u64, state: v1::GatewayState| {
        v1::Status {
            gateway: "gw-1".into(),
            state: state as i32,
            boot,
            seq,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let conn = |c: u64, n: u64| (c << 32) | n;
    put(
        db,
        &t,
        &status(1, conn(1, 5), v1::GatewayState::Online),
        NINE_AM,
    )
    .await;
    // The will of boot 1's first connection: last of that connection.
    let will = status(1, conn(1, 0xFFFF_FFFF), v1::GatewayState::Offline);
    put(db, &t, &will, NINE_AM).await;
    // A status of that connection arriving late changes nothing.
    put(
        db,
        &t,
        &status(1, conn(1, 7), v1::GatewayState::Online),
        NINE_AM,
    )
    .await;
    assert!(!db.status(gw).await.unwrap().unwrap().online);
    // The next connection's "online" (after a cut link) is newer than the will.
    put(
        db,
        &t,
        &status(1, conn(2, 1), v1::GatewayState::Online),
        NINE_AM,
    )
    .await;
    assert!(db.status(gw).await.unwrap().unwrap().online);
    put(
        db,
        &t,
        &status(2, conn(1, 1), v1::GatewayState::Online),
        NINE_AM,
    )
    .await;
    let s = db.status(gw).await.unwrap().unwrap();
    assert!(
        s.online && s.boot == 2 && s.seq == conn(1, 1) as i64,
        "{s:?}"
    );

    let twin = |at: i64, arm: &str| {
        v1::DeviceTwin {
            device: "barrier-1".into(),
            arm: arm.into(),
            gateway_time_ms: at,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let tt = topic("330106001103", "gw-1", "twin/barrier-1");
    let twins = db.count(Table::Twins).await.unwrap();
    put(db, &tt, &twin(NINE_AM + 10, "up"), NINE_AM).await;
    put(db, &tt, &twin(NINE_AM + 5, "down"), NINE_AM).await;
    assert_eq!(db.count(Table::Twins).await.unwrap(), twins + 1);
}

async fn records_are_keyed_by_the_full_path(db: &Db) {
    // The same gateway id and seq in two communities are two records.
    for community in ["330106001104", "330106001105"] {
        let a = put(
            db,
            &topic(community, "gw-1", "events"),
            &events(vec![resident_in(1, NINE_AM)]),
            NINE_AM,
        )
        .await;
        assert_eq!(a.stored, 2, "{community}");
    }
}

async fn the_entry_register_shows_a_withheld_records_gap_exactly(db: &Db) {
    let community = "330106001106";
    let t = topic(community, "gw-1", "events");
    // The gateway decided 12 passages between 09:00 and 10:00 (10 residents in, 2 denied) and
    // says so in its statistics; 3 of the residents' records are still in its outbox.
    let mut all: Vec<v1::Event> = (1..=10)
        .map(|i| resident_in(i, NINE_AM + i as i64 * 1000))
        .collect();
    all.push(passage(
        11,
        NINE_AM + 11_000,
        v1::SubjectKind::Unknown,
        "",
        "",
        false,
        "unknown_subject",
    ));
    all.push(passage(
        12,
        NINE_AM + 12_000,
        v1::SubjectKind::Resident,
        "R9",
        "H9",
        false,
        "fever",
    ));
    let withheld: Vec<v1::Event> = all.drain(2..5).collect();
    put(db, &t, &events(all), NINE_AM + HOUR).await;
    put(
        db,
        &topic(community, "gw-1", "stats"),
        &stats(1, NINE_AM, 10, &[("unknown_subject", 1), ("fever", 1)]),
        NINE_AM + HOUR,
    )
    .await;
    let form = form_of(db, Kind::Entry, &Scope::Community(community.into())).await;
    let gap = form.headers.iter().position(|h| *h == "差额").unwrap();
    let total = form.rows.last().unwrap();
    assert_eq!(total[gap], Cell::Int(3), "{form:#?}");
    assert_eq!(
        total[form.headers.iter().position(|h| *h == "居民进").unwrap()],
        Cell::Int(7)
    );
    let reasons = form.headers.iter().position(|h| *h == "拒绝原因").unwrap();
    assert!(
        matches!(&form.rows[0][reasons], Cell::Text(s) if s.contains("发热 1")),
        "{form:#?}"
    );

    // The outbox empties the next morning: the gap closes, and the day is marked amended.
    put(db, &t, &events(withheld), NINE_AM + 24 * HOUR).await;
    let form = form_of(db, Kind::Entry, &Scope::Community(community.into())).await;
    let total = form.rows.last().unwrap();
    assert_eq!(total[gap], Cell::Int(0), "{form:#?}");
    let amended = form.headers.iter().position(|h| *h == "补录").unwrap();
    assert_eq!(total[amended], Cell::Int(3));
    assert!(form.notes.iter().any(|n| n.contains("补录")));
}

async fn the_temperature_register_lists_every_fever(db: &Db) {
    let community = "330106001107";
    let mut fever = passage(
        1,
        NINE_AM + 5_000,
        v1::SubjectKind::Resident,
        "R000012",
        "H003",
        false,
        "fever",
    );
    if let Some(v1::event::Body::Passage(p)) = &mut fever.body {
        p.temperature_c = Some(38.2);
        p.fever = true;
        p.device_flag_disagrees = true;
    }
    let lone = v1::Event {
        seq: 2,
        gateway_time_ms: NINE_AM + 6_000,
        lane: "east".into(),
        device: "thermal-1".into(),
        body: Some(v1::event::Body::Reading(v1::Reading {
            temperature_c: 37.9,
            fever_threshold_c: Some(37.3),
            fever: true,
            ..Default::default()
        })),
        ..Default::default()
    };
    put(
        db,
        &topic(community, "gw-1", "events"),
        &events(vec![fever, lone, resident_in(3, NINE_AM)]),
        NINE_AM,
    )
    .await;
    let form = form_of(db, Kind::Temperature, &Scope::Community(community.into())).await;
    assert_eq!(form.rows.len(), 2, "{form:#?}");
    assert_eq!(form.rows[0][0], Cell::text("2026-12-07 09:00:05"));
    assert_eq!(form.rows[0][3], Cell::Num(38.2));
    assert_eq!(form.rows[0][4], Cell::Num(37.3));
    assert_eq!(form.rows[0][7], Cell::text("H003"));
    assert_eq!(form.rows[0][8], Cell::text("不一致"));
    assert_eq!(form.rows[1][3], Cell::Num(37.9));
    assert!(
        form.notes
            .iter()
            .any(|n| n.contains("测温 3 人次，发热 2 人次")),
        "{:?}",
        form.notes
    );
}

async fn a_streets_summary_has_a_row_per_community(db: &Db) {
    let form = form_of(db, Kind::Summary, &Scope::Street(STREET.into())).await;
    let names: Vec<_> = form.rows.iter().map(|r| r[0].clone()).collect();
    for c in ["330106001101", "330106001106", "330106001107"] {
        assert!(names.contains(&Cell::text(c)), "{names:?}");
    }
    assert_eq!(names.last(), Some(&Cell::text("合计")));
    // The district's summary has one row per street: this one.
    let form = form_of(db, Kind::Summary, &Scope::District("330106".into())).await;
    assert_eq!(form.rows.len(), 2, "{form:#?}");
    assert_eq!(form.rows[0][0], Cell::text(STREET));

    // The exports: XLSX read back, CSV with its byte-order mark; device text defused.
    let mut form = form;
    form.rows[0][0] = Cell::text("=HYPERLINK(\"http://x\")");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.xlsx");
    export::write(&form, export::Format::Xlsx, &path).unwrap();
    use calamine::{Reader, Xlsx};
    let mut book: Xlsx<_> = calamine::open_workbook(&path).unwrap();
    let sheet = book.worksheet_range("出入及体温汇总").unwrap();
    let cell = |r: u32, c: u32| {
        sheet
            .get_value((r, c))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(cell(0, 0), "出入及体温汇总");
    assert_eq!(cell(3, 0), "街道");
    assert_eq!(cell(4, 0), "'=HYPERLINK(\"http://x\")");
    assert_eq!(cell(5, 0), "合计");
    let csv = export::csv(&form);
    assert!(csv.starts_with("\u{feff}出入及体温汇总".as_bytes()));
    assert!(String::from_utf8(csv)
        .unwrap()
        .contains("\"'=HYPERLINK(\"\"http://x\"\")\""));
}

async fn retention_and_forgetting(db: &Db) {
    let scope = Scope::Community("330106001101".into());
    let rollups = db.rollups(&scope, NINE_AM, NINE_AM + HOUR).await.unwrap();
    let before = db.count(Table::Temperatures).await.unwrap();
    let n = db.forget_temperatures(Some("R000012"), None).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(db.count(Table::Temperatures).await.unwrap(), before - 1);
    // Three days on, with passages kept a day: the passages go, the forms' rollups stay.
    db.expire(
        Retention {
            passages_days: 1,
            temperatures_days: 1,
        },
        NINE_AM + 72 * HOUR,
    )
    .await
    .unwrap();
    assert_eq!(db.count(Table::Passages).await.unwrap(), 0);
    assert_eq!(db.count(Table::Temperatures).await.unwrap(), 0);
    assert_eq!(
        db.rollups(&scope, NINE_AM, NINE_AM + HOUR).await.unwrap(),
        rollups
    );
}

/// The newest migration rolls back one step, and comes back at the next start.
async fn rollback(db: Db, url: &str) {
    assert_eq!(db.rollback_one().await.unwrap(), Some(2));
    assert!(db
        .query("SELECT count(*) FROM users", vec![])
        .await
        .is_err());
    assert!(db.count(Table::Passages).await.is_ok());
    assert_eq!(db.rollback_one().await.unwrap(), Some(1));
    assert!(db.count(Table::Passages).await.is_err());
    drop(db);
    let db = Db::open(url, TZ).await.unwrap();
    assert_eq!(db.count(Table::Passages).await.unwrap(), 0);
}

/// A passage edited: a vehicle's, a way out, a mode.
fn edited(mut e: v1::Event, f: impl FnOnce(&mut v1::PassageDecision)) -> v1::Event {
    if let Some(v1::event::Body::Passage(p)) = &mut e.body {
        f(p);
    }
    e
}

async fn the_days_lists(db: &Db) {
    let community = "330106001108";
    let scope = Scope::Community(community.into());
    let t = topic(community, "gw-1", "events");
    let visitor = |seq, pass: &str, host: &str| {
        passage(
            seq,
            NINE_AM + seq as i64 * 60_000,
            v1::SubjectKind::Visitor,
            pass,
            host,
            true,
            "ok",
        )
    };
    let car = |seq: u64, at: i64, kind, id: &str, household: &str, allow: bool, out: bool| {
        edited(
            passage(
                seq,
                at,
                kind,
                id,
                household,
                allow,
                if allow { "ok" } else { "unknown_subject" },
            ),
            |p| {
                p.medium = v1::Medium::Plate as i32;
                p.temperature_c = None;
                if out {
                    p.direction = v1::Direction::Out as i32;
                }
            },
        )
    };
    let lockdown =
        |seq: u64, person: &str, household: &str, allow: bool, out: bool, reason: &str| {
            edited(
                passage(
                    seq,
                    NINE_AM + seq as i64 * 60_000,
                    v1::SubjectKind::Resident,
                    person,
                    household,
                    allow,
                    reason,
                ),
                |p| {
                    p.mode = "lockdown".into();
                    if out {
                        p.direction = v1::Direction::Out as i32;
                    }
                },
            )
        };
    put(
        db,
        &t,
        &events(vec![
            visitor(1, "P1", "H7"),
            visitor(2, "P1", "H7"),
            visitor(3, "P2", "H8"),
            car(
                4,
                NINE_AM,
                v1::SubjectKind::Plate,
                "粤B12345",
                "H1",
                true,
                false,
            ),
            car(
                5,
                NINE_AM + 90 * 60_000,
                v1::SubjectKind::Plate,
                "粤B12345",
                "H1",
                true,
                true,
            ),
            car(
                6,
                NINE_AM + 60_000,
                v1::SubjectKind::Visitor,
                "P3",
                "H7",
                true,
                false,
            ),
            car(
                7,
                NINE_AM + 120_000,
                v1::SubjectKind::Unknown,
                "",
                "",
                false,
                false,
            ),
            lockdown(8, "R1", "H1", true, true, "ok"),
            lockdown(9, "R1", "H1", true, false, "ok"),
            lockdown(10, "R2", "H2", true, true, "ok"),
            lockdown(11, "R3", "H2", false, true, "quota_exceeded"),
        ]),
        NINE_AM,
    )
    .await;
    let alarm = |seq: u64, at: i64, kind: v1::AlarmKind, device: &str, subject: &str| v1::Alarm {
        seq,
        gateway_time_ms: at,
        kind: kind as i32,
        device: device.into(),
        subject_id: subject.into(),
        detail: "out over 4 h".into(),
        ..Default::default()
    };
    let alarms = v1::AlarmBatch {
        alarms: vec![
            alarm(
                20,
                NINE_AM + 3 * HOUR,
                v1::AlarmKind::OutingOverdue,
                "",
                "R2",
            ),
            alarm(21, NINE_AM, v1::AlarmKind::DeviceOffline, "barrier-1", ""),
            alarm(
                22,
                NINE_AM + 30 * 60_000,
                v1::AlarmKind::DeviceOnline,
                "barrier-1",
                "",
            ),
            // Still offline at the end of the day (15 hours on).
            alarm(
                23,
                NINE_AM + HOUR,
                v1::AlarmKind::DeviceOffline,
                "turnstile-1",
                "",
            ),
        ],
        ..Default::default()
    };
    put(
        db,
        &topic(community, "gw-1", "alarms"),
        &alarms.encode_to_vec(),
        NINE_AM,
    )
    .await;

    let f = form_of(db, Kind::Visitor, &scope).await;
    let rows: Vec<_> = f
        .rows
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(
        rows,
        [
            (Cell::text("H7"), Cell::text("P1"), Cell::Int(2)),
            (Cell::text("H7"), Cell::text("P3"), Cell::Int(1)),
            (Cell::text("H8"), Cell::text("P2"), Cell::Int(1)),
            (Cell::text("合计"), Cell::Empty, Cell::Int(4)),
        ]
    );

    let f = form_of(db, Kind::Vehicle, &scope).await;
    assert_eq!(f.rows.len(), 4, "{f:#?}");
    let out = f.rows.iter().find(|r| r[2] == Cell::text("出")).unwrap();
    assert_eq!(
        (out[3].clone(), out[4].clone(), out[7].clone()),
        (Cell::text("粤B12345"), Cell::text("居民"), Cell::Int(90))
    );
    assert!(f.rows.iter().any(|r| r[3] == Cell::text("未登记车辆")
        && matches!(&r[6], Cell::Text(s) if s.starts_with("拒绝"))));
    assert!(f
        .rows
        .iter()
        .any(|r| r[3] == Cell::text("P3") && r[4] == Cell::text("访客")));

    let f = form_of(db, Kind::Outings, &scope).await;
    let h2 = f.rows.iter().find(|r| r[0] == Cell::text("H2")).unwrap();
    // H2: one outing, no return, one refused over its quota, one overdue.
    assert_eq!(
        h2[1..],
        [Cell::Int(1), Cell::Int(0), Cell::Int(1), Cell::Int(1)]
    );
    let h1 = f.rows.iter().find(|r| r[0] == Cell::text("H1")).unwrap();
    assert_eq!(
        h1[1..],
        [Cell::Int(1), Cell::Int(1), Cell::Int(0), Cell::Int(0)]
    );

    let f = form_of(db, Kind::Health, &scope).await;
    let device = |d: &str| {
        f.rows
            .iter()
            .find(|r| r[1] == Cell::text(d))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        device("barrier-1")[2..],
        [Cell::Int(1), Cell::Int(30), Cell::text("在线")]
    );
    assert_eq!(
        device("turnstile-1")[2..],
        [Cell::Int(1), Cell::Int(14 * 60), Cell::text("离线")]
    );
}
