//! `gatehouse run` and `gatehouse check-config`: the daemon's life under systemd.
use crate::config::{Config, ConfigError, Problem};
use crate::daemon::Daemon;
use crate::device::Profiles;
use crate::metrics::Metrics;
use crate::store::residents;
use crate::systemd;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// Why `run` ended badly; config errors get their own exit code so systemd does not restart.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

/// Loads a config and the profiles it names, and returns every problem found in either (and,
/// with `check_lists`, in the resident file it imports: `check-config` reads it; `run` leaves it
/// to the import, which skips an unchanged file and refuses a bad one with an alarm while the
/// stored list keeps the gate working — a typo in a list must not keep the gate from starting).
pub fn load_checked(
    path: &Path,
    ports: Ports,
    check_lists: bool,
) -> Result<(Config, Profiles), ConfigError> {
    load_warned(path, ports, check_lists).map(|(config, profiles, _)| (config, profiles))
}

/// [`load_checked`], with the warnings: what starts, but should not at a real gate.
pub fn load_warned(
    path: &Path,
    ports: Ports,
    check_lists: bool,
) -> Result<(Config, Profiles, Vec<Problem>), ConfigError> {
    let mut config = Config::load(path)?;
    if let Some(p) = ports.broker {
        override_port(&mut config, p);
    } else if let Some(p) = ports.endpoint {
        config.device_broker.mode = crate::config::BrokerMode::Endpoint;
        config.device_broker.listen = std::net::SocketAddr::from(([127, 0, 0, 1], p));
    }
    if let Some(p) = ports.http {
        config.device_http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], p));
    }
    let (profiles, mut problems) = Profiles::load(config.profiles.dir.as_deref());
    let (found, warnings) = config.check(&profiles);
    problems.extend(found);
    let import = config.registry.import.as_ref().filter(|_| check_lists);
    if let Some(file) = import.filter(|f| f.is_file()) {
        let max = config.registry.max_residents;
        let checked =
            residents::read(file, max).and_then(|text| residents::parse(file, &text, max));
        if let Err(bad) = checked {
            problems.extend(bad.into_iter().map(|message| Problem {
                path: format!("registry.import ({})", file.display()),
                message,
            }));
        }
    }
    if problems.is_empty() {
        Ok((config, profiles, warnings))
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// A benchmark's ports for the device side, given on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// `--broker-port`: an external broker on 127.0.0.1.
    pub broker: Option<u16>,
    /// `--endpoint-port`: the endpoint on 127.0.0.1.
    pub endpoint: Option<u16>,
    /// `--http-port`: the HTTP device listener on 127.0.0.1.
    pub http: Option<u16>,
}

/// `--broker-port P`: the device side becomes the external broker on 127.0.0.1:P, and an uplink on
/// loopback moves to P too (how the shared benchmark points an engine at its broker).
fn override_port(config: &mut Config, port: u16) {
    config.device_broker.mode = crate::config::BrokerMode::External;
    config.device_broker.url = Some(format!("mqtt://127.0.0.1:{port}"));
    if let Ok(u) = crate::mqtt_client::BrokerUrl::parse(&config.uplink.url) {
        if u.host == "127.0.0.1" || u.host == "localhost" {
            let scheme = if u.tls { "mqtts" } else { "mqtt" };
            config.uplink.url = format!("{scheme}://{}:{port}", u.host);
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path, ports: Ports) -> Result<(), RunError> {
    // Handlers first: a SIGTERM during start-up must still end in an orderly stop.
    let signal = wait_for_signal();
    let (config, profiles, warnings) = load_warned(config_path, ports, false)?;
    for w in &warnings {
        tracing::warn!(at = %w.path, "{}", w.message);
    }
    info!(gateway = %config.gateway.id, lanes = config.lanes.len(), config = %config_path.display(), "Starting.");
    let daemon = Daemon::start(config, profiles).await?;
    systemd::notify("READY=1");
    info!("Ready.");
    let watchdog = systemd::watchdog_interval()
        .map(|every| tokio::spawn(watchdog(every, daemon.metrics.clone())));
    let _ = signal.await;
    info!("Stopping: intake closed, flushing the outbox.");
    systemd::notify("STOPPING=1");
    if let Some(w) = watchdog {
        w.abort();
    }
    daemon.stop().await;
    info!("Stopped.");
    Ok(())
}

/// Pings the watchdog only while every loop that matters turns: a hung one gets the process
/// restarted by systemd. Checks at half the watchdog timeout, but never more often than the
/// loops' one-second idle turn (so `WatchdogSec` must be at least 3 s).
async fn watchdog(every: std::time::Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(1100)));
    tick.tick().await;
    let mut last = metrics.progress();
    loop {
        tick.tick().await;
        let now = metrics.progress();
        let stalled: Vec<&str> = now
            .iter()
            .zip(&last)
            .filter(|(n, l)| n.1 == l.1)
            .map(|(n, _)| n.0)
            .collect();
        if stalled.is_empty() {
            systemd::notify("WATCHDOG=1");
        } else {
            warn!(stalled = ?stalled, "No progress; withholding the watchdog ping.");
        }
        last = now;
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled, so no signal slips through between the two.
pub fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
