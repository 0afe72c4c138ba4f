//! A visitor pass registered at the console, through its life: the terminal's QR read of it
//! opens the gate at once; it goes upstream without the visitor's name; it survives a restart
//! and a list snapshot from above; it obeys the mode, the clock and its number of entries; it
//! can be withdrawn.
use crate::commands::{command, company, keys_toml, send};
use crate::common::*;
use crate::console::{gateway_with, Browser, GUARD_PW};
use gatehouse::config::Config;
use gatehouse::daemon::Daemon;
use gatehouse::device::Profiles;
use gatehouse::orders::sign;
use gatehouse::proto::v1;
use gatehouse::tools::sim;
use std::time::Duration;

/// The pass page's code (the digits the QR code holds).
fn code_on(page: &str) -> String {
    let at = page
        .find("<p class=\"code\">")
        .expect("the pass page shows its code");
    let rest = &page[at + 16..];
    rest[..rest.find('<').unwrap()].to_string()
}

async fn register(b: &mut Browser, csrf: &str, entries: &str) -> (String, String) {
    register_as(b, csrf, entries, ("qr", "")).await
}

/// A pass presented as `medium` (`qr`, or `card` with the card's number).
async fn register_as(
    b: &mut Browser,
    csrf: &str,
    entries: &str,
    (medium, card): (&str, &str),
) -> (String, String) {
    let r = b
        .post(
            "/visitor",
            &[
                ("csrf", csrf),
                ("host", "H001"),
                ("purpose", "探亲"),
                ("name", "李四"),
                ("entries", entries),
                ("hours", "4"),
                ("plate", ""),
                ("medium", medium),
                ("card", card),
            ],
        )
        .await;
    let to = r
        .location()
        .expect("registered: to the pass page")
        .to_string();
    assert!(to.starts_with("/pass?id=L"), "{to} {}", r.body);
    let page = b.get(&to).await;
    assert_eq!(
        page.body.contains("<svg"),
        medium == "qr",
        "a QR code to scan"
    );
    (to[9..].to_string(), code_on(&page.body))
}

/// A registration for `host` is refused, and the console says `why`.
async fn refused(b: &mut Browser, csrf: &str, host: &str, why: &str) {
    let form = [
        ("csrf", csrf),
        ("host", host),
        ("purpose", "x"),
        ("entries", "1"),
        ("hours", "2"),
    ];
    let r = b.post("/visitor", &form).await;
    assert_eq!(r.location(), Some("/"));
    let page = b.get("/").await.body;
    assert!(page.contains(why), "{why:?} not said: {page}");
}

/// The terminal reads the code; the decision that comes of it.
async fn read(h: &mut Harness, serial: u64, code: &str) -> v1::PassageDecision {
    read_on(&h.terminal, &mut h.uplink, serial, code).await
}

