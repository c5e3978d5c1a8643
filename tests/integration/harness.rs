//! The test harness: a temporary directory per test, a Chorefile in it, the real `chore`
//! binary run as a child (its log captured to a file there), handler scripts, and helpers
//! that wait for a condition with a generous timeout.
//!
//! Everything here uses std (plus `nix`, already a dependency of chore, for signals). A
//! `Master` kills its whole family (the master, its workers and their handlers) when it is
//! dropped, so a failing test never leaves processes behind. A failing test keeps its
//! directory and prints where it is, so its log can be read.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const CHORE: &str = env!("CARGO_BIN_EXE_chore");

/// How long any wait lasts before the test fails: generous, for a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(25);

/// Wait until `cond` holds, polling; panic after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Seconds since the epoch, as a float (to compare with handlers' `date +%s.%N`).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Is `pid` gone (no such process, or a zombie nobody has reaped yet)?
pub fn pid_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // pid (comm) STATE ...: comm may hold spaces, so look after the last ')'.
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start())
                .and_then(|r| r.chars().next());
            matches!(state, Some('Z') | Some('X'))
        }
    }
}

/// argv of a live process (empty when it is gone).
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Process group of a live process.
pub fn pgrp(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // state ppid pgrp ...
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Every live (non-zombie) process whose environment says it belongs to master `master`:
/// the master puts CHORE_MASTER_PID in its workers' environment, and handlers inherit it.
/// Unlike `pgrep -f chore-worker`, this does not see other tests' workers.
pub fn family_of(master: i32) -> Vec<i32> {
    let needle = format!("CHORE_MASTER_PID={master}");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&c| c == 0).any(|kv| kv == needle.as_bytes()) && !pid_gone(pid) {
            out.push(pid);
        }
    }
    out
}

/// The workers of master `master`: its family members titled `chore-worker-…`.
pub fn workers_of(master: i32) -> Vec<i32> {
    family_of(master)
        .into_iter()
        .filter(|&p| {
            cmdline(p)
                .first()
                .is_some_and(|a| a.starts_with("chore-worker-"))
        })
        .collect()
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
        // A watchdog, so a command that hangs fails the test instead of wedging it.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < PATIENCE {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(POLL);
            }
            if !flag.load(Ordering::SeqCst) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        let out = child.wait_with_output().unwrap();
        done.store(true, Ordering::SeqCst);
        out
    }

    /// `chore enqueue -c Chorefile QUEUE BODY`: the published file name.
    pub fn enqueue(&self, queue: &str, body: &str) -> String {
        let cf = self.chorefile_path();
        let out = self.run(&["enqueue", "-c", cf.to_str().unwrap(), queue, body]);
        assert!(
            out.status.success(),
            "chore enqueue failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(name.ends_with(".0.job"), "enqueue printed {name:?}");
        name
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

    /// Start `chore ARGS` (exactly these arguments) as a master, in the sandbox directory.
    pub fn spawn_master(&self, label: &str, args: &[&str], env: &[(&str, &str)]) -> Master {
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
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("chore master starts");
        let pid = child.id() as i32;
        Master {
            child,
            pid,
            log,
            status: None,
        }
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

/// One queue's directories: `new/`, `inprogress/`, `dead/`.
pub struct QueueDir {
    pub path: PathBuf,
}

impl QueueDir {
    fn list(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path.join(sub))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    pub fn new_files(&self) -> Vec<String> {
        self.list("new")
    }
    pub fn inprogress(&self) -> Vec<String> {
        self.list("inprogress")
    }
    pub fn dead(&self) -> Vec<String> {
        self.list("dead")
    }
    /// How many dead letters are complete: the message file and its `.reason` beside it,
    /// fully written (the reason is written after the message is moved).
    pub fn dead_letters(&self) -> usize {
        let dead = self.dead();
        dead.iter()
            .filter(|n| n.ends_with(".job"))
            .filter(|n| {
                dead.contains(&format!("{n}.reason"))
                    && self.read("dead", &format!("{n}.reason")).ends_with('\n')
            })
            .count()
    }
    /// Neither waiting nor claimed messages are left.
    pub fn is_idle(&self) -> bool {
        self.new_files().is_empty() && self.inprogress().is_empty()
    }
    pub fn read(&self, sub: &str, name: &str) -> String {
        fs::read_to_string(self.path.join(sub).join(name)).unwrap_or_default()
    }
    /// Put a file into `sub/` atomically (written under a dot name, which every consumer
    /// skips, then renamed), as a careful producer would.
    pub fn put(&self, sub: &str, name: &str, content: &[u8]) {
        let dir = self.path.join(sub);
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
    }
    /// Is message `id` anywhere in `new/` or `inprogress/`?
    pub fn holds(&self, id: &str) -> bool {
        self.new_files()
            .iter()
            .chain(self.inprogress().iter())
            .any(|n| id_of(n) == id)
    }
}

/// A running `chore` master.
pub struct Master {
    child: Child,
    pub pid: i32,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Master {
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
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, timeout, cond)
        }));
        if result.is_err() {
            panic!(
                "timed out after {timeout:?} waiting for {what}; master log tail:\n{}",
                self.tail()
            );
        }
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        self.wait(&format!("{needle:?} in the log"), || {
            self.log_text().contains(needle)
        })
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal the master");
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().unwrap() {
            Some(s) => {
                self.status = Some(s);
                false
            }
            None => true,
        }
    }

    /// Wait for the master to exit, within `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        while self.running() {
            if start.elapsed() > limit {
                panic!(
                    "the master did not exit within {limit:?}; log tail:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(POLL);
        }
        self.status.unwrap()
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
        for _ in 0..3 {
            let family = family_of(self.pid);
            if family.is_empty() {
                break;
            }
            for p in family {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
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
