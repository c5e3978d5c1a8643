//! Deadlines and deaths: a hung handler killed at its deadline, a master killed outright,
//! a long job whose claim must not lapse while it runs.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

#[test]
fn a_hung_handler_is_killed_at_its_deadline_while_other_queues_go_on() {
    let sb = Sandbox::new("hung");
    let hung = sb.recorder(
        "hung.sh",
        "hung.txt",
        "echo $$ >> hung.pids\nexec sleep 1000",
    );
    let fast = sb.recorder("fast.sh", "fast.txt", "");
    sb.chorefile(&format!(
        "concurrency = 2\nbatch-size = 1\n\
         [queues.hung]\nhandler = [{hung:?}]\ntimeout = 2\nbackoff = [1]\nmax-attempts = 2\n\
         [queues.fast]\nhandler = [{fast:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("hung", "{\"hang\":true}");
    master.wait("the hung handler to start", || {
        sb.lines("hung.pids").len() == 1
    });
    let started = Instant::now();
    let handler: i32 = sb.lines("hung.pids")[0].parse().unwrap();
    let workers = master.workers();
    assert_eq!(workers.len(), 1, "one worker, for the hung job");
    let worker = workers[0];
    for i in 0..3 {
        sb.enqueue("fast", &format!("[{i}]"));
    }
    master.wait("the other queue's jobs", || sb.runs("fast.txt").len() == 3);
    if started.elapsed() < Duration::from_millis(1800) {
        assert!(!pid_gone(handler), "killed before its deadline");
    }
    master.wait_log("passed its deadline");
    let killed_after = started.elapsed();
    assert!(
        killed_after >= Duration::from_millis(1500),
        "killed {killed_after:?} after it started, with a 2 s timeout"
    );
    let log = master.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("passed its deadline"))
        .unwrap();
    assert!(line.contains(&worker.to_string()), "the pid: {line}");
    assert!(line.contains("hung"), "the queue: {line}");
    assert!(line.contains(&id), "the message id: {line}");
    wait_until(
        "the worker and its handler to die",
        Duration::from_secs(5),
        || pid_gone(worker) && pid_gone(handler),
    );
    // The kill is a failed attempt: retried after the backoff, then dead at max-attempts.
    sb.enqueue("fast", "[3]");
    let q = sb.queue("hung");
    master.wait("the second kill to dead-letter it", || {
        q.dead_letters() == 1
    });
    let attempts: Vec<u32> = sb.runs("hung.txt").iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
    let reason = q.read("dead", &format!("{id}.2.job.reason"));
    assert!(reason.contains("killed"), "{reason}");
    assert!(q.is_idle());
    assert_eq!(sb.runs("fast.txt").len(), 4, "the other queue went on");
    for pid in sb.lines("hung.pids") {
        assert!(pid_gone(pid.parse().unwrap()), "handler {pid} survived");
    }
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_killed_master_leaves_no_workers_and_its_messages_come_back() {
    let sb = Sandbox::new("killed-master");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if [ \"$CHORE_ATTEMPT\" = 1 ]; then echo $$ > handler.pid; exec sleep 1000; fi",
    );
    sb.chorefile(&format!(
        "fs-claim-lease = 2\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut first = sb.start_as("first", &[]);
    let id = sb.enqueue_id("jobs", "{\"survive\":1}");
    first.wait("the job to start", || !sb.read("handler.pid").is_empty());
    let handler: i32 = sb.read("handler.pid").trim().parse().unwrap();
    let workers = first.workers();
    assert_eq!(workers.len(), 1, "its chore-worker child");
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    wait_until(
        "the orphaned worker and handler to exit by themselves",
        Duration::from_secs(5),
        || pid_gone(workers[0]) && pid_gone(handler),
    );
    let q = sb.queue("jobs");
    assert!(q.holds(&id), "the message is still claimed, not lost");
    let mut second = sb.start_as("second", &[]);
    second.wait("the message to run again", || {
        sb.runs("runs.txt").len() >= 2
    });
    let back_after = killed.elapsed();
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].id, id);
    assert_eq!(runs[1].attempt, 2, "the lost attempt counts");
    assert_eq!(runs[1].body, "{\"survive\":1}");
    assert!(
        back_after < Duration::from_secs(8),
        "with a 2 s claim lease it came back after {back_after:?}"
    );
    second.wait("the queue to empty", || q.is_idle());
    assert_eq!(second.stop().code(), Some(0));
}

#[test]
fn a_long_job_keeps_its_claim_and_runs_once() {
    // Two masters share a queue with a 2 s claim lease; the job takes 4 s. The master
    // running it renews the claim, so the other one never recovers it and runs it again.
    let sb = Sandbox::new("renew");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 4");
    sb.chorefile(&format!(
        "fs-claim-lease = 2\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut a = sb.start_as("a", &[]);
    let mut b = sb.start_as("b", &[]);
    a.wait_log("chore master started");
    b.wait_log("chore master started");
    let id = sb.enqueue_id("jobs", "{}");
    let q = sb.queue("jobs");
    a.wait("the job to start", || !sb.runs("runs.txt").is_empty());
    a.wait("the job to finish", || q.is_idle());
    // Time for a wrongly recovered copy to be picked up and run.
    a.assert_for(Duration::from_millis(1500), "one run of the job", || {
        sb.runs("runs.txt").len() == 1
    });
    let runs = sb.runs("runs.txt");
    assert_eq!(
        runs.len(),
        1,
        "a running job was recovered and run again: {runs:?}"
    );
    assert_eq!(runs[0].id, id);
    assert_eq!(a.stop().code(), Some(0));
    assert_eq!(b.stop().code(), Some(0));
    for m in [&a, &b] {
        assert!(!m.log_text().contains("claim was gone"), "{}", m.log_text());
    }
}

#[test]
fn a_killed_worker_fails_only_its_unreported_messages() {
    // One worker gets two messages: whichever runs first finishes at once, the other
    // hangs. Killing the worker (from outside) fails the second only; the first is not
    // run again. (A batch runs in directory order, which is not enqueue order.)
    let sb = Sandbox::new("killed-worker");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if [ -e first-done ]; then [ \"$CHORE_ATTEMPT\" = 1 ] && exec sleep 1000; exit 0; fi\n\
         touch first-done",
    );
    sb.chorefile(&format!(
        "batch-size = 2\n[queues.jobs]\nhandler = [{h:?}]\nbackoff = [1]\n"
    ));
    sb.enqueue("jobs", "[1]");
    sb.enqueue("jobs", "[2]");
    let mut master = sb.start(&[]);
    master.wait("both to start", || sb.runs("runs.txt").len() == 2);
    master.wait_log("messages=2");
    let workers = master.workers();
    assert_eq!(workers.len(), 1, "one worker for the batch of two");
    let first = sb.runs("runs.txt");
    let (quick, hang) = (first[0].id.clone(), first[1].id.clone());
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(workers[0]), Signal::SIGKILL).unwrap();
    let q = sb.queue("jobs");
    master.wait("the hung one to run again", || {
        sb.runs("runs.txt").len() >= 3 && q.is_idle()
    });
    master.assert_for(Duration::from_millis(300), "no further run", || {
        sb.runs("runs.txt").len() == 3
    });
    let runs = sb.runs("runs.txt");
    let of = |id: &str| -> Vec<u32> {
        runs.iter()
            .filter(|r| r.id == id)
            .map(|r| r.attempt)
            .collect()
    };
    assert_eq!(of(&quick), vec![1], "the reported message ran once");
    assert_eq!(
        of(&hang),
        vec![1, 2],
        "the unreported one failed and came back"
    );
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_worker_deadline_is_the_sum_of_its_batchs_timeouts() {
    // Three 0.6 s jobs with a 1 s queue timeout, in one batch: 1.8 s is within the
    // batch's 3 s deadline, though more than any one message's timeout.
    let sb = Sandbox::new("deadline-sum");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 0.6");
    sb.chorefile(&format!(
        "batch-size = 3\n[queues.jobs]\nhandler = [{h:?}]\ntimeout = 1\nbackoff = [1]\n"
    ));
    for i in 0..3 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("three jobs", || sb.runs("runs.txt").len() >= 3);
    master.wait("the queue to empty", || q.is_idle());
    master.assert_for(Duration::from_millis(200), "no job run again", || {
        sb.runs("runs.txt").len() == 3
    });
    assert_eq!(sb.runs("runs.txt").len(), 3, "{:?}", sb.runs("runs.txt"));
    let log = master.log_text();
    assert!(log.contains("messages=3"), "one batch of three:\n{log}");
    assert!(!log.contains("passed its deadline"), "{log}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_running_jobs_claim_never_looks_expired() {
    // While a job runs, its in-progress claim must not look expired to any consumer that
    // applies Ruby Chore's rule (expired when epoch <= now - timeout, in whole seconds):
    // otherwise another consumer — or this master's own recovery — takes it back and runs
    // it a second time. With a 1 s queue timeout the lease is 1 s; the claim is taken
    // late in a second, which is where rounding the epoch down loses most of the lease.
    let sb = Sandbox::new("claim-fresh");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 0.8\necho end >> ended.txt");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\ntimeout = 1\nbackoff = [1]\nmax-attempts = 1\n"
    ));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    // The consumer idle, so that it claims the file as soon as it appears.
    master.wait_consumers(ConsumerWait::ForFiles);
    // Enqueue at about .70 of a second.
    wait_until(
        "a late fraction of a second",
        Duration::from_secs(3),
        || {
            let f = unix_now().fract();
            (0.70..0.75).contains(&f)
        },
    );
    let id = sb.enqueue_id("jobs", "{}");
    let q = sb.queue("jobs");
    let start = Instant::now();
    let mut problems = Vec::new();
    while sb.lines("ended.txt").is_empty() && start.elapsed() < Duration::from_secs(5) {
        let now = unix_now().floor() as i64;
        for name in q.inprogress() {
            let parts: Vec<&str> = name.split('.').collect();
            if let Some(epoch) = parts.get(2).and_then(|e| e.parse::<i64>().ok())
                && epoch < now
            {
                problems.push(format!("at {:.3}: {name} looks expired", unix_now()));
            }
        }
        if q.new_files().contains(&format!("{id}.1.job")) {
            problems.push(format!(
                "at {:.3}: recovered to new/ while held",
                unix_now()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    master.wait("the job to end", || !sb.lines("ended.txt").is_empty());
    // Past the 1 s lease: a lapsed claim would be recovered and run again by now.
    master.assert_for(
        Duration::from_millis(1200),
        &format!("one run of the job (claim problems seen: {problems:?})"),
        || sb.runs("runs.txt").len() <= 1,
    );
    let runs = sb.runs("runs.txt");
    assert!(
        problems.is_empty() && runs.len() == 1,
        "the claim of a running job lapsed ({} run(s)): {problems:?}\n{}",
        runs.len(),
        master.log_text()
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn default_queue_timeout_applies_to_queues_without_one() {
    let sb = Sandbox::new("default-timeout");
    let h = sb.recorder("job.sh", "runs.txt", "exec sleep 1000");
    sb.chorefile(&format!(
        "default-queue-timeout = 1\n[queues.jobs]\nhandler = [{h:?}]\nmax-attempts = 1\n"
    ));
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("the job to be killed at 1 s", || q.dead_letters() == 1);
    assert!(master.log_text().contains("passed its deadline"));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn two_masters_share_a_queue_and_run_each_message_once() {
    let sb = Sandbox::new("two-masters");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 0.05");
    sb.chorefile(&format!(
        "threads-per-queue = 2\nbatch-size = 2\nqueue-polling-size = 2\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut a = sb.start_as("a", &[]);
    let mut b = sb.start_as("b", &[]);
    a.wait_log("chore master started");
    b.wait_log("chore master started");
    let input: String = (0..24).map(|i| format!("[{i}]\n")).collect();
    sb.enqueue_lines(&["jobs"], Some(&input), &[]);
    let q = sb.queue("jobs");
    a.wait("all 24", || sb.runs("runs.txt").len() >= 24 && q.is_idle());
    a.assert_for(Duration::from_millis(300), "no message run twice", || {
        sb.runs("runs.txt").len() == 24
    });
    let runs = sb.runs("runs.txt");
    let ids: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(runs.len(), 24, "some message ran twice");
    assert_eq!(ids.len(), 24);
    assert!(
        a.log_text().contains("worker started") && b.log_text().contains("worker started"),
        "both masters took work"
    );
    assert_eq!(a.stop().code(), Some(0));
    assert_eq!(b.stop().code(), Some(0));
}
