//! The local control socket: how someone at the box (the guard, the fire brigade) changes the
//! mode or resets fire mode with the CLI while the daemon runs. A Unix socket in the store
//! directory, created 0600 whatever the umask, and each peer checked by its credentials
//! (`SO_PEERCRED`): root or the daemon's own user only. Who asked — pid and uid — is logged with
//! every change.
//!
//! One request line, one reply line: `mode <normal|epidemic|lockdown|fire>`, `fire-reset`
//! (replies start with `ok` or `refused:`), `status` (the reply is one JSON object: what
//! `gatehouse status` prints as a table). Debug builds only, for the tests: `test-clock-step <ms>`
//! and `test-clock-synced <true|false>`.
use crate::decision::{Mode, Origin};
use crate::uplink::StatusSource;
use anyhow::Context;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// A request from the box itself (`gatehouse mode`, `gatehouse fire-reset`), answered once the
/// change is durable.
pub enum Control {
    SetMode(Mode, Origin, oneshot::Sender<Result<(), String>>),
    FireReset(oneshot::Sender<Result<(), String>>),
    /// A lane opened from the guard's console: the same open as an order's (`remote_open`),
    /// with the guard's login and reason in its record. Refused if its gate command could not
    /// leave (and why).
    Open {
        lane: String,
        by: String,
        reason: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A visitor pass registered (or withdrawn) at the console: it admits from now on (a new
    /// one is refused for a household the lists do not know, in lockdown, and for a credential
    /// someone else holds).
    AddPass(
        Box<crate::store::local_passes::LocalPass>,
        oneshot::Sender<Result<(), String>>,
    ),
}

pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join("control.sock")
}

/// Listens on the control socket until shutdown.
pub fn serve(
    store_dir: &Path,
    to_core: mpsc::Sender<Control>,
    status: StatusSource,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(store_dir);
    // A socket file left by a killed daemon; the store's lock already proved we are alone.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("control socket {}", path.display()))?;
    // Not left to the umask: a started-by-hand daemon must not let any local user order fire.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("control socket {}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                a = listener.accept() => match a {
                    Ok((stream, _)) => {
                        let peer = match stream.peer_cred() {
                            Ok(c) if c.uid() == 0 || c.uid() == own_uid => c,
                            Ok(c) => {
                                warn!(uid = c.uid(), pid = ?c.pid(), "Control request refused: not root nor the daemon's user.");
                                continue;
                            }
                            Err(e) => {
                                warn!(error = %e, "Control request refused: peer unknown.");
                                continue;
                            }
                        };
                        let to_core = to_core.clone();
                        let status = status.clone();
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, to_core, &status, peer).await {
                                warn!(error = %e, "Control request failed.");
                            }
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "Control socket accept failed.");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn answer(
    stream: UnixStream,
    to_core: mpsc::Sender<Control>,
    status: &StatusSource,
    peer: tokio::net::unix::UCred,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    // A request is one short line; more is not ours to read.
    BufReader::new(rd.take(256)).read_line(&mut line).await?;
    if line.trim() == "status" {
        let text = format!("{}\n", status.report());
        return wr.write_all(text.as_bytes()).await;
    }
    if let Some(reply) = test_hook(line.trim(), status) {
        return wr.write_all(format!("{reply}\n").as_bytes()).await;
    }
    info!(request = %line.trim(), uid = peer.uid(), pid = ?peer.pid(), "Control request from the box.");
    let reply = match request(line.trim()) {
        Err(e) => Err(e),
        Ok(make) => {
            let (tx, rx) = oneshot::channel();
            if to_core.send(make(tx)).await.is_err() {
                Err("the daemon is stopping".to_string())
            } else {
                rx.await.unwrap_or(Err("the daemon is stopping".into()))
            }
        }
    };
    let text = match reply {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("refused: {e}\n"),
    };
    wr.write_all(text.as_bytes()).await
}

type Reply = oneshot::Sender<Result<(), String>>;

/// The clock test hooks, in debug builds (what `cargo test` builds) only: a release build has
/// no way to move its clock from outside.
#[cfg(debug_assertions)]
fn test_hook(line: &str, status: &StatusSource) -> Option<String> {
    let mut words = line.split_whitespace();
    match (words.next()?, words.next()?) {
        ("test-clock-step", ms) => status.clock.test_step(ms.parse().ok()?),
        ("test-clock-synced", s) => status.clock.test_force_synced(s == "true"),
        _ => return None,
    }
    Some("ok".into())
}

#[cfg(not(debug_assertions))]
fn test_hook(_line: &str, _status: &StatusSource) -> Option<String> {
    None
}

fn request(line: &str) -> Result<Box<dyn FnOnce(Reply) -> Control + Send>, String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("mode"), Some(m)) => {
            let mode = Mode::parse(m)
                .ok_or_else(|| format!("unknown mode {m:?} (normal, epidemic, lockdown, fire)"))?;
            Ok(Box::new(move |r| Control::SetMode(mode, Origin::Local, r)))
        }
        (Some("fire-reset"), None) => Ok(Box::new(Control::FireReset)),
        _ => Err(format!("unknown request {line:?}")),
    }
}

/// The client side, for the CLI: sends one request, returns the reply line.
pub async fn send(store_dir: &Path, request: &str) -> anyhow::Result<String> {
    let path = socket_path(store_dir);
    let mut stream = UnixStream::connect(&path)
        .await
        .with_context(|| format!("{} (is gatehouse running?)", path.display()))?;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    Ok(reply.trim().to_string())
}
