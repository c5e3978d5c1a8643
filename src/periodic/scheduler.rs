//! The scheduler thread: one for every queue with a `cron-file`. It sleeps until the next
//! tick of any task (waking at least once a minute, so a clock that is set or a host that
//! was suspended is noticed), sends what is due, and ends when the master's `Stop` fires.
//!
//! Each due task's tick is claimed (`claim`), then published through the queue
//! (`Queue::publish_periodic`); a failed send is tried again twice within the tick, after
//! a pause, and then logged as an error and its claim given up. Never a hot loop: every
//! wait is on the `Stop`, and a queue that keeps failing costs three sends per tick.

use super::claim::{Claim, Claimed};
use super::schedule::{Due, Plan, scheduled_time};
use crate::calendar::Utc;
use crate::config::CronTable;
use crate::queue::{Periodic, Queue, Stop};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The longest nap: the clock is looked at again at least this often.
const MAX_NAP: Duration = Duration::from_secs(60);
/// Sends of one tick before giving up on it.
const SEND_ATTEMPTS: u32 = 3;
/// The pause before the second send; doubled before the third.
const SEND_PAUSE: Duration = Duration::from_secs(1);
/// How often old filesystem markers are pruned.
const PRUNE_EVERY: i64 = 3600;

/// One queue's periodic tasks and how to send them.
pub struct Job {
    pub queue: Arc<dyn Queue>,
    pub table: Arc<CronTable>,
    pub claim: Claim,
}

/// Run until `stop` fires.
pub fn run(jobs: Vec<Job>, stop: Arc<Stop>) {
    let mut plans: Vec<Plan> = jobs
        .iter()
        .map(|j| Plan::new(j.table.tasks.len()))
        .collect();
    let mut next_prune = i64::MIN;
    while !stop.fired() {
        let now = Utc::from_system(SystemTime::now()).0;
        for (job, plan) in jobs.iter().zip(&mut plans) {
            for due in plan.due(&job.table.tasks, now) {
                send(job, due, &stop);
                if stop.fired() {
                    return;
                }
            }
        }
        if now >= next_prune {
            for job in &jobs {
                let n = job.claim.prune(now);
                if n > 0 {
                    tracing::debug!(queue = %job.queue.name(), removed = n, "pruned old periodic-task markers");
                }
            }
            next_prune = now + PRUNE_EVERY;
        }
        let wake = jobs
            .iter()
            .zip(&plans)
            .filter_map(|(job, plan)| plan.next_wake(&job.table.tasks, now))
            .min();
        let nap = wake
            .and_then(|w| Utc(w).to_system().duration_since(SystemTime::now()).ok())
            // Rounded up: `Stop::sleep` counts whole milliseconds.
            .map_or(MAX_NAP, |d| (d + Duration::from_millis(1)).min(MAX_NAP));
        if stop.sleep(nap) {
            return;
        }
    }
}

