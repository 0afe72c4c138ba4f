//! The command line of the records side: `ingest` (the long-running service), `form` (any form
//! for a community, street or district, a day or a range, to XLSX, CSV or the terminal),
//! `migrate` (apply, or roll back one step) and `forget` (delete temperatures).
use crate::config::{self, Config};
use crate::connect::BrokerArgs;
use crate::db::{Db, Scope};
use crate::forms::{self, export};
use crate::ingest::{self, Counters, Settings};
use anyhow::{anyhow, Context};
use chrono::NaiveDate;
use chrono_tz::Tz;
use gatehouse_contract::mqtt::BrokerUrl;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the records are: `sqlite:PATH` (the embedded default) or `postgres://…`.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    // Global: `user --database … add …` and `user add … --database …` both work.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_DATABASE",
        default_value = "sqlite:gatehouse-records.db"
    )]
    pub database: String,
    /// The communities' time zone: a day on a form is a local day.
    #[arg(long, global = true, default_value = "Asia/Shanghai")]
    pub timezone: String,
}

impl DbArgs {
    pub fn tz(&self) -> anyhow::Result<Tz> {
        self.timezone
            .parse()
            .map_err(|e| anyhow!("--timezone {}: {e}", self.timezone))
    }

    pub async fn open(&self) -> anyhow::Result<Db> {
        Db::open(&self.database, self.tz()?).await
    }
}

/// `gatehouse-company ingest`: from a configuration file (the service), or from flags.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// The configuration file (`/etc/gatehouse-company/company.toml`); the flags below are
    /// for a quick start without one.
    #[arg(long, conflicts_with = "broker")]
    pub config: Option<PathBuf>,
    /// The company broker, mqtt:// or mqtts://host:port.
    #[arg(long, required_unless_present = "config")]
    pub broker: Option<String>,
    /// This instance's client id: fixed, so its persistent session (and what it had not acked)
    /// survives a restart. Each instance needs its own.
    #[arg(long, default_value = "gatehouse-ingest-1")]
    pub client_id: String,
    /// The shared subscription's group: instances of one group split the stream.
    #[arg(long, default_value = "gatehouse-ingest")]
    pub group: String,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub tls: BrokerArgs,
}

impl IngestArgs {
    /// The configuration: the file's, checked, or the flags' (with the defaults).
    fn config(&self) -> anyhow::Result<Config> {
        if let Some(path) = &self.config {
            let (config, checked) = config::load(path).map_err(|e| anyhow!(e))?;
            for w in &checked.warnings {
                tracing::warn!("{}: {w}", path.display());
            }
            anyhow::ensure!(
                checked.problems.is_empty(),
                "{}: {}",
                path.display(),
                checked.problems.join("; ")
            );
            return Ok(config);
        }
        Ok(Config {
            broker: config::Broker {
                url: self.broker.clone().unwrap_or_default(),
                client_id: self.client_id.clone(),
                group: self.group.clone(),
                ca: self.tls.ca.clone(),
                client_cert: self.tls.client_cert.clone(),
                client_key: self.tls.client_key.clone(),
                username: self.tls.username.clone(),
                password_file: self.tls.password_file.clone(),
            },
            database: config::Database {
                url: self.db.database.clone(),
                timezone: self.db.timezone.clone(),
            },
            retention: Default::default(),
            ingest: Default::default(),
            web: Default::default(),
            notify: None,
        })
    }
}

