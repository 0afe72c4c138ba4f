use super::child::{demo_config, spawn_demo};
use anyhow::Context;
use gatehouse::tools::sim::http_push::{hikvision_multipart, zhenshi_plate, Pusher};
use gatehouse::tools::sim::isapi_terminal::Terminal;
use gatehouse::tools::sim::site::{DemoConfig, HttpLane};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// `gatehouse-demo bench-http`: the HTTP vendor paths in a child daemon, one device of each at `rate`
/// events/s for `count` events — a Zhenshi camera whose reply is the barrier command (POST →
/// reply), a Hikvision terminal in listening mode whose door gatehouse opens over ISAPI (POST →
/// door command at the terminal, POST → 200), a Dahua terminal's stream (part → openDoor), and a
/// ZKTeco terminal on ADMS (every tenth event: record → door command in a poll).
pub struct HttpBenchOptions {
    pub count: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpReport {
    pub events: u64,
    /// Zhenshi: plate read POSTed → the reply (`info: "ok"`, a resident's car) received.
    pub zhenshi_reply_p50_us: u64,
    pub zhenshi_reply_p99_us: u64,
    pub zhenshi_reply_max_us: u64,
    pub zhenshi_not_ok: u64,
    /// Hikvision listening mode: event POSTed → `RemoteControl/door` PUT at the terminal.
    pub hikvision_door_p50_us: u64,
    pub hikvision_door_p99_us: u64,
    pub hikvision_door_max_us: u64,
    pub hikvision_doors_missing: u64,
    /// Hikvision: event POSTed → its 200 (after the decision is durable).
    pub hikvision_200_p50_us: u64,
    pub hikvision_200_p99_us: u64,
    /// Dahua: event part written into the eventManager stream → `openDoor` GET at the terminal.
    pub dahua_door_p50_us: u64,
    pub dahua_door_p99_us: u64,
    pub dahua_door_max_us: u64,
    pub dahua_doors_missing: u64,
    /// ZKTeco ADMS (`Delay` = 1 s, the terminal polling every second): ATTLOG POSTed → the door
    /// command in a poll's answer.
    pub adms_door_p50_us: u64,
    pub adms_door_p99_us: u64,
    pub adms_door_max_us: u64,
    pub adms_doors_missing: u64,
}

pub async fn http(o: HttpBenchOptions) -> anyhow::Result<HttpReport> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    gatehouse::tools::sim::site::write_residents(&dir.join("residents.csv"), 1000)?;
    gatehouse::tools::sim::site::write_plates(&dir.join("plates.csv"), 300)?;
    let (terminal, mut doors) = Terminal::start("admin", "bench-api-pw").await?;
    let (dahua, mut dahua_doors) = Terminal::start("admin", "bench-api-pw").await?;
    let http_port = gatehouse_company::broker::free_port()?;
    let config = DemoConfig {
        plates: true,
        http_lane: Some(HttpLane {
            http_port,
            api: terminal.addr,
            api_password: "bench-api-pw".into(),
            camera: true,
            dahua: Some(dahua.addr),
            adms_sn: Some("BENCH0000001".into()),
        }),
        ..demo_config(&dir)?
    };
    let _daemon = spawn_demo(&config)?;
    let addr = format!("127.0.0.1:{http_port}");
    let mut camera = Pusher::new(&addr);
    let mut term = Pusher::new(&addr);
    let cam_path = format!("/push/cam-3/{}", config.password("cam-3"));
    let term_path = format!("/push/terminal-3/{}", config.password("terminal-3"));
    // Ready when a heartbeat is answered.
    let beat = gatehouse::tools::sim::http_push::zhenshi_heartbeat(0, gatehouse::now_ms() / 1000);
    let started = Instant::now();
    while camera
        .post(&cam_path, "application/json", beat.clone().into_bytes())
        .await
        .map_or(true, |(s, _)| !s.is_success())
    {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "daemon not up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram");
    let (mut reply, mut door, mut ok200) = (hist()?, hist()?, hist()?);
    let mut not_ok = 0;
    let mut missing = 0;
    let (mut dahua_door, mut adms_door) = (hist()?, hist()?);
    let (mut dahua_missing, mut adms_missing) = (0, 0);
    let mut zk = gatehouse::tools::sim::adms::Terminal::new(&addr, "BENCH0000001");
    zk.handshake().await.map_err(anyhow::Error::msg)?;
    let mut zk_next_poll = Instant::now();
    // The Dahua stream is open before the run.
    let started = Instant::now();
    while dahua.open_streams() == 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "Dahua stream not opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(0.1)));
    for i in 1..=o.count {
        tick.tick().await;
        // A resident's car (粤B1xxxx, every third household).
        let plate = format!("粤B1{:04}", (i * 3) % 300);
        let body = zhenshi_plate(i, &plate, 96, 4, false, gatehouse::now_ms() / 1000);
        let t = Instant::now();
        match camera
            .post(&cam_path, "application/json", body.into_bytes())
            .await
        {
            Ok((_, b)) if b.starts_with(br#"{"Response_AlarmInfoPlate":{"info":"ok","#) => {
                let _ = reply.record(t.elapsed().as_micros() as u64);
            }
            _ => not_ok += 1,
        }
        // An active resident (the demo's list quarantines every 50th, suspends every 70th: skipped).
        let who = i % 998 + 1;
        let who = if who % 50 == 49 || who % 70 == 69 {
            who + 1
        } else {
            who
        };
        let ev = serde_json::json!({"dateTime": gatehouse::timefmt::rfc3339(gatehouse::now_ms()),
            "eventType": "AccessControllerEvent", "AccessControllerEvent": {"serialNo": i,
            "employeeNoString": format!("R{who:06}"), "currTemperature": 36.5}})
        .to_string();
        let (ct, body) = hikvision_multipart(&ev, 30_000);
        let t = Instant::now();
        // The door command leaves before the record, so before the 200: both timed from the POST.
        let door_at = async {
            match tokio::time::timeout(Duration::from_millis(500), doors.recv()).await {
                Ok(Some(_)) => Some(t.elapsed()),
                _ => None,
            }
        };
        let answered = async {
            let a = term.post(&term_path, &ct, body).await;
            (a, t.elapsed())
        };
        let (door_at, (answer, answered_at)) = tokio::join!(door_at, answered);
        if matches!(answer, Ok((s, _)) if s.is_success()) {
            let _ = ok200.record(answered_at.as_micros() as u64);
        }
        match door_at {
            Some(d) => {
                let _ = door.record(d.as_micros() as u64);
            }
            None => missing += 1,
        }
        // Dahua: into the stream, out at the door.
        let t = Instant::now();
        dahua.send_dahua(&format!(
            r#"Code=AccessControl;action=Pulse;index=0;data={{"UserID":"R{who:06}","Method":15,"RecNo":{i}}}"#
        ));
        match tokio::time::timeout(Duration::from_millis(500), dahua_doors.recv()).await {
            Ok(Some(_)) => {
                let _ = dahua_door.record(t.elapsed().as_micros() as u64);
            }
            _ => dahua_missing += 1,
        }
        // ADMS, every tenth event (each waits for a poll): the record up, then polls each second
        // as the terminal does, from its own schedule.
        if i % 10 == 0 {
            let t = Instant::now();
            let line =
                gatehouse::tools::sim::adms::attlog(&format!("R{who:06}"), gatehouse::now_ms());
            let _ = zk.upload(&[line]).await;
            let mut got = None;
            while got.is_none() && t.elapsed() < Duration::from_secs(3) {
                let wait = zk_next_poll.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait).await;
                zk_next_poll += Duration::from_secs(1);
                if let Ok(cmds) = zk.poll().await {
                    if !cmds.is_empty() {
                        got = Some(t.elapsed());
                    }
                }
            }
            match got {
                Some(d) => {
                    let _ = adms_door.record(d.as_micros() as u64);
                }
                None => adms_missing += 1,
            }
        }
    }
    drop(terminal);
    drop(dahua);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(HttpReport {
        events: o.count,
        zhenshi_reply_p50_us: reply.value_at_quantile(0.5),
        zhenshi_reply_p99_us: reply.value_at_quantile(0.99),
        zhenshi_reply_max_us: reply.max(),
        zhenshi_not_ok: not_ok,
        hikvision_door_p50_us: door.value_at_quantile(0.5),
        hikvision_door_p99_us: door.value_at_quantile(0.99),
        hikvision_door_max_us: door.max(),
        hikvision_doors_missing: missing,
        hikvision_200_p50_us: ok200.value_at_quantile(0.5),
        hikvision_200_p99_us: ok200.value_at_quantile(0.99),
        dahua_door_p50_us: dahua_door.value_at_quantile(0.5),
        dahua_door_p99_us: dahua_door.value_at_quantile(0.99),
        dahua_door_max_us: dahua_door.max(),
        dahua_doors_missing: dahua_missing,
        adms_door_p50_us: adms_door.value_at_quantile(0.5),
        adms_door_p99_us: adms_door.value_at_quantile(0.99),
        adms_door_max_us: adms_door.max(),
        adms_doors_missing: adms_missing,
    })
}