/// Claim and send one task's tick.
fn send(job: &Job, due: Due, stop: &Stop) {
    let task = &job.table.tasks[due.task];
    let queue = job.queue.name();
    let at = scheduled_time(due.tick);
    match job.claim.take(&task.name, due.tick) {
        Claimed::Won => {}
        Claimed::Lost => {
            tracing::debug!(queue = %queue, task = %task.name, tick = %at, "periodic task already sent by another master");
            return;
        }
        Claimed::Unknown(why) if why.is_empty() => {}
        Claimed::Unknown(why) => {
            tracing::warn!(queue = %queue, task = %task.name, tick = %at, reason = %why, "periodic task sent unclaimed: another master may send it too");
        }
    }
    let message = Periodic {
        task: task.name.clone(),
        path: task.url.clone(),
        tick: due.tick,
        scheduled_time: at.clone(),
    };
    let mut pause = SEND_PAUSE;
    for attempt in 1..=SEND_ATTEMPTS {
        match job.queue.publish_periodic(&message) {
            Ok(()) => {
                tracing::info!(queue = %queue, task = %task.name, tick = %at, path = %task.url, "periodic task sent");
                return;
            }
            Err(e) if attempt < SEND_ATTEMPTS => {
                tracing::warn!(queue = %queue, task = %task.name, tick = %at, attempt, error = %e, "periodic task not sent; trying again");
                if stop.sleep(pause) {
                    break;
                }
                pause *= 2;
            }
            Err(e) => {
                tracing::error!(queue = %queue, task = %task.name, tick = %at, attempts = attempt, error = %e, "periodic task not sent; this tick is skipped");
            }
        }
    }
    job.claim.release(&task.name, due.tick);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CronTask;
    use crate::queue::memory::{MemoryQueue, Op};
    use std::io;
    use std::sync::Mutex;

    fn table(schedules: &[(&str, &str)]) -> Arc<CronTable> {
        Arc::new(CronTable {
            path: "cron.yaml".into(),
            tasks: schedules
                .iter()
                .map(|(name, s)| CronTask::new(name, &format!("/{name}"), s, true).unwrap())
                .collect(),
        })
    }

    #[test]
    fn every_second_tick_is_sent_until_the_stop_fires() {
        let queue = Arc::new(MemoryQueue::new("q", Duration::from_secs(30), false));
        let stop = Arc::new(Stop::new().unwrap());
        let jobs = vec![Job {
            queue: queue.clone(),
            table: table(&[("each", "* * * * * *")]),
            claim: Claim::Fifo,
        }];
        let s = stop.clone();
        let t = std::thread::spawn(move || run(jobs, s));
        std::thread::sleep(Duration::from_millis(2_300));
        stop.trigger();
        t.join().unwrap();
        let ticks: Vec<i64> = queue
            .ops()
            .into_iter()
            .map(|op| match op {
                Op::Periodic(task, tick) if task == "each" => tick,
                other => panic!("{other:?}"),
            })
            .collect();
        // The catch-up of the current second, then each second: 3 or 4, consecutive.
        assert!((3..=4).contains(&ticks.len()), "{ticks:?}");
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
    }

    /// A queue that refuses every send, counting them.
    struct Refusing(Mutex<u32>);

    impl Queue for Refusing {
        fn name(&self) -> &str {
            "refusing"
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(30)
        }
        fn consumer(&self) -> io::Result<Box<dyn crate::queue::Consume>> {
            unimplemented!()
        }
        fn complete(&self, _: &crate::queue::Delivery) -> io::Result<()> {
            Ok(())
        }
        fn retry(&self, _: &crate::queue::Delivery, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn dead_letter(&self, _: &crate::queue::Delivery, _: &str) -> io::Result<()> {
            Ok(())
        }
        fn give_back(&self, _: &crate::queue::Delivery) -> io::Result<()> {
            Ok(())
        }
        fn renew(&self, _: &mut crate::queue::Delivery, _: std::time::Instant) -> io::Result<()> {
            Ok(())
        }
        fn publish_periodic(&self, _: &Periodic) -> io::Result<()> {
            *self.0.lock().unwrap() += 1;
            Err(io::Error::other("refused"))
        }
    }

    #[test]
    fn a_failing_send_is_tried_three_times_then_its_claim_is_given_up() {
        let queue = Arc::new(Refusing(Mutex::new(0)));
        let dir = std::env::temp_dir().join(format!("chore-sched-{}", std::process::id()));
        let job = Job {
            queue: queue.clone(),
            table: table(&[("t", "0 0 * * * *")]),
            claim: Claim::marker(dir.join("cron")).unwrap(),
        };
        let stop = Stop::new().unwrap();
        let t0 = std::time::Instant::now();
        send(&job, Due { task: 0, tick: 60 }, &stop);
        assert_eq!(*queue.0.lock().unwrap(), 3);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // Released: the tick can be claimed again.
        assert_eq!(job.claim.take("t", 60), Claimed::Won);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tick_another_master_claimed_is_not_sent() {
        let queue = Arc::new(MemoryQueue::new("q", Duration::from_secs(30), false));
        let dir = std::env::temp_dir().join(format!("chore-sched-lost-{}", std::process::id()));
        let job = Job {
            queue: queue.clone(),
            table: table(&[("t", "0 0 * * * *")]),
            claim: Claim::marker(dir.join("cron")).unwrap(),
        };
        let other = Claim::marker(dir.join("cron")).unwrap();
        assert_eq!(other.take("t", 60), Claimed::Won);
        let stop = Stop::new().unwrap();
        send(&job, Due { task: 0, tick: 60 }, &stop);
        send(&job, Due { task: 0, tick: 120 }, &stop);
        assert_eq!(queue.ops(), [Op::Periodic("t".into(), 120)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
