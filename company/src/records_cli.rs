//! The command line of the records side: `ingest` (the long-running service), `form` (any form
//! for a community, street or district, a day or a range, to XLSX, CSV or the terminal),
//! `migrate` (apply, or roll back one step) and `forget` (delete temperatures).
use crate::cli::BrokerArgs;
use crate::db::{Db, Retention, Scope};
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
    #[arg(
        long,
        env = "GATEHOUSE_DATABASE",
        default_value = "sqlite:gatehouse-records.db"
    )]
    pub database: String,
    /// The communities' time zone: a day on a form is a local day.
    #[arg(long, default_value = "Asia/Shanghai")]
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

/// `gatehouse-company ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// The company broker, mqtt:// or mqtts://host:port.
    #[arg(long)]
    pub broker: String,
    /// This instance's client id: fixed, so its persistent session (and what it had not acked)
    /// survives a restart. Each instance needs its own.
    #[arg(long, default_value = "gatehouse-ingest-1")]
    pub client_id: String,
    /// The shared subscription's group: instances of one group split the stream.
    #[arg(long, default_value = "gatehouse-ingest")]
    pub group: String,
    /// At most this many messages per commit.
    #[arg(long, default_value_t = 500)]
    pub batch_max: usize,
    /// Passages (and alarms) are kept this many days; 0 keeps them for ever.
    #[arg(long, default_value_t = 180)]
    pub keep_passages_days: u32,
    /// Temperatures (health data) are kept this many days; 0 keeps them for ever.
    #[arg(long, default_value_t = 14)]
    pub keep_temperatures_days: u32,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub tls: BrokerArgs,
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
    let url = BrokerUrl::parse(&a.broker).map_err(|e| anyhow!(e))?;
    let opts = a.tls.options(&url, &a.client_id)?;
    let tz = a.db.tz()?;
    let db = Arc::new(a.db.open().await?);
    let counters = Arc::new(Counters::default());
    let retention = Retention {
        passages_days: a.keep_passages_days,
        temperatures_days: a.keep_temperatures_days,
    };
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
        group: a.group,
        batch_max: a.batch_max.max(1),
        tz,
        ..Settings::default()
    };
    let r = ingest::run(opts, settings, db, counters, stop).await;
    housekeeping.abort();
    r
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
