//! `gatehouse-demo bench-forms`: how long a form takes to read, on a street of many communities
//! and millions of passages in a running database. The passages go in through the ingest's own
//! commit (`Db::apply`, batches of 5,000), spread over one day; then each form is built a few
//! times and the slowest time reported.
use gatehouse_company::db::{Batch, Db, Scope, Table};
use gatehouse_company::fleet::Gateway;
use gatehouse_company::forms::{self, Kind};
use gatehouse_company::ingest::decode::{decode, Decoded};
use prost::Message;
use std::time::Instant;

pub struct FormsBenchOptions {
    pub database: String,
    pub communities: u32,
    pub passages: u64,
}

#[derive(serde::Serialize)]
pub struct FormsBenchReport {
    pub database: String,
    pub communities: u32,
    pub passages: i64,
    pub seed_seconds: f64,
    pub street_summary_ms: f64,
    pub entry_register_ms: f64,
    pub temperature_register_ms: f64,
    pub vehicle_register_ms: f64,
}

pub async fn forms(o: FormsBenchOptions) -> anyhow::Result<FormsBenchReport> {
    let tz = chrono_tz::Asia::Shanghai;
    let db = Db::open(&o.database, tz).await?;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
    let (start, end) = forms::span(tz, day, day)?;
    let mut gateways: Vec<Gateway> = (0..o.communities)
        .map(|c| {
            Gateway::new(
                (330_106_001_001u64 + u64::from(c)).to_string(),
                "gw-1".into(),
                0,
            )
        })
        .collect();
    let started = Instant::now();
    let step = ((end - start) as f64 / o.passages as f64).max(1.0);
    let mut made = 0u64;
    while made < o.passages {
        let mut batch = Batch {
            received_ms: end,
            ..Default::default()
        };
        for g in gateways.iter_mut() {
            let n = 5000 / u64::from(o.communities.max(1));
            let events: Vec<_> = (0..n.min(o.passages - made))
                .map(|i| g.event(start + ((made + i) as f64 * step) as i64))
                .collect();
            made += events.len() as u64;
            let payload = gatehouse_contract::proto::v1::EventBatch { events }.encode_to_vec();
            if let Decoded::Rows(rows) = decode(&g.topic("events"), &payload) {
                batch.rows.extend(rows);
            }
            if made >= o.passages {
                break;
            }
        }
        db.apply(&batch).await?;
    }
    for g in gateways.iter_mut() {
        let payload = g.stats().encode_to_vec();
        if let Decoded::Rows(rows) = decode(&g.topic("stats"), &payload) {
            db.apply(&Batch {
                rows,
                received_ms: end,
                ..Default::default()
            })
            .await?;
        }
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let slowest = |kind: Kind, scope: Scope| {
        let db = &db;
        async move {
            let mut worst = 0f64;
            for _ in 0..3 {
                let t = Instant::now();
                forms::build(db, kind, &scope, tz, (day, day), end).await?;
                worst = worst.max(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(worst)
        }
    };
    let community = Scope::Community("330106001001".into());
    Ok(FormsBenchReport {
        database: o.database.split('@').next_back().unwrap_or("").to_string(),
        communities: o.communities,
        passages: db.count(Table::Passages).await?,
        seed_seconds,
        street_summary_ms: slowest(Kind::Summary, Scope::Street("330106001".into())).await?,
        entry_register_ms: slowest(Kind::Entry, community.clone()).await?,
        temperature_register_ms: slowest(Kind::Temperature, community.clone()).await?,
        vehicle_register_ms: slowest(Kind::Vehicle, community).await?,
    })
}
