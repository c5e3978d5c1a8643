//! Running handler commands: the contract of docs/handlers.md.
//!
//! No shell stands between chore and a handler: its `command` is the argv.
//!
//! * Per-message mode: one process per message, the body on stdin, and `CHORE_QUEUE`,
//!   `CHORE_MESSAGE_ID`, `CHORE_ATTEMPT`, `CHORE_JOB_CLASS` and the message's metadata
//!   (`worker::meta`) in the environment. Exit 0 is
//!   success, 75 (EX_TEMPFAIL) asks for a retry after the backoff, 65 (EX_DATAERR) is a
//!   permanent failure, anything else (or a signal) is a failure, retried with backoff.
//! * Batch mode: one process for the batch, JSON Lines on stdin (`id`, `queue`, `attempt`,
//!   `class`, `body`, and the metadata the queue gave), one result line per message on
//!   stdout as each finishes:
//!   `{"id":…,"result":"ok"|"retry"|"fail"|"permanent","delay":secs,"error":"…"}`.
//!   A message without a result when the process ends has failed; when several are left
//!   without one, they are reported `Unfinished`, for the master to tell which failed.
//!
//! * Preloaded (a handler with `preload`): the batch's JSON Lines go to a child the
//!   preloader forks (`fork_batch`, through `worker::preload`), which answers as a batch
//!   handler does; its exit is watched through a pidfd, since it is not our child.
//!
//! A handler's stdout (per-message mode) and stderr become log events, one per line
//! (`logging::capture`).

use super::reports;
use super::watched::{Exit, Watched};
use crate::config::Handler;
use crate::logging::capture::{Pipe, Source};
use crate::protocol::{JobSpec, Report, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Stdio};

/// EX_DATAERR: the input can never be processed.
pub const EXIT_PERMANENT: i32 = 65;
/// EX_TEMPFAIL: try again later.
pub const EXIT_RETRY: i32 = 75;

/// A pipe holds this much without a reader; larger inputs are written from a thread so a
/// handler that does not read stdin cannot wedge the worker.
const PIPE_CAPACITY: usize = 64 * 1024;

/// Where a handler's chatter goes: a pipe read into log events, else (no pipe to be had)
/// the worker's stderr, the log, as it is.
fn output_pipe() -> (Option<Pipe>, Stdio, Stdio) {
    let pipe = Pipe::new().ok();
    let ends = pipe
        .as_ref()
        .and_then(|p| Some((p.stdio().ok()?, p.stdio().ok()?)));
    match ends {
        Some((out, err)) => (pipe, out, err),
        None => (None, to_log(), Stdio::inherit()),
    }
}

fn to_log() -> Stdio {
    match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    }
}

/// Feed `input` to a handler's stdin and close it.
fn feed(
    mut stdin: impl Write + Send + 'static,
    input: Vec<u8>,
) -> Option<std::thread::JoinHandle<()>> {
    if input.len() <= PIPE_CAPACITY {
        // A handler that exits without reading makes this fail with EPIPE: not our problem.
        let _ = stdin.write_all(&input);
        None
    } else {
        std::thread::Builder::new()
            .name("feed".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            })
            .ok()
    }
}

fn describe(status: &ExitStatus) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended abnormally".into(),
    };
    match super::memory::limit() {
        Some(limit) if !status.success() => {
            format!("{how}; {}", super::memory::note(status, limit))
        }
        _ => how,
    }
}

/// What a handler that could not be started means for its messages. A start that can never
/// succeed, whatever the operator does to the machine, is a permanent failure: an argument
/// or environment value with a NUL byte (a message's class `"A\u0000B"` in
/// `CHORE_JOB_CLASS`), or an argument list and environment too large for `exec`. Anything
/// else (a program that is missing or not executable, a full process table) may be mended
/// and is a failure, retried with backoff.
pub fn start_failure(e: &io::Error) -> Verdict {
    if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error() == Some(nix::libc::E2BIG) {
        Verdict::Permanent
    } else {
        Verdict::Fail
    }
}

fn cannot_start(h: &Handler, e: &io::Error) -> String {
    format!("cannot start handler {:?}: {e}", h.command[0])
}

