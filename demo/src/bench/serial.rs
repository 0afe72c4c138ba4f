use super::child::{demo_config, rss_kb, spawn_demo};
use anyhow::{bail, Context};
use gatehouse::tools::sim::site::{DemoConfig, SerialLane};
use hdrhistogram::Histogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `gatehouse-demo bench-serial`: a pedestrian lane on RS-485 ptys (face-id reader → EB turnstile)
/// in a child daemon holding `residents` residents (each with a card) and `passes` visitor
/// passes. Measures identification frame written → turnstile frame read (p50/p99/max) and the
/// daemon's memory idle and under load. Ptys have no baud rate: on a real line add the frames'
/// wire time (11 bits per byte at the line's baud).
///
/// Open loop: each identification is charged from its due time, so a daemon that falls behind
/// pays for the wait (no coordinated omission). A turnstile frame carries no id, so answers are
/// matched by the command each identification must produce — residents open, strangers (a
/// seeded random one in ten) are banned — resynchronising after a lost answer (counted in
/// `lost`) instead of shifting every later sample by one.
pub struct SerialBenchOptions {
    pub count: u64,
    pub rate: u64,
    pub residents: u64,
    pub passes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SerialReport {
    pub sent: u64,
    pub received: u64,
    /// Identifications whose answer never came (matched by command; see above).
    pub lost: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub idle_rss_kb: Option<u64>,
    pub loaded_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

pub async fn serial(o: SerialBenchOptions) -> anyhow::Result<SerialReport> {
    use gatehouse::tools::sim::serial::{run_turnstile, Line, Pty, Reader};
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-serial-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("person_id,household,cards\n");
    for i in 0..o.residents {
        csv.push_str(&format!("R{i:06},H{:05},10:{i}\n", i / 3));
    }
    std::fs::write(dir.join("residents.csv"), csv)?;
    let mut passes =
        String::from("pass_id,host_household,credentials,valid_from,valid_until,uses\n");
    for i in 0..o.passes {
        passes.push_str(&format!(
            "P{i:06},H{:05},QR{i:08},,2099-12-31,5\n",
            i % 30_000
        ));
    }
    std::fs::write(dir.join("passes.csv"), passes)?;
    let face = Pty::new()?;
    let turnstile = Pty::new()?;
    let config = DemoConfig {
        passes: true,
        serial_lane: Some(SerialLane {
            face: face.path.clone(),
            turnstile: turnstile.path.clone(),
            anti_passback: false,
        }),
        ..demo_config(&dir)?
    };
    let spawned = spawn_demo(&config)?;
    let pid = spawned.child.id();

    let (tx, mut frames) = tokio::sync::mpsc::channel(100_000);
    tokio::spawn(run_turnstile(turnstile, 0.0, 1, tx));
    let mut line = Line::new(face, 0.0, 1);
    let reader = Reader::new("rs485-face-id", 1);
    // Probe until the daemon has the port open and answers.
    let mut answered = false;
    for _ in 0..300 {
        line.send(reader.id(0x21, "R000000")).await?;
        if tokio::time::timeout(Duration::from_millis(100), frames.recv())
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    if !answered {
        bail!("the daemon never answered on the serial lane");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while frames.try_recv().is_ok() {}
    let idle = rss_kb(pid, "VmRSS:");

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    // (charged from, opens) of each identification sent and not yet answered.
    type Pending = std::collections::VecDeque<(Instant, bool)>;
    let sent_at: Arc<Mutex<Pending>> = Arc::default();
    let (s2, count) = (sent_at.clone(), o.count);
    let receiver = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(count as usize);
        let mut lost = 0u64;
        while (lat.len() as u64) + lost < count {
            match tokio::time::timeout(Duration::from_secs(5), frames.recv()).await {
                Ok(Some(frame)) => {
                    let now = Instant::now();
                    let mut pending = s2.lock().unwrap_or_else(|e| e.into_inner());
                    // The oldest identification that should have produced this command; any
                    // older one was not answered.
                    while let Some((at, opens)) = pending.pop_front() {
                        if opens == frame.opens() {
                            lat.push(now.duration_since(at).as_micros() as u64);
                            break;
                        }
                        lost += 1;
                    }
                }
                _ => break,
            }
        }
        let unanswered = s2.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        (lat, lost + unanswered)
    });
    let mut rng = gatehouse::tools::sim::Rng::new(0x5e71a1);
    let start = Instant::now();
    let period = Duration::from_nanos(1_000_000_000 / o.rate.max(1));
    for seq in 0..o.count {
        let due = start + period * seq as u32;
        // On schedule: charged from the send; behind it: from the due time.
        let at = if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let resident = rng.next_u64() % 10 != 0;
        sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((at, resident));
        let frame = if resident {
            reader.id(0x21, &format!("R{:06}", seq % o.residents.max(1)))
        } else {
            reader.id(0x20, "")
        };
        line.send(frame).await?;
    }
    let (lat, lost) = receiver.await.unwrap_or_default();
    let loaded = rss_kb(pid, "VmRSS:");
    let peak = rss_kb(pid, "VmHWM:");
    for us in &lat {
        let _ = hist.record((*us).max(1));
    }
    Ok(SerialReport {
        sent: o.count,
        received: lat.len() as u64,
        lost,
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        idle_rss_kb: idle,
        loaded_rss_kb: loaded,
        peak_rss_kb: peak,
    })
}