async fn read_on(
    terminal: &Client,
    uplink: &mut Uplink,
    serial: u64,
    code: &str,
) -> v1::PassageDecision {
    let body = sim::hikvision::qr_read(serial, code, 36.5);
    terminal
        .publish("devices/thermal-1/event", body.into_bytes())
        .await;
    uplink.passage_from("thermal-1").await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_from_the_console_opens_at_once_goes_up_nameless_and_outlives_a_restart_and_a_sync()
{
    let (mut h, addr) = gateway_with(|t| t + &keys_toml()).await;
    let mut guard = Browser::new(addr);
    let csrf = guard.login("guard", GUARD_PW).await.unwrap();
    let (id, code) = register(&mut guard, &csrf, "3").await;

    // Upstream: what the visitor register needs, and no name.
    let issued = h
        .uplink
        .event_body(|b| match b {
            v1::event::Body::VisitorPass(p) => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(issued.pass_id, id);
    assert_eq!(
        (issued.host_household.as_str(), issued.entries),
        ("H001", 3)
    );
    assert_eq!(issued.issued_by, "guard");
    let bytes = prost::Message::encode_to_vec(&issued);
    assert!(
        !String::from_utf8_lossy(&bytes).contains("李四"),
        "the name stays at the box"
    );

    // The QR read opens the gate, as the visitor.
    let p = read(&mut h, 501, &code).await;
    assert_eq!(
        (p.reason.as_str(), p.subject_id.as_str()),
        ("ok", id.as_str())
    );
    assert_eq!(p.subject_kind(), v1::SubjectKind::Visitor);
    assert_eq!(p.household, "H001");
    assert_eq!(h.next_command().await.action, "open");
    // A code nobody issued opens nothing.
    let p = read(&mut h, 502, "0000000000").await;
    assert_eq!(p.reason, "unknown_subject");

    // A visitor card handed back and out again: the new pass holds it, the old one nothing.
    let (first, _) = register_as(&mut guard, &csrf, "1", ("card", "5555")).await;
    let r = guard
        .post("/withdraw", &[("csrf", &csrf), ("id", &first)])
        .await;
    assert_eq!(r.code, 303);
    let (second, _) = register_as(&mut guard, &csrf, "3", ("card", "5555")).await;

    // A restart: the pass is still there.
    let Harness {
        dir,
        broker,
        daemon,
        terminal,
        mut uplink,
        ..
    } = h;
    let path = dir.path().join("gatehouse.toml");
    daemon.stop().await;
    let _daemon = start(&path).await;
    let p = read_on(&terminal, &mut uplink, 503, &code).await;
    assert_eq!(p.reason, "ok", "after a restart");

    // A snapshot of the company's lists (other residents, other households): the pass stays.
    let snapshot = v1::RegistrySnapshot {
        version: 9,
        residents: vec![v1::ResidentEntry {
            person_id: "S000001".into(),
            household: "H900".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let order = command(
        "snap-9",
        v1::Level::Gateway,
        GATEWAY_PATH,
        v1::command::Payload::RegistrySnapshot(snapshot),
    );
    let admin = Client::connect(&broker, "company-admin").await;
    send(
        &admin,
        &format!("{BASE}/cmd"),
        &sign(&order, "company", &company()),
    )
    .await;
    assert!(uplink.result().await.applied);
    // Its third and last entry.
    let p = read_on(&terminal, &mut uplink, 504, &code).await;
    assert_eq!(p.reason, "ok", "after a snapshot from above");
    let p = read_on(&terminal, &mut uplink, 506, "5555").await;
    assert_eq!(
        (p.reason.as_str(), p.subject_id.as_str()),
        ("ok", second.as_str()),
        "a card handed out again belongs to its newest pass, after a restart and a sync"
    );
    let p = read_on(&terminal, &mut uplink, 505, &code).await;
    assert_eq!(p.reason, "expired", "three entries, used");
}

/// Waits until the console shows the clock synced (or not): the decision loop reads the sync
/// state each second, and the console shows what the status says.
async fn synced(b: &Browser, yes: bool) {
    within("the clock on the console", LONG, async {
        while b.hello().await["gate"]["clock_synced"] != yes {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The decision loop reads it at its next tick, after the status.
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn start(path: &std::path::Path) -> Daemon {
    let daemon = Daemon::start(Config::load(path).unwrap(), Profiles::builtin());
    within("daemon start", LONG, daemon).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_obeys_the_mode_and_the_clock_and_can_be_withdrawn() {
    // The clock as the kernel says, not vouched for by the config: the test moves it.
    let (mut h, addr) = gateway_with(|t| t.replace("trusted = true", "trusted = false")).await;
    let mut guard = Browser::new(addr);
    let csrf = guard.login("guard", GUARD_PW).await.unwrap();
    let store = h.dir.path().join("store");
    let said = gatehouse::daemon::control::send(&store, "test-clock-synced true").await;
    assert_eq!(said.unwrap(), "ok");
    synced(&guard, true).await;
    // A household the lists do not know is no host.
    refused(&mut guard, &csrf, "H999", "名单中没有住户 H999").await;
    let (id, code) = register(&mut guard, &csrf, "5").await;

    // The clock not known to be right: the pass waits (a window read on a wrong clock admits
    // anyone or no one).
    let said = gatehouse::daemon::control::send(&store, "test-clock-synced false").await;
    assert_eq!(said.unwrap(), "ok");
    synced(&guard, false).await;
    let p = read(&mut h, 601, &code).await;
    assert_eq!(p.reason, "clock_unsynced");
    // Nor is one registered on such a clock (its window would be written on it).
    refused(&mut guard, &csrf, "H001", "时钟未同步").await;
    gatehouse::daemon::control::send(&store, "test-clock-synced true")
        .await
        .unwrap();
    synced(&guard, true).await;
    assert_eq!(read(&mut h, 602, &code).await.reason, "ok");

    // Lockdown: no visitors, and none registered.
    let said = gatehouse::daemon::control::send(&store, "mode lockdown").await;
    assert_eq!(said.unwrap(), "ok");
    assert_eq!(read(&mut h, 603, &code).await.reason, "lockdown");
    refused(&mut guard, &csrf, "H001", "封控期间不接待访客").await;
    gatehouse::daemon::control::send(&store, "mode normal")
        .await
        .unwrap();

    // Withdrawn: it opens nothing more, and the company hears of it.
    let r = guard
        .post("/withdraw", &[("csrf", &csrf), ("id", &id)])
        .await;
    assert_eq!(r.code, 303);
    assert_eq!(read(&mut h, 604, &code).await.reason, "expired");
    let withdrawn = h
        .uplink
        .event_body(|b| match b {
            v1::event::Body::VisitorPass(p) if p.withdrawn => Some(p),
            _ => None,
        })
        .await;
    assert_eq!(withdrawn.pass_id, id);
}
