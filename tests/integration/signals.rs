//! Signals: TERM/INT/QUIT drain, a second one kills, TSTP/CONT, TTIN, USR1.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A handler that notes its start, takes `secs`, then notes its end.
fn slow_handler(sb: &Sandbox, secs: &str) -> String {
    sb.script(
        "slow.sh",
        &format!(
            "cat > /dev/null\necho \"$CHORE_MESSAGE_ID $CHORE_ATTEMPT\" >> started.txt\n\
             sleep {secs}\necho \"$CHORE_MESSAGE_ID\" >> done.txt"
        ),
    )
}

#[test]
fn sigterm_drains_with_nothing_lost() {
    drain_on(Signal::SIGTERM);
}

#[test]
fn sigint_drains_with_nothing_lost() {
    drain_on(Signal::SIGINT);
}

#[test]
fn sigquit_drains_with_nothing_lost() {
    drain_on(Signal::SIGQUIT);
}

fn drain_on(sig: Signal) {
    let sb = Sandbox::new(&format!("drain-{}", sig.as_str()));
    let h = slow_handler(&sb, "1.5");
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\nshutdown-timeout = 15\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let ids: BTreeSet<String> = (0..4)
        .map(|i| sb.enqueue_id("jobs", &format!("[{i}]")))
        .collect();
    let mut master = sb.start(&[]);
    master.wait("the first job to start", || {
        !sb.lines("started.txt").is_empty()
    });
    let running = sb.lines("started.txt")[0]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    master.signal(sig);
    let t = Instant::now();
    let status = master.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "{sig}: a drain exits 0");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "{sig}: drain took {:?}",
        t.elapsed()
    );
    let done: BTreeSet<String> = sb.lines("done.txt").into_iter().collect();
    assert!(
        done.contains(&running),
        "{sig}: the running job finished: {done:?}"
    );
    let started: BTreeSet<String> = sb
        .lines("started.txt")
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(started, done, "{sig}: every started job finished");
    let q = sb.queue("jobs");
    assert!(
        q.inprogress().is_empty(),
        "{sig}: nothing left claimed: {:?}",
        q.inprogress()
    );
    assert!(q.dead().is_empty());
    let waiting: BTreeSet<String> = q.new_files().iter().map(|n| id_of(n)).collect();
    for n in q.new_files() {
        assert!(
            n.ends_with(".0.job"),
            "{sig}: given back with its attempt unchanged: {n}"
        );
    }
    let accounted: BTreeSet<String> = done.union(&waiting).cloned().collect();
    assert_eq!(
        accounted, ids,
        "{sig}: every message is done or back in new/"
    );
    assert!(
        done.is_disjoint(&waiting),
        "{sig}: done and waiting: {done:?} {waiting:?}"
    );
    assert!(
        !waiting.is_empty(),
        "{sig}: the drain stopped taking new jobs"
    );
    assert!(master.log_text().contains("draining"));
    assert!(master.workers().is_empty());
}

#[test]
fn a_second_sigterm_kills_the_workers_and_exits() {
    let sb = Sandbox::new("second-term");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if [ \"$CHORE_ATTEMPT\" = 1 ]; then echo $$ > handler.pid; exec sleep 1000; fi",
    );
    sb.chorefile(&format!(
        "shutdown-timeout = 60\n[queues.jobs]\nhandler = [{h:?}]\nbackoff = [1]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{\"long\":true}");
    master.wait("the long job to start", || {
        !sb.read("handler.pid").is_empty()
    });
    let handler: i32 = sb.read("handler.pid").trim().parse().unwrap();
    master.signal(Signal::SIGTERM);
    master.wait_log("draining");
    master.assert_for(
        Duration::from_millis(300),
        "the first TERM to wait for the running job, and leave it alone",
        || master.running() && !pid_gone(handler),
    );
    let t = Instant::now();
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit(Duration::from_secs(10));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exited {:?} after the second TERM",
        t.elapsed()
    );
    assert!(status.code().is_some(), "exited, not killed: {status:?}");
    wait_until("the handler to be killed", Duration::from_secs(5), || {
        pid_gone(handler)
    });
    let q = sb.queue("jobs");
    assert!(
        q.holds(&id),
        "the killed job is not lost: new/ {:?}, inprogress/ {:?}",
        q.new_files(),
        q.inprogress()
    );
    // A fresh master runs it again (the kill was a failed attempt: this is attempt 2).
    let mut again = sb.start_as("again", &[]);
    again.wait("the message to run again", || {
        sb.runs("runs.txt").len() >= 2
    });
    let runs = sb.runs("runs.txt");
    assert_eq!(runs[1].id, id);
    assert_eq!(runs[1].attempt, 2);
    again.wait("the queue to empty", || q.is_idle());
    assert_eq!(again.stop().code(), Some(0));
}

#[test]
fn a_drain_past_shutdown_timeout_kills_and_keeps_the_message() {
    let sb = Sandbox::new("drain-timeout");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "echo $$ > handler.pid; exec sleep 1000",
    );
    sb.chorefile(&format!(
        "shutdown-timeout = 1\n[queues.jobs]\nhandler = [{h:?}]\nbackoff = [1]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{}");
    master.wait("the job to start", || !sb.read("handler.pid").is_empty());
    let handler: i32 = sb.read("handler.pid").trim().parse().unwrap();
    let t = Instant::now();
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "did not wait for shutdown-timeout"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    wait_until("the handler to be killed", Duration::from_secs(5), || {
        pid_gone(handler)
    });
    assert!(sb.queue("jobs").holds(&id), "the killed job is not lost");
    assert!(master.log_text().contains("shutdown-timeout"));
}

