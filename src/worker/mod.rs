//! The worker: a child process that runs one batch and reports on each message.
//!
//! Started by the master as `chore work` (with a `chore-worker-…` process title). It reads
//! its `BatchSpec` from the first line of stdin, runs the handlers (see `handler`), and
//! writes one `Report` line per message to stdout the moment that message finishes. It
//! holds no queue credentials and settles nothing: the master does.
//!
//! If the master dies, the kernel signals the worker (`PR_SET_PDEATHSIG`), which then kills
//! its whole process group (itself and its handlers), so no orphan runs on unsupervised.
//!
//! The same entry point is the spawner (`spawner`): started once with a `chore-spawner-…`
//! title, it forks each worker, which then goes on in `run` as a started one would.

pub mod handler;
mod memory;
mod meta;
mod preload;
#[cfg(test)]
mod proptests;
mod reports;
mod spawner;
mod watched;

use crate::config::{Handler, HandlerMode};
use crate::protocol::{BatchSpec, JobSpec, Report, Verdict};
use std::collections::HashSet;
use std::io::{self, BufRead};
use std::sync::atomic::{AtomicI32, Ordering};

/// Entry point of `chore work`. Returns the exit status. The master starts it once as the
/// spawner (titled `chore-spawner-…`), which forks workers that go on in `run`, or, when
/// it has no spawner, once per batch as a worker.
pub fn main() -> i32 {
    let spawner = std::env::args_os().next().is_some_and(|a| {
        a.to_string_lossy()
            .starts_with(crate::title::SPAWNER_PREFIX)
    });
    if spawner {
        return spawner::serve();
    }
    run()
}

/// A worker: read the batch, run it, report. Returns the exit status.
fn run() -> i32 {
    let mut line = String::new();
    if io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        crate::logging::stderr_line(
            "chore work: no batch on standard input (this command is started by the chore master)",
        );
        return 2;
    }
    let spec: BatchSpec = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::stderr_line(&format!("chore work: unreadable batch: {e}"));
            return 2;
        }
    };
    follow_master();
    if let Some(master) = std::env::var("CHORE_MASTER_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        && nix::unistd::getppid().as_raw() != master
    {
        // The master died before the death signal was armed.
        crate::logging::stderr_line(&format!(
            "chore work: the master (pid {master}) is gone; exiting"
        ));
        return 1;
    }
    if let Some(path) = &spec.log_file {
        redirect_stderr(path);
    }
    init_logging(&spec);
    if let Some(bytes) = spec.memory_limit {
        memory::apply(bytes);
    }

    run_batch(&spec, &mut |r: Report| reports::send(&r));
    // Every report is written and flushed: nothing a handler left behind may outlive the
    // batch (nor hold the slot). A preloader's children join our group without being our
    // descendants: only then is an empty family not proof enough.
    let forked_elsewhere = spec
        .handler
        .iter()
        .chain(spec.classes.values())
        .any(|h| h.preload.is_some());
    if forked_elsewhere || !family_is_gone() {
        kill_leftovers();
    }
    // Their output's last lines, now that nothing holds a pipe open.
    crate::logging::capture::finish(OUTPUT_GRACE);
    0
}

