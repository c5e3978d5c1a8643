//! The worker pool: the only place that creates or kills processes (design decision 1).
//!
//! Each batch runs in a fresh child: this very binary, re-executed as `chore work`, titled
//! `chore-worker-<version>:Started:<unix time>` so that `pgrep -f chore-worker` finds it,
//! in a process group of its own so that a kill takes its handlers too. One thread per
//! worker writes the batch to its stdin, reads its result lines, and reaps it; everything
//! it learns reaches the master loop as a `WorkerEvent`.

use crate::protocol::Report;
use crate::queue::Delivery;
use crossbeam_channel::Sender;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type WorkerId = u64;

/// What a worker's thread tells the master.
#[derive(Debug)]
pub enum WorkerEvent {
    Report(WorkerId, Report),
    /// A line that was not a report (a bug, or output that escaped): logged, not fatal.
    Garbled(WorkerId, String),
    Exited(WorkerId, ExitStatus),
}

/// A running worker and the messages it holds.
#[derive(Debug)]
pub struct Worker {
    pub id: WorkerId,
    pub pid: u32,
    pub queue: usize,
    /// The batch, in order; a slot becomes None once its message is settled.
    pub deliveries: Vec<Option<Delivery>>,
    pub started: Instant,
    pub deadline: Instant,
    /// Why it was killed, when it was.
    pub killed: Option<&'static str>,
}

impl Worker {
    pub fn unsettled(&self) -> usize {
        self.deliveries.iter().filter(|d| d.is_some()).count()
    }
    pub fn ids(&self) -> Vec<&str> {
        self.deliveries
            .iter()
            .flatten()
            .map(|d| d.id.as_str())
            .collect()
    }
}

pub struct Pool {
    workers: Vec<Worker>,
    next_id: WorkerId,
    events: Sender<WorkerEvent>,
    /// Environment variables the workers must not inherit (credentials).
    strip_env: Vec<String>,
}

impl Pool {
    pub fn new(events: Sender<WorkerEvent>) -> Pool {
        // Workers need no queue credentials (design decision 2).
        let strip_env = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| is_credential(k))
            .collect();
        Pool {
            workers: Vec::new(),
            next_id: 1,
            events,
            strip_env,
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

    pub fn workers_mut(&mut self) -> &mut [Worker] {
        &mut self.workers
    }

    pub fn get_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    /// Forget a reaped worker, returning it for the last settlements.
    pub fn remove(&mut self, id: WorkerId) -> Option<Worker> {
        let i = self.workers.iter().position(|w| w.id == id)?;
        Some(self.workers.swap_remove(i))
    }

    /// Start a worker on `spec` (the batch line) for `deliveries` of queue `queue`.
    /// On failure the deliveries come back with the error.
    pub fn spawn(
        &mut self,
        queue: usize,
        spec: Vec<u8>,
        deliveries: Vec<Delivery>,
        budget: Duration,
        now: Instant,
        keep_credentials: bool,
    ) -> Result<WorkerId, (Vec<Delivery>, std::io::Error)> {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(format!(
            "chore-worker-{}:Started:{started_unix}",
            env!("CARGO_PKG_VERSION")
        ))
        .arg("work")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .env("CHORE_MASTER_PID", std::process::id().to_string());
        if !keep_credentials {
            for k in &self.strip_env {
                cmd.env_remove(k);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Err((deliveries, e)),
        };
        let id = self.next_id;
        self.next_id += 1;
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let events = self.events.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{pid}"))
            .spawn(move || {
                // A worker that dies before reading its batch makes this write fail; its exit
                // is reported below all the same.
                let _ = stdin.write_all(&spec).and_then(|_| stdin.flush());
                drop((stdin, spec));
                crate::protocol::for_each_line(stdout, |line| {
                    let event = match serde_json::from_str::<Report>(line) {
                        Ok(r) => WorkerEvent::Report(id, r),
                        Err(_) => WorkerEvent::Garbled(id, line.to_string()),
                    };
                    events.send(event).is_ok()
                });
                let status = child
                    .wait()
                    .unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
                let _ = events.send(WorkerEvent::Exited(id, status));
            });
        if let Err(e) = thread {
            // Without its thread nobody would reap it: kill it now (its messages return).
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err((deliveries, e));
        }
        self.workers.push(Worker {
            id,
            pid,
            queue,
            deliveries: deliveries.into_iter().map(Some).collect(),
            started: now,
            deadline: now
                .checked_add(budget)
                .unwrap_or(now + Duration::from_secs(crate::config::MAX_SECONDS as u64)),
            killed: None,
        });
        Ok(id)
    }

    /// SIGKILL a worker's whole process group (its handlers too).
    pub fn kill(&mut self, id: WorkerId, why: &'static str) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == id) {
            if w.killed.is_none() {
                w.killed = Some(why);
            }
            // The group may already be gone (it exited and is being reaped): ESRCH is fine.
            let _ = killpg(Pid::from_raw(w.pid as i32), Signal::SIGKILL);
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

    pub fn next_deadline(&self) -> Option<Instant> {
        self.workers
            .iter()
            .filter(|w| w.killed.is_none())
            .map(|w| w.deadline)
            .min()
    }
}

/// Tell an `on-permanent-failure` command about a dead-lettered message: body on stdin,
/// `CHORE_QUEUE`, `CHORE_MESSAGE_ID`, `CHORE_ATTEMPT`, `CHORE_JOB_CLASS`, `CHORE_REASON`.
/// It runs on its own (a thread feeds and reaps it) and its outcome changes nothing.
pub fn run_hook(
    hook: &crate::config::Handler,
    queue: &str,
    d: &Delivery,
    reason: &str,
    log_file: Option<&std::path::Path>,
) {
    // Run like a handler (same program lookup, directory and environment).
    let mut cmd = crate::worker::handler::command(hook, queue);
    cmd.env("CHORE_MESSAGE_ID", &d.id)
        .env("CHORE_ATTEMPT", d.attempt.to_string())
        .env("CHORE_JOB_CLASS", d.class.as_deref().unwrap_or(""))
        .env("CHORE_REASON", reason)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its chatter belongs in the log, like a handler's.
        .stderr(
            log_file
                .and_then(|p| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .ok()
                })
                .map(Stdio::from)
                .unwrap_or_else(Stdio::inherit),
        );
    // Like workers, hooks hold no AWS credentials.
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(is_credential) {
            cmd.env_remove(k);
        }
    }
    let (queue, id, body) = (queue.to_string(), d.id.clone(), d.body.clone());
    match cmd.spawn() {
        Ok(mut child) => {
            let _ = std::thread::Builder::new().name("hook".into()).spawn(move || {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(body.as_bytes());
                }
                match child.wait() {
                    Ok(s) if s.success() => {}
                    Ok(s) => tracing::warn!(queue, id, "on-permanent-failure command {}", describe_exit(&s)),
                    Err(e) => tracing::warn!(queue, id, error = %e, "on-permanent-failure command could not be waited for"),
                }
            });
        }
        Err(e) => {
            tracing::error!(queue, id, error = %e, "cannot start the on-permanent-failure command")
        }
    }
}

/// Environment variables that carry AWS credentials, or lead to them (design decision 2:
/// workers need none): keys and tokens, the ECS and EKS credential sources, and the
/// profile settings.
pub fn is_credential(name: &str) -> bool {
    const NAMES: [&str; 12] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ];
    name.starts_with("AWS_SECRET") || NAMES.contains(&name)
}

/// How a worker's exit reads in a log line.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "died of signal {}",
            Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| s.to_string())
        ),
        _ => "ended".to_string(),
    }
}
