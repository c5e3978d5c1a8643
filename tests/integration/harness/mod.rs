//! The test harness: a temporary directory per test, a Chorefile in it, the real `chore`
//! binary run as a child (its log captured to a file there), handler scripts, and helpers
//! that wait for a condition with a generous timeout.
//!
//! Everything here uses std (plus `nix`, already a dependency of chore, for signals). A
//! `Master` kills its whole family (the master, its workers and their handlers) when it is
//! dropped, so a failing test never leaves processes behind. A failing test keeps its
//! directory and prints where it is, so its log can be read.
//!
//! Waiting and `/proc` helpers live in `tests/support` (shared with the bench); they are
//! re-exported here, with `Master` (`master.rs`) and `QueueDir` (`queue_dir.rs`), so that a
//! test needs only `use crate::harness::*`.

mod master;
mod queue_dir;

pub use crate::support::poll::{PATIENCE, assert_for, wait_until};
pub use crate::support::procs::{ConsumerWait, cmdline, pgrp, pid_gone};
pub use master::Master;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
pub use queue_dir::QueueDir;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const CHORE: &str = env!("CARGO_BIN_EXE_chore");

/// Seconds since the epoch, as a float (to compare with handlers' `date +%s.%N`).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A temporary directory for one test, holding its Chorefile, queues, scripts and logs.
pub struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chore-it-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A path inside the sandbox.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The filesystem queue root every Chorefile here uses.
    pub fn root(&self) -> PathBuf {
        self.dir.join("queues")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.file(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, text).unwrap();
        p
    }

    /// Contents of a file, or "" when it does not exist (yet).
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.file(rel)).unwrap_or_default()
    }

    /// Non-empty lines of a file ("" when missing).
    pub fn lines(&self, rel: &str) -> Vec<String> {
        self.read(rel)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Write an executable `sh` script; returns how a Chorefile names it (`./name`), since
    /// handlers run in the Chorefile's directory by default.
    pub fn script(&self, name: &str, body: &str) -> String {
        let p = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        format!("./{name}")
    }

    /// A per-message handler that appends one `Run` line to `log` (time, queue, id,
    /// attempt, class, body), then runs `then` (shell; `$body` holds the body).
    pub fn recorder(&self, name: &str, log: &str, then: &str) -> String {
        self.script(
            name,
            &format!(
                "body=$(cat)\n\
                 printf '%s|%s|%s|%s|%s|%s\\n' \"$(date +%s.%N)\" \"$CHORE_QUEUE\" \"$CHORE_MESSAGE_ID\" \
                 \"$CHORE_ATTEMPT\" \"$CHORE_JOB_CLASS\" \"$body\" >> {log}\n\
                 {then}"
            ),
        )
    }

    /// A batch-mode handler that answers `ok` for every line: it runs `before` once, then
    /// for each line sets `$line`, `$id` and `$attempt` and runs `each` (shell) before
    /// answering. Returns how a Chorefile names it.
    pub fn ok_batch_handler(&self, name: &str, before: &str, each: &str) -> String {
        self.script(
            name,
            &format!(
                "{before}\n\
                 while IFS= read -r line; do\n\
                   id=${{line#*\\\"id\\\":\\\"}}; id=${{id%%\\\"*}}\n\
                   attempt=${{line#*\\\"attempt\\\":}}; attempt=${{attempt%%[!0-9]*}}\n\
                   {each}\n\
                   printf '{{\"id\":\"%s\",\"result\":\"ok\"}}\\n' \"$id\"\n\
                 done"
            ),
        )
    }

    /// The lines a `recorder` wrote.
    pub fn runs(&self, log: &str) -> Vec<Run> {
        self.lines(log).iter().map(|l| Run::parse(l)).collect()
    }

    /// The top of every Chorefile here: the queue root and a short idle poll.
    pub fn preamble(&self) -> String {
        format!(
            "fs-queue-root = {:?}\nconsumer-sleep-interval = 0.1\n",
            self.root().display().to_string()
        )
    }

    /// Write `Chorefile` as the preamble followed by `text`.
    pub fn chorefile(&self, text: &str) -> PathBuf {
        self.write("Chorefile", &format!("{}{text}", self.preamble()))
    }

    pub fn chorefile_path(&self) -> PathBuf {
        self.file("Chorefile")
    }

    pub fn queue(&self, name: &str) -> QueueDir {
        QueueDir {
            path: self.root().join(name),
        }
    }

    /// A `chore` command run in the sandbox.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CHORE);
        cmd.args(args)
            .current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Run `chore ARGS` to completion (with a time limit).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    /// Run `chore ARGS` (with `stdin`), which must succeed: its stdout.
    pub fn run_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        succeeded(args, self.run_with_stdin(args, stdin))
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with_env(args, stdin, &[])
    }

    /// Run `chore ARGS` to completion with extra environment variables.
    pub fn run_with_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("chore starts");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            w.write_all(input.as_bytes()).unwrap();
        }
        let pid = child.id() as i32;
        // A watchdog, so a command that hangs fails the test instead of wedging it: it
        // kills the command unless told within PATIENCE that it has ended.
        let (ended, watchdog) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(PATIENCE)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        let out = child.wait_with_output().unwrap();
        drop(ended);
        out
    }

    /// `chore enqueue -c Chorefile QUEUE BODY`: the published file name.
    pub fn enqueue(&self, queue: &str, body: &str) -> String {
        let names = self.enqueue_lines(&[queue, body], None, &[]);
        assert_eq!(names.len(), 1, "enqueue printed {names:?}");
        let name = names.into_iter().next().unwrap();
        assert!(name.ends_with(".0.job"), "enqueue printed {name:?}");
        name
    }

    /// `chore enqueue -c Chorefile ARGS…` with `stdin` and extra environment, which must
    /// succeed: the lines it printed (file names, or SQS message ids), one per message.
    pub fn enqueue_lines(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Vec<String> {
        let cf = self.chorefile_path();
        let mut all = vec!["enqueue", "-c", cf.to_str().unwrap()];
        all.extend_from_slice(args);
        succeeded(&all, self.run_with_env(&all, stdin, env))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Enqueue and return the message id (the file name without `.0.job`).
    pub fn enqueue_id(&self, queue: &str, body: &str) -> String {
        id_of(&self.enqueue(queue, body))
    }

    /// Start the master on this sandbox's Chorefile, with extra flags.
    pub fn start(&self, extra: &[&str]) -> Master {
        self.start_as("master", extra)
    }

    /// Start a master whose stderr goes to `<label>.log`.
    pub fn start_as(&self, label: &str, extra: &[&str]) -> Master {
        self.start_with_env(label, extra, &[])
    }

    /// Start a master with extra environment variables.
    pub fn start_with_env(&self, label: &str, extra: &[&str], env: &[(&str, &str)]) -> Master {
        let cf = self.chorefile_path();
        let mut args = vec!["-c", cf.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.spawn_master(label, &args, env)
    }

    /// Start the master on this sandbox's Chorefile as user and group 65534 (nobody).
    pub fn start_as_nobody(&self, label: &str) -> Master {
        let cf = self.chorefile_path();
        let mut cmd = self.command(&["-c", cf.to_str().unwrap()]);
        {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        self.spawn_with(label, cmd)
    }

    /// Start `chore ARGS` (exactly these arguments) as a master, in the sandbox directory.
    pub fn spawn_master(&self, label: &str, args: &[&str], env: &[(&str, &str)]) -> Master {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        self.spawn_with(label, cmd)
    }

    /// Start `cmd` as a master, its output in `<label>.log` and `<label>.stdout`.
    fn spawn_with(&self, label: &str, mut cmd: Command) -> Master {
        let log = self.file(&format!("{label}.log"));
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(&format!("{label}.stdout")))
            .unwrap();
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("chore master starts");
        Master::new(child, log)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test directory kept for inspection: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The stdout of `chore ARGS`, which must have succeeded.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "chore {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `<base>.N.job` → `<base>` (the message id).
pub fn id_of(file_name: &str) -> String {
    file_name.split('.').next().unwrap().to_string()
}

/// One line written by `Sandbox::recorder`.
#[derive(Debug, Clone)]
pub struct Run {
    pub at: f64,
    pub queue: String,
    pub id: String,
    pub attempt: u32,
    pub class: String,
    pub body: String,
}

impl Run {
    fn parse(line: &str) -> Run {
        let f: Vec<&str> = line.splitn(6, '|').collect();
        assert_eq!(f.len(), 6, "not a recorder line: {line:?}");
        Run {
            at: f[0]
                .parse()
                .unwrap_or_else(|_| panic!("bad time in {line:?}")),
            queue: f[1].into(),
            id: f[2].into(),
            attempt: f[3]
                .parse()
                .unwrap_or_else(|_| panic!("bad attempt in {line:?}")),
            class: f[4].into(),
            body: f[5].into(),
        }
    }
}

/// A configuration mistake: exit 2, one line on stderr (returned, trimmed), nothing on
/// stdout.
pub fn one_line_exit_2(out: &std::process::Output, args: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "chore {args:?} should exit 2; stderr: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "chore {args:?}: one line, not {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "chore {args:?}: stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr.trim().to_string()
}
