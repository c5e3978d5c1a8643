//! SIGHUP: queues added and removed with nothing lost, a broken Chorefile refused, a
//! panicked consumer thread restarted.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;

/// The ids a handler appended to `file`, one per line.
fn ids_in(sb: &Sandbox, file: &str) -> BTreeSet<String> {
    sb.lines(file).into_iter().collect()
}

#[test]
fn sighup_adds_a_queue_and_removes_one_with_nothing_lost() {
    let sb = Sandbox::new("steer-reload-queues");
    let slow = sb.script(
        "slow.sh",
        "cat > /dev/null\nsleep 0.3\necho \"$CHORE_MESSAGE_ID\" >> b-done.txt",
    );
    let fast = sb.script(
        "fast.sh",
        "cat > /dev/null\necho \"$CHORE_MESSAGE_ID\" >> done.txt",
    );
    // A short stall-timeout: b's backlog, left waiting by the reload, must not be taken
    // for a stall.
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\nstall-timeout = 1.5\n\
         [queues.a]\nhandler = [{fast:?}]\n[queues.b]\nhandler = [{slow:?}]\n"
    ));
    let backlog: BTreeSet<String> = (0..8)
        .map(|i| sb.enqueue_id("b", &format!("[{i}]")))
        .collect();
    let mut master = sb.start(&[]);
    master.wait("a first job of b to finish", || {
        !sb.lines("b-done.txt").is_empty()
    });

    // b goes, c comes; a stays as it was.
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\nstall-timeout = 1.5\n\
         [queues.a]\nhandler = [{fast:?}]\n[queues.c]\nhandler = [{fast:?}]\n"
    ));
    master.signal(Signal::SIGHUP);
    master.wait_log("SIGHUP: configuration reloaded");
    let log = master.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        line.contains("queue b removed") && line.contains("queue c added"),
        "{line}"
    );

    let on_c = sb.enqueue_id("c", "[\"c\"]");
    let on_a = sb.enqueue_id("a", "[\"a\"]");
    master.wait("the jobs of a and c", || {
        let done = ids_in(&sb, "done.txt");
        done.contains(&on_c) && done.contains(&on_a)
    });
    // Whatever b had running finished; whatever it held went back: every message of the
    // backlog is done or waiting in new/, none stranded in progress.
    let b = sb.queue("b");
    master.wait("b's claims to be settled", || b.inprogress().is_empty());
    let done = ids_in(&sb, "b-done.txt");
    let waiting: BTreeSet<String> = b.new_files().iter().map(|n| id_of(n)).collect();
    assert_eq!(
        done.union(&waiting).cloned().collect::<BTreeSet<_>>(),
        backlog,
        "done {done:?}, waiting {waiting:?}"
    );
    assert!(!waiting.is_empty(), "b stopped being consumed");
    // And b stays unconsumed, and its backlog is not taken for a stall.
    let before = done.len();
    master.assert_for(
        std::time::Duration::from_secs(3),
        "b not consumed, and the master healthy",
        || sb.lines("b-done.txt").len() == before && !master.log_text().contains("unhealthy"),
    );
    // b's consumer threads ended on purpose, and its backlog waits for another consumer:
    // the master is healthy well past the stall-timeout, and shows c, not b.
    let (code, text) = crate::observe::status(&sb, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("healthy") && !text.contains("UNHEALTHY") && text.contains("  c: "),
        "{text}"
    );
    assert!(!text.contains("  b:"), "{text}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sighup_refuses_a_broken_chorefile_and_keeps_running() {
    let sb = Sandbox::new("steer-reload-broken");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "concurrency = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    // Line 4 (after the two-line preamble) has the mistake.
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = \"many\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    master.signal(Signal::SIGHUP);
    master.wait_log("configuration refused");
    let log = master.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("configuration refused"))
        .unwrap();
    assert!(
        line.contains("Chorefile:4") && line.contains("batch-size"),
        "{line}"
    );
    assert!(
        master.running(),
        "a refused reload leaves the master running"
    );
    // (enqueue reads the Chorefile too: name the queue root instead.)
    let root = sb.root();
    let out = sb.run_ok(
        &[
            "enqueue",
            "--fs-queue-root",
            root.to_str().unwrap(),
            "jobs",
            "[1]",
        ],
        None,
    );
    let id = id_of(out.trim());
    master.wait("the job to run on the old configuration", || {
        sb.runs("runs.txt").iter().any(|r| r.id == id)
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sighup_reports_what_needs_a_restart_and_applies_the_rest() {
    let sb = Sandbox::new("steer-reload-live");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "concurrency = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    sb.chorefile(&format!(
        "concurrency = 3\nlog-format = \"json\"\nlog-level = \"debug\"\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    master.signal(Signal::SIGHUP);
    master.wait_log("SIGHUP: configuration reloaded");
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains("log-format")),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(line.contains("concurrency: 1 → 3"), "{line}");
    // Still text (log-format waits for a restart), now at debug.
    let id = sb.enqueue_id("jobs", "[1]");
    master.wait("the job", || sb.runs("runs.txt").iter().any(|r| r.id == id));
    master.wait_log("DEBUG");
    assert!(!master.log_text().lines().any(|l| l.starts_with('{')));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_consumer_thread_that_panics_is_restarted() {
    let sb = Sandbox::new("steer-consumer-panic");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "log-format = \"json\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let id = sb.enqueue_id("jobs", "[1]");
    let mut master = sb.start_with_env("master", &[], &[("CHORE_TEST_CONSUMER_PANIC", "jobs")]);
    master.wait_log("consumer thread panicked");
    master.wait_log("consumer thread restarted");
    master.wait("the job, after the restart", || {
        sb.runs("runs.txt").iter().any(|r| r.id == id)
    });
    assert!(master.running());
    assert_eq!(master.stop().code(), Some(0));
    // The panic itself is a log event too: the log is JSON throughout.
    let lines: Vec<serde_json::Value> = master
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let event = |m: &str| lines.iter().find(|v| v["message"] == m).cloned();
    let panicked = event("panicked").expect("the panic logged");
    assert_eq!(panicked["thread"], "consume-jobs-0");
    assert_eq!(panicked["panic"], "CHORE_TEST_CONSUMER_PANIC");
    let restart = event("consumer thread panicked; restarting it").unwrap();
    assert_eq!(restart["queue"], "jobs");
    assert_eq!(restart["restart_in_secs"], 1.0);
}

#[test]
fn sighup_changes_a_queues_handlers() {
    let sb = Sandbox::new("steer-reload-handlers");
    let old = sb.script(
        "old.sh",
        "cat > /dev/null\necho \"$CHORE_MESSAGE_ID\" >> old.txt",
    );
    let new = sb.script(
        "new.sh",
        "cat > /dev/null\necho \"$CHORE_MESSAGE_ID\" >> new.txt",
    );
    sb.chorefile(&format!("[queues.jobs]\nclasses = {{ A = [{old:?}] }}\n"));
    let mut master = sb.start(&[]);
    let first = id_of(&sb.enqueue_lines(&["jobs", "--class", "A", "[1]"], None, &[])[0]);
    master.wait("A on the old handler", || {
        sb.lines("old.txt").contains(&first)
    });
    // A moves to the new handler, and B, which had none (so was dead-lettered), gets one.
    sb.chorefile(&format!(
        "[queues.jobs]\nclasses = {{ A = [{new:?}], B = [{new:?}] }}\n"
    ));
    master.signal(Signal::SIGHUP);
    master.wait_log("queue jobs changed");
    let a = id_of(&sb.enqueue_lines(&["jobs", "--class", "A", "[2]"], None, &[])[0]);
    let b = id_of(&sb.enqueue_lines(&["jobs", "--class", "B", "[3]"], None, &[])[0]);
    master.wait("A and B on the new handler", || {
        let done = ids_in(&sb, "new.txt");
        done.contains(&a) && done.contains(&b)
    });
    assert_eq!(sb.lines("old.txt"), [first]);
    assert_eq!(sb.queue("jobs").dead_letters(), 0);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sighup_gives_a_new_failure_hook_to_dead_letters_on_receipt_too() {
    let sb = Sandbox::new("steer-reload-hook");
    let hook = sb.script(
        "hook.sh",
        "cat > /dev/null\necho \"$CHORE_MESSAGE_ID $CHORE_REASON\" >> hook.txt",
    );
    sb.chorefile("[queues.jobs]\nhandler = [\"/bin/false\"]\nmax-attempts = 1\n");
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"/bin/false\"]\nmax-attempts = 1\n\
         on-permanent-failure = [{hook:?}]\n"
    ));
    master.signal(Signal::SIGHUP);
    master.wait_log("queue jobs changed");
    // A body that is not JSON is dead-lettered by the consumer that receives it, and one
    // that fails by the master: the new hook hears of both.
    sb.queue("jobs").put(
        "new",
        "jobs-Job-1-20260101-000000-000000.0.job",
        b"not json",
    );
    let failed = sb.enqueue_id("jobs", "[1]");
    master.wait("the hook to hear of both dead letters", || {
        let heard = sb.lines("hook.txt");
        heard
            .iter()
            .any(|l| l.starts_with("jobs-Job-1-20260101-000000-000000 "))
            && heard.iter().any(|l| l.starts_with(&format!("{failed} ")))
    });
    assert_eq!(master.stop().code(), Some(0));
}