/// Run one message in per-message mode.
pub fn run_message(h: &Handler, queue: &str, job: &JobSpec) -> (Verdict, Option<String>) {
    let (pipe, stdout, stderr) = output_pipe();
    let mut cmd = crate::launch::command(h, queue);
    cmd.env("CHORE_MESSAGE_ID", &job.id)
        .env("CHORE_ATTEMPT", job.attempt.to_string())
        .env("CHORE_JOB_CLASS", job.class.as_deref().unwrap_or(""))
        .envs(job.meta.as_ref().map(super::meta::env).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr);
    let spawned = cmd.spawn();
    // The command holds copies of the pipe's write end: they must close for its reader
    // to see the end.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return (start_failure(&e), Some(cannot_start(h, &e))),
    };

    let feeder = child
        .stdin
        .take()
        .and_then(|stdin| feed(stdin, job.body.as_bytes().to_vec()));
    // The verdict is the handler's exit status. The feeder is not waited for: a child the
    // handler left behind may hold its stdin open without reading, and that must not hold
    // the verdict back (the feeder ends when the worker does).
    drop(feeder);
    let status = match pipe {
        Some(p) => {
            let from = Source {
                queue: Some(queue.to_string()),
                pid: child.id(),
                ids: Some(job.id.clone()),
            };
            p.read_until_exit(from, &mut child)
        }
        None => child.wait(),
    };
    match status {
        Ok(s) if s.success() => (Verdict::Ok, None),
        Ok(s) if s.code() == Some(EXIT_RETRY) => (
            Verdict::Retry,
            Some("handler asked for a retry (exit 75)".into()),
        ),
        Ok(s) if s.code() == Some(EXIT_PERMANENT) => (
            Verdict::Permanent,
            Some("handler reported a permanent failure (exit 65)".into()),
        ),
        Ok(s) => (
            Verdict::Fail,
            Some(format!("handler failed: {}", describe(&s))),
        ),
        Err(e) => (Verdict::Fail, Some(format!("cannot wait for handler: {e}"))),
    }
}

/// One input line of a batch handler.
#[derive(Serialize)]
struct BatchInput<'a> {
    id: &'a str,
    queue: &'a str,
    attempt: u32,
    class: Option<&'a str>,
    body: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_received_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<super::meta::Attributes<'a>>,
}