/// How long the worker waits, at its end, for the last lines of its handlers' output.
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether this worker has no descendant left. As a subreaper it inherits whatever its
/// handlers left running, so a descendant outlives them only as a child of ours: when
/// `waitpid` finds none (after reaping those that have ended), there is none. One system
/// call or a few, where a look at the group reads all of `/proc`.
fn family_is_gone() -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The process group a forked worker was born in (its spawner's), which it steps back
/// into to kill what its batch left behind; 0 for a worker the master started itself.
static HOME_GROUP: AtomicI32 = AtomicI32::new(0);

/// The group this worker leads, once `follow_master` has run: what a SIGTERM kills.
static BATCH_GROUP: AtomicI32 = AtomicI32::new(0);

/// Note the process group a forked worker was born in, before it leads its own.
pub(crate) fn born_in_group(pgid: i32) {
    HOME_GROUP.store(pgid, Ordering::Relaxed);
}

/// Kill every other member of this worker's process group (it leads it; its handlers and
/// whatever they started are in it unless they left).
///
/// A forked worker steps out of the group first, back into its spawner's, so that one
/// `killpg` reaches all that is left and not the worker: two system calls, where a look at
/// the group reads all of `/proc`. The kernel delivers a group's signal to a child being
/// forked meanwhile as well, so one round is enough.
fn kill_leftovers() {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::{Pid, setpgid};
    let me = std::process::id() as i32;
    let home = HOME_GROUP.load(Ordering::Relaxed);
    if home > 0 && setpgid(Pid::from_raw(0), Pid::from_raw(home)).is_ok() {
        let _ = killpg(Pid::from_raw(me), Signal::SIGKILL);
        return;
    }
    // A few rounds, for those forking while they are killed one by one.
    for _ in 0..10 {
        let others = group_members(me);
        if others.is_empty() {
            return;
        }
        for pid in others {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The live processes of process group `pgid` other than the caller (from `/proc`).
///
/// This runs once per batch over every process on the machine, so each is first asked its
/// group with `getpgid(2)` (one cheap system call); only members have their `stat` read,
/// to leave out zombies. Reading every `stat` cost far more than the batch's other work.
fn group_members(pgid: i32) -> Vec<i32> {
    use nix::unistd::{Pid, getpgid};
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| getpgid(Some(Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() == pgid))
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After comm (which may hold anything): state ppid pgrp …
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X"))
        })
        .collect()
}

/// Run every message of the batch, reporting each as it finishes.
pub fn run_batch(spec: &BatchSpec, report: &mut dyn FnMut(Report)) {
    if spec.messages.iter().any(|m| m.group.is_some()) {
        return run_ordered(spec, report);
    }
    // Group the messages by handler: a per-message handler runs one process per message;
    // a batch handler gets all of its messages, wherever they stand in the batch, in one
    // process.
    let mut groups: Vec<(Option<&Handler>, Vec<usize>)> = Vec::new();
    for (i, job) in spec.messages.iter().enumerate() {
        let h = route(spec, job);
        match groups.iter_mut().find(|(g, _)| same(*g, h)) {
            Some((_, idx)) if h.is_some_and(|h| h.mode != HandlerMode::Message) => idx.push(i),
            _ => groups.push((h, vec![i])),
        }
    }
    for (h, indexes) in groups {
        match h {
            None => {
                for i in indexes {
                    let job = &spec.messages[i];
                    report(Report {
                        i,
                        verdict: Verdict::Permanent,
                        delay: None,
                        error: Some(format!(
                            "no handler for job class {:?}",
                            job.class.as_deref().unwrap_or("")
                        )),
                    });
                }
            }
            Some(h) if h.mode == HandlerMode::Message => {
                for i in indexes {
                    let job = &spec.messages[i];
                    let (verdict, error) = handler::run_message(h, &spec.queue, job);
                    report(Report {
                        i,
                        verdict,
                        delay: None,
                        error,
                    });
                }
            }
            Some(h) => {
                let jobs: Vec<(usize, &JobSpec)> =
                    indexes.iter().map(|&i| (i, &spec.messages[i])).collect();
                handler::run_batch(h, &spec.queue, &jobs, report);
            }
        }
    }
}

/// A batch from a FIFO queue: arrival order is kept (no regrouping by handler), a batch
/// handler gets consecutive messages with at most one per group per call, and once a
/// message fails (to be retried) the rest of its group is skipped, so the group keeps its
/// order. A dead-lettered message does not hold its group back (as SQS FIFO does).
fn run_ordered(spec: &BatchSpec, report: &mut dyn FnMut(Report)) {
    let msgs = &spec.messages;
    let mut failed: HashSet<&str> = HashSet::new();
    let blocks = |v: Verdict| matches!(v, Verdict::Retry | Verdict::Fail | Verdict::Unfinished);
    let mut i = 0;
    while i < msgs.len() {
        let job = &msgs[i];
        if let Some(g) = job.group.as_deref().filter(|g| failed.contains(g)) {
            let error = Some(format!(
                "held back: an earlier message of group {g:?} failed"
            ));
            report(Report {
                i,
                verdict: Verdict::Skip,
                delay: None,
                error,
            });
            i += 1;
            continue;
        }
        match route(spec, job) {
            None => {
                let error = Some(format!(
                    "no handler for job class {:?}",
                    job.class.as_deref().unwrap_or("")
                ));
                report(Report {
                    i,
                    verdict: Verdict::Permanent,
                    delay: None,
                    error,
                });
                i += 1;
            }
            Some(h) if h.mode == HandlerMode::Message => {
                let (verdict, error) = handler::run_message(h, &spec.queue, job);
                if blocks(verdict)
                    && let Some(g) = job.group.as_deref()
                {
                    failed.insert(g);
                }
                report(Report {
                    i,
                    verdict,
                    delay: None,
                    error,
                });
                i += 1;
            }
            Some(h) => {
                // The longest run of consecutive messages for this handler with no group
                // twice (a group's next message waits for its previous one's result).
                let mut segment: Vec<(usize, &JobSpec)> = Vec::new();
                let mut groups: HashSet<&str> = HashSet::new();
                while i < msgs.len() {
                    let m = &msgs[i];
                    if !same(route(spec, m), Some(h))
                        || m.group
                            .as_deref()
                            .is_some_and(|g| groups.contains(g) || failed.contains(g))
                    {
                        break;
                    }
                    if let Some(g) = m.group.as_deref() {
                        groups.insert(g);
                    }
                    segment.push((i, m));
                    i += 1;
                }
                handler::run_batch(h, &spec.queue, &segment, &mut |r: Report| {
                    if blocks(r.verdict)
                        && let Some(g) = msgs[r.i].group.as_deref()
                    {
                        failed.insert(g);
                    }
                    report(r)
                });
            }
        }
    }
}

/// The handler for one message: its class's, else the queue's
/// (docs/decisions/0008-message-bodies-are-json.md).
fn route<'a>(spec: &'a BatchSpec, job: &JobSpec) -> Option<&'a Handler> {
    job.class
        .as_ref()
        .and_then(|c| spec.classes.get(c))
        .or(spec.handler.as_ref())
}

