//! The threads that follow workers: each feeds one worker its batch, reads its reports and
//! reaps it, then waits for the next worker to follow.
//!
//! A worker starts per batch, and creating a thread for each cost the master more than
//! its own bookkeeping for the whole batch. So a thread that has finished with a worker
//! stays, parked, for the next one; it ends after `IDLE_FOR` without work. At most as
//! many threads exist as workers ever ran at once.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long a thread with no worker to follow waits for one before it ends.
const IDLE_FOR: Duration = Duration::from_secs(60);

type Job = Box<dyn FnOnce() + Send>;

pub struct Watchers {
    jobs: Sender<Job>,
    waiting: Receiver<Job>,
    /// Threads parked on `waiting` that no job has been promised to yet.
    idle: Arc<AtomicUsize>,
}

impl Watchers {
    pub fn new() -> Watchers {
        let (jobs, waiting) = crossbeam_channel::unbounded();
        Watchers {
            jobs,
            waiting,
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Run `job` on a parked thread, or on a new one when none is parked.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        // Taking one from the count promises this job to one of the parked threads: each
        // thread counts itself before it parks, and uncounts itself only if no promise
        // has been made on its behalf (see `follow`).
        if take_one(&self.idle) {
            // The receiving end lives in `self`, so the send cannot fail.
            let _ = self.jobs.send(Box::new(job));
            return Ok(());
        }
        let (waiting, idle) = (self.waiting.clone(), self.idle.clone());
        std::thread::Builder::new()
            .name("watch".into())
            .spawn(move || follow(Box::new(job), &waiting, &idle))
            .map(drop)
    }
}

/// Run `first`, then each job sent to a parked thread, until idle for `IDLE_FOR`.
fn follow(first: Job, waiting: &Receiver<Job>, idle: &AtomicUsize) {
    first();
    loop {
        idle.fetch_add(1, Ordering::SeqCst);
        let job = match waiting.recv_timeout(IDLE_FOR) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if take_one(idle) {
                    return;
                }
                // A job was promised to the parked threads, and none is left uncounted:
                // it is ours.
                match waiting.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        job();
    }
}

/// Decrement `count` if it is above zero; whether it was.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn thread_id(w: &Watchers) -> std::thread::ThreadId {
        let (tx, rx) = crossbeam_channel::bounded(1);
        w.run(move || tx.send(std::thread::current().id()).unwrap())
            .unwrap();
        rx.recv().unwrap()
    }

    #[test]
    fn a_thread_that_finished_follows_the_next_worker() {
        let w = Watchers::new();
        let first = thread_id(&w);
        // Let the thread park before the next job comes.
        while w.idle.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(thread_id(&w), first);
    }

    #[test]
    fn busy_threads_are_not_waited_for() {
        let w = Watchers::new();
        let all = Arc::new(Barrier::new(4));
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..3 {
            let (all, tx) = (all.clone(), tx.clone());
            // Each blocks until all three run at once: only three threads can do that.
            w.run(move || {
                all.wait();
                tx.send(std::thread::current().id()).unwrap();
            })
            .unwrap();
        }
        all.wait();
        let ids: std::collections::HashSet<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(ids.len(), 3);
    }
}
