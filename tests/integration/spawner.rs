//! The spawner: one `chore-spawner` per master forks every worker, each the master's own
//! child (so the master reaps it and it follows the master); a master whose spawner is
//! gone re-executes workers instead, and the spawner never outlives its master.

use crate::harness::*;
use crate::support::procs::{cmdline, family_of, pgrp, pid_gone};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

/// Parent pid of a live process.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The signals process `pid` blocks, from `/proc` (`SigBlk`, a hex mask).
fn blocked_signals(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(u64::MAX)
}

/// The master's spawners: its family members titled `chore-spawner-…`.
fn spawners_of(master: i32) -> Vec<i32> {
    family_of(master)
        .into_iter()
        .filter(|&p| {
            cmdline(p)
                .first()
                .is_some_and(|a| a.starts_with("chore-spawner-"))
        })
        .collect()
}

fn setup(sb: &Sandbox, then: &str) {
    let h = sb.recorder("job.sh", "runs.txt", then);
    sb.chorefile(&format!(
        "concurrency = 2\nbatch-size = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
}

#[test]
fn one_spawner_forks_every_worker_as_a_child_of_the_master() {
    let sb = Sandbox::new("spawner-forks");
    setup(&sb, "sleep 2");
    let mut master = sb.start(&[]);
    master.wait("the spawner", || spawners_of(master.pid).len() == 1);
    let spawner = spawners_of(master.pid)[0];
    assert_eq!(ppid(spawner), Some(master.pid));
    assert_eq!(pgrp(spawner), Some(spawner), "out of the terminal's Ctrl-C");
    assert_eq!(
        blocked_signals(spawner),
        0,
        "workers inherit its signal mask"
    );
    assert_eq!(cmdline(spawner)[1], "work");
    for round in 1..=2 {
        sb.enqueue("jobs", "{}");
        sb.enqueue("jobs", "{}");
        master.wait("two workers", || master.workers().len() == 2);
        for w in master.workers() {
            assert_eq!(ppid(w), Some(master.pid), "forked as the master's child");
            assert_eq!(pgrp(w), Some(w), "leads its own process group");
            let argv = cmdline(w);
            assert_eq!(argv.len(), 2, "{argv:?}");
            assert!(argv[0].starts_with("chore-worker-"), "{argv:?}");
            assert_eq!(argv[1], "work");
            // Its SIGTERM (an operator's, or the master's death) must reach it. (While it
            // starts its handler, `posix_spawn` blocks every signal for a moment.)
            master.wait("the worker to block no signal", || blocked_signals(w) == 0);
        }
        master.wait("the batches to finish", || {
            sb.runs("runs.txt").len() == 2 * round && master.workers().is_empty()
        });
    }
    // Each exited worker was reaped: no zombie is left among the master's children.
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ppid(p) == Some(master.pid) && pid_gone(p))
        .count();
    assert_eq!(zombies, 0);
    assert_eq!(
        spawners_of(master.pid),
        [spawner],
        "the same spawner throughout"
    );
    assert_eq!(master.stop().code(), Some(0));
    master.wait("the spawner to end", || pid_gone(spawner));
}

#[test]
fn the_spawners_eager_binding_stays_out_of_handlers() {
    // The spawner has the dynamic linker bind every symbol at its start, so that the
    // workers it forks need not; a handler still gets chore's own environment.
    for (label, env, seen) in [
        ("unset", &[][..], "unset unset"),
        ("set", &[("LD_BIND_NOW", "yes")][..], "yes unset"),
    ] {
        let sb = Sandbox::new(&format!("spawner-bind-now-{label}"));
        setup(
            &sb,
            "echo \"${LD_BIND_NOW-unset} ${CHORE_SPAWNER_BIND_NOW-unset}\" >> env.txt",
        );
        let mut master = sb.start_with_env("master", &[], env);
        master.wait("the spawner", || spawners_of(master.pid).len() == 1);
        let spawner = spawners_of(master.pid)[0];
        let environ = std::fs::read(format!("/proc/{spawner}/environ")).unwrap();
        let bind_now = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"LD_BIND_NOW="))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let expected = if label == "set" { "yes" } else { "1" };
        assert_eq!(bind_now.as_deref(), Some(expected), "{label}");
        sb.enqueue("jobs", "{}");
        master.wait("the job to run", || sb.runs("runs.txt").len() == 1);
        master.wait("its environment", || !sb.lines("env.txt").is_empty());
        assert_eq!(sb.lines("env.txt"), [seen], "{label}");
        assert_eq!(master.stop().code(), Some(0));
    }
}

#[test]
fn without_its_spawner_the_master_re_executes_workers() {
    let sb = Sandbox::new("spawner-gone");
    setup(&sb, "");
    let mut master = sb.start(&[]);
    master.wait("the spawner", || spawners_of(master.pid).len() == 1);
    let spawner = spawners_of(master.pid)[0];
    kill(Pid::from_raw(spawner), Signal::SIGKILL).unwrap();
    for _ in 0..3 {
        sb.enqueue("jobs", "{}");
    }
    master.wait("the jobs to run", || sb.runs("runs.txt").len() == 3);
    master.wait("the queue to empty", || sb.queue("jobs").is_idle());
    assert_eq!(sb.queue("jobs").dead_letters(), 0);
    master.wait_log("the spawner failed");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn the_spawner_dies_with_a_killed_master() {
    let sb = Sandbox::new("spawner-orphan");
    setup(&sb, "");
    let mut master = sb.start(&[]);
    master.wait("the spawner", || spawners_of(master.pid).len() == 1);
    let spawner = spawners_of(master.pid)[0];
    master.signal(Signal::SIGKILL);
    master.wait_exit(Duration::from_secs(5));
    crate::support::poll::wait_until("the spawner to exit", Duration::from_secs(5), || {
        pid_gone(spawner)
    });
}

#[test]
fn signals_while_workers_start_keep_the_spawner() {
    // The master waits on the spawner's socket for each worker's pid. A signal it handles
    // (SIGUSR1 from logrotate, here hundreds of them) landing in that wait must not make
    // it give the spawner up and re-execute every later worker.
    let sb = Sandbox::new("spawner-signals");
    setup(&sb, "");
    let input: String = (0..300).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    sb.enqueue_lines(&["jobs"], Some(&input), &[]);
    let master = sb.start(&[]);
    master.wait("the spawner", || spawners_of(master.pid).len() == 1);
    let spawner = spawners_of(master.pid)[0];
    while sb.runs("runs.txt").len() < 300 {
        for _ in 0..20 {
            master.signal(Signal::SIGUSR1);
            std::thread::sleep(Duration::from_micros(500));
        }
        assert!(master.running(), "{}", master.log_text());
    }
    master.wait("the queue to empty", || sb.queue("jobs").is_idle());
    let log = master.log_text();
    assert!(!log.contains("the spawner failed"), "{log}");
    assert_eq!(
        spawners_of(master.pid),
        [spawner],
        "the same spawner throughout"
    );
}
