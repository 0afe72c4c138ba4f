//! The thread the writer's commits run on, and its priority. On two cores shared with the broker
//! and the load, an event that arrived during a group commit (~0.5 ms of redb work every 10 ms)
//! waited for a core until the commit ended: that wait made the gate's p99 (docs/performance.md,
//! "The tail"). So a writer that keeps up commits quietly, under `SCHED_IDLE`: a gate thread
//! woken meanwhile takes the core at once. A writer that falls behind — a batch closed by
//! `commit_max`, appends queued, a commit slower than the interval — commits at normal priority
//! for `LOUD_FOR`; and a quiet commit still unfinished after the interval (a busy box gives an
//! idle thread next to nothing) is raised to normal priority where it stands, so the outbox is
//! never starved (quiet-only, the gate's p50 went to seconds under two busy loops).
//!
//! Raising a thread out of `SCHED_IDLE` needs `RLIMIT_NICE` to allow nice 0 (the unit's
//! `LimitNICE=+0`) or `CAP_SYS_NICE`; where it is not allowed the commits are never quiet.
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the writer stays at normal priority after it was last behind.
const LOUD_FOR: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Commits {
    jobs: mpsc::Sender<(bool, Job)>,
    /// The commit thread's id, to raise a starved quiet commit.
    tid: libc::pid_t,
    /// Whether commits may be quiet: only where a quiet one can be raised again.
    may_quiet: bool,
    /// The group commit's interval: a commit slower than it means the writer is behind.
    interval: Duration,
    /// Commits are loud until then.
    loud_until: Option<Instant>,
    /// How long the last commit took, from the writer's asking to its answer.
    last_took: Duration,
}

/// The commit's thread is gone: it panicked (a bug in redb or here).
#[derive(Debug)]
pub(super) struct Panicked;

impl Commits {
    pub(super) fn start(interval: Duration) -> std::io::Result<Self> {
        // `GATEHOUSE_BENCH_WRITER_QUIET=0`: never quiet (the before/after runs of the benchmarks).
        let wanted = crate::metrics::bench_knob("WRITER_QUIET") != Some(0);
        let may_quiet = wanted && idle_and_back_allowed();
        if wanted && !may_quiet {
            tracing::info!("Outbox commits stay at normal priority (LimitNICE=+0 lets them yield to the gate's threads).");
        }
        let (jobs, rx) = mpsc::channel::<(bool, Job)>();
        let (tid_tx, tid_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("gh-writer".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                let mut was_quiet = false;
                while let Ok((quiet, job)) = rx.recv() {
                    // Set each time a quiet commit: the writer may have raised the last one.
                    if quiet || was_quiet {
                        let _ = set_idle(0, quiet);
                    }
                    was_quiet = quiet;
                    job();
                }
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| std::io::Error::other("the commit thread ended at its start"))?;
        Ok(Commits {
            jobs,
            tid,
            may_quiet,
            interval,
            loud_until: None,
            last_took: Duration::ZERO,
        })
    }

    /// Runs `f` on the commit thread and waits for its result. `busy`: the batch was closed by
    /// its size, or appends are queued behind it.
    pub(super) async fn run<T: Send + 'static>(
        &mut self,
        busy: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let now = Instant::now();
        if busy || self.last_took > self.interval {
            self.loud_until = Some(now + LOUD_FOR);
        }
        let quiet = self.may_quiet && self.loud_until.is_none_or(|t| now >= t);
        let (tx, mut rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send((quiet, job)).map_err(|_| Panicked)?;
        let r = match tokio::time::timeout(self.interval, &mut rx).await {
            Ok(r) => r,
            Err(_) => {
                if quiet {
                    // Starved (or a slow disk): normal priority for the rest of this commit.
                    let _ = set_idle(self.tid, false);
                }
                rx.await
            }
        };
        self.last_took = now.elapsed();
        r.map_err(|_| Panicked)
    }
}

/// Whether a thread may go to `SCHED_IDLE` and come back (tried on a thread of its own, so
/// no thread of ours is left idle by a refusal).
fn idle_and_back_allowed() -> bool {
    std::thread::spawn(|| set_idle(0, true).is_ok() && set_idle(0, false).is_ok())
        .join()
        .unwrap_or(false)
}

/// Puts thread `tid` (0: the calling one) under `SCHED_IDLE`, or back under `SCHED_OTHER`.
fn set_idle(tid: libc::pid_t, idle: bool) -> std::io::Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on a thread of this process with a valid parameter.
    match unsafe { libc::sched_setscheduler(tid, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A quiet commit on a box whose cores are all busy is raised after the interval and
    /// finishes in about its own time, not after the busy loops let an idle thread run.
    #[tokio::test]
    async fn a_starved_quiet_commit_is_raised() {
        let mut commits = Commits::start(Duration::from_millis(10)).expect("commit thread");
        if !commits.may_quiet {
            eprintln!("skipped: this process may not leave SCHED_IDLE (RLIMIT_NICE)");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hogs: Vec<_> = (0..cores * 2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        // 20 ms of CPU: under SCHED_IDLE beside the busy loops that is seconds.
        let took = commits
            .run(false, || {
                let start = std::time::Instant::now();
                // SAFETY: clock_gettime on a valid timespec.
                let cpu = || {
                    let mut t = libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    };
                    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
                    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
                };
                let until = cpu() + Duration::from_millis(20);
                while cpu() < until {
                    std::hint::spin_loop();
                }
                start.elapsed()
            })
            .await
            .expect("the commit ran");
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            let _ = h.join();
        }
        assert!(
            took < Duration::from_millis(1500),
            "a quiet commit was starved for {took:?}"
        );
        eprintln!(
            "a quiet commit of 20 ms of CPU beside {} busy loops took {took:?}",
            cores * 2
        );
    }
}