/// One output line of a batch handler.
#[derive(Deserialize)]
pub(super) struct BatchOutput {
    id: String,
    result: BatchResult,
    #[serde(default)]
    delay: Option<f64>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum BatchResult {
    Ok,
    Retry,
    Fail,
    Permanent,
}

impl From<BatchResult> for Verdict {
    fn from(r: BatchResult) -> Verdict {
        match r {
            BatchResult::Ok => Verdict::Ok,
            BatchResult::Retry => Verdict::Retry,
            BatchResult::Fail => Verdict::Fail,
            BatchResult::Permanent => Verdict::Permanent,
        }
    }
}

/// The batch's JSON Lines input, and the jobs it holds. A body that is not JSON (the
/// consumer checked every one; should one still be broken) is reported at once instead.
fn encode_input<'a, 'j>(
    queue: &str,
    jobs: &[(usize, &'a JobSpec<'j>)],
    report: &mut dyn FnMut(Report),
) -> (Vec<u8>, Vec<(usize, &'a JobSpec<'j>)>) {
    let mut input = Vec::with_capacity(jobs.iter().map(|(_, j)| j.body.len() + 96).sum());
    let mut runnable = Vec::with_capacity(jobs.len());
    for &(i, j) in jobs {
        // JSON Lines: a body written over several lines would break its line. A raw line
        // break in valid JSON can only be whitespace between tokens (strings must escape
        // theirs), so a space stands in for it without changing the value.
        let flat: Cow<str> = if j.body.contains(['\n', '\r']) {
            j.body.replace(['\n', '\r'], " ").into()
        } else {
            Cow::Borrowed(&j.body)
        };
        let Ok(body) = serde_json::from_str::<&RawValue>(&flat) else {
            report(Report {
                i,
                verdict: Verdict::Permanent,
                delay: None,
                error: Some("the body is not valid JSON".to_string()),
            });
            continue;
        };
        let line = BatchInput {
            id: &j.id,
            queue,
            attempt: j.attempt,
            class: j.class.as_deref(),
            body,
            sent_at: j.meta.as_ref().and_then(|m| m.sent_at),
            first_received_at: j.meta.as_ref().and_then(|m| m.first_received_at),
            sender_id: j.meta.as_ref().and_then(|m| m.sender_id.as_deref()),
            attributes: j
                .meta
                .as_ref()
                .filter(|m| !m.attributes.is_empty())
                .map(|m| super::meta::Attributes(&m.attributes)),
        };
        serde_json::to_writer(&mut input, &line).expect("a batch line serialises");
        input.push(b'\n');
        runnable.push((i, j));
    }
    (input, runnable)
}

/// Report every message still without a result, in batch order, with one verdict.
fn end_all(
    pending: &mut HashMap<&str, usize>,
    report: &mut dyn FnMut(Report),
    verdict: Verdict,
    why: String,
) {
    let mut left: Vec<usize> = pending.drain().map(|(_, i)| i).collect();
    left.sort_unstable();
    for i in left {
        report(Report {
            i,
            verdict,
            delay: None,
            error: Some(why.clone()),
        });
    }
}

/// Run `jobs` (index in the batch, job) through one batch-mode process: its input
/// written, its results read as they come, what it left without one reported at its end.
pub fn run_batch(
    h: &Handler,
    queue: &str,
    jobs: &[(usize, &JobSpec)],
    report: &mut dyn FnMut(Report),
) {
    let (input, runnable) = encode_input(queue, jobs, report);
    let jobs = runnable.as_slice();
    let mut pending: HashMap<&str, usize> = jobs.iter().map(|(i, j)| (j.id.as_str(), *i)).collect();
    let pipe = Pipe::new().ok();
    let started = match &h.preload {
        Some(p) => fork_batch(p, jobs.len(), pipe.as_ref()),
        None => spawn_batch(h, queue, jobs.len(), pipe.as_ref()),
    };
    let (stdin, stdout, mut ending) = match started {
        Ok(s) => s,
        // A preloader that cannot be reached has not run anything: the messages go back
        // unrun, and are not charged an attempt.
        Err((verdict, why)) => return end_all(&mut pending, report, verdict, why),
    };
    let source = Source {
        queue: Some(queue.to_string()),
        pid: ending.pid(),
        ids: Some(
            jobs.iter()
                .map(|(_, j)| j.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let err = pipe.map(|p| p.read_inline(source.clone()));
    let feeder = feed(stdin, input);
    // Set once every message has its result: with the handler gone, reading stops even if
    // a child it left behind still holds its stdout.
    let all_in = Cell::new(pending.is_empty());
    let on_line = |line: &str| {
        let out: BatchOutput = match serde_json::from_str(line) {
            Ok(o) => o,
            Err(_) => {
                // Not a result: the handler printed something else. Keep it, in the log.
                crate::logging::capture::log_line(&source, line);
                return true;
            }
        };
        let Some(i) = pending.remove(out.id.as_str()) else {
            tracing::warn!(queue, id = %out.id, "batch handler reported on an unknown or already reported id; ignored");
            return true;
        };
        report(Report {
            i,
            verdict: out.result.into(),
            delay: out.delay,
            error: out.error,
        });
        all_in.set(pending.is_empty());
        true
    };
    let exit = match &mut ending {
        Ending::Child(child) => Exit::Child(child),
        Ending::Forked(pid) => Exit::of_pid(*pid),
    };
    let mut watched = Watched::new(stdout, exit, err, &all_in);
    let held = reports::Held::new();
    crate::protocol::for_each_line(&mut watched, on_line);
    drop(held);
    watched.finish();
    // Not waiting for the feeder: a leftover child may hold the handler's stdin.
    drop(feeder);
    let how = ending.wait();
    if !pending.is_empty() {
        // One message left: it failed. Several: any of them may have ended the process,
        // and the master finds out which by running them again in smaller batches.
        let verdict = match pending.len() {
            1 => Verdict::Fail,
            _ => Verdict::Unfinished,
        };
        end_all(
            &mut pending,
            report,
            verdict,
            format!("batch handler ended ({how}) without a result for this message"),
        );
    }
}

/// How a batch process is waited for: a child of ours, or a preloader's child (whose exit
/// status is the preloader's to reap).
enum Ending {
    Child(Child),
    Forked(u32),
}

impl Ending {
    fn pid(&self) -> u32 {
        match self {
            Ending::Child(c) => c.id(),
            Ending::Forked(pid) => *pid,
        }
    }

    /// Wait for the end; how it ended, for the log.
    fn wait(&mut self) -> String {
        match self {
            Ending::Child(c) => match c.wait() {
                Ok(s) => describe(&s),
                Err(e) => e.to_string(),
            },
            Ending::Forked(pid) => match super::memory::limit() {
                // No exit status to go by: a limit in force may be the cause.
                Some(limit) => format!(
                    "forked process {pid} ended; {}",
                    super::memory::note(&ExitStatus::from_raw(1 << 8), limit)
                ),
                None => format!("forked process {pid} ended"),
            },
        }
    }
}

/// A batch process that has started: its stdin, its stdout (results), how it ends.
type Started = (Box<dyn Write + Send>, File, Ending);

/// Start a batch handler's command.
fn spawn_batch(
    h: &Handler,
    queue: &str,
    messages: usize,
    output: Option<&Pipe>,
) -> Result<Started, (Verdict, String)> {
    let stderr = output
        .and_then(|p| p.stdio().ok())
        .unwrap_or_else(Stdio::inherit);
    let mut cmd = crate::launch::command(h, queue);
    cmd.env("CHORE_BATCH_SIZE", messages.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = cmd
        .spawn()
        .map_err(|e| (start_failure(&e), cannot_start(h, &e)))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = File::from(OwnedFd::from(child.stdout.take().expect("stdout is piped")));
    Ok((Box::new(stdin), stdout, Ending::Child(child)))
}

/// Have the ready preloader fork a child for the batch.
fn fork_batch(
    p: &crate::config::Preload,
    messages: usize,
    output: Option<&Pipe>,
) -> Result<Started, (Verdict, String)> {
    let unavailable = |why: String| {
        let error = format!("{}{why}", crate::protocol::PRELOADER_UNAVAILABLE);
        (Verdict::Skip, error)
    };
    let socket = p
        .socket
        .as_deref()
        .ok_or_else(|| unavailable("none is ready".into()))?;
    // The worker's own data limit (the queue's `memory-limit`) is what the child must set:
    // it is the preloader's child, not ours, so it inherits nothing from us.
    let limit = super::memory::limit();
    let log = output.map(|p| p.write_end().as_fd());
    let f = super::preload::fork(socket, messages, limit, log)
        .map_err(|e| unavailable(e.to_string()))?;
    Ok((Box::new(f.input), f.output, Ending::Forked(f.pid)))
}
