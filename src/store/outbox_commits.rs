//! The thread the writer's commits run on, and its priority. On two cores shared with the broker
//! and the load, an event that arrived during a group commit (~0.5 ms of redb work every 10 ms)
//! waited for a core until the commit ended: that wait made the gate's p99 (docs/performance.md,
//! "The tail, fourth round"). So a writer that keeps up commits quietly, under `SCHED_IDLE`: a
//! gate thread woken meanwhile takes the core at once. A writer that falls behind — a batch
//! closed by `commit_max`, appends queued, a commit slower than the interval — commits at normal
//! priority for `LOUD_FOR`; and a quiet commit unfinished after `RAISE_AFTER` (a busy box gives an
//! idle thread next to nothing) is raised to normal priority where it stands, so the outbox is
//! never starved (quiet-only, the gate's p50 went to seconds beside two busy loops). Only the
//! writer changes the thread's policy, in order: idle just before a quiet commit is handed over,
//! normal again once it answers or is late, so the thread never waits for work, or for a loud
//! commit, as an idle thread.
//!
//! A quiet commit that is preempted while it holds a lock a worker wants (glibc's arena lock)
//! makes that worker wait until a core is free for it — which the worker's own wait frees — or
//! until the raise.
//!
//! Leaving `SCHED_IDLE` needs `RLIMIT_NICE` to allow nice 0 (the unit's `LimitNICE=+0`) or
//! `CAP_SYS_NICE`; where it is not allowed the commits are never quiet.
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the writer stays at normal priority after it was last behind.
const LOUD_FOR: Duration = Duration::from_secs(1);
/// A quiet commit still unanswered after this (or the interval, if shorter) is raised.
const RAISE_AFTER: Duration = Duration::from_millis(10);

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Commits {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The commit thread's id, for its policy.
    tid: libc::pid_t,
    /// Whether commits may be quiet: only where the thread can be raised again.
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
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("gh-writer".into())
            .spawn(move || {
                let _ = tid_tx.send(gettid());
                // Its disk writes keep the normal class: unset, an idle thread's I/O would be
                // idle class too, behind everything else's.
                best_effort_io();
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| std::io::Error::other("the commit thread ended at its start"))?;
        Ok(Commits {
            jobs: Some(jobs),
            thread: Some(thread),
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
        if quiet {
            let _ = set_idle(self.tid, true);
        }
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        let r = if !sent {
            Err(Panicked)
        } else if quiet {
            let late = tokio::time::timeout(RAISE_AFTER.min(self.interval), &mut rx).await;
            // Normal again before the next commit, whether this one answered or is late
            // (starved, or a slow disk: it finishes at normal priority).
            self.raise();
            match late {
                Ok(r) => r.map_err(|_| Panicked),
                Err(_) => rx.await.map_err(|_| Panicked),
            }
        } else {
            rx.await.map_err(|_| Panicked)
        };
        self.last_took = now.elapsed();
        r
    }

    /// Back to normal priority; refused (it never is where the probe passed), the commits are
    /// never quiet again, so this is said once.
    fn raise(&mut self) {
        if let Err(e) = set_idle(self.tid, false) {
            tracing::warn!(error = %e, "Cannot raise the commit thread; commits stay at normal priority.");
            self.may_quiet = false;
        }
    }
}

impl Drop for Commits {
    /// Waits for a commit in flight (the writer dropped mid-commit at shutdown), so the process
    /// never exits in the middle of a transaction.
    fn drop(&mut self) {
        self.jobs = None;
        let _ = set_idle(self.tid, false);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a thread may go to `SCHED_IDLE` and come back (tried on a thread of its own, so no
/// thread of ours is left idle by a refusal).
fn idle_and_back_allowed() -> bool {
    std::thread::Builder::new()
        .name("gh-writer-probe".into())
        .spawn(|| set_idle(0, true).is_ok() && set_idle(0, false).is_ok())
        .ok()
        .and_then(|t| t.join().ok())
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

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as libc::pid_t }
}

/// The calling thread's I/O priority set explicitly: best effort, the default level (4).
fn best_effort_io() {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    // SAFETY: ioprio_set on the calling thread (0) with a valid class and level.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (IOPRIO_CLASS_BE << 13) | 4,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Busy loops on every core, twice over, stopped when dropped.
    struct Busy {
        stop: Arc<AtomicBool>,
        loops: Vec<std::thread::JoinHandle<()>>,
    }

    impl Busy {
        fn start() -> Busy {
            let stop = Arc::new(AtomicBool::new(false));
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let loops = (0..cores * 2)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::spin_loop();
                        }
                    })
                })
                .collect();
            Busy { stop, loops }
        }
    }

    impl Drop for Busy {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for l in self.loops.drain(..) {
                let _ = l.join();
            }
        }
    }

    fn thread_cpu() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the valid timespec it is given.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        assert_eq!(r, 0, "clock_gettime");
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// `ms` of CPU on the commit thread; what policy it ran under at its start and its end, and
    /// how long it took from the writer's asking.
    async fn work(commits: &mut Commits, busy: bool, ms: u64) -> (i32, i32, Duration) {
        let asked = Instant::now();
        let (first, last) = commits
            .run(busy, move || {
                // SAFETY: sched_getscheduler on the calling thread.
                let first = unsafe { libc::sched_getscheduler(0) };
                let until = thread_cpu() + Duration::from_millis(ms);
                while thread_cpu() < until {
                    std::hint::spin_loop();
                }
                // SAFETY: as above.
                (first, unsafe { libc::sched_getscheduler(0) })
            })
            .await
            .expect("the commit ran");
        (first, last, asked.elapsed())
    }

    /// Quiet commits run under SCHED_IDLE; beside busy loops on every core a quiet one is raised
    /// and finishes in about its own time (not after the loops let an idle thread run: seconds),
    /// and a loud one after it neither starts idle nor waits as one.
    #[tokio::test]
    async fn quiet_commits_yield_and_are_never_starved() {
        // A long interval: only the raise (after 10 ms) and `busy` decide here, not how long the
        // commits took beside the other tests.
        let mut commits = Commits::start(Duration::from_secs(1)).expect("commit thread");
        if !commits.may_quiet {
            let why = "this process may not leave SCHED_IDLE (RLIMIT_NICE, CAP_SYS_NICE)";
            if std::env::var_os("GATEHOUSE_NO_SKIP").is_some_and(|v| v == "1") {
                panic!("cannot run: {why} (GATEHOUSE_NO_SKIP=1: skips fail)");
            }
            println!("skipped: {why}");
            return;
        }
        // Idle, unless it only got a core once raised (the other tests keep the cores busy).
        let (first, _, took) = work(&mut commits, false, 1).await;
        assert!(
            first == libc::SCHED_IDLE || took >= RAISE_AFTER,
            "a quiet commit ran at normal priority before it was late"
        );
        let busy = Busy::start();
        let (_, last, took) = work(&mut commits, false, 20).await;
        // 20 ms of CPU cannot be done before the raise.
        assert_eq!(last, libc::SCHED_OTHER, "a late quiet commit is raised");
        assert!(
            took < Duration::from_millis(1500),
            "a quiet commit starved for {took:?}"
        );
        // Behind: a loud commit, which starts at normal priority.
        let (first, last, took) = work(&mut commits, true, 5).await;
        assert_eq!((first, last), (libc::SCHED_OTHER, libc::SCHED_OTHER));
        assert!(
            took < Duration::from_millis(1500),
            "a loud commit waited {took:?}"
        );
        drop(busy);
    }
}
