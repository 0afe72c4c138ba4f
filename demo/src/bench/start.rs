use super::child::{rss_kb, spawn_run, stop, write_residents};
use anyhow::bail;
use gatehouse::tools::sim::site::DemoConfig;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

pub struct StartBenchOptions {
    pub residents: u64,
    pub plates: u64,
    pub runs: u32,
    pub idle_seconds: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct StartReport {
    /// Start → READY of the first start, which imports the lists into the store.
    pub first_ready_ms: f64,
    /// Start → READY with the lists already in the store, each run.
    pub ready_ms: Vec<f64>,
    pub idle_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

/// Start-up and idle memory: `gatehouse run` on a broker of the bench's own (so its memory is
/// the daemon's alone), the demo lane, N residents and M plates. READY is taken from the
/// systemd notification, as systemd would see it.
pub fn start(o: StartBenchOptions) -> anyhow::Result<StartReport> {
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = start_in(&dir, &o);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn start_in(dir: &Path, o: &StartBenchOptions) -> anyhow::Result<StartReport> {
    use std::io::Write;
    write_residents(dir, o.residents)?;
    let mut plates = std::io::BufWriter::new(std::fs::File::create(dir.join("plates.csv"))?);
    writeln!(plates, "plate,kind,household,valid_until,lockdown_allowed")?;
    for i in 0..o.plates {
        writeln!(
            plates,
            "粤B{i:05},resident,H{:05},,",
            i % (o.residents / 3).max(1)
        )?;
    }
    plates.flush()?;
    let port = gatehouse_company::broker::free_port()?;
    gatehouse_company::broker::start(([127, 0, 0, 1], port).into())?;
    let config = DemoConfig {
        external_broker: true,
        plates: true,
        ..DemoConfig::new(dir, port, port)
    }
    .toml();
    std::fs::write(dir.join("gatehouse.toml"), config)?;
    let notify = dir.join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let start_once = |keep: bool| -> anyhow::Result<(f64, Option<Child>)> {
        let t0 = Instant::now();
        let mut child = spawn_run(dir, &[("NOTIFY_SOCKET", notify.as_path())])?;
        let mut buf = [0u8; 256];
        loop {
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = child.kill();
                    bail!("no READY from gatehouse run ({e}); see its log");
                }
            };
            if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                break;
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if keep {
            return Ok((ms, Some(child)));
        }
        stop(&mut child);
        Ok((ms, None))
    };
    let (first_ready_ms, _) = start_once(false)?;
    let mut ready_ms = Vec::new();
    for _ in 1..o.runs.max(1) {
        ready_ms.push(start_once(false)?.0);
    }
    let (ms, child) = start_once(true)?;
    ready_ms.push(ms);
    let Some(mut child) = child else {
        bail!("the last run was not kept");
    };
    std::thread::sleep(Duration::from_secs(o.idle_seconds));
    let idle_rss_kb = rss_kb(child.id(), "VmRSS:");
    let peak_rss_kb = rss_kb(child.id(), "VmHWM:");
    stop(&mut child);
    Ok(StartReport {
        first_ready_ms,
        ready_ms,
        idle_rss_kb,
        peak_rss_kb,
    })
}
