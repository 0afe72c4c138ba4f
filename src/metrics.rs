//! Counters every part of the pipeline bumps, shared read-only with status, tests and the log.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Device messages received on an event topic.
    pub events_received: AtomicU64,
    /// Device messages that did not decode (bad JSON, wrong types, too large).
    pub decode_errors: AtomicU64,
    /// Device acks the MQTT client would not queue (the broker redelivers those events).
    pub ack_errors: AtomicU64,
    pub decisions: AtomicU64,
    pub commands_sent: AtomicU64,
    /// Gate commands not handed to the broker (connection down): the passage is denied locally.
    pub command_errors: AtomicU64,
    /// Gate commands dropped because they were too old to write (a port that was down or slow).
    pub commands_stale: AtomicU64,
    pub outbox_appended: AtomicU64,
    pub outbox_commits: AtomicU64,
    pub outbox_commit_errors: AtomicU64,
    /// Commits that asked for an fsync (every one holding records or state).
    pub outbox_durable_commits: AtomicU64,
    pub outbox_depth: AtomicU64,
    pub outbox_bytes: AtomicU64,
    /// Records the outbox dropped for room or age, since the store was created.
    pub outbox_evicted: AtomicU64,
    /// The store cannot be written: acknowledging from memory, records in memory (degraded).
    pub store_degraded: AtomicBool,
    /// Records kept in memory only because the store could not be written, since the start.
    pub outbox_spilled: AtomicU64,
    /// Of those, held in memory now (waiting for the uplink or the store).
    pub outbox_in_memory: AtomicU64,
    /// Bumped by the outbox writer on every turn (at least once a second), for the watchdog.
    pub writer_ticks: AtomicU64,
    pub uplink_published: AtomicU64,
    pub uplink_acked: AtomicU64,
    pub uplink_read_errors: AtomicU64,
    pub uplink_connected: AtomicBool,
    pub device_broker_connected: AtomicBool,
    /// Connections made to the device broker (1 when it never dropped); on the endpoint,
    /// devices' connections accepted.
    pub device_connects: AtomicU64,
    /// The device broker confirmed our event subscriptions.
    pub device_subscribed: AtomicBool,
    /// Bumped by the decision loop on every turn, for the watchdog.
    pub core_ticks: AtomicU64,
    /// Bumped by the device events task on every turn (at least once a second).
    pub source_ticks: AtomicU64,
    /// Serial frames decoded, and what the frame decoders threw away.
    pub frames: AtomicU64,
    pub frame_checksum_errors: AtomicU64,
    pub frame_malformed: AtomicU64,
    pub frame_noise_bytes: AtomicU64,
    /// Serial port opens that failed or links that broke.
    pub serial_link_errors: AtomicU64,
    /// Modbus requests answered with an exception, or not answered in time.
    pub modbus_exceptions: AtomicU64,
    /// Fire-input readings that changed and changed back within the debounce time.
    pub fire_input_flaps: AtomicU64,
    pub modbus_timeouts: AtomicU64,
    /// Orders from above dropped at the door (the queue of orders to check was full).
    pub orders_dropped: AtomicU64,
    /// Messages on a command topic the uplink could not take (too large, not MQTT).
    pub order_topics_poisoned: AtomicU64,
    /// Orders refused by their checks, and refusals not answered upstream (rate limit).
    pub orders_refused: AtomicU64,
    pub orders_refusals_unanswered: AtomicU64,
    /// What the device endpoint refused: unknown or anonymous clients, wrong passwords, topics
    /// not a device's own, retained publishes, connection limits, protocol violations.
    pub device_refusals: AtomicU64,
    /// Device messages sent again (MQTT DUP) after a reconnect.
    pub device_redeliveries: AtomicU64,
    /// Orders from above by result: `applied` or the refusal's reason code (a few a minute).
    pub orders_by_result: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Counts an order's result (`refused` empty: applied).
    pub fn order_result(&self, refused: &str) {
        let key = if refused.is_empty() {
            "applied"
        } else {
            refused
        };
        let mut m = self
            .orders_by_result
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(key.to_string()).or_default() += 1;
    }

    /// The loops that must keep turning (each at least once a second, idle or not), with their
    /// turns so far: what the watchdog and `/health` watch.
    pub fn progress(&self) -> [(&'static str, u64); 3] {
        [
            ("decision loop", Self::get(&self.core_ticks)),
            ("device source", Self::get(&self.source_ticks)),
            ("outbox writer", Self::get(&self.writer_ticks)),
        ]
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// True for the 1st, 10th, 100th, … occurrence: log a recurring problem with falling frequency
/// instead of once per message (a device spewing garbage must not flood the journal).
pub fn worth_logging(count: u64) -> bool {
    count > 0 && {
        let mut n = count;
        while n % 10 == 0 {
            n /= 10;
        }
        n == 1
    }
}

/// `GATEHOUSE_BENCH_{NAME}`: a number that changes how the daemon runs, for the benchmarks
/// that measure one change at a time (`bench/tail.sh`); never set in production.
/// A value that is not a number is said and ignored: a run that asked for a change and silently
/// measured without it would be read as the change's effect.
pub fn bench_knob(name: &str) -> Option<i64> {
    let value = std::env::var(format!("GATEHOUSE_BENCH_{name}")).ok()?;
    let parsed = value.parse().ok();
    if parsed.is_none() {
        tracing::warn!(
            knob = name,
            value,
            "A GATEHOUSE_BENCH_* value is not a number; ignored (the run measures without it)."
        );
    }
    parsed
}

/// Fault injection for the watchdog tests, in debug builds only (what `cargo test` builds):
/// `GATEHOUSE_TEST_STALL_{PART}_AFTER_MS` makes that loop stop turning after so long, as a hung
/// one would. A release build never reads it, so no environment can hang a gate in production.
#[cfg(debug_assertions)]
pub fn stall_at(part: &str) -> Option<std::time::Instant> {
    let ms: u64 = std::env::var(format!("GATEHOUSE_TEST_STALL_{part}_AFTER_MS"))
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Instant::now() + std::time::Duration::from_millis(ms))
}

#[cfg(not(debug_assertions))]
pub fn stall_at(_part: &str) -> Option<std::time::Instant> {
    None
}

/// Fault injection for the failing-disk test, debug builds only: with
/// `GATEHOUSE_TEST_FAIL_COMMITS_WHILE=FILE` every outbox commit fails with EIO while FILE exists
/// (a store whose disk starts failing, and heals when the file is removed).
#[cfg(debug_assertions)]
pub fn fail_commits_while() -> Option<std::path::PathBuf> {
    std::env::var_os("GATEHOUSE_TEST_FAIL_COMMITS_WHILE").map(Into::into)
}

#[cfg(not(debug_assertions))]
pub fn fail_commits_while() -> Option<std::path::PathBuf> {
    None
}

/// Fault injection for the commit-panic test, debug builds only: with
/// `GATEHOUSE_TEST_PANIC_COMMIT_AT=N` the Nth commit holding records panics, as a bug in the
/// store would.
#[cfg(debug_assertions)]
pub fn panic_commit_at() -> Option<u64> {
    std::env::var("GATEHOUSE_TEST_PANIC_COMMIT_AT")
        .ok()?
        .parse()
        .ok()
}

#[cfg(not(debug_assertions))]
pub fn panic_commit_at() -> Option<u64> {
    None
}

/// Hangs the calling loop for good once `at` has passed (see [`stall_at`]).
pub async fn stall_if_due(at: Option<std::time::Instant>, part: &str) {
    if at.is_some_and(|t| std::time::Instant::now() >= t) {
        tracing::warn!(part, "Test hook: this loop stalls now.");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recurring_problems_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=2000).filter(|&n| super::worth_logging(n)).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }
}
