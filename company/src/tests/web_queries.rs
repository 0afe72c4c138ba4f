//! The web pages' own queries (`web/store.rs`, written once for both databases) on SQLite and
//! on a real PostgreSQL: sessions, scope look-ups, totals, the fleet, acknowledgements from
//! either side, orders and their results.
use super::conformance::put;
use super::pg::Pg;
use super::web::{seed, topic_of, A, B, C, TZ};
use super::*;
use crate::db::Db;
use crate::web::auth;
use crate::web::who::Role;

/// The pages' queries, on SQLite and on a real PostgreSQL.
#[tokio::test]
async fn the_pages_queries_agree_on_both_databases() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::open(&format!("sqlite:{}", dir.path().join("r.db").display()), TZ)
        .await
        .unwrap();
    queries(&sqlite).await;
    if let Some(pg) = Pg::start() {
        queries(&Db::open(&pg.url, TZ).await.unwrap()).await;
    }
}

async fn queries(db: &Db) {
    use crate::web::store;
    let now = auth::now_ms();
    seed(db, now).await;
    crate::web::users::add(db, "u", Role::Street, A.1, "a long password 1")
        .await
        .unwrap();
    assert!(crate::web::users::add(db, "u", Role::Street, A.1, "x")
        .await
        .is_err());
    let hash = auth::token_hash("t");
    store::open_session(db, &hash, "u", "c", now, now + 1000)
        .await
        .unwrap();
    let who = store::session(db, &hash, now).await.unwrap().unwrap();
    assert_eq!(
        (who.role, who.scope.as_str(), who.csrf.as_str()),
        (Role::Street, A.1, "c")
    );
    assert!(
        store::session(db, &hash, now + 2000)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    store::set_disabled(db, "u", true).await.unwrap();
    assert!(
        store::session(db, &hash, now).await.unwrap().is_none(),
        "disabled"
    );
    assert_eq!(
        store::community_parents(db, B.0).await.unwrap(),
        Some((B.1.to_string(), B.2.to_string()))
    );
    assert_eq!(
        store::street_district(db, C.1).await.unwrap().as_deref(),
        Some(C.2)
    );
    let span = (now - 3_600_000 * 2, now + 3_600_000);
    let t = store::totals(db, Role::Street, A.1, span).await.unwrap();
    assert_eq!((t.entries, t.communities), (10, 2), "{t:?}");
    let t = store::totals(db, Role::Community, A.0, span).await.unwrap();
    assert_eq!(t.entries, 5);
    let fleet = store::fleet(db, 0).await.unwrap();
    assert_eq!(fleet.len(), 4);
    let a = fleet.iter().find(|f| f.community == A.0).unwrap();
    let st = a.status.as_ref().unwrap();
    assert_eq!(
        (st.registry_version, st.outbox_depth, st.period_ms),
        (42, 7, 60_000)
    );
    assert_eq!(a.open_alarms, 1);
    let alarms = store::alarms(db, 0, 10).await.unwrap();
    let first = &alarms[0];
    assert!(store::acknowledge(
        db,
        (&first.gw, first.seq, first.at_ms),
        "op",
        "company",
        now
    )
    .await
    .unwrap());
    assert!(!store::acknowledge(
        db,
        (&first.gw, first.seq, first.at_ms),
        "op2",
        "gateway",
        now
    )
    .await
    .unwrap());
    assert!(
        !store::acknowledge(db, ("no/such", 1, 1), "op", "company", now)
            .await
            .unwrap()
    );
    let open: i64 = store::fleet(db, 0)
        .await
        .unwrap()
        .iter()
        .map(|f| f.open_alarms)
        .sum();
    assert_eq!(open, 3);
    // Acknowledged at the gate (the guard's console's record, up with the alarms): shown so
    // here; the gate acknowledging what the company acknowledged first changes nothing, nor
    // the company acknowledging what the gate did.
    let b = alarms.iter().find(|a| a.gw != first.gw).unwrap();
    let gate_ack = |a: &crate::web::store::AlarmItem| {
        v1::AlarmBatch {
            acks: vec![v1::AlarmAck {
                alarm_seq: a.seq as u64,
                alarm_time_ms: a.at_ms,
                by: "guard-1".into(),
                acked_at_ms: now,
            }],
            ..Default::default()
        }
        .encode_to_vec()
    };
    put(db, &format!("gh/v1/{}/alarms", b.gw), &gate_ack(b), now).await;
    put(
        db,
        &format!("gh/v1/{}/alarms", first.gw),
        &gate_ack(first),
        now,
    )
    .await;
    let acked: Vec<_> = store::alarms(db, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|a| a.acked.map(|k| (a.gw, k.0, k.2)))
        .collect();
    assert_eq!(acked.len(), 2, "{acked:?}");
    assert!(
        acked.contains(&(b.gw.clone(), "guard-1".into(), "gateway".into())),
        "{acked:?}"
    );
    assert!(
        acked.contains(&(first.gw.clone(), "op".into(), "company".into())),
        "{acked:?}"
    );
    assert!(
        !store::acknowledge(db, (&b.gw, b.seq, b.at_ms), "op", "company", now)
            .await
            .unwrap()
    );
    // An order seen on a gateway's `cmd` topic and its result from `cmd/result`, in either
    // order.
    let order = |id: &str| {
        let c = v1::Command {
            id: id.into(),
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
            payload: Some(v1::command::Payload::SetMode(v1::SetMode {
                mode: "lockdown".into(),
            })),
            ..Default::default()
        };
        v1::SignedCommand {
            command: c.encode_to_vec(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let result = |id: &str, applied: bool| {
        v1::CommandResult {
            command_id: id.into(),
            applied,
            refused: if applied { "" } else { "fire_mode" }.into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let (own, answers) = (
        topic_of(A, "gw-1", "cmd"),
        topic_of(A, "gw-1", "cmd/result"),
    );
    // An order for the whole street (o-4), answered by two of its gateways; below, a forged
    // copy of o-1 under the same id (a gateway publishing on its own `cmd`) rewrites nothing.
    let street = format!("gh/v1/3301/{}/{}/_all/cmd", A.2, A.1);
    for (topic, payload) in [
        (&own, order("o-1")),
        (&answers, result("o-1", true)),
        (&answers, result("o-2", false)),
        (&own, order("o-2")),
        (&own, order("o-3")),
        (&street, order("o-4")),
        (&answers, result("o-4", true)),
        (&topic_of(B, "gw-1", "cmd/result"), result("o-4", false)),
    ] {
        put(db, topic, &payload, now).await;
    }
    let forged = v1::SignedCommand {
        command: v1::Command {
            id: "o-1".into(),
            issued_at_ms: 1,
            payload: Some(v1::command::Payload::Ping(v1::Ping {})),
            ..Default::default()
        }
        .encode_to_vec(),
        ..Default::default()
    };
    put(
        db,
        &topic_of(A, "gw-1", "cmd"),
        &forged.encode_to_vec(),
        now,
    )
    .await;
    let mut orders = store::orders(db, 10).await.unwrap();
    orders.sort_by(|a, b| a.command_id.cmp(&b.command_id));
    let seen: Vec<_> = orders
        .iter()
        .map(|o| {
            (
                o.command_id.as_str(),
                o.kind.as_str(),
                o.applied,
                o.refused,
                o.why.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("o-1", "set_mode lockdown", 1, 0, ""),
            ("o-2", "set_mode lockdown", 0, 1, "fire_mode"),
            ("o-3", "set_mode lockdown", 0, 0, ""),
            ("o-4", "set_mode lockdown", 1, 1, "fire_mode"),
        ]
    );
    assert_eq!(orders[3].target, format!("3301/{}/{}/_all", A.2, A.1));
    assert_eq!(orders[0].issued_ms, now, "the forged copy changed nothing");
    // No gateway `_all` was made of a community's order, nor of the street's.
    put(
        db,
        &format!("gh/v1/3301/{}/{}/{}/_all/cmd", A.2, A.1, A.0),
        &order("o-5"),
        now,
    )
    .await;
    assert!(store::fleet(db, 0)
        .await
        .unwrap()
        .iter()
        .all(|f| !f.gw.ends_with("_all")));
}
