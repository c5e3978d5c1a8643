//! Periodic tasks: the scheduler that turns a queue's `cron.yaml` into one message per
//! due task and tick, however many chore masters serve the queue
//! (docs/decisions/0017-periodic-tasks-without-a-leader.md).
//!
//! * `schedule` (pure): when each task is due, in UTC, with the 300 s catch-up at start;
//! * `claim`: which master sends a tick (FIFO deduplication id, memcached `add`, or an
//!   exclusively created marker file);
//! * `scheduler`: the thread that sleeps until a tick, claims and publishes.
//!
//! `spawn` is the entry point, called once by the master at start.

mod claim;
pub mod schedule;
mod scheduler;

use crate::config::{Backend, Config, QueueConfig};
use crate::dedupe::Dedupe;
use crate::queue::{Queue, Stop};
use claim::Claim;
use scheduler::Job;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

/// Start the scheduler thread for every queue of `queues` with a `cron-file` that has
/// tasks (None: there are none). `dedupe` is the master's memcached client when it has
/// one; a standard SQS queue's claims use it (or a new one on the same servers). The
/// thread ends when `stop` fires. An error (a marker directory that cannot be made, a
/// thread that cannot start) should stop the start.
pub fn spawn(
    config: &Config,
    queues: &[(&QueueConfig, Arc<dyn Queue>)],
    dedupe: Option<Arc<Dedupe>>,
    stop: Arc<Stop>,
) -> Result<Option<JoinHandle<()>>, String> {
    let mut dedupe = dedupe;
    let mut jobs = Vec::new();
    for (qc, queue) in queues {
        let Some(table) = &qc.cron else { continue };
        tracing::info!(
            queue = %qc.full_name,
            "loaded {} scheduled tasks from {}",
            table.tasks.len(),
            table.path.display()
        );
        let now = crate::calendar::Utc::from_system(SystemTime::now()).0;
        for task in &table.tasks {
            if task.next_after(now).is_none() {
                tracing::warn!(queue = %qc.full_name, task = %task.name, schedule = %task.schedule, "this schedule never fires");
            }
        }
        if table.tasks.is_empty() {
            continue;
        }
        let claim = match qc.backend {
            Backend::Filesystem => {
                let root = std::path::absolute(&config.fs_queue_root)
                    .map_err(|e| format!("queue `{}`: {e}", qc.name))?;
                Claim::marker(root.join(&qc.full_name).join("cron")).map_err(|e| {
                    format!("queue `{}`: cannot keep periodic-task claims: {e}", qc.name)
                })?
            }
            // SQS insists that a FIFO queue's name ends in `.fifo`, so the name tells.
            Backend::Sqs
                if qc
                    .url
                    .as_deref()
                    .unwrap_or(&qc.full_name)
                    .ends_with(".fifo") =>
            {
                Claim::Fifo
            }
            Backend::Sqs => {
                let d = dedupe.get_or_insert_with(|| Dedupe::new(&config.dedupe));
                Claim::memcached(d.clone(), &qc.full_name)
            }
        };
        jobs.push(Job {
            queue: queue.clone(),
            table: table.clone(),
            claim,
        });
    }
    if jobs.is_empty() {
        return Ok(None);
    }
    std::thread::Builder::new()
        .name("chore-periodic".into())
        .spawn(move || scheduler::run(jobs, stop))
        .map(Some)
        .map_err(|e| format!("cannot start the periodic-task scheduler: {e}"))
}
