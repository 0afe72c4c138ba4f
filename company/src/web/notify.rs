//! Alarms that need someone now — fire, tamper, a gateway gone offline or silent — go out by
//! webhook (a JSON POST) and e-mail (SMTP), as the company's file says. Each alarm and channel
//! is a row in `notifications`: made once (however many instances look), claimed by one
//! instance at a time, sent once, retried with a doubling delay when the far end fails.
use crate::db::Db;
use anyhow::Context;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

/// `notify.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub webhook: Option<Webhook>,
    pub email: Option<Email>,
    /// What goes out: `fire`, `tamper`, `offline` (by default all three).
    #[serde(default = "all_kinds")]
    pub kinds: Vec<String>,
}

fn all_kinds() -> Vec<String> {
    KINDS.iter().map(|k| k.to_string()).collect()
}

const KINDS: [&str; 3] = ["fire", "tamper", "offline"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `https://…` (or `http://` inside the company's network).
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub server: String,
    /// By default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub port: Option<u16>,
    /// `starttls` (the default), `tls`, or `none` (a relay on the same host).
    #[serde(default = "default_security")]
    pub security: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

fn default_security() -> String {
    "starttls".into()
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let c: Config = toml::from_str(&text).with_context(|| path.display().to_string())?;
        c.check().with_context(|| path.display().to_string())?;
        Ok(c)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        for k in &self.kinds {
            anyhow::ensure!(
                KINDS.contains(&k.as_str()),
                "kinds: {k:?} is not one of {KINDS:?}"
            );
        }
        if let Some(w) = &self.webhook {
            anyhow::ensure!(
                w.url.starts_with("https://") || w.url.starts_with("http://"),
                "webhook.url: an http(s) URL"
            );
        }
        if let Some(e) = &self.email {
            anyhow::ensure!(
                ["starttls", "tls", "none"].contains(&e.security.as_str()),
                "email.security: starttls, tls or none"
            );
            anyhow::ensure!(!e.to.is_empty(), "email.to: at least one address");
            e.from
                .parse::<lettre::message::Mailbox>()
                .context("email.from")?;
            for t in &e.to {
                t.parse::<lettre::message::Mailbox>()
                    .with_context(|| format!("email.to: {t}"))?;
            }
        }
        Ok(())
    }
}

/// How far back a newly started notifier looks for what it has not sent.
const LOOK_BACK_MS: i64 = 3_600_000;
const ROUND: Duration = Duration::from_secs(5);
const MAX_ATTEMPTS: i64 = 12;

/// One thing to tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: String,
    pub kind: String,
    pub gw: String,
    pub detail: String,
}

/// Notifications given up on (tried `MAX_ATTEMPTS` times): the operator's page shows them.
pub async fn given_up(db: &Db) -> anyhow::Result<i64> {
    let rows = db
        .query(
            "SELECT count(*) FROM notifications WHERE sent_ms IS NULL AND attempts >= $1",
            vec![MAX_ATTEMPTS.into()],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.int(0)))
}

/// Finds what is new and makes its rows (once: the key is the alarm, or the gateway's status).
pub async fn find(db: &Db, cfg: &Config, now: i64) -> anyhow::Result<u64> {
    let since = now - LOOK_BACK_MS;
    let mut found = Vec::new();
    let rows = db
        .query(
            "SELECT gw, seq, at_ms, kind, detail, lane FROM alarms
             WHERE received_ms >= $1 AND kind IN ('ALARM_KIND_FIRE_MODE', 'ALARM_KIND_TAMPER')",
            vec![since.into()],
        )
        .await?;
    for r in rows {
        let kind = if r.text(3) == "ALARM_KIND_FIRE_MODE" {
            "fire"
        } else {
            "tamper"
        };
        found.push(Notice {
            key: format!("{kind}/{}/{}/{}", r.text(0), r.int(1), r.int(2)),
            kind: kind.into(),
            gw: r.text(0),
            detail: format!("{} {}", r.text(5), r.text(4)).trim().to_string(),
        });
    }
    // A gateway offline (its will, or a stop) — or silent past three of its periods.
    let rows = db
        .query(
            "SELECT gw, boot, seq, online, received_ms, period_ms FROM gateway_status
             WHERE received_ms >= $1 OR online = TRUE",
            vec![since.into()],
        )
        .await?;
    for r in rows {
        let period = if r.int(5) > 0 {
            r.int(5)
        } else {
            super::store::DEFAULT_PERIOD_MS
        };
        let (online, received) = (r.bool(3), r.int(4));
        if !online && received >= since {
            found.push(Notice {
                key: format!("offline/{}/{}/{}", r.text(0), r.int(1), r.int(2)),
                kind: "offline".into(),
                gw: r.text(0),
                detail: "offline".into(),
            });
        } else if online && now - received > 3 * period && now - received < LOOK_BACK_MS {
            found.push(Notice {
                key: format!("silent/{}/{}/{}", r.text(0), r.int(1), r.int(2)),
                kind: "offline".into(),
                gw: r.text(0),
                detail: format!("no status for {} s", (now - received) / 1000),
            });
        }
    }
    let mut made = 0;
    for n in found.iter().filter(|n| cfg.kinds.contains(&n.kind)) {
        let channels = [
            cfg.webhook.as_ref().map(|_| "webhook"),
            cfg.email.as_ref().map(|_| "email"),
        ];
        for ch in channels.into_iter().flatten() {
            made += db
                .execute(
                    "INSERT INTO notifications (key, kind, gw, detail, created_ms, sent_ms,
                        attempts, next_ms, last_error)
                     VALUES ($1, $2, $3, $4, $5, NULL, 0, $5, '') ON CONFLICT (key) DO NOTHING",
                    vec![
                        format!("{ch}:{}", n.key).into(),
                        n.kind.clone().into(),
                        n.gw.clone().into(),
                        n.detail.clone().into(),
                        now.into(),
                    ],
                )
                .await?;
        }
    }
    Ok(made)
}

