//! The pages in a real headless Chromium, over WebDriver (Debian's `chromium` and
//! `chromium-driver`): a simulated gateway publishes to a real mosquitto, the real ingest
//! stores into SQLite, the real server serves the pages. A community worker on a phone-sized
//! window finds the fever the gate just recorded on the temperature register and downloads the
//! XLSX; the operator watches the gateway go offline when it is stopped. With
//! `GATEHOUSE_SCREENSHOTS=DIR` the main pages are saved there as PNG (the README's pictures).
use super::*;
use crate::db::Db;
use crate::ingest::{self, Counters, Settings};
use crate::web::{self, labels::Labels, who::Role, App};
use fantoccini::{Client, ClientBuilder, Locator};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
const COMMUNITY: &str = "330106001301";
const GW: &str = "gw-gate-1";

struct Chromedriver {
    port: u16,
    child: Child,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Chromedriver> {
    let (driver, chromium) = (
        Path::new("/usr/bin/chromedriver"),
        Path::new("/usr/bin/chromium"),
    );
    if !driver.exists() || !chromium.exists() {
        skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    Some(Chromedriver { port, child })
}

async fn browser(driver: &Chromedriver, (w, h): (u32, u32), downloads: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={w},{h}"), "--lang=zh-CN", "--hide-scrollbars"],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

async fn log_in(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Reloads until the page's text holds `what` (the ingest is a moment behind the gate).
async fn until_shown(c: &Client, what: &str, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let page = c.source().await.unwrap();
        if page.contains(what) {
            return page;
        }
        assert!(
            start.elapsed() < within,
            "{what:?} not shown within {within:?}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.refresh().await.unwrap();
    }
}

async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("GATEHOUSE_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// The simulated gateway: online (retained), its will saying offline; a fever at the gate.
async fn gateway(port: u16) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let base = format!("gh/v1/3301/330106/{STREET}/{COMMUNITY}/{GW}");
    let status = |online: bool, seq: u64| {
        v1::Status {
            gateway: GW.into(),
            state: if online {
                v1::GatewayState::Online
            } else {
                v1::GatewayState::Offline
            } as i32,
            mode: "normal".into(),
            registry_version: 17,
            boot: 1,
            seq,
            status_period_ms: 60_000,
            ..Default::default()
        }
        .encode_to_vec()
    };
    let mut o = MqttOptions::new(GW, "127.0.0.1", port);
    o.set_last_will(LastWill::new(
        format!("{base}/status"),
        status(false, (1 << 32) | 0xFFFF_FFFF),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut el) = AsyncClient::new(o, 100);
    let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let now = crate::web::auth::now_ms();
    client
        .publish(
            format!("{base}/status"),
            QoS::AtLeastOnce,
            true,
            status(true, (1 << 32) | 1),
        )
        .await
        .unwrap();
    let mut fever = passage(
        1,
        now,
        v1::SubjectKind::Resident,
        "R000042",
        "H0301",
        false,
        "fever",
    );
    if let Some(v1::event::Body::Passage(p)) = &mut fever.body {
        p.temperature_c = Some(38.4);
        p.fever = true;
    }
    let mut others: Vec<v1::Event> = (2..=30)
        .map(|s| resident_in(s, now - 3_600_000 + s as i64 * 60_000))
        .collect();
    others.push(fever);
    client
        .publish(
            format!("{base}/events"),
            QoS::AtLeastOnce,
            false,
            events(others),
        )
        .await
        .unwrap();
    let alarm = v1::AlarmBatch {
        alarms: vec![v1::Alarm {
            seq: 1,
            gateway_time_ms: now,
            kind: v1::AlarmKind::Fever as i32,
            lane: "east".into(),
            device: "thermal-1".into(),
            detail: "38.4".into(),
            subject_id: "R000042".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .publish(
            format!("{base}/alarms"),
            QoS::AtLeastOnce,
            false,
            alarm.encode_to_vec(),
        )
        .await
        .unwrap();
    (client, task)
}

#[tokio::test]
async fn a_worker_finds_the_fever_on_a_phone_and_the_operator_sees_the_gateway_go_offline() {
    let Some(driver) = chromedriver() else { return };
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("records.db").display());
    let db = Arc::new(Db::open(&url, TZ).await.unwrap());
    let (stop_tx, stop) = watch::channel(false);
    let settings = Settings {
        group: "browser".into(),
        batch_max: 100,
        linger: Duration::from_millis(5),
        tz: TZ,
    };
    let ingest_task = tokio::spawn(ingest::run(
        MqttOptions::new("ingest-browser", "127.0.0.1", broker.port),
        settings,
        db.clone(),
        Arc::new(Counters::default()),
        stop.clone(),
    ));
    crate::web::users::add(
        &db,
        "worker",
        Role::Community,
        COMMUNITY,
        "worker password 1",
    )
    .await
    .unwrap();
    crate::web::users::add(&db, "operator", Role::Company, "", "operator password 1")
        .await
        .unwrap();
    crate::web::users::add(&db, "officer", Role::Street, STREET, "officer password 1")
        .await
        .unwrap();
    let app = Arc::new(
        App::new(
            vec![Db::open(&url, TZ).await.unwrap()],
            TZ,
            Labels::builtin(),
            false,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(web::serve(app, listener, None, stop.clone()));
    // The ingest subscribes before the gateway speaks (its subscription is what keeps the
    // records while it is away; a first start has none yet).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_gw, gw_task) = gateway(broker.port).await;

    // A community worker, on a phone.
    let downloads = tempfile::tempdir().unwrap();
    let phone = browser(&driver, (390, 844), downloads.path()).await;
    log_in(&phone, &base, "worker", "worker password 1").await;
    let home = until_shown(&phone, "本社区与街道对比", Duration::from_secs(5)).await;
    assert!(home.contains(COMMUNITY));
    until_shown(&phone, "<svg", Duration::from_secs(5)).await;
    screenshot(&phone, "community-phone").await;
    phone
        .find(Locator::LinkText("体温登记"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let register = until_shown(&phone, "38.4", Duration::from_secs(15)).await;
    assert!(register.contains("R000042"), "{register}");
    screenshot(&phone, "temperature-register-phone").await;
    phone
        .find(Locator::LinkText("下载 Excel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    let xlsx = loop {
        let done = std::fs::read_dir(downloads.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "xlsx"));
        if let Some(p) = done {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no XLSX downloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let sheet = book.worksheet_range_at(0).unwrap().unwrap();
    assert!(
        sheet
            .cells()
            .any(|(_, _, c)| c.to_string().starts_with("38.4")),
        "the fever is in the download"
    );
    phone.close().await.unwrap();

    // A street officer: the street's communities side by side.
    let desk = browser(&driver, (1280, 800), downloads.path()).await;
    log_in(&desk, &base, "officer", "officer password 1").await;
    until_shown(&desk, COMMUNITY, Duration::from_secs(5)).await;
    screenshot(&desk, "street").await;
    desk.close().await.unwrap();

    // The operator: the gateway online, then offline once it is stopped (its will).
    let desk = browser(&driver, (1280, 800), downloads.path()).await;
    log_in(&desk, &base, "operator", "operator password 1").await;
    let fleet = until_shown(&desk, "td class=\"ok\">在线", Duration::from_secs(10)).await;
    assert!(fleet.contains(COMMUNITY));
    screenshot(&desk, "fleet").await;
    desk.goto(&format!("{base}/fleet/alarms")).await.unwrap();
    until_shown(&desk, "发热", Duration::from_secs(10)).await;
    screenshot(&desk, "alarms").await;
    desk.goto(&format!("{base}/fleet")).await.unwrap();
    // Stopped hard: the connection drops without a word, the broker publishes the will.
    gw_task.abort();
    let fleet = until_shown(&desk, "td class=\"bad\">离线", Duration::from_secs(20)).await;
    assert!(!fleet.contains("td class=\"ok\">在线"), "{fleet}");
    desk.close().await.unwrap();

    let _ = stop_tx.send(true);
    let _ = ingest_task.await;
    let _ = server.await;
}
