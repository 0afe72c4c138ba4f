//! `gatehouse-company user …` (who may log in, at which level) and `gatehouse-company serve`.
use super::auth;
use super::labels::Labels;
use super::who::Role;
use super::{notify, store, App};
use crate::records_cli::DbArgs;
use anyhow::Context;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub action: UserAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserAction {
    /// Add a user: a community worker (--scope the community's code), a street officer (the
    /// street's), a district's (the district's) or the company's operator (no scope). The
    /// password is read from stdin with --password-stdin, or made and printed once.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long, default_value = "")]
        scope: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: their sessions end, their logins are refused.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// A new password (read from stdin with --password-stdin, or made and printed); every
    /// session of the user ends.
    Reset {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users.
    List,
    /// The newest entries of the audit trail (logins, exports, acknowledgements).
    Audit {
        #[arg(long, default_value_t = 50)]
        last: i64,
    },
}

/// A password of 16 letters and digits (about 95 bits), without look-alikes.
pub fn new_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((new_password(), true));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(
        p.chars().count() >= 10,
        "a password of at least 10 characters"
    );
    Ok((p, false))
}

fn check_scope(role: Role, scope: &str) -> anyhow::Result<()> {
    match role {
        Role::Company => anyhow::ensure!(scope.is_empty(), "the company's users have no --scope"),
        _ => anyhow::ensure!(
            !scope.is_empty() && scope.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "--scope: the {}'s code (letters, digits)",
            role.as_str()
        ),
    }
    Ok(())
}

/// Adds a user (the demo's and the tests' way too).
pub async fn add(
    db: &crate::db::Db,
    name: &str,
    role: Role,
    scope: &str,
    password: &str,
) -> anyhow::Result<()> {
    check_scope(role, scope)?;
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control),
        "a user name of 1 to 64 printable characters"
    );
    let hash = auth::hash_password(password)?;
    anyhow::ensure!(
        store::add_user(db, name, role, scope, &hash, auth::now_ms()).await?,
        "user {name} exists already"
    );
    Ok(())
}

pub async fn run(a: UserArgs) -> anyhow::Result<()> {
    let db = a.db.open().await?;
    let found = |ok: bool, name: &str| {
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("no user {name}"))
        }
    };
    match a.action {
        UserAction::Add {
            name,
            role,
            scope,
            password_stdin,
        } => {
            let (p, made) = password(password_stdin)?;
            add(&db, &name, role, &scope, &p).await?;
            store::audit(&db, "(command line)", "", "user_add", &name).await?;
            println!(
                "user {name} added ({})",
                format!("{} {scope}", role.as_str()).trim_end()
            );
            if made {
                println!("password: {p}");
            }
        }
        UserAction::Disable { name } => {
            found(store::set_disabled(&db, &name, true).await?, &name)?;
            store::audit(&db, "(command line)", "", "user_disable", &name).await?;
            println!("user {name} disabled; their sessions ended");
        }
        UserAction::Enable { name } => {
            found(store::set_disabled(&db, &name, false).await?, &name)?;
            store::audit(&db, "(command line)", "", "user_enable", &name).await?;
            println!("user {name} enabled");
        }
        UserAction::Reset {
            name,
            password_stdin,
        } => {
            let (p, made) = password(password_stdin)?;
            found(
                store::set_hash(&db, &name, &auth::hash_password(&p)?).await?,
                &name,
            )?;
            store::audit(&db, "(command line)", "", "user_reset", &name).await?;
            println!("user {name}: new password set; their sessions ended");
            if made {
                println!("password: {p}");
            }
        }
        UserAction::List => {
            for u in store::users(&db).await? {
                let state = if u.disabled { "disabled" } else { "enabled" };
                println!("{}\t{}\t{}\t{state}", u.name, u.role.as_str(), u.scope);
            }
        }
        UserAction::Audit { last } => {
            for (at, user, action, detail) in store::audit_trail(&db, last).await? {
                println!("{at}\t{user}\t{action}\t{detail}");
            }
        }
    }
    Ok(())
}

/// `gatehouse-company serve`: the web pages, from the service's configuration file (its
/// `[database]`, `[web]` and `[notify]`), or from flags.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (`/etc/gatehouse-company/company.toml`); the flags below are
    /// for a quick start without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    /// Where to listen. Without TLS keep it on loopback, behind the company's proxy.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// TLS: the certificate chain (PEM); with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The pages' language: a labels file (default: the built-in Chinese).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The company's TLS proxy in front (its address): its X-Forwarded-For names the client,
    /// and cookies are marked Secure.
    #[arg(long)]
    pub trusted_proxy: Option<std::net::IpAddr>,
    /// Database connections the pages use in turn.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Alarms that need someone now go out by webhook and e-mail as this file says.
    #[arg(long)]
    pub notify: Option<PathBuf>,
    /// Seconds a built form is served again to the next who asks (0: built for every request).
    #[arg(long, default_value_t = 10)]
    pub form_cache_s: u64,
}

/// Builds the pages' shared state.
pub async fn app(
    db: &DbArgs,
    connections: usize,
    labels: Option<&std::path::Path>,
    secure: bool,
) -> anyhow::Result<App> {
    let tz = db.tz()?;
    let mut dbs = Vec::new();
    for _ in 0..connections.max(1) {
        dbs.push(db.open().await?);
    }
    let labels = match labels {
        Some(p) => Labels::load(p)?,
        None => Labels::builtin(),
    };
    App::new(dbs, tz, labels, secure)
}

pub async fn serve(mut a: ServeArgs, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut notify_cfg = None;
    let mut acks_down = None;
    if let Some(path) = a.config.take() {
        let (c, checked) = crate::config::load(&path).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            checked.problems.is_empty(),
            "{}: {}",
            path.display(),
            checked.problems.join("; ")
        );
        a.db = DbArgs {
            database: c.database.url,
            timezone: c.database.timezone,
        };
        a.listen = c.web.listen.parse()?;
        (a.tls_cert, a.tls_key, a.labels) = (c.web.tls_cert, c.web.tls_key, c.web.labels);
        a.trusted_proxy = c.web.trusted_proxy;
        (a.connections, a.form_cache_s) = (c.web.connections, c.web.form_cache_s);
        notify_cfg = c.notify;
        if let Some(o) = &c.web.orders {
            acks_down = Some(Arc::new(super::acks_down::AcksDown::new(&c.broker, o)?));
        }
    }
    if let Some(path) = &a.notify {
        notify_cfg = Some(notify::Config::load(path)?);
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(super::tls_acceptor(c, k)?),
        _ => None,
    };
    if tls.is_none() && !a.listen.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {}: put it behind a TLS proxy, or give --tls-cert/--tls-key",
            a.listen
        );
    }
    let secure = tls.is_some() || a.trusted_proxy.is_some();
    let mut app = app(&a.db, a.connections, a.labels.as_deref(), secure).await?;
    app.trusted_proxy = a.trusted_proxy;
    app.cache_for = std::time::Duration::from_secs(a.form_cache_s);
    app.acks_down = acks_down;
    let app = Arc::new(app);
    if let Some(cfg) = notify_cfg {
        let db = a.db.open().await?;
        tokio::spawn(notify::run(db, cfg, stop.clone()));
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    println!(
        "serving the pages on {}://{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    super::serve(app, listener, tls, stop).await
}
