//! The worker pool: the running workers' records (pid, queue, deadline, why killed), and
//! the one door through which the master starts and kills processes (`Launch`).
//!
//! The pool knows processes, not messages: which messages a worker runs is
//! `master::held`'s business. The real launcher is `master::process`; the master's unit
//! tests use a fake one, so deadlines, drains and settlements are tested without
//! processes.

use crate::protocol::Report;
use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

pub type WorkerId = u64;

/// What a worker's thread tells the master.
#[derive(Debug)]
pub enum WorkerEvent {
    Report(WorkerId, Report),
    /// A line that was not a report (a bug, or output that escaped): logged, not fatal.
    Garbled(WorkerId, String),
    Exited(WorkerId, ExitStatus),
}

/// Starts and kills worker processes.
pub trait Launch {
    /// Start a worker on `spec` (the batch line); whatever it reports arrives as
    /// `WorkerEvent`s naming `id`, ending with `Exited`. Returns its pid.
    fn spawn(&mut self, id: WorkerId, spec: Vec<u8>, keep_credentials: bool) -> io::Result<u32>;
    /// SIGKILL the worker's whole process group (its handlers too).
    fn kill(&mut self, pid: u32);
    /// SIGKILL what is left in the process group of worker `pid`, which has been reaped.
    fn kill_group(&mut self, pid: u32);
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    pub id: WorkerId,
    pub pid: u32,
    pub queue: usize,
    pub started: Instant,
    pub deadline: Instant,
    /// Why it was killed, when it was.
    pub killed: Option<&'static str>,
    /// What the worker said of the messages its batch left without a result (a batch
    /// handler that ended early): the reason they are run again, or fail.
    pub unfinished: Option<String>,
}

pub struct Pool {
    workers: Vec<Worker>,
    next_id: WorkerId,
    launcher: Box<dyn Launch>,
}

impl Pool {
    pub fn new(launcher: Box<dyn Launch>) -> Pool {
        Pool {
            workers: Vec::new(),
            next_id: 1,
            launcher,
        }
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn workers(&self) -> &[Worker] {
        &self.workers
    }

    pub fn get(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.iter().find(|w| w.id == id)
    }

    /// Note why a worker's batch left messages without a result.
    pub fn note_unfinished(&mut self, id: WorkerId, why: Option<String>) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == id) {
            w.unfinished = why.or(w.unfinished.take());
        }
    }

    /// Forget a reaped worker, returning its record. A worker that did not end by itself
    /// (killed by a signal, crashed) had no chance to kill what its batch left running in
    /// its group: that is killed now. The group's number cannot have been reused while
    /// anything is left in it.
    pub fn remove(&mut self, id: WorkerId, status: &ExitStatus) -> Option<Worker> {
        let i = self.workers.iter().position(|w| w.id == id)?;
        let w = self.workers.swap_remove(i);
        if !status.success() {
            self.launcher.kill_group(w.pid);
        }
        Some(w)
    }

    /// A fresh id for a runner: a worker, or a post (`master::posts`), so that `held` can
    /// key both alike.
    pub fn new_id(&mut self) -> WorkerId {
        self.next_id += 1;
        self.next_id - 1
    }

    /// Start a worker for queue `queue` on `spec`, due to finish within `budget` of `now`.
    pub fn spawn(
        &mut self,
        queue: usize,
        spec: Vec<u8>,
        budget: Duration,
        now: Instant,
        keep_credentials: bool,
    ) -> io::Result<WorkerId> {
        let id = self.new_id();
        let pid = self.launcher.spawn(id, spec, keep_credentials)?;
        self.workers.push(Worker {
            id,
            pid,
            queue,
            started: now,
            deadline: now
                .checked_add(budget)
                .unwrap_or(now + Duration::from_secs(crate::config::MAX_SECONDS as u64)),
            killed: None,
            unfinished: None,
        });
        Ok(id)
    }

    /// SIGKILL a worker's whole process group, remembering why.
    pub fn kill(&mut self, id: WorkerId, why: &'static str) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == id) {
            if w.killed.is_none() {
                w.killed = Some(why);
            }
            self.launcher.kill(w.pid);
        }
    }

    /// Workers past their deadline that have not been killed yet.
    pub fn expired(&self, now: Instant) -> Vec<WorkerId> {
        self.workers
            .iter()
            .filter(|w| w.killed.is_none() && now >= w.deadline)
            .map(|w| w.id)
            .collect()
    }

    /// The next deadline of a worker not killed yet.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers
            .iter()
            .filter(|w| w.killed.is_none())
            .map(|w| w.deadline)
            .min()
    }
}