/// `gatehouse-company form`.
#[derive(clap::Args, Debug)]
pub struct FormArgs {
    #[arg(long, value_enum)]
    pub form: forms::Kind,
    #[arg(long, group = "scope")]
    pub community: Option<String>,
    #[arg(long, group = "scope")]
    pub street: Option<String>,
    #[arg(long, group = "scope")]
    pub district: Option<String>,
    /// The day (YYYY-MM-DD, local); today without it.
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// The last day of a range starting at --date.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Write to FILE (.xlsx, .csv, anything else text); the terminal without it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `gatehouse-company migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Roll the newest migration back instead.
    #[arg(long)]
    pub down: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `gatehouse-company forget`: temperatures are health data.
#[derive(clap::Args, Debug)]
pub struct ForgetArgs {
    /// Every temperature of this registry id.
    #[arg(long)]
    pub subject: Option<String>,
    /// Every temperature before this local day.
    #[arg(long)]
    pub before: Option<NaiveDate>,
    #[command(flatten)]
    pub db: DbArgs,
}

pub async fn ingest(a: IngestArgs, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let c = a.config()?;
    let url = BrokerUrl::parse(&c.broker.url).map_err(|e| anyhow!(e))?;
    let tls = BrokerArgs {
        ca: c.broker.ca.clone(),
        client_cert: c.broker.client_cert.clone(),
        client_key: c.broker.client_key.clone(),
        username: c.broker.username.clone(),
        password_file: c.broker.password_file.clone(),
    };
    let opts = tls.options(&url, &c.broker.client_id)?;
    let tz: Tz = c
        .database
        .timezone
        .parse()
        .map_err(|e| anyhow!("database.timezone: {e}"))?;
    let db = Arc::new(Db::open(&c.database.url, tz).await?);
    let counters = Arc::new(Counters::default());
    let retention = c.retention.retention();
    // Retention, and a line of counts, every hour.
    let (db2, c2) = (db.clone(), counters.clone());
    let housekeeping = tokio::spawn(async move {
        loop {
            match db2
                .expire(retention, chrono::Utc::now().timestamp_millis())
                .await
            {
                Ok(n) if n > 0 => tracing::info!("retention: {n} rows (or day partitions) removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention: {e:#}"),
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            tracing::info!(
                "ingest: {} messages, {} records stored, {} duplicates, {} quarantined",
                c2.messages.load(Ordering::Relaxed),
                c2.stored.load(Ordering::Relaxed),
                c2.duplicates.load(Ordering::Relaxed),
                c2.quarantined.load(Ordering::Relaxed)
            );
        }
    });
    let settings = Settings {
        group: c.broker.group.clone(),
        batch_max: c.ingest.batch_max.max(1),
        tz,
        ..Settings::default()
    };
    tracing::info!(
        "ingest {} (group {}) from {} into {}",
        c.broker.client_id,
        c.broker.group,
        c.broker.url,
        c.database.url.split('@').next_back().unwrap_or("")
    );
    let r = ingest::run(opts, settings, db, counters, stop).await;
    housekeeping.abort();
    r
}

/// `check-config FILE`: every problem and warning; exit 78 (EX_CONFIG) on a problem.
pub fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    match config::load(path) {
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(78);
        }
        Ok((_, checked)) => {
            for w in &checked.warnings {
                eprintln!("warning: {w}");
            }
            for p in &checked.problems {
                eprintln!("{p}");
            }
            if !checked.problems.is_empty() {
                std::process::exit(78);
            }
            println!("{}: ok", path.display());
            Ok(())
        }
    }
}

pub async fn form(a: FormArgs) -> anyhow::Result<()> {
    let tz = a.db.tz()?;
    let scope = match (a.community, a.street, a.district) {
        (Some(c), _, _) => Scope::Community(c),
        (_, Some(s), _) => Scope::Street(s),
        (_, _, Some(d)) => Scope::District(d),
        _ => anyhow::bail!(
            "which community, street or district? (--community, --street, --district)"
        ),
    };
    let from = a
        .date
        .unwrap_or_else(|| chrono::Utc::now().with_timezone(&tz).date_naive());
    let to = a.to.unwrap_or(from);
    anyhow::ensure!(to >= from, "--to is before --date");
    let db = a.db.open().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let form = forms::build(&db, a.form, &scope, tz, (from, to), now).await?;
    match a.out {
        Some(path) => {
            export::write(&form, export::Format::of(&path), &path)?;
            println!("{} written to {}", form.title, path.display());
        }
        None => print!("{}", export::text(&form)),
    }
    Ok(())
}

pub async fn migrate(a: MigrateArgs) -> anyhow::Result<()> {
    let db = a.db.open().await?;
    if a.down {
        match db.rollback_one().await? {
            Some(v) => println!("rolled back migration {v}"),
            None => println!("no migration to roll back"),
        }
    } else {
        println!("migrations applied");
    }
    Ok(())
}

pub async fn forget(a: ForgetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.subject.is_some() || a.before.is_some(),
        "forget what? --subject ID and/or --before YYYY-MM-DD"
    );
    let tz = a.db.tz()?;
    let before = match a.before {
        Some(d) => Some(forms::span(tz, d, d)?.0),
        None => None,
    };
    let db = a.db.open().await.context("opening the database")?;
    let n = db.forget_temperatures(a.subject.as_deref(), before).await?;
    println!("{n} temperatures deleted");
    Ok(())
}
