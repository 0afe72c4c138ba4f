//! The demo's company side: the ingest on its embedded default (one SQLite file) taking the
//! gate's records from the embedded broker, today's forms filling as the gate decides — a line
//! every 30 s, the entry and temperature registers in full at the end — and the company's web
//! pages on them, with a login printed for each level.
use gatehouse_company::db::Db;
use gatehouse_company::forms::{self, export, Cell, Kind};
use gatehouse_company::ingest::{self, Counters, Settings};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Forms {
    db: Arc<Db>,
    community: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

pub async fn start(
    records: &Path,
    broker_port: u16,
    place: &gatehouse_contract::topics::GatewayPath,
    web_port: u16,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Forms> {
    let community = place.community.as_str();
    let url = format!("sqlite:{}", records.display());
    let db = Arc::new(Db::open(&url, TZ).await?);
    let web = pages(&db, &url, place, web_port, stop.clone()).await?;
    let opts = rumqttc::MqttOptions::new("demo-ingest", "127.0.0.1", broker_port);
    let settings = Settings {
        tz: TZ,
        ..Settings::default()
    };
    let ingest = tokio::spawn({
        let (db, stop) = (db.clone(), stop.clone());
        async move {
            if let Err(e) =
                ingest::run(opts, settings, db, Arc::new(Counters::default()), stop).await
            {
                tracing::warn!("the demo's ingest: {e:#}");
            }
        }
    });
    let lines = tokio::spawn({
        let (db, community) = (db.clone(), community.to_string());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                match form(&db, &community, Kind::Entry).await {
                    Ok(f) => println!("{}", summary_line(&f)),
                    Err(e) => tracing::warn!("the entry register: {e:#}"),
                }
            }
        }
    });
    Ok(Forms {
        db,
        community: community.to_string(),
        tasks: vec![ingest, lines, web],
    })
}

/// The company's pages on the demo's records: a user for each level, made (or given a new
/// password) at every start and printed.
async fn pages(
    db: &Db,
    url: &str,
    place: &gatehouse_contract::topics::GatewayPath,
    port: u16,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use gatehouse_company::web::{self, store, users, who::Role};
    let people = [
        (
            "worker",
            Role::Community,
            place.community.as_str(),
            "community",
        ),
        ("officer", Role::Street, place.street.as_str(), "street"),
        (
            "district",
            Role::District,
            place.district.as_str(),
            "district",
        ),
        ("operator", Role::Company, "", "the company"),
    ];
    // Port 8080, or any free one when it is taken.
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let addr = listener.local_addr()?;
    println!("the company's pages: http://{addr}/ — log in as");
    for (name, role, scope, level) in people {
        let password = users::new_password();
        if store::user(db, name).await?.is_some() {
            store::set_hash(db, name, &web::auth::hash_password(&password)?).await?;
        } else {
            users::add(db, name, role, scope, &password).await?;
        }
        println!(
            "  {name:<9} password {password}   ({})",
            format!("{level} {scope}").trim_end()
        );
    }
    let app = users::app(
        &gatehouse_company::records_cli::DbArgs {
            database: url.to_string(),
            timezone: TZ.name().to_string(),
        },
        2,
        None,
        false,
    )
    .await?;
    Ok(tokio::spawn(async move {
        if let Err(e) = web::serve(Arc::new(app), listener, None, stop).await {
            tracing::warn!("the demo's pages: {e:#}");
        }
    }))
}

async fn form(db: &Db, community: &str, kind: Kind) -> anyhow::Result<forms::Form> {
    let now = chrono::Utc::now();
    let today = now.with_timezone(&TZ).date_naive();
    forms::build(
        db,
        kind,
        &gatehouse_company::db::Scope::Community(community.into()),
        TZ,
        (today, today),
        now.timestamp_millis(),
    )
    .await
}

/// The entry register's totals row, as one line.
fn summary_line(f: &forms::Form) -> String {
    let Some(total) = f.rows.last() else {
        return String::new();
    };
    let cell = |h: &str| match f
        .headers
        .iter()
        .position(|x| *x == h)
        .and_then(|i| total.get(i))
    {
        Some(Cell::Int(n)) => n.to_string(),
        _ => "—".into(),
    };
    format!(
        "— {} today so far: residents in {} out {}, visitors in {}, vehicles in {} out {}, denied {}, not acted on {}, gateway-counted {} (gap {}) —",
        f.title,
        cell("居民进"),
        cell("居民出"),
        cell("访客进"),
        cell("车辆进"),
        cell("车辆出"),
        cell("拒绝"),
        cell("未执行"),
        cell("网关统计"),
        cell("差额"),
    )
}

impl Forms {
    /// After the gate stopped: the ingest takes what is left, then today's registers are printed.
    pub async fn finish(self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for t in &self.tasks {
            t.abort();
        }
        for kind in [Kind::Entry, Kind::Temperature] {
            match form(&self.db, &self.community, kind).await {
                Ok(f) => println!("\n{}", export::text(&f)),
                Err(e) => println!("\n{kind:?}: {e:#}"),
            }
        }
    }
}
