//! A preloader's life as chore runs it: restarted with a backoff while it fails to boot
//! (its queues' messages wait, unburned), recycled after `max-batches` batches, past
//! `max-memory`, or on SIGUSR2 (a new boot while batches keep running), and stopped with
//! the master's drain.

use super::{Preloaded, log_count};
use crate::harness::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn preload_a_preloader_failing_at_boot_is_restarted_and_no_message_is_burned() {
    let p = Preloaded::new("preload-bootfail");
    p.chorefile(
        "",
        &p.handler(", PRELOAD_TEST_FAIL_BOOTS = \"2\"", ""),
        &[("work", "max-attempts = 1")],
    );
    p.enqueue("work", "Work", (0..20).map(|i| i.to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    // Two failures (backoffs of 1 s, then 2 s), then a 2 s boot.
    master.wait_for(
        "20 jobs done after the failed boots",
        Duration::from_secs(30),
        || p.jobs_of("work").len() >= 20 && q.is_idle(),
    );
    let failures: Vec<String> = master
        .log_text()
        .lines()
        .filter(|l| l.contains("preloader failed to boot"))
        .map(str::to_owned)
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].contains("retry_in_secs=1"), "{}", failures[0]);
    assert!(failures[1].contains("retry_in_secs=2"), "{}", failures[1]);
    assert_eq!(p.sb.lines("boot-attempts.txt").len(), 3);
    assert_eq!(p.boots().len(), 1);
    let jobs = p.jobs_of("work");
    let args: BTreeSet<&str> = jobs.iter().map(|j| j.arg.as_str()).collect();
    assert_eq!(
        (jobs.len(), args.len()),
        (20, 20),
        "each job once: {jobs:?}"
    );
    assert!(jobs.iter().all(|j| j.attempt == 1), "none burned: {jobs:?}");
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_a_preloader_is_recycled_after_max_batches_without_losing_a_message() {
    let p = Preloaded::new("preload-maxbatches");
    p.chorefile(
        "concurrency = 2\nbatch-size = 5\n",
        &p.handler("", ", max-batches = 2"),
        &[("work", "")],
    );
    p.enqueue("work", "Work", (0..20).map(|i| i.to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    master.wait("the first wave, and a second preloader ready", || {
        p.jobs_of("work").len() >= 20 && q.is_idle() && log_count(&master, "preloader ready") >= 2
    });
    assert!(master.log_text().contains("(max-batches)"));
    let first = p.boots()[0].clone();
    let first_pid = Preloaded::boot_pid(&first);
    master.wait("the first preloader stopped", || pid_gone(first_pid));
    // The second wave goes to the new preloader.
    p.enqueue("work", "Work", (20..30).map(|i| i.to_string()));
    master.wait("the second wave", || {
        p.jobs_of("work").len() >= 30 && q.is_idle()
    });
    let jobs = p.jobs_of("work");
    let args: BTreeSet<&str> = jobs.iter().map(|j| j.arg.as_str()).collect();
    assert_eq!((jobs.len(), args.len()), (30, 30), "each job once");
    let boots = p.boots();
    assert!(boots.len() >= 2, "{boots:?}");
    for j in jobs.iter().filter(|j| j.arg.parse::<u32>().unwrap() >= 20) {
        assert!(j.boot != first && boots.contains(&j.boot), "{j:?}");
    }
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_a_preloader_past_max_memory_is_replaced() {
    let p = Preloaded::new("preload-maxmemory");
    p.chorefile("", &p.handler("", ", max-memory = 1"), &[("work", "")]);
    p.enqueue("work", "Work", (0..20).map(|i| i.to_string()));
    let start = Instant::now();
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    // Memory is read every 5 s: a 1-byte limit replaces every preloader at its first look.
    master.wait_for("a second boot", Duration::from_secs(15), || {
        p.boots().len() >= 2
    });
    assert!(
        start.elapsed() <= Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    master.wait("the jobs done", || {
        p.jobs_of("work").len() >= 20 && q.is_idle()
    });
    assert!(master.log_text().contains("max-memory is 1"));
    let jobs = p.jobs_of("work");
    let args: BTreeSet<&str> = jobs.iter().map(|j| j.arg.as_str()).collect();
    assert_eq!((jobs.len(), args.len()), (20, 20), "each job once");
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_sigusr2_boots_a_new_preloader_while_jobs_keep_completing() {
    let p = Preloaded::new("preload-usr2");
    p.chorefile(
        "concurrency = 2\nbatch-size = 2\n",
        &p.handler("", ""),
        &[("work", "")],
    );
    // About 3 s of work for two workers: more than a boot.
    p.enqueue("work", "Slow", (0..60).map(|_| "0.1".to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    master.wait("the first job done", || !p.jobs_of("slow-done").is_empty());
    master.signal(Signal::SIGUSR2);
    master.wait("a second boot", || p.boots().len() >= 2);
    master.wait("the second preloader ready", || {
        log_count(&master, "preloader ready") >= 2
    });
    let (old, new) = (p.boots()[0].clone(), p.boots()[1].clone());
    let new_started = Preloaded::boot_time(&new);
    master.wait("the backlog done", || {
        p.jobs_of("slow-done").len() >= 60 && q.is_idle()
    });
    let during_boot = p
        .jobs_of("slow-done")
        .iter()
        .filter(|j| j.boot == old && j.at > new_started)
        .count();
    assert!(
        during_boot > 0,
        "no job completed while the new preloader booted"
    );
    master.wait("the old preloader stopped", || {
        pid_gone(Preloaded::boot_pid(&old))
    });
    p.enqueue("work", "Work", (0..4).map(|i| i.to_string()));
    master.wait("jobs after the switch", || p.jobs_of("work").len() >= 4);
    assert!(
        p.jobs_of("work").iter().all(|j| j.boot == new),
        "{:?}",
        p.jobs_of("work")
    );
    assert!(master.log_text().contains("SIGUSR2"));
    assert_eq!(p.boots().len(), 2);
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_sigterm_drains_the_batch_in_flight_and_stops_the_preloader() {
    let p = Preloaded::new("preload-drain");
    p.chorefile("", &p.handler("", ""), &[("work", "")]);
    p.enqueue("work", "Slow", std::iter::once("3".to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    master.wait("the slow job to start", || {
        !p.jobs_of("slow-start").is_empty()
    });
    let preloader = Preloaded::boot_pid(&p.boots()[0]);
    master.signal(Signal::SIGTERM);
    assert_eq!(master.wait_exit(PATIENCE).code(), Some(0));
    assert_eq!(
        p.jobs_of("slow-done").len(),
        1,
        "the batch in flight finished"
    );
    assert!(
        q.is_idle() && q.dead().is_empty(),
        "and its message was deleted"
    );
    assert!(pid_gone(preloader), "the preloader outlived the master");
    let left = p.processes();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn preload_a_killed_master_takes_its_preloader_and_batch_along_and_the_next_cleans_up() {
    let p = Preloaded::new("preload-master-killed");
    p.chorefile("", &p.handler("", ""), &[("work", "")]);
    p.enqueue("work", "Slow", std::iter::once("300".to_string()));
    let mut master = p.sb.start(&[]);
    master.wait("the slow job to start", || {
        !p.jobs_of("slow-start").is_empty()
    });
    let preloader = Preloaded::boot_pid(&p.boots()[0]);
    master.signal(Signal::SIGKILL);
    master.wait_exit(PATIENCE);
    // The kernel's parent-death signals: the worker kills its group (the batch child in
    // it), and the preloader is killed, not left holding the application.
    crate::support::poll::wait_until("the preloader to die", PATIENCE, || pid_gone(preloader));
    crate::support::poll::wait_until("nothing left behind", PATIENCE, || p.processes().is_empty());
    assert!(p.jobs_of("slow-done").is_empty());
    // Only its socket directory is left; the next master with preloaders removes it.
    let stale = std::env::temp_dir().join(format!("chore-{}-preload", master.pid));
    assert!(stale.is_dir(), "{}", stale.display());
    let mut next = p.sb.start_as("next", &[]);
    next.wait("the stale directory to go", || !stale.exists());
    assert_eq!(next.stop().code(), Some(0));
}

/// A reload that changes a preloaded handler (restart only) and, with it, a live setting of
/// the same queue: the live one applies, the handler stays, and jobs run on the preloader
/// that is serving.
#[test]
fn preload_a_reload_changing_the_preloaded_handler_and_a_live_key_keeps_the_handler() {
    let p = Preloaded::new("preload-reload");
    p.chorefile("", &p.handler("", ""), &[("work", "backoff = 1")]);
    let mut master = p.sb.start(&[]);
    master.wait("the preloader to boot", || p.boots().len() == 1);
    p.chorefile(
        "",
        &p.handler(", RELEASE = \"2\"", ""),
        &[("work", "backoff = 7")],
    );
    master.signal(Signal::SIGHUP);
    master.wait_log("SIGHUP: configuration reloaded");
    let log = master.log_text();
    assert!(
        log.contains("this change needs a restart") && log.contains("preloaded handlers"),
        "{log}"
    );
    p.enqueue("work", "Work", (0..5).map(|i| i.to_string()));
    let q = p.sb.queue("work");
    master.wait("the jobs to run", || {
        p.jobs_of("work").len() == 5 && q.is_idle()
    });
    assert_eq!(log_count(&master, "given back"), 0, "{}", master.log_text());
    assert_eq!(p.boots().len(), 1, "the serving preloader kept on");
    assert_eq!(master.stop().code(), Some(0));
}

/// A preloader that is alive but cannot fork (here one that answers every request with an
/// error) is replaced, after a growing backoff, and its queue waits meanwhile: its batches
/// are given back, not charged, and not spun through again and again.
#[test]
fn preload_a_preloader_that_cannot_fork_is_replaced_and_its_queue_waits() {
    let p = Preloaded::new("preload-cannot-fork");
    let script = p.sb.write(
        "refuser.py",
        "import os, socket\n\
         d = os.environ['PRELOAD_TEST_DIR']\n\
         with open(os.path.join(d, 'refuser-boots.txt'), 'a') as f:\n    f.write('%d\\n' % os.getpid())\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         s.bind(os.environ['CHORE_PRELOAD_SOCKET'])\n\
         s.listen(16)\n\
         while True:\n    c, _ = s.accept()\n    c.recv(65536)\n    c.sendall(b'{\"error\":\"simulated\"}\\n')\n    c.close()\n",
    );
    let handler = format!(
        "{{ command = [\"python3\", {:?}], mode = \"preload\", env = {{ PRELOAD_TEST_DIR = {:?} }} }}",
        script.display().to_string(),
        p.sb.path().display().to_string()
    );
    p.chorefile(
        "batch-timeout = 0.1\n",
        &handler,
        &[("work", "max-attempts = 1")],
    );
    let mut master = p.sb.start(&[]);
    master.wait("the first preloader", || {
        p.sb.lines("refuser-boots.txt").len() == 1
    });
    p.enqueue("work", "Work", std::iter::once("1".to_string()));
    // Replaced after 1 s, then 2 s: three boots within some seconds.
    master.wait("two replacements", || {
        p.sb.lines("refuser-boots.txt").len() >= 3
    });
    let replaced = log_count(&master, "could not fork a batch; replacing it");
    assert!(replaced >= 2, "{}", master.log_text());
    let workers = log_count(&master, "worker started");
    assert!(
        workers <= 3 * replaced + 3,
        "{workers} workers for {replaced} failed preloaders:\n{}",
        master.log_text()
    );
    let q = p.sb.queue("work");
    assert!(q.dead().is_empty(), "never charged: {:?}", q.dead());
    assert_eq!(master.stop().code(), Some(0));
    let left: Vec<String> = q.new_files();
    assert_eq!(left.len(), 1, "given back whole: {left:?}");
    assert!(left[0].ends_with(".0.job"), "no attempt counted: {left:?}");
}