#[test]
fn tstp_pauses_receiving_and_cont_resumes() {
    let sb = Sandbox::new("tstp");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", "[1]");
    master.wait("the first job", || sb.runs("runs.txt").len() == 1);
    master.signal(Signal::SIGTSTP);
    master.wait_log("quiet");
    // A receive already under way when TSTP arrived may finish (one idle poll, 0.1 s);
    // then the consumer stops at its gate.
    master.wait_consumers(ConsumerWait::AtGate);
    let paused = sb.enqueue_id("jobs", "[2]");
    master.assert_for(
        Duration::from_millis(1500),
        "no job started while quiet",
        || sb.runs("runs.txt").len() == 1,
    );
    let q = sb.queue("jobs");
    assert_eq!(
        q.new_files(),
        vec![format!("{paused}.0.job")],
        "left waiting in new/"
    );
    assert!(master.running(), "TSTP does not stop the master");
    master.signal(Signal::SIGCONT);
    master.wait("the job to run after CONT", || {
        sb.runs("runs.txt").len() == 2
    });
    assert_eq!(sb.runs("runs.txt")[1].id, paused);
    assert!(master.log_text().contains("resumed"));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn tstp_also_stops_a_receive_that_is_already_waiting() {
    // With a long idle poll, the consumer is parked waiting for new files when TSTP comes.
    // Quiet means no new job starts: a file arriving after TSTP must wait for CONT.
    let sb = Sandbox::new("tstp-parked");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&["--consumer-sleep-interval", "5"]);
    sb.enqueue("jobs", "[1]");
    master.wait("the first job", || sb.runs("runs.txt").len() == 1);
    master.wait_consumers(ConsumerWait::ForFiles);
    master.signal(Signal::SIGTSTP);
    master.wait_log("quiet");
    // The consumer is (all but surely) still in its 5 s wait: the new file wakes it.
    sb.enqueue("jobs", "[2]");
    master.assert_for(
        Duration::from_millis(1500),
        "no run of a job enqueued after TSTP was acknowledged, while quiet",
        || sb.runs("runs.txt").len() == 1,
    );
    master.signal(Signal::SIGCONT);
    master.wait("the job to run after CONT", || {
        sb.runs("runs.txt").len() == 2
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn ttin_logs_a_status_dump() {
    let sb = Sandbox::new("ttin");
    let h = sb.recorder("job.sh", "runs.txt", "exec sleep 1000");
    sb.chorefile(&format!(
        "shutdown-timeout = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{}");
    master.wait("the job to start", || !sb.runs("runs.txt").is_empty());
    let workers = master.workers();
    assert_eq!(workers.len(), 1);
    master.signal(Signal::SIGTTIN);
    master.wait("a status line for the worker", || {
        master
            .log_text()
            .lines()
            .any(|l| l.contains("status") && l.contains(&id))
    });
    let log = master.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("status") && l.contains(&id))
        .unwrap();
    assert!(line.contains(&workers[0].to_string()), "pid: {line}");
    assert!(line.contains("jobs"), "queue: {line}");
    assert!(line.contains("age"), "age: {line}");
    assert!(master.running(), "TTIN does not stop the master");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn usr1_reopens_the_log_file() {
    let sb = Sandbox::new("usr1");
    let h = sb.recorder("job.sh", "runs.txt", "echo handler-says-hi >&2");
    let log = sb.file("chore.log");
    sb.chorefile(&format!(
        "log-file = {:?}\n[queues.jobs]\nhandler = [{h:?}]\n",
        log.display().to_string()
    ));
    let mut master = sb.start(&[]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until("the log file to fill", PATIENCE, || {
        read(&log).contains("chore master started")
    });
    let rotated = sb.file("chore.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    master.signal(Signal::SIGUSR1);
    wait_until("a new log file at the old path", PATIENCE, || {
        read(&log).contains("log file reopened")
    });
    sb.enqueue("jobs", "{}");
    master.wait("the job", || !sb.runs("runs.txt").is_empty());
    master.signal(Signal::SIGTTIN);
    wait_until("later lines in the new file", PATIENCE, || {
        let t = read(&log);
        t.contains("status") && t.contains("handler-says-hi")
    });
    let old = read(&rotated);
    assert!(old.contains("chore master started"));
    assert!(
        !old.contains("status"),
        "new lines went to the old file:\n{old}"
    );
    assert!(!old.contains("handler-says-hi"));
    assert_eq!(master.stop().code(), Some(0));
    assert!(
        master.log_text().trim().is_empty(),
        "with a log file, stderr stays quiet: {}",
        master.log_text()
    );
}

#[test]
fn a_drain_from_quiet_still_exits_cleanly() {
    let sb = Sandbox::new("tstp-term");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    master.signal(Signal::SIGTSTP);
    master.wait_log("quiet");
    // Past the receive that may be under way (see tstp_pauses_receiving_and_cont_resumes).
    master.wait_consumers(ConsumerWait::AtGate);
    let id = sb.enqueue_id("jobs", "{}");
    master.signal(Signal::SIGTERM);
    assert_eq!(master.wait_exit(PATIENCE).code(), Some(0));
    let q = sb.queue("jobs");
    assert!(
        q.holds(&id),
        "the message waits in new/ for the next master"
    );
    assert!(q.inprogress().is_empty());
}
