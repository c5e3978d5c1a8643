//! Jobs under the Ruby runner: a backlog runs on one boot in forked children, each batch in
//! a fresh process; a job that raises is retried, then dead-lettered with its exception; a
//! hung job is killed at its deadline without touching the preloader; what a batch leaves
//! running is killed when the batch ends.

use super::{Preloaded, log_count};
use crate::harness::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[test]
fn preload_500_jobs_run_on_one_boot_each_batch_in_a_fresh_child() {
    let p = Preloaded::new("preload-backlog");
    p.chorefile(
        "concurrency = 2\nbatch-size = 50\n",
        &p.handler("", ""),
        &[("work", "")],
    );
    assert_eq!(
        p.enqueue("work", "Work", (0..500).map(|i| i.to_string())),
        500
    );
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    master.wait_for(
        "500 jobs done and the queue empty",
        Duration::from_secs(40),
        || p.jobs_of("work").len() >= 500 && q.is_idle(),
    );
    let boots = p.boots();
    assert_eq!(boots.len(), 1, "one boot for the whole backlog: {boots:?}");
    let preloader = Preloaded::boot_pid(&boots[0]);

    let jobs = p.jobs_of("work");
    let args: BTreeSet<&str> = jobs.iter().map(|j| j.arg.as_str()).collect();
    assert_eq!((jobs.len(), args.len()), (500, 500), "each job once");
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    let mut by_pid: BTreeMap<i32, Vec<&super::Job>> = BTreeMap::new();
    for j in &jobs {
        assert_eq!(j.boot, boots[0], "forked from the one boot: {j:?}");
        assert_ne!(j.pid, preloader, "a job ran in the preloader itself: {j:?}");
        assert_eq!(j.attempt, 1, "{j:?}");
        by_pid.entry(j.pid).or_default().push(j);
    }
    // A batch is at most 50 messages, one child each: at least ten children.
    assert!(by_pid.len() >= 10, "{} batch processes", by_pid.len());
    for (pid, runs) in &by_pid {
        assert!(runs.len() <= 50, "{} jobs in process {pid}", runs.len());
        // Unpolluted: each batch's first job finds the global unset and the class
        // variable at zero, though earlier batches set both; later ones see their own.
        for (n, j) in runs.iter().enumerate() {
            let expected = if n == 0 {
                "unset".to_string()
            } else {
                pid.to_string()
            };
            assert_eq!(j.touched, expected, "job {n} of process {pid}: {j:?}");
            assert_eq!(j.ran_here as usize, n, "job {n} of process {pid}: {j:?}");
        }
    }
    assert!(!pid_gone(preloader), "the preloader serves on");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_the_heap_is_settled_before_the_first_fork_unless_told_not_to() {
    for (args, settled) in [(&[][..], true), (&["--no-warmup"][..], false)] {
        let p = Preloaded::new("preload-warmup");
        p.chorefile(
            "",
            &p.handler_with(args, ", PRELOAD_TEST_BOOT_SECS = \"0\"", ""),
            &[("work", "")],
        );
        p.enqueue("work", "Work", std::iter::once("1".to_string()));
        let mut master = p.sb.start(&[]);
        master.wait("the job", || !p.jobs_of("work").is_empty());
        let job = &p.jobs_of("work")[0];
        // The child inherits the preloader's count: a compaction ran there before it.
        assert_eq!(job.compactions > 0, settled, "{args:?}: {job:?}");
        assert_eq!(master.stop().code(), Some(0));
    }
}

#[test]
fn preload_a_raising_job_is_retried_then_dead_lettered_with_its_exception() {
    let p = Preloaded::new("preload-raise");
    p.chorefile(
        "",
        &p.handler("", ""),
        &[("boom", "backoff = [1]\nmax-attempts = 2")],
    );
    p.enqueue("boom", "Boom", std::iter::once("7".to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("boom");
    master.wait("the message dead-lettered", || q.dead_letters() == 1);
    let attempts: Vec<u32> = p.jobs_of("boom").iter().map(|j| j.attempt).collect();
    assert_eq!(attempts, vec![1, 2], "tried, retried, then set aside");
    let runs = p.jobs_of("boom");
    assert_ne!(runs[0].pid, runs[1].pid, "each attempt in its own child");
    let reason_file = q
        .dead()
        .into_iter()
        .find(|n| n.ends_with(".reason"))
        .unwrap();
    let reason = q.read("dead", &reason_file);
    assert!(
        reason.contains("ArgumentError") && reason.contains("boom number 7"),
        "the exception's class and message in {reason_file}: {reason:?}"
    );
    assert!(
        log_count(&master, "will retry") >= 1,
        "the first failure is retried"
    );
    assert!(q.is_idle());
    assert_eq!(p.boots().len(), 1);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_what_a_batch_leaves_running_ends_with_the_batch_not_at_its_deadline() {
    let p = Preloaded::new("preload-leave");
    p.chorefile("", &p.handler("", ""), &[("leave", "timeout = 120")]);
    p.enqueue("leave", "Leave", std::iter::once("1000".to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("leave");
    master.wait("the job to run", || !p.jobs_of("leave").is_empty());
    let left: i32 = p.jobs_of("leave")[0].arg.parse().unwrap();
    // The batch child exits with the sleep still holding its output open: the batch ends
    // (at most 2 s after that exit), not at the 120 s deadline, and kills the sleep.
    wait_until("the leftover sleep killed", Duration::from_secs(20), || {
        pid_gone(left)
    });
    wait_until("the worker gone", Duration::from_secs(20), || {
        crate::support::procs::workers_of(master.pid).is_empty()
    });
    master.wait("the message completed", || q.is_idle());
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_a_child_gone_before_its_worker_has_its_pid_still_ends_its_batch_at_once() {
    let p = Preloaded::new("preload-quick-child");
    // Each child leaves a sleep holding its output and quits as it is forked, while the
    // preloader answers 0.2 s later: by then the child may be reaped, and its pid no
    // longer opens. Its messages, unreported, must fail at once, not at the deadline.
    p.chorefile(
        "concurrency = 1\nbatch-size = 1\n",
        &p.handler(
            ", PRELOAD_TEST_ANSWER_DELAY = \"0.2\", PRELOAD_TEST_QUIT_AT_FORK = \"1\"",
            "",
        ),
        &[("work", "timeout = 120\nmax-attempts = 1")],
    );
    p.enqueue("work", "Work", (0..3).map(|i| i.to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("work");
    master.wait_for(
        "the three messages dead-lettered",
        Duration::from_secs(40),
        || q.dead_letters() == 3,
    );
    // Nothing left but the preloader: each batch's sleep was killed with its batch.
    wait_until("the leftovers killed", Duration::from_secs(10), || {
        p.processes().len() == 1
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_a_hung_job_is_killed_at_its_deadline_and_the_preloader_lives_on() {
    let p = Preloaded::new("preload-hang");
    p.chorefile(
        "",
        &p.handler("", ""),
        &[("hang", "timeout = 2\nmax-attempts = 1")],
    );
    p.enqueue("hang", "Hang", std::iter::once("1000".to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("hang");
    master.wait("the hung job to start", || !p.jobs_of("hang").is_empty());
    let started = std::time::Instant::now();
    let hung = p.jobs_of("hang")[0].clone();
    master.wait("the killed job dead-lettered", || q.dead_letters() == 1);
    let killed_after = started.elapsed();
    assert!(
        killed_after >= Duration::from_millis(1500),
        "killed {killed_after:?} after it started, with a 2 s timeout"
    );
    wait_until("the hung child to die", Duration::from_secs(5), || {
        pid_gone(hung.pid)
    });
    assert!(p.jobs_of("hang-done").is_empty());
    let reason_file = q
        .dead()
        .into_iter()
        .find(|n| n.ends_with(".reason"))
        .unwrap();
    let reason = q.read("dead", &reason_file);
    assert!(reason.contains("killed"), "{reason:?}");

    // The deadline kill reached the batch's group, never the preloader's.
    let preloader = Preloaded::boot_pid(&hung.boot);
    assert!(
        !pid_gone(preloader),
        "the preloader was killed with the batch"
    );
    p.enqueue("hang", "Work", std::iter::once("1".to_string()));
    master.wait("the next batch", || !p.jobs_of("work").is_empty());
    let next = &p.jobs_of("work")[0];
    assert_eq!(
        next.boot, hung.boot,
        "forked from the same preloader: {next:?}"
    );
    assert_ne!(next.pid, hung.pid);
    assert_eq!(p.boots(), vec![hung.boot.clone()], "no second boot");
    assert_eq!(log_count(&master, "preloader starting"), 1);
    assert_eq!(master.stop().code(), Some(0));
}
