//! Worker processes: the real `Launch`, and the only code in the master that creates or
//! kills a worker (docs/decisions/0024-workers-are-forked-by-a-spawner.md, which amends
//! docs/decisions/0004-workers-are-re-executed.md).
//!
//! Each batch runs in a fresh child titled `chore-worker-<version>:Started:<time>` so
//! that `pgrep -f chore-worker` finds it, in a process group of its own so that a kill
//! takes its handlers too, and without AWS credentials unless its queue passes them on.
//! The child is forked by the spawner (`crate::spawner`), started once, credential-free;
//! a queue that passes credentials on, or a master whose spawner could not start or has
//! failed, re-executes this binary as `chore work` instead. A thread (`master::watchers`,
//! reused from batch to batch) writes the batch to each worker's stdin, reads its result
//! lines, and reaps it; everything it learns reaches the master loop as a `WorkerEvent`.

use super::pool::{Launch, WorkerEvent, WorkerId};
use super::watchers::Watchers;
use crate::protocol::Report;
use crate::spawner::Spawner;
use crate::title;
use crossbeam_channel::Sender;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};

pub struct Processes {
    events: Sender<WorkerEvent>,
    /// Environment variables the workers must not inherit (credentials).
    strip_env: Vec<String>,
    /// Forks credential-free workers; None once it could not start or has failed.
    spawner: Option<Spawner>,
    /// The threads that follow the workers.
    watchers: Watchers,
}

impl Processes {
    pub fn new(events: Sender<WorkerEvent>) -> Processes {
        // Read once: a worker starts per batch, on the hot path.
        let strip_env = crate::launch::credential_vars();
        let spawner = match Spawner::start(&strip_env) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the spawner; each batch re-executes chore");
                None
            }
        };
        Processes {
            events,
            strip_env,
            spawner,
            watchers: Watchers::new(),
        }
    }

    /// A worker forked by the spawner: its pid, and its stdin and stdout.
    fn fork(&mut self, started: u64) -> io::Result<(u32, std::fs::File, std::fs::File)> {
        let spawner = self.spawner.as_mut().expect("a spawner");
        let (stdin_r, stdin_w) = std::io::pipe()?;
        let (stdout_r, stdout_w) = std::io::pipe()?;
        let pid = spawner.fork_worker(&stdin_r, &stdout_w, &io::stderr(), started)?;
        // The worker's ends close here, so its exit closes its stdout for us.
        drop((stdin_r, stdout_w));
        let stdin = std::fs::File::from(std::os::fd::OwnedFd::from(stdin_w));
        let stdout = std::fs::File::from(std::os::fd::OwnedFd::from(stdout_r));
        Ok((pid, stdin, stdout))
    }

    /// Have a thread feed worker `id`, read its reports and reap it.
    fn watch(
        &self,
        id: WorkerId,
        spec: Vec<u8>,
        mut stdin: impl Write + Send + 'static,
        stdout: impl Read + Send + 'static,
        reap: impl FnOnce() -> io::Result<ExitStatus> + Send + 'static,
    ) -> io::Result<()> {
        let events = self.events.clone();
        self.watchers.run(move || {
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
            let status = reap().unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
            let _ = events.send(WorkerEvent::Exited(id, status));
        })
    }

    /// Re-execute this binary as `chore work`.
    fn exec(&mut self, id: WorkerId, spec: Vec<u8>, keep_credentials: bool) -> io::Result<u32> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(title::worker(title::now()))
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
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        if let Err(e) = self.watch(id, spec, stdin, stdout, move || child.wait()) {
            // Without its thread nobody would reap it: kill it now (its messages return).
            self.kill(pid);
            return Err(e);
        }
        Ok(pid)
    }
}

/// Wait for forked worker `pid` (the master's child through `CLONE_PARENT`).
fn reap(pid: u32) -> io::Result<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child, into a status we own.
        let r = unsafe { nix::libc::waitpid(pid as i32, &mut status, 0) };
        if r == pid as i32 {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Launch for Processes {
    fn spawn(&mut self, id: WorkerId, spec: Vec<u8>, keep_credentials: bool) -> io::Result<u32> {
        if keep_credentials || self.spawner.is_none() {
            return self.exec(id, spec, keep_credentials);
        }
        let (pid, stdin, stdout) = match self.fork(title::now()) {
            Ok(forked) => forked,
            Err(e) => {
                let gone = self.spawner.take().map(|s| s.pid());
                tracing::warn!(error = %e, spawner = ?gone, "the spawner failed; from now on each batch re-executes chore");
                return self.exec(id, spec, keep_credentials);
            }
        };
        if let Err(e) = self.watch(id, spec, stdin, stdout, move || reap(pid)) {
            self.kill(pid);
            // Reaped here, as no thread will.
            let _ = reap(pid);
            return Err(e);
        }
        Ok(pid)
    }

    fn kill(&mut self, pid: u32) {
        // The group may already be gone (it exited and is being reaped): ESRCH is fine.
        self.kill_group(pid);
        // A worker at its very end has stepped out of its group to kill what its batch
        // left in it (`worker::kill_leftovers`): it is killed by name too.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }

    fn kill_group(&mut self, pid: u32) {
        // ESRCH (nothing is left) is the usual answer.
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
