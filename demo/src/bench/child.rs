//! The daemon a bench runs: `gatehouse run` as a child process on a config of the bench's own,
//! stopped and cleaned up on drop, and its memory read from /proc.
use anyhow::Context;
use gatehouse::tools::sim::site::DemoConfig;
use gatehouse_company::broker::free_port;
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A daemon started for the run; stopped (SIGTERM) and its files removed on drop.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) dir: PathBuf,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dir/residents.csv`: `R000000`… all active, three to a household, as the workload expects.
pub(super) fn write_residents(dir: &Path, n: u64) -> std::io::Result<()> {
    let mut csv = String::from("person_id,household\n");
    for i in 0..n {
        csv.push_str(&format!("R{i:06},H{:05}\n", i / 3));
    }
    std::fs::write(dir.join("residents.csv"), csv)
}

pub(super) fn rss_kb(pid: u32, field: &str) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(super) fn intervals(times: &[Instant]) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    for w in times.windows(2) {
        let _ = h.record((w[1].duration_since(w[0]).as_micros() as u64).max(1));
    }
    Ok(h)
}

/// The demo's gate for a bench in `dir`: devices on the endpoint at a free port, the uplink to a
/// stand-in company broker (rumqttd, in this process) on another.
pub(super) fn demo_config(dir: &Path) -> anyhow::Result<DemoConfig> {
    let company = free_port()?;
    gatehouse_company::broker::start(([127, 0, 0, 1], company).into())?;
    Ok(DemoConfig::new(dir, free_port()?, company))
}

/// `gatehouse run` on `demo` (written into its dir with the device secrets).
pub(super) fn spawn_demo(demo: &DemoConfig) -> anyhow::Result<Spawned> {
    std::fs::create_dir_all(&demo.dir)?;
    demo.write()?;
    let child = spawn_run(&demo.dir, &[])?;
    Ok(Spawned {
        child,
        dir: demo.dir.clone(),
    })
}

/// The box's own `gatehouse` binary, built beside this one: a bench measures the daemon a gate
/// runs, not a copy linked into the demo.
fn box_binary() -> anyhow::Result<std::path::PathBuf> {
    let here = std::env::current_exe()?;
    let path = here.with_file_name("gatehouse");
    anyhow::ensure!(
        path.exists(),
        "{} not found: build the box too (`cargo build --release -p gatehouse`)",
        path.display()
    );
    Ok(path)
}

/// `gatehouse run` on `dir/gatehouse.toml`, its log appended to `dir/gatehouse.log`.
pub(super) fn spawn_run(dir: &Path, env: &[(&str, &Path)]) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gatehouse.log"))?;
    let mut cmd = Command::new(box_binary()?);
    cmd.args(["run", "--config"])
        .arg(dir.join("gatehouse.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().context("starting gatehouse run")
}

pub(super) fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
