//! Retries with backoff, max-attempts, and messages that can never run.

use crate::harness::*;
use std::time::Duration;

#[test]
fn a_failed_job_is_retried_after_its_backoff() {
    let sb = Sandbox::new("retry");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "[ \"$CHORE_ATTEMPT\" = 1 ] && exit 1\nexit 0",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\nbackoff = [1]\n"
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{\"flaky\":true}");
    let q = sb.queue("jobs");
    master.wait("the second attempt", || sb.runs("runs.txt").len() >= 2);
    master.wait("the queue to empty", || q.is_idle());
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.id == id));
    assert_eq!((runs[0].attempt, runs[1].attempt), (1, 2));
    assert_eq!(runs[1].body, "{\"flaky\":true}");
    let gap = runs[1].at - runs[0].at;
    assert!(gap < 6.0, "a 1 s backoff took {gap:.2}s");
    assert!(q.dead().is_empty());
    assert!(master.log_text().contains("will retry"));
    assert_eq!(master.stop().code(), Some(0));
}

/// The claim epoch in an `inprogress/` name (`<base>.<attempts>.<epoch>.job`).
fn claim_epoch(name: &str) -> Option<i64> {
    name.split('.').nth(2)?.parse().ok()
}

#[test]
fn a_retry_is_not_offered_before_its_backoff_has_passed() {
    // A retried message sits in inprogress/ under a claim epoch chosen so that any consumer
    // (chore, or Ruby Chore: epoch <= now - timeout) recovers it once the backoff is over.
    // Epochs are whole seconds, so they must be rounded so the message is never offered
    // *before* the backoff has passed. The handler fails half-way through a second, where
    // rounding down would make a 2 s backoff 1.5 s long.
    let sb = Sandbox::new("retry-precision");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if [ \"$CHORE_ATTEMPT\" = 1 ]; then\n\
           ns=$(date +%N | sed 's/^0*//'); [ -n \"$ns\" ] || ns=0\n\
           ms=$(( (1500000000 - ns) % 1000000000 / 1000000 ))\n\
           sleep $(printf '0.%03d' $ms)\n\
           date +%s.%N > failed-at.txt\n\
           exit 1\n\
         fi",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\ntimeout = 30\nbackoff = [2]\n"
    ));
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", "{}");
    let q = sb.queue("jobs");
    // The retry's claim: an epoch about `timeout - backoff` in the past (a fresh claim's is
    // about now).
    let retried = || {
        q.inprogress()
            .into_iter()
            .find(|n| claim_epoch(n).is_some_and(|e| (e as f64) < unix_now() - 15.0))
    };
    master.wait("the retried claim", || retried().is_some());
    let name = retried().unwrap();
    let failed_at: f64 = sb.read("failed-at.txt").trim().parse().unwrap();
    let recoverable_at = (claim_epoch(&name).unwrap() + 30) as f64;
    assert!(
        recoverable_at >= failed_at + 2.0 - 0.05,
        "a 2 s backoff: the attempt failed at {failed_at:.3} but its claim {name} lets any \
         consumer recover it at {recoverable_at} ({:.3}s later)",
        recoverable_at - failed_at
    );
    master.wait("the second attempt", || sb.runs("runs.txt").len() >= 2);
    let second = sb.runs("runs.txt")[1].at;
    assert!(
        second - failed_at >= 1.95,
        "the retry ran {:.3}s after a failure with a 2 s backoff",
        second - failed_at
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn max_attempts_dead_letters_with_a_reason() {
    let sb = Sandbox::new("max-attempts");
    let h = sb.recorder("job.sh", "runs.txt", "echo failing >&2; exit 7");
    // `limited` has its own max-attempts; `global` takes the top-level default.
    sb.chorefile(&format!(
        "max-attempts = 2\n\
         [queues.limited]\nhandler = [{h:?}]\nbackoff = \"attempt * 0\"\nmax-attempts = 3\n\
         [queues.global]\nhandler = [{h:?}]\nbackoff = \"attempt * 0\"\n"
    ));
    let mut master = sb.start(&[]);
    let a = sb.enqueue_id("limited", "{\"a\":1}");
    let b = sb.enqueue_id("global", "{\"b\":1}");
    let (qa, qb) = (sb.queue("limited"), sb.queue("global"));
    master.wait("both dead-lettered", || {
        qa.dead_letters() == 1 && qb.dead_letters() == 1
    });
    // No further attempt after the last one.
    master.assert_for(
        Duration::from_millis(500),
        "no attempt after the last",
        || sb.runs("runs.txt").len() == 5,
    );
    let runs = sb.runs("runs.txt");
    let attempts = |id: &str| -> Vec<u32> {
        runs.iter()
            .filter(|r| r.id == id)
            .map(|r| r.attempt)
            .collect()
    };
    assert_eq!(attempts(&a), vec![1, 2, 3]);
    assert_eq!(attempts(&b), vec![1, 2]);
    assert_eq!(
        qa.dead(),
        vec![format!("{a}.3.job"), format!("{a}.3.job.reason")]
    );
    assert_eq!(qa.read("dead", &format!("{a}.3.job")), "{\"a\":1}");
    let reason = qa.read("dead", &format!("{a}.3.job.reason"));
    assert!(reason.contains("3 of 3"), "{reason}");
    assert!(reason.contains("exit status 7"), "{reason}");
    assert!(reason.contains(&a), "{reason}");
    assert_eq!(
        qb.dead(),
        vec![format!("{b}.2.job"), format!("{b}.2.job.reason")]
    );
    assert!(qa.is_idle() && qb.is_idle());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn bad_bodies_are_dead_lettered_and_the_master_keeps_running() {
    let sb = Sandbox::new("bad-json");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let q = sb.queue("jobs");
    let not_json = "jobs-Job-111-20240101-000000-000001";
    let not_utf8 = "jobs-Job-111-20240101-000000-000002";
    q.put("new", &format!("{not_json}.0.job"), b"this is {not json");
    q.put("new", &format!("{not_utf8}.0.job"), b"{\"x\":\"\xff\xfe\"}");
    let good = sb.enqueue_id("jobs", "{\"good\":1}");
    let mut master = sb.start(&[]);
    master.wait("two dead letters and one run", || {
        q.dead_letters() == 2 && !sb.runs("runs.txt").is_empty()
    });
    assert_eq!(
        q.read("dead", &format!("{not_json}.1.job")),
        "this is {not json",
        "the dead letter keeps the body as it was"
    );
    let reason = q.read("dead", &format!("{not_json}.1.job.reason"));
    assert!(reason.contains("not valid JSON"), "{reason}");
    let reason = q.read("dead", &format!("{not_utf8}.1.job.reason"));
    assert!(reason.contains("UTF-8"), "{reason}");
    let log = master.log_text();
    let dead_line = log
        .lines()
        .find(|l| l.contains(not_utf8) && l.contains("dead-lettered"))
        .expect("the dead letter is logged");
    // The size of the body as it was, though it was never taken in as text.
    let size = b"{\"x\":\"\xff\xfe\"}".len();
    assert!(
        dead_line.contains(&format!("body_bytes={size} ")),
        "{dead_line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(not_json) && l.contains("jobs")),
        "logged with queue and id:\n{log}"
    );
    assert_eq!(sb.runs("runs.txt")[0].id, good);
    assert!(master.running(), "a bad message never stops the master");
    sb.enqueue("jobs", "{\"after\":1}");
    master.wait("a later job to run", || sb.runs("runs.txt").len() == 2);
    master.wait("the queue to empty", || q.is_idle());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn every_dead_letter_tells_the_on_permanent_failure_command_unreadable_bodies_too() {
    let sb = Sandbox::new("hook-every-dead-letter");
    let h = sb.recorder("job.sh", "runs.txt", "exit 65");
    let hook = sb.script(
        "hook.sh",
        "cat > /dev/null\n\
         printf '%s\\n' \"$CHORE_REASON\" > \"hook-$CHORE_MESSAGE_ID.tmp\"\n\
         mv \"hook-$CHORE_MESSAGE_ID.tmp\" \"hook-$CHORE_MESSAGE_ID.reason\"",
    );
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\non-permanent-failure = [{hook:?}]\n"
    ));
    let q = sb.queue("jobs");
    let not_utf8 = "jobs-Job-111-20240101-000000-000002";
    let not_json = "jobs-Job-111-20240101-000000-000003";
    q.put("new", &format!("{not_utf8}.0.job"), b"{\"x\":\"\xff\xfe\"}");
    q.put("new", &format!("{not_json}.0.job"), b"this is {not json");
    let permanent = sb.enqueue_id("jobs", "{\"doomed\":1}");
    let mut master = sb.start(&[]);
    let ids = [not_utf8.to_string(), not_json.to_string(), permanent];
    master.wait("the hook to hear of all three", || {
        ids.iter()
            .all(|id| sb.file(&format!("hook-{id}.reason")).exists())
    });
    assert!(
        sb.read(&format!("hook-{not_utf8}.reason"))
            .contains("UTF-8")
    );
    assert!(
        sb.read(&format!("hook-{not_json}.reason"))
            .contains("not valid JSON")
    );
    assert!(
        sb.read(&format!("hook-{}.reason", ids[2]))
            .contains("permanent")
    );
    assert_eq!(q.dead_letters(), 3);
    assert_eq!(master.stop().code(), Some(0));
}
