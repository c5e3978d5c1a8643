//! A `chore` master under test: started by `Sandbox`, watched through its log and `/proc`,
//! signalled, waited for. Dropping it kills its whole family (the master, its workers and
//! their handlers), so a failing test never leaves processes behind.

use super::{PATIENCE, assert_for, wait_until};
use crate::support::poll::poll_until;
use crate::support::procs::{ConsumerWait, consumers_settled, family_of, workers_of};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::cell::{Cell, RefCell};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// A running `chore` master.
pub struct Master {
    // In cells so that `running` can be asked from inside a wait on `&self`.
    child: RefCell<Child>,
    pub pid: i32,
    pub log: PathBuf,
    status: Cell<Option<ExitStatus>>,
}

impl Master {
    /// The master `child`, logging to `log`.
    pub(super) fn new(child: Child, log: PathBuf) -> Master {
        Master {
            pid: child.id() as i32,
            child: RefCell::new(child),
            log,
            status: Cell::new(None),
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Wait until `cond` holds; on timeout, fail with the log's tail.
    pub fn wait(&self, what: &str, cond: impl FnMut() -> bool) {
        self.wait_for(what, PATIENCE, cond)
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
        self.with_tail(what, || wait_until(what, timeout, cond));
    }

    /// Check that `cond` keeps holding for `how_long`: something that must not happen
    /// does not (see `assert_for`); on failure, with the log's tail.
    pub fn assert_for(&self, how_long: Duration, what: &str, cond: impl FnMut() -> bool) {
        self.with_tail(what, || assert_for(how_long, what, cond));
    }

    /// Run `check`; if it panics, panic again with the log's tail.
    fn with_tail(&self, what: &str, check: impl FnOnce()) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
        if let Err(e) = result {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| format!("failed: {what}"));
            panic!("{why}; master log tail:\n{}", self.tail());
        }
    }

    /// Wait until `needle` is in the log.
    pub fn wait_log(&self, needle: &str) {
        self.wait(&format!("{needle:?} in the log"), || {
            self.log_text().contains(needle)
        })
    }

    /// Wait until every consumer thread waits as `how` says: idle (so the next file is
    /// news to it), or at its gate (so it receives nothing more: quiet, or out of
    /// credits). This is what a test used to sleep for, and hope.
    pub fn wait_consumers(&self, how: ConsumerWait) {
        self.wait(
            &format!("every consumer thread to wait {how:?}"),
            consumers_settled(self.pid, how),
        )
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal the master");
    }

    /// Still running?
    pub fn running(&self) -> bool {
        if self.status.get().is_some() {
            return false;
        }
        let exited = self.child.borrow_mut().try_wait().unwrap();
        self.status.set(exited);
        exited.is_none()
    }

    /// Wait for the master to exit, within `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if !poll_until(limit, || !self.running()) {
            panic!(
                "the master did not exit within {limit:?}; log tail:\n{}",
                self.tail()
            );
        }
        self.status.get().unwrap()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        if self.running() {
            self.signal(Signal::SIGTERM);
        }
        self.wait_exit(PATIENCE)
    }

    /// Its live workers (found by process title and environment, like `pgrep -f`).
    pub fn workers(&self) -> Vec<i32> {
        workers_of(self.pid)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // Workers and handlers first (they outlive a SIGKILLed master only briefly, but a
        // failing test must not leave them behind), then the master itself.
        poll_until(Duration::from_secs(1), || {
            let family = family_of(self.pid);
            for &p in &family {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            family.is_empty()
        });
        if self.status.get().is_none() {
            let child = self.child.get_mut();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
