//! `gatehouse-demo bench-ingest`: the company ingest's throughput into a real database, with
//! what a company's service lives through — one of two instances killed (`kill -9`) and
//! restarted with the same client id, the database restarted — counted in the database against
//! what the fleet published: every record stored, none twice (the rollups add up exactly).
//! It needs a running broker and database (`bench/ingest.sh` starts mosquitto and PostgreSQL);
//! the instances are `gatehouse-company ingest` processes beside this binary.
use anyhow::Context;
use gatehouse_company::db::{Db, Scope, Table};
use gatehouse_company::fleet::{self, Fleet};
use gatehouse_company::ingest::rollup::{col, COUNTED_BY_GATEWAY};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct IngestBenchOptions {
    pub broker_port: u16,
    pub database: String,
    pub instances: u32,
    pub communities: u32,
    pub gateways: u32,
    pub rate: u32,
    pub seconds: u32,
    pub batch: u32,
    /// Kill -9 the first instance this far in (0: never) and restart it a second later.
    pub kill_at_s: u32,
    /// Run this shell command this far in (a database restart).
    pub db_restart: Option<(u32, String)>,
}

#[derive(serde::Serialize)]
pub struct IngestBenchReport {
    pub database: String,
    pub instances: u32,
    pub offered_rate: u32,
    pub published: u64,
    pub stored: i64,
    pub lost: i64,
    pub duplicated: i64,
    /// Published records over the time from the first publish to the last record stored.
    pub records_per_s: f64,
    pub publish_seconds: f64,
    pub catch_up_seconds: f64,
    pub killed: bool,
    pub db_restarted: bool,
}

fn company_binary() -> anyhow::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("gatehouse-company");
    anyhow::ensure!(
        bin.exists(),
        "{} not built (cargo build --release -p gatehouse-company)",
        bin.display()
    );
    Ok(bin)
}

/// Instance `i` of this run. Client ids and the group are this run's own: a persistent session
/// left by an earlier run on the same broker would still take its share of the stream (the
/// broker queues it for that session), as a retired instance's does (README).
fn instance(o: &IngestBenchOptions, i: u32) -> anyhow::Result<Child> {
    let run = std::process::id();
    Command::new(company_binary()?)
        .args(["ingest", "--broker"])
        .arg(format!("mqtt://127.0.0.1:{}", o.broker_port))
        .args([
            "--client-id",
            &format!("bench-{run}-{i}"),
            "--group",
            &format!("bench-{run}"),
            "--database",
            &o.database,
        ])
        .env(
            "RUST_LOG",
            std::env::var("BENCH_INGEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .context("starting gatehouse-company ingest")
}

pub async fn ingest(o: IngestBenchOptions) -> anyhow::Result<IngestBenchReport> {
    let tz = chrono_tz::Asia::Shanghai;
    let db = Db::open(&o.database, tz).await?;
    let before = db.count(Table::Passages).await?;
    let mut children: Vec<Child> = (0..o.instances)
        .map(|i| instance(&o, i))
        .collect::<Result<_, _>>()?;
    // Subscribed: the shared subscriptions must exist before the first record, or the broker
    // drops it (nobody is subscribed).
    let probe = Fleet {
        communities: 1,
        gateways: 1,
        rate: 10,
        seconds: 1,
        batch: 10,
        first_community: 330_106_999_001,
        ..Fleet::default()
    };
    let probe_gw = "3301/330106/330106999/330106999001/gw-1";
    let mut n = 0;
    while db.status(probe_gw).await?.is_none() {
        anyhow::ensure!(n < 60, "the ingest instances never subscribed");
        fleet::run(
            "127.0.0.1",
            o.broker_port,
            &Fleet {
                seq_base: n * 100,
                ..probe.clone()
            },
            1,
        )
        .await?;
        n += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = db.count(Table::Passages).await?;

    let f = Fleet {
        communities: o.communities,
        gateways: o.gateways,
        rate: o.rate,
        seconds: o.seconds,
        batch: o.batch,
        ..Fleet::default()
    };
    let started = Instant::now();
    let port = o.broker_port;
    let publisher = tokio::spawn(async move { fleet::run("127.0.0.1", port, &f, 4).await });
    let (mut killed, mut restarted) = (false, false);
    while !publisher.is_finished() {
        let t = started.elapsed().as_secs_f64();
        if o.kill_at_s > 0 && !killed && t >= f64::from(o.kill_at_s) {
            // kill -9: no DISCONNECT, nothing more acked; its session keeps the rest.
            let _ = children[0].kill();
            let _ = children[0].wait();
            tokio::time::sleep(Duration::from_secs(1)).await;
            children[0] = instance(&o, 0)?;
            killed = true;
        }
        if let Some((at, cmd)) = &o.db_restart {
            if !restarted && t >= f64::from(*at) {
                let s = Command::new("sh").arg("-c").arg(cmd).status()?;
                anyhow::ensure!(s.success(), "{cmd}: {s}");
                restarted = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = publisher.await??;
    let publish_seconds = started.elapsed().as_secs_f64();
    let want = baseline + published.passages as i64;
    let mut stored = db.count(Table::Passages).await.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = db.count(Table::Passages).await.unwrap_or(stored);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Every passage counted once in the rollups: a record stored twice, or counted twice, shows.
    let rolled: i64 = db
        .rollups(&Scope::Street("330106001".into()), 0, i64::MAX)
        .await?
        .iter()
        .map(|r| {
            // Every passage falls in exactly one of these (not acted on counted apart).
            COUNTED_BY_GATEWAY
                .iter()
                .chain(&["not_actuated"])
                .map(|c| r.counts[col(c)])
                .sum::<i64>()
        })
        .sum();
    for c in &mut children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let _ = c.wait();
    }
    let stored_now = stored - baseline;
    let _ = before;
    Ok(IngestBenchReport {
        database: o
            .database
            .split('@')
            .next_back()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_string(),
        instances: o.instances,
        offered_rate: o.rate,
        published: published.passages,
        stored: stored_now,
        lost: published.passages as i64 - stored_now,
        duplicated: rolled - stored_now,
        records_per_s: published.passages as f64 / elapsed,
        publish_seconds,
        catch_up_seconds: elapsed - publish_seconds,
        killed,
        db_restarted: restarted,
    })
}