/// Sends what is due as of `now`; returns how many went out. Each row's claim and outcome are
/// timed by the clock as it is then (`clock`): a round of slow servers takes minutes.
pub async fn send_due(db: &Db, cfg: &Config, now: i64) -> anyhow::Result<u64> {
    send_due_with(db, cfg, now, &|| now).await
}

async fn send_due_with(
    db: &Db,
    cfg: &Config,
    now: i64,
    clock: &(dyn Fn() -> i64 + Sync),
) -> anyhow::Result<u64> {
    let due = db
        .query(
            "SELECT key, kind, gw, detail, attempts, next_ms FROM notifications
             WHERE sent_ms IS NULL AND next_ms <= $1 AND attempts < $2
             ORDER BY created_ms LIMIT 50",
            vec![now.into(), MAX_ATTEMPTS.into()],
        )
        .await?;
    let mut sent = 0;
    for r in due {
        let (key, attempts, next) = (r.text(0), r.int(4), r.int(5));
        // Claimed for a minute (longer than a send may take: 20 s at most): another instance
        // that read the same row finds it changed.
        let claimed = db
            .execute(
                "UPDATE notifications SET next_ms = $1 WHERE key = $2 AND next_ms = $3",
                vec![(clock() + 60_000).into(), key.clone().into(), next.into()],
            )
            .await?;
        if claimed != 1 {
            continue;
        }
        let notice = Notice {
            key: key.clone(),
            kind: r.text(1),
            gw: r.text(2),
            detail: r.text(3),
        };
        let result = if key.starts_with("webhook:") {
            webhook(cfg, &notice).await
        } else {
            email(cfg, &notice).await
        };
        match result {
            Ok(()) => {
                db.execute(
                    "UPDATE notifications SET sent_ms = $1, attempts = $2 WHERE key = $3",
                    vec![clock().into(), (attempts + 1).into(), key.into()],
                )
                .await?;
                sent += 1;
            }
            Err(e) => {
                let attempts = attempts + 1;
                if crate::ingest::worth_logging(attempts as u64) || attempts == MAX_ATTEMPTS {
                    tracing::warn!("notification {key}: attempt {attempts}: {e:#}");
                }
                // 5 s, 10 s, 20 s … at most an hour.
                let delay = (5_000i64 << attempts.min(10)).min(3_600_000);
                db.execute(
                    "UPDATE notifications SET attempts = $1, next_ms = $2, last_error = $3
                     WHERE key = $4",
                    vec![
                        attempts.into(),
                        (clock() + delay).into(),
                        format!("{e:#}").into(),
                        key.into(),
                    ],
                )
                .await?;
            }
        }
    }
    Ok(sent)
}

fn what(n: &Notice) -> &'static str {
    match n.kind.as_str() {
        "fire" => "火警",
        "tamper" => "设备被拆",
        _ => "网关离线",
    }
}

async fn webhook(cfg: &Config, n: &Notice) -> anyhow::Result<()> {
    let w = cfg.webhook.as_ref().context("no webhook configured")?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth(),
        )
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut req = client.post(&w.url).json(&serde_json::json!({
        "kind": n.kind, "gateway": n.gw, "detail": n.detail, "title": what(n), "id": n.key,
    }));
    if let Some(t) = &w.token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    anyhow::ensure!(
        r.status().is_success(),
        "the webhook answered {}",
        r.status()
    );
    Ok(())
}

async fn email(cfg: &Config, n: &Notice) -> anyhow::Result<()> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let e = cfg.email.as_ref().context("no e-mail configured")?;
    let mut m = Message::builder().from(e.from.parse()?).subject(format!(
        "[gatehouse] {} {}",
        what(n),
        n.gw
    ));
    for t in &e.to {
        m = m.to(t.parse()?);
    }
    let message = m.body(format!(
        "{}\n网关: {}\n详情: {}\n编号: {}\n",
        what(n),
        n.gw,
        n.detail,
        n.key
    ))?;
    let mut t = match e.security.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&e.server)?,
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.server)?,
        _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.server),
    }
    .port(e.port.unwrap_or(match e.security.as_str() {
        "tls" => 465,
        "none" => 25,
        _ => 587,
    }))
    .timeout(Some(Duration::from_secs(20)));
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        t = t.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            p.clone(),
        ));
    }
    t.build().send(message).await?;
    Ok(())
}

/// Runs until `stop`: every few seconds, finds and sends.
pub async fn run(db: Db, cfg: Config, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u64;
    loop {
        let now = super::auth::now_ms();
        // A failure to find new ones never holds back sending those already found.
        let found = find(&db, &cfg, now).await;
        let sent = send_due_with(&db, &cfg, now, &super::auth::now_ms).await;
        if let Err(e) = found.and(sent) {
            failures += 1;
            if crate::ingest::worth_logging(failures) {
                tracing::warn!("notifications: {e:#} ({failures} rounds failed so far)");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