fn same(a: Option<&Handler>, b: Option<&Handler>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => std::ptr::eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Make the worker's whole process group (it and its handlers) die with the master.
///
/// The kernel sends SIGTERM when the parent dies (`PR_SET_PDEATHSIG`); the handler kills
/// the group, so a hung handler cannot outlive an unsupervised worker. An operator's
/// SIGTERM to a worker does the same: the batch's unreported messages then fail and are
/// retried. Handlers start with default dispositions (exec resets caught signals).
fn follow_master() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    extern "C" fn kill_group(_: nix::libc::c_int) {
        // The batch's group, by number: at its very end the worker has stepped out of it
        // (`kill_leftovers`), and must not kill the group it is in then, its spawner's.
        let group = BATCH_GROUP.load(Ordering::Relaxed);
        // SAFETY: an atomic load and kill(2) are async-signal-safe; 0 addresses our own
        // process group.
        unsafe {
            nix::libc::kill(-group, nix::libc::SIGKILL);
        }
    }
    BATCH_GROUP.store(nix::unistd::getpgrp().as_raw(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(kill_group),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls an async-signal-safe function.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &action);
    }
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    // What handlers leave running becomes ours, so that the end of the batch can tell
    // cheaply whether anything is left (`family_is_gone`).
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // `ps` and `top` show this (the cmdline keeps the chore-worker-<version> title).
    let _ = nix::sys::prctl::set_name(c"chore-worker");
}

/// Send this worker's stderr (and so its handlers') to the master's log file.
fn redirect_stderr(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // SAFETY: dup2 onto fd 2 of a file we hold open; no memory is involved.
        unsafe {
            nix::libc::dup2(file.as_raw_fd(), 2);
        }
    }
}

fn init_logging(spec: &BatchSpec) {
    let level = spec.log_level.parse().unwrap_or(tracing::Level::INFO);
    let _ = crate::logging::init(level, spec.log_format, None);
}
