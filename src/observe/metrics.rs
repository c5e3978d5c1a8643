//! The metrics chore exports, by name, and the handles that record them.
//!
//! Names follow Prometheus conventions: the `chore_` prefix, `_total` on counters, base
//! units (seconds). Per-queue series carry a `queue` label (the full, prefixed name).
//! `install` sets the process's recorder once, before any handle is registered: a handle
//! registered without a recorder stays a no-op for ever.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const RECEIVED: &str = "chore_messages_received_total";
pub const STARTED: &str = "chore_messages_started_total";
pub const SUCCEEDED: &str = "chore_messages_succeeded_total";
pub const FAILED: &str = "chore_messages_failed_total";
pub const RETRIED: &str = "chore_messages_retried_total";
pub const DEAD_LETTERED: &str = "chore_messages_dead_lettered_total";
pub const DUPLICATES: &str = "chore_messages_duplicate_total";
pub const WORKERS_STARTED: &str = "chore_workers_started_total";
pub const WORKERS_KILLED: &str = "chore_workers_deadline_killed_total";
pub const RUN_SECONDS: &str = "chore_handler_run_seconds";
pub const WAIT_SECONDS: &str = "chore_message_wait_seconds";
pub const BUFFERED: &str = "chore_messages_buffered";
pub const HELD: &str = "chore_messages_held";
pub const DEPTH: &str = "chore_queue_depth";
pub const OLDEST_AGE: &str = "chore_queue_oldest_age_seconds";
pub const WORKERS_BUSY: &str = "chore_workers_busy";
pub const HEALTHY: &str = "chore_healthy";
pub const SQS_CALLS: &str = "chore_sqs_calls_total";
pub const SQS_FAILURES: &str = "chore_sqs_call_failures_total";
pub const DEDUPE_CHECKS: &str = "chore_dedupe_checks_total";
pub const DEDUPE_HITS: &str = "chore_dedupe_hits_total";
pub const DEDUPE_ERRORS: &str = "chore_dedupe_errors_total";

/// Histogram buckets, in seconds: from a fast handler (5 ms) to a long batch (an hour).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Install the Prometheus recorder for the whole process; its handle renders the page.
/// Called at most once, before any handle is registered.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

/// The HELP lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RECEIVED, "Messages received from the queue");
    describe_counter!(STARTED, "Messages handed to a worker or posted");
    describe_counter!(SUCCEEDED, "Attempts that completed their message");
    describe_counter!(
        FAILED,
        "Attempts that failed (retried or dead-lettered after)"
    );
    describe_counter!(RETRIED, "Messages set to be retried after a backoff");
    describe_counter!(
        DEAD_LETTERED,
        "Messages dead-lettered (failed for good, or a body that cannot run)"
    );
    describe_counter!(
        DUPLICATES,
        "Deliveries set aside as duplicates of a message already held"
    );
    describe_counter!(WORKERS_STARTED, "Worker processes started");
    describe_counter!(WORKERS_KILLED, "Worker processes killed at their deadline");
    describe_histogram!(
        RUN_SECONDS,
        metrics::Unit::Seconds,
        "From a message's start to its result"
    );
    describe_histogram!(
        WAIT_SECONDS,
        metrics::Unit::Seconds,
        "From a message's receipt to its start"
    );
    describe_gauge!(BUFFERED, "Messages received and waiting for a worker");
    describe_gauge!(
        HELD,
        "Messages the master holds (waiting, running or deferred)"
    );
    describe_gauge!(
        DEPTH,
        "Messages waiting in the queue itself (not yet received)"
    );
    describe_gauge!(
        OLDEST_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest message waiting in the queue (filesystem queues)"
    );
    describe_gauge!(WORKERS_BUSY, "Worker processes running");
    describe_gauge!(
        HEALTHY,
        "1 while consumption is live, 0 while the master is unhealthy"
    );
    describe_counter!(SQS_CALLS, "SQS API calls, by action");
    describe_counter!(SQS_FAILURES, "SQS API calls that failed, by action");
    describe_counter!(DEDUPE_CHECKS, "Dedupe checks asked of memcached");
    describe_counter!(DEDUPE_HITS, "Dedupe checks that found a duplicate");
    describe_counter!(DEDUPE_ERRORS, "Dedupe checks memcached could not answer");
}

/// One queue's handles, registered once (a no-op when no recorder is installed).
#[derive(Clone)]
pub struct QueueMetrics {
    pub received: Counter,
    pub started: Counter,
    pub succeeded: Counter,
    pub failed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub duplicates: Counter,
    pub workers_started: Counter,
    pub workers_killed: Counter,
    pub run_seconds: Histogram,
    pub wait_seconds: Histogram,
    pub buffered: Gauge,
    pub held: Gauge,
    pub depth: Gauge,
    pub oldest_age: Gauge,
}

impl QueueMetrics {
    pub fn new(queue: &str) -> QueueMetrics {
        let l = || [("queue", queue.to_string())];
        QueueMetrics {
            received: counter!(RECEIVED, &l()),
            started: counter!(STARTED, &l()),
            succeeded: counter!(SUCCEEDED, &l()),
            failed: counter!(FAILED, &l()),
            retried: counter!(RETRIED, &l()),
            dead_lettered: counter!(DEAD_LETTERED, &l()),
            duplicates: counter!(DUPLICATES, &l()),
            workers_started: counter!(WORKERS_STARTED, &l()),
            workers_killed: counter!(WORKERS_KILLED, &l()),
            run_seconds: histogram!(RUN_SECONDS, &l()),
            wait_seconds: histogram!(WAIT_SECONDS, &l()),
            buffered: gauge!(BUFFERED, &l()),
            held: gauge!(HELD, &l()),
            depth: gauge!(DEPTH, &l()),
            oldest_age: gauge!(OLDEST_AGE, &l()),
        }
    }
}

/// The process-wide handles.
pub struct Global {
    pub workers_busy: Gauge,
    pub healthy: Gauge,
    pub dedupe_checks: Counter,
    pub dedupe_hits: Counter,
    pub dedupe_errors: Counter,
}

impl Global {
    pub fn new() -> Global {
        Global {
            workers_busy: gauge!(WORKERS_BUSY),
            healthy: gauge!(HEALTHY),
            dedupe_checks: counter!(DEDUPE_CHECKS),
            dedupe_hits: counter!(DEDUPE_HITS),
            dedupe_errors: counter!(DEDUPE_ERRORS),
        }
    }
}

/// Count one SQS call (`action`: the API's operation name), and whether it failed. Calls
/// are network round trips, so the registry look-up by label costs nothing in comparison.
pub fn sqs_call(action: &str, failed: bool) {
    let label = [("action", action.to_string())];
    counter!(SQS_CALLS, &label).increment(1);
    if failed {
        counter!(SQS_FAILURES, &label).increment(1);
    }
}
