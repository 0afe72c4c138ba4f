//! Alarms that need someone now go out once by webhook and by e-mail, to a webhook and an SMTP
//! server of the test's own; a failing webhook is tried again later, never twice for one alarm.
use super::conformance::put;
use super::*;
use crate::db::Db;
use crate::web::notify::{self, Config, Email, Webhook};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const PLACE: &str = "gh/v1/3301/330106/330106001/330106001001";

/// A webhook that fails its first `fail` requests, and keeps the bodies of the rest.
async fn webhook(fail: usize) -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                let n = {
                    let mut c = c.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n <= fail {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().unwrap().push(body.0);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, got)
}

/// The least SMTP server: takes every message, keeps its recipients and data.
async fn smtp() -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let g = g.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 test ESMTP\r\n").await;
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 test\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        rcpt.push(line[8..].trim().to_string());
                        b"250 ok\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = w.write_all(b"354 go on\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        g.lock().unwrap().push((std::mem::take(&mut rcpt), data));
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, got)
}

fn alarm(seq: u64, kind: v1::AlarmKind, at: i64) -> Vec<u8> {
    v1::AlarmBatch {
        alarms: vec![v1::Alarm {
            seq,
            gateway_time_ms: at,
            kind: kind as i32,
            lane: "east".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// On SQLite and on a real PostgreSQL.
#[tokio::test]
async fn fire_tamper_and_offline_go_out_once_by_webhook_and_email() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite:{}", dir.path().join("r.db").display()), TZ)
        .await
        .unwrap();
    once_each(&db).await;
    if let Some(pg) = super::pg::Pg::start() {
        once_each(&Db::open(&pg.url, TZ).await.unwrap()).await;
    }
}

async fn once_each(db: &Db) {
    let now = crate::web::auth::now_ms();
    let t = |gw: &str, ch: &str| format!("{PLACE}/{gw}/{ch}");
    put(
        db,
        &t("gw-1", "alarms"),
        &alarm(1, v1::AlarmKind::FireMode, now),
        now,
    )
    .await;
    put(
        db,
        &t("gw-1", "alarms"),
        &alarm(2, v1::AlarmKind::Tamper, now),
        now,
    )
    .await;
    // A fever is for the pages, not for a phone at night.
    put(
        db,
        &t("gw-1", "alarms"),
        &alarm(3, v1::AlarmKind::Fever, now),
        now,
    )
    .await;
    let offline = v1::Status {
        state: v1::GatewayState::Offline as i32,
        boot: 1,
        seq: 0x1_FFFF_FFFF,
        ..Default::default()
    };
    put(db, &t("gw-2", "status"), &offline.encode_to_vec(), now).await;

    let (hook_port, hooks) = webhook(1).await;
    let (smtp_port, mails) = smtp().await;
    let cfg = Config {
        webhook: Some(Webhook {
            url: format!("http://127.0.0.1:{hook_port}/hook"),
            token: Some("secret".into()),
        }),
        email: Some(Email {
            server: "127.0.0.1".into(),
            port: Some(smtp_port),
            security: "none".into(),
            username: None,
            password: None,
            from: "gatehouse@example.com".into(),
            to: vec!["duty@example.com".into()],
        }),
        kinds: vec!["fire".into(), "tamper".into(), "offline".into()],
    };
    cfg.check().unwrap();
    assert_eq!(
        notify::find(db, &cfg, now).await.unwrap(),
        6,
        "3 alarms × 2 channels"
    );
    assert_eq!(notify::find(db, &cfg, now).await.unwrap(), 0, "made once");
    // The webhook's first answer is a 500: that one waits for its retry.
    assert_eq!(notify::send_due(db, &cfg, now).await.unwrap(), 5);
    assert_eq!(
        notify::send_due(db, &cfg, now + 1000).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(notify::send_due(db, &cfg, now + 11_000).await.unwrap(), 1);
    assert_eq!(
        notify::send_due(db, &cfg, now + 3_600_000).await.unwrap(),
        0,
        "sent once"
    );
    let hooks = hooks.lock().unwrap().clone();
    let mut kinds: Vec<_> = hooks
        .iter()
        .map(|h| h["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["fire", "offline", "tamper"]);
    assert!(
        hooks
            .iter()
            .all(|h| h["gateway"].as_str().unwrap().contains("330106001001/gw-")),
        "{hooks:?}"
    );
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 3);
    assert!(mails
        .iter()
        .all(|(to, data)| to == &["<duty@example.com>"] && data.contains("Subject:")));
}

#[test]
fn a_notification_file_with_a_mistake_is_refused_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notify.toml");
    for (text, key) in [
        ("kinds = [\"fever\"]", "kinds"),
        ("[webhook]\nurl = \"ftp://x\"", "webhook.url"),
        (
            "[email]\nserver = \"s\"\nfrom = \"a@b\"\nto = []",
            "email.to",
        ),
        (
            "[email]\nserver = \"s\"\nsecurity = \"ssl\"\nfrom = \"a@b\"\nto = [\"c@d\"]",
            "email.security",
        ),
        ("[webhok]\nurl = \"https://x\"", "webhok"),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(e.contains(key), "{text}: {e}");
    }
}
