//! The guard's console in a real headless Chromium over WebDriver (Debian's `chromium` and
//! `chromium-driver`; skipped with the reason where they are missing, a failure under
//! `GATEHOUSE_NO_SKIP=1`). A guard logs in, registers a visitor, and the simulated terminal's QR
//! read of that pass opens the simulated turnstile, the decision showing on the console; a
//! fever raised by the terminal appears as an alarm and is acknowledged; the guard opens a lane
//! with a reason and the record upstream carries it; a device-supplied string with markup stays
//! text; a stopped daemon shows at once as "not live". With `GATEHOUSE_SCREENSHOTS=DIR` the
//! console is saved there at 1280×800 and 800×1280 (the README's pictures).
use crate::common::*;
use crate::console::{gateway_with, GUARD_PW};
use fantoccini::{Client, ClientBuilder, Locator};
use gatehouse::device::Unit;
use gatehouse::tools::sim;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Chromedriver {
    port: u16,
    child: std::process::Child,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver(test: &str) -> Option<Chromedriver> {
    let (driver, chromium) = (
        Path::new("/usr/bin/chromedriver"),
        Path::new("/usr/bin/chromium"),
    );
    if !driver.exists() || !chromium.exists() {
        skip(
            test,
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        );
        return None;
    }
    let port = free_port();
    let child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed and waited for when dropped, whatever happens next.
    let driver = Chromedriver { port, child };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(driver);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Chromedriver, (w, h): (u32, u32)) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={w},{h}"), "--lang=zh-CN", "--hide-scrollbars",
                     "--autoplay-policy=no-user-gesture-required"],
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

/// Sizes the window so that the page itself is `w`×`h` (a window is taller than its page).
async fn viewport(c: &Client, w: u32, h: u32) {
    c.set_window_size(w, h).await.unwrap();
    let inner = c
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    let got = |i: usize| inner[i].as_u64().unwrap_or(0) as u32;
    let (dw, dh) = (w.saturating_sub(got(0)), h.saturating_sub(got(1)));
    c.set_window_size(w + dw, h + dh).await.unwrap();
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the first element `css` finds ("" when none).
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `css`'s text holds `what`; how long it took.
async fn until_text(c: &Client, css: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if text(c, css).await.contains(what) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LONG,
            "{css} never showed {what:?}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("GATEHOUSE_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_registers_a_visitor_acknowledges_a_fever_and_opens_a_lane_in_a_real_browser() {
    let test = "console_browser";
    let Some(driver) = chromedriver(test) else {
        return;
    };
    let (mut h, addr) = gateway_with(|t| t).await;
    let base = format!("http://{addr}");
    let c = browser(&driver, (1280, 800)).await;
    viewport(&c, 1280, 800).await;

    // Log in.
    c.goto(&format!("{base}/login")).await.unwrap();
    fill(&c, "input[name=user]", "guard").await;
    fill(&c, "input[name=password]", GUARD_PW).await;
    click(&c, "button[type=submit]").await;
    until_text(&c, "#live", "实时").await;
    until_text(&c, "#mode", "正常").await;

    // Register a visitor; the pass page shows the code to scan.
    fill(&c, "input[name=host]", "H001").await;
    fill(&c, "input[name=purpose]", "探亲").await;
    fill(&c, "input[name=entries]", "2").await;
    click(&c, "form.visitor button[type=submit]").await;
    until_text(&c, "h1", "访客通行证").await;
    screenshot(&c, "console-pass").await;
    let code = text(&c, ".code").await;
    assert_eq!(code.len(), 10, "{code:?}");
    let pass_id = text(&c, "h1").await.replace("访客通行证 ", "");
    c.goto(&base).await.unwrap();
    until_text(&c, "#live", "实时").await;

    // The visitor shows the code at the terminal: the turnstile opens, the console shows it.
    let read = sim::hikvision::qr_read(77, &code, 36.4);
    let published = Instant::now();
    h.terminal
        .publish("devices/thermal-1/event", read.into_bytes())
        .await;
    assert_eq!(h.next_command().await.action, "open");
    until_text(&c, "#lane-0 tbody", &pass_id).await;
    let shown_after = published.elapsed();
    println!("console_browser: the visitor's decision showed on the console {shown_after:?} after the terminal's read");
    assert!(text(&c, "#lane-0 tbody").await.contains("访客"));

    // A fever: an alarm that stays until acknowledged.
    h.identify(78, Some("R000078"), 38.7, Unit::Celsius).await;
    until_text(&c, "#alarm-list", "体温异常").await;
    until_text(&c, "#alarm-count", "").await;
    assert!(text(&c, "#alarm-list").await.contains("38.7"));
    // It sounds until silenced; silencing is not acknowledging: the alarm stays.
    let silence = c.find(Locator::Css("#silence")).await.unwrap();
    assert!(
        silence.is_displayed().await.unwrap(),
        "the silence button shows"
    );
    silence.click().await.unwrap();
    assert!(!silence.is_displayed().await.unwrap(), "silenced");
    assert!(text(&c, "#alarm-list").await.contains("体温异常"));
    // A device-supplied string with markup: shown as text, never run.
    let hostile = "<img src=x onerror=\"document.title='pwned'\">";
    // A host on the LAN logs in to the device endpoint under that name: refused, and the
    // alarm names what it claimed to be.
    let endpoint = h.devices.url();
    let mut o = rumqttc::MqttOptions::new("intruder", "127.0.0.1", endpoint.port);
    o.set_credentials(hostile, "guess");
    let (_intruder, mut el) = rumqttc::AsyncClient::new(o, 4);
    let knocking = tokio::spawn(async move {
        for _ in 0..3 {
            let _ = el.poll().await;
        }
    });
    until_text(&c, "#alarm-list", "<img src=x").await;
    knocking.abort();
    assert_eq!(c.title().await.unwrap(), "岗亭控制台", "the markup ran");
    screenshot(&c, "console-1280x800").await;
    // Acknowledge the fever (the intruder's alarm stays).
    click(&c, "#alarm-list li.loud form button").await;
    let acks = h.uplink.acks().await;
    assert_eq!(acks[0].by, "console:guard");
    until_text(&c, "#alarm-count", "1").await;
    assert!(!text(&c, "#alarm-list").await.contains("体温异常"));

    // Open the lane with a reason.
    fill(&c, "#lane-0 input[name=reason]", "救护车").await;
    click(&c, "#lane-0 form.open button").await;
    until_text(&c, "p[role=status]", "开闸指令已发出").await;
    let opened = loop {
        let (_, p) = h.uplink.passage_from("gate-1").await;
        if p.reason == "remote_open" {
            break p;
        }
    };
    assert_eq!(
        (opened.operator_id.as_str(), opened.operator_reason.as_str()),
        ("guard", "救护车")
    );

    // A tablet on its side.
    viewport(&c, 800, 1280).await;
    c.refresh().await.unwrap();
    until_text(&c, "#live", "实时").await;
    screenshot(&c, "console-800x1280").await;

    // The daemon stops: the page says at once it is not live.
    let Harness { daemon, .. } = h;
    daemon.stop().await;
    let stale_after = until_text(&c, "#live", "非实时").await;
    println!("console_browser: a stopped daemon showed as not live after {stale_after:?}");
    assert!(!text(&c, "#banner").await.is_empty());
    c.close().await.unwrap();
}
