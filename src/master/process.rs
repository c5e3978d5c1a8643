//! Worker processes: the real `Launch`, and the only code in the master that creates or
//! kills a worker (docs/decisions/0004-workers-are-re-executed.md).
//!
//! Each batch runs in a fresh child: this very binary, re-executed as `chore work`, titled
//! `chore-worker-<version>:Started:<unix time>` so that `pgrep -f chore-worker` finds it,
//! in a process group of its own so that a kill takes its handlers too, and without AWS
//! credentials unless its queue passes them on. One thread per worker writes the batch to
//! its stdin, reads its result lines, and reaps it; everything it learns reaches the master
//! loop as a `WorkerEvent`.

use super::pool::{Launch, WorkerEvent, WorkerId};
use crate::protocol::Report;
use crossbeam_channel::Sender;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Processes {
    events: Sender<WorkerEvent>,
    /// Environment variables the workers must not inherit (credentials).
    strip_env: Vec<String>,
}

impl Processes {
    pub fn new(events: Sender<WorkerEvent>) -> Processes {
        // Read once: a worker starts per batch, on the hot path.
        let strip_env = crate::launch::credential_vars();
        Processes { events, strip_env }
    }
}

impl Launch for Processes {
    fn spawn(&mut self, id: WorkerId, spec: Vec<u8>, keep_credentials: bool) -> io::Result<u32> {
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
        } else {
            crate::launch::pass_credentials(&mut cmd);
        }
        let mut child = cmd.spawn()?;
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
            self.kill(pid);
            return Err(e);
        }
        Ok(pid)
    }

    fn kill(&mut self, pid: u32) {
        // The group may already be gone (it exited and is being reaped): ESRCH is fine.
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
