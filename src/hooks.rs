//! Hooks: the commands chore starts about a message rather than to run it. Today one: a
//! queue's `on-permanent-failure` command, told about each message that is dead-lettered,
//! wherever that happens (a verdict, the last attempt, or a body that cannot run).
//!
//! A hook runs like a handler (same program lookup, directory and environment, no AWS
//! credentials), its stderr goes to the log, and its outcome changes nothing. Hooks run
//! at most `CONCURRENCY` at once, each in a process group of its own; the rest wait in a
//! queue of at most `QUEUED` (beyond that a hook is dropped, with a log line). A hook that
//! runs longer than `TIMEOUT` is killed with its whole group, and so is whatever a hook
//! left behind when it exits. When the master exits, the hooks still running are killed
//! and those still waiting are dropped (logged).

use crate::config::Handler;
use crate::launch;
use crate::logging::capture::{Pipe, Source};
use crate::queue::Delivery;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Hooks running at once.
pub const CONCURRENCY: usize = 4;
/// Hooks waiting for a turn; more are dropped.
pub const QUEUED: usize = 1000;
/// How long a hook may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What every hook needs besides the message, and the runner all clones share.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Where a hook's stderr goes (the master's log file), else inherited.
    pub log_file: Option<PathBuf>,
    runner: Arc<Runner>,
}

/// One hook to run.
struct Job {
    cmd: Command,
    /// Its stderr, read into log events (`logging::capture`); None: the log itself.
    output: Option<Pipe>,
    queue: String,
    id: String,
    body: String,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Job>,
    /// Threads started so far (at most `CONCURRENCY`).
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Process groups of the hooks running.
    running: HashSet<i32>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The hook threads' queue; dropping the last `Hooks` (the master exiting) kills what runs.
#[derive(Default)]
struct Runner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runner")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        let dropped = st.waiting.len();
        st.waiting.clear();
        for &pgid in &st.running {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let killed = st.running.len();
        drop(st);
        self.shared.wake.notify_all();
        if dropped + killed > 0 {
            tracing::warn!(
                killed,
                dropped,
                "the master is exiting: on-permanent-failure commands still running were killed, those waiting were not run"
            );
        }
    }
}

impl Hooks {
    pub fn new(log_file: Option<PathBuf>) -> Hooks {
        Hooks {
            log_file,
            runner: Arc::default(),
        }
    }

    /// Tell `hook` that message `d` of `queue` was dead-lettered for `reason`: body on stdin,
    /// `CHORE_QUEUE`, `CHORE_MESSAGE_ID`, `CHORE_ATTEMPT`, `CHORE_JOB_CLASS`, `CHORE_REASON`.
    pub fn permanent_failure(&self, hook: &Handler, queue: &str, d: &Delivery, reason: &str) {
        let mut cmd = launch::command(hook, queue);
        cmd.env("CHORE_MESSAGE_ID", &d.id)
            .env("CHORE_ATTEMPT", d.attempt.to_string())
            .env("CHORE_JOB_CLASS", d.class.as_deref().unwrap_or(""))
            .env("CHORE_REASON", reason)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0);
        // What it prints becomes log events, so a JSON log stays JSON; without a pipe to
        // be had, raw lines in the log.
        let output = Pipe::new().ok();
        match output.as_ref().map(Pipe::stdio) {
            Some(Ok(err)) => cmd.stderr(err),
            _ => cmd.stderr(to_log(self.log_file.as_deref())),
        };
        // SAFETY: prctl(2) is async-signal-safe. The hook dies with the hook thread that
        // started it, which lives as long as the master (even a SIGKILLed one).
        unsafe {
            cmd.pre_exec(|| {
                nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL);
                Ok(())
            });
        }
        launch::strip_credentials(&mut cmd);
        let job = Job {
            cmd,
            output,
            queue: queue.to_string(),
            id: d.id.clone(),
            body: d.body.clone(),
        };
        let shared = &self.runner.shared;
        let mut st = shared.lock();
        if st.closed {
            return;
        }
        if st.waiting.len() >= QUEUED {
            tracing::error!(queue, id = %d.id, queued = QUEUED, "too many on-permanent-failure commands waiting; this one is dropped (the message is dead-lettered all the same)");
            return;
        }
        st.waiting.push_back(job);
        if st.idle == 0 && st.threads < CONCURRENCY {
            let s = shared.clone();
            if std::thread::Builder::new()
                .name("hook".into())
                .spawn(move || work(&s))
                .is_ok()
            {
                st.threads += 1;
            }
        }
        drop(st);
        shared.wake.notify_one();
    }
}

/// One hook thread: run the waiting hooks one after the other.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut st = shared.lock();
            loop {
                if st.closed {
                    return;
                }
                if let Some(j) = st.waiting.pop_front() {
                    break j;
                }
                st.idle += 1;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle -= 1;
            }
        };
        run(shared, job);
    }
}

fn run(shared: &Shared, job: Job) {
    let Job {
        mut cmd,
        output,
        queue,
        id,
        body,
    } = job;
    let (queue, id) = (queue.as_str(), id.as_str());
    let mut child = {
        let mut st = shared.lock();
        if st.closed {
            return;
        }
        let spawned = cmd.spawn();
        // The command's copies of the pipe's write end must close for its reader to end.
        drop(cmd);
        match spawned {
            Ok(child) => {
                st.running.insert(child.id() as i32);
                if let Some(p) = output {
                    p.read_as(Source {
                        queue: Some(queue.to_string()),
                        pid: child.id(),
                        ids: Some(id.to_string()),
                    });
                }
                child
            }
            Err(e) => {
                drop(st);
                tracing::error!(queue, id, error = %e, "cannot start the on-permanent-failure command");
                return;
            }
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read a large body must not stall this thread.
        let _ = std::thread::Builder::new()
            .name("hook-feed".into())
            .spawn(move || {
                let _ = stdin.write_all(body.as_bytes());
            });
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() >= TIMEOUT => {
                tracing::warn!(
                    queue,
                    id,
                    timeout_secs = TIMEOUT.as_secs(),
                    "on-permanent-failure command ran too long; killed"
                );
                let _ = killpg(pgid, Signal::SIGKILL);
                break child.wait();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(e),
        }
    };
    // Whatever it left behind goes with it.
    let _ = killpg(pgid, Signal::SIGKILL);
    shared.lock().running.remove(&pgid.as_raw());
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!(
            queue,
            id,
            "on-permanent-failure command {}",
            launch::describe_exit(&s)
        ),
        Err(e) => {
            tracing::warn!(queue, id, error = %e, "on-permanent-failure command could not be waited for")
        }
    }
}

/// The log file opened for appending, else the master's own stderr.
pub fn to_log(log_file: Option<&Path>) -> Stdio {
    log_file
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .map(Stdio::from)
        .unwrap_or_else(Stdio::inherit)
}
