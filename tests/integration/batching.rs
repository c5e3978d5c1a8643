//! Batches: full batches from a backlog, a lone job at once, strict Ruby-Chore batching.

use crate::harness::*;
use std::time::Instant;

/// A batch-mode handler that logs its batch size and answers ok for every message.
fn ok_batch_handler(sb: &Sandbox) -> String {
    sb.ok_batch_handler(
        "batch.sh",
        "echo \"$CHORE_BATCH_SIZE\" >> batches.txt",
        "echo \"$id\" >> done.txt",
    )
}

#[test]
fn a_backlog_runs_in_batches_of_at_most_batch_size() {
    let sb = Sandbox::new("batching");
    let h = ok_batch_handler(&sb);
    sb.chorefile(&format!(
        "concurrency = 2\nbatch-size = 5\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
    ));
    let mut ids: Vec<String> = (0..12)
        .map(|i| sb.enqueue_id("jobs", &format!("{{\"n\":{i}}}")))
        .collect();
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    master.wait("all twelve done", || sb.lines("done.txt").len() >= 12);
    master.wait("the queue to empty", || q.is_idle());
    let sizes: Vec<usize> = sb
        .lines("batches.txt")
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 12, "batches {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 5), "batch over 5: {sizes:?}");
    assert_eq!(
        sizes.iter().max(),
        Some(&5),
        "a backlog runs in full batches: {sizes:?}"
    );
    let mut done = sb.lines("done.txt");
    done.sort();
    ids.sort();
    assert_eq!(done, ids, "every message once");
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

/// Seconds from enqueueing a lone job on an idle queue to its handler running.
fn lone_job_wait(sb: &Sandbox, master: &Master) -> f64 {
    master.wait_log("chore master started");
    // The consumer idle first, so that the job is news to it.
    master.wait_consumers(ConsumerWait::ForFiles);
    let t0 = unix_now();
    sb.enqueue("jobs", "{\"lone\":true}");
    master.wait("the lone job to run", || !sb.runs("runs.txt").is_empty());
    sb.runs("runs.txt")[0].at - t0
}

#[test]
fn a_lone_job_starts_at_once_by_default() {
    let sb = Sandbox::new("lone-fast");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "batch-size = 50\nbatch-timeout = 20\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let waited = lone_job_wait(&sb, &master);
    assert!(
        waited < 2.0,
        "a lone job waited {waited:.3}s although a worker slot was free"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn strict_batching_makes_a_lone_job_wait_for_the_batch_timeout() {
    let sb = Sandbox::new("lone-strict");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "batch-size = 50\nbatch-timeout = 3\nstrict-batching = true\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    let start = Instant::now();
    let waited = lone_job_wait(&sb, &master);
    assert!(
        waited >= 2.5,
        "with strict batching a lone job waits out batch-timeout (3 s); it waited {waited:.3}s"
    );
    assert!(waited < 10.0, "waited {waited:.3}s");
    assert!(start.elapsed() < PATIENCE);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn strict_batching_flag_beats_the_chorefile() {
    // The Chorefile asks for strict batching; the command line turns it off.
    let sb = Sandbox::new("lone-flag");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "batch-size = 50\nbatch-timeout = 20\nstrict-batching = true\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&["--strict-batching", "false"]);
    let waited = lone_job_wait(&sb, &master);
    assert!(waited < 2.0, "the flag did not win: waited {waited:.3}s");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn an_idle_consumer_wakes_on_a_new_file_at_once() {
    // With a long idle poll, a new file still starts within moments (inotify).
    let sb = Sandbox::new("inotify");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&["--consumer-sleep-interval", "10"]);
    let waited = lone_job_wait(&sb, &master);
    assert!(
        waited < 1.5,
        "a new file waited {waited:.3}s with a 10 s idle poll"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn the_master_claims_no_more_than_it_can_start_soon() {
    // concurrency 1 and batch-size 1: one running plus one batch ahead may be held; the
    // rest stay in new/ for other consumers.
    let sb = Sandbox::new("flow-control");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 0.3");
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    for i in 0..6 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    let mut most = 0;
    master.wait("six runs", || {
        most = most.max(q.inprogress().len());
        sb.runs("runs.txt").len() >= 6
    });
    assert_eq!(sb.runs("runs.txt").len(), 6);
    assert!(
        most <= 2,
        "{most} messages were claimed at once with room to start 1 (+1 ahead)"
    );
    assert_eq!(master.stop().code(), Some(0));
}
