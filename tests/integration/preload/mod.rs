//! Preloaded handlers (`mode = "preload"`, docs/handlers.md "Preloaded mode") through the
//! real `chore` binary: contrib/ruby/bin/chore-preload loading a Ruby Chore-style
//! application whose boot takes 2 s (tests/fixtures/preload/app.rb), and the Python
//! preloader of examples/preload/.
//!
//! The application writes every boot and every job as a line in the sandbox (see the
//! fixture's header), so a test reads what ran where: one boot, jobs in forked children
//! (never in the preloader), each batch in a fresh process. The tests are grouped by what
//! they exercise: `jobs` (jobs, batches, failures, the deadline kill), `lifecycle` (boot
//! failures, recycling, SIGUSR2, the drain), `memory` (memory-limit in a batch child),
//! `others` (the Python example, and the Ruby
//! runner's own protocol tests run as one test so CI runs them).
//!
//! A preloader leads a process group of its own and is not in the master's family (it
//! has no CHORE_MASTER_PID), so `Preloaded` finds it, and the batch children, by the
//! PRELOAD_TEST_DIR its handler's environment names, and kills any left when a test ends.

mod jobs;
mod lifecycle;
mod memory;
mod others;

use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository's root (the runner, the fixture and the example are read from it).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A sandbox whose Chorefile runs the Ruby fixture application under chore-preload.
struct Preloaded {
    sb: Sandbox,
}

impl Preloaded {
    fn new(name: &str) -> Preloaded {
        Preloaded {
            sb: Sandbox::new(name),
        }
    }

    /// The handler table: chore-preload requiring the fixture app, which writes its lines
    /// into the sandbox; `env` adds `, KEY = "value"` pairs to its environment and `extra`
    /// adds handler keys (`, max-batches = 2`).
    fn handler(&self, env: &str, extra: &str) -> String {
        self.handler_with(&[], env, extra)
    }

    /// `handler`, with more arguments for chore-preload.
    fn handler_with(&self, args: &[&str], env: &str, extra: &str) -> String {
        let runner = repo().join("contrib/ruby/bin/chore-preload");
        let app = repo().join("tests/fixtures/preload/app.rb");
        let more: String = args.iter().map(|a| format!(", {a:?}")).collect();
        format!(
            "{{ command = [\"ruby\", {:?}, \"--require\", {:?}{more}], mode = \"preload\", \
             env = {{ PRELOAD_TEST_DIR = {:?}{env} }}{extra} }}",
            runner.display().to_string(),
            app.display().to_string(),
            self.sb.path().display().to_string(),
        )
    }

    /// Write the Chorefile: `top` (top-level options), then one queue per `(name, extra
    /// lines)`, every queue routed to the same preloaded `handler`.
    fn chorefile(&self, top: &str, handler: &str, queues: &[(&str, &str)]) {
        let mut text = format!("{top}\n");
        for (name, extra) in queues {
            text += &format!("[queues.{name}]\nhandler = {handler}\n{extra}\n");
        }
        self.sb.chorefile(&text);
    }

    /// Enqueue `{"class":CLASS,"args":[i]}` for each i in `args`, in one `chore enqueue`.
    fn enqueue(&self, queue: &str, class: &str, args: impl Iterator<Item = String>) -> usize {
        let lines: String = args.map(|a| format!("[{a}]\n")).collect();
        let names = self
            .sb
            .enqueue_lines(&["--class", class, queue, "-"], Some(&lines), &[]);
        names.len()
    }

    /// The boots that got past the fixture's deliberate failures, as `pid:time`.
    fn boots(&self) -> Vec<String> {
        self.sb.lines("boots.txt")
    }

    fn boot_pid(boot: &str) -> i32 {
        boot.split(':').next().unwrap().parse().unwrap()
    }

    /// The start time of a boot (`pid:time`).
    fn boot_time(boot: &str) -> f64 {
        boot.split(':').nth(1).unwrap().parse().unwrap()
    }

    /// Every job event the application recorded.
    fn jobs(&self) -> Vec<Job> {
        self.sb
            .lines("jobs.txt")
            .iter()
            .map(|l| Job::parse(l))
            .collect()
    }

    /// The job events of one kind (`work`, `boom`, `slow-done`…).
    fn jobs_of(&self, kind: &str) -> Vec<Job> {
        self.jobs().into_iter().filter(|j| j.kind == kind).collect()
    }

    /// Live processes started for this sandbox: the preloaders and their batch children,
    /// which inherit the handler's environment.
    fn processes(&self) -> Vec<i32> {
        let needle = format!("PRELOAD_TEST_DIR={}", self.sb.path().display());
        let mut out = Vec::new();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
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
}

impl Drop for Preloaded {
    fn drop(&mut self) {
        // After the test's master is gone (it is declared later, so dropped first): a
        // failing test must leave no preloader or batch child behind.
        crate::support::poll::poll_until(Duration::from_secs(2), || {
            let left = self.processes();
            for &p in &left {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            left.is_empty()
        });
    }
}

/// One line of the fixture's jobs.txt.
#[derive(Debug, Clone)]
struct Job {
    kind: String,
    arg: String,
    pid: i32,
    /// The `pid:time` of the boot the process was forked from.
    boot: String,
    attempt: u32,
    at: f64,
    /// What the process's global held before the job (`unset`, or a pid), and how many
    /// jobs its class variable had counted: `work` jobs only.
    touched: String,
    ran_here: u32,
    /// How many heap compactions the process had seen (`work` jobs only).
    compactions: u32,
}

impl Job {
    fn parse(line: &str) -> Job {
        let words: HashMap<&str, &str> =
            line.split(' ').filter_map(|w| w.split_once('=')).collect();
        let get = |k: &str| words.get(k).copied().unwrap_or("").to_string();
        let num = |k: &str| {
            get(k)
                .parse::<i64>()
                .unwrap_or_else(|_| panic!("{k} in {line:?}"))
        };
        Job {
            kind: get("kind"),
            arg: get("arg"),
            pid: num("pid") as i32,
            boot: get("boot"),
            attempt: num("attempt") as u32,
            at: get("at").parse().unwrap(),
            touched: get("touched"),
            ran_here: get("ran_here").parse().unwrap_or(0),
            compactions: get("compactions").parse().unwrap_or(0),
        }
    }
}

/// The master's log lines holding `needle`.
fn log_count(master: &Master, needle: &str) -> usize {
    master
        .log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Copy the files of `from` (not recursing) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
