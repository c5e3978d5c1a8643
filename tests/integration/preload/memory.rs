//! `memory-limit` with a preloaded handler: the worker passes the limit in its fork
//! request and the batch child sets it, so a job that allocates past it fails with Ruby's
//! NoMemoryError (the runner reports it as the job's error), while the preloader, which
//! is not limited, serves on.

use super::*;

#[test]
fn preload_a_batch_child_runs_under_the_queues_memory_limit() {
    let p = Preloaded::new("preload-memory");
    p.chorefile(
        "batch-size = 1",
        &p.handler("", ""),
        &[("hog", "memory-limit = \"256MiB\"\nmax-attempts = 1")],
    );
    p.enqueue("hog", "Hog", ["8", "600"].iter().map(|s| s.to_string()));
    let mut master = p.sb.start(&[]);
    let q = p.sb.queue("hog");
    master.wait("one done, one dead-lettered", || {
        q.dead_letters() == 1 && p.jobs_of("hog-done").len() == 1 && q.is_idle()
    });
    let done: Vec<String> = p
        .jobs_of("hog-done")
        .iter()
        .map(|j| j.arg.clone())
        .collect();
    assert_eq!(done, ["8"], "within the limit, the job runs");
    let reason_file = q
        .dead()
        .into_iter()
        .find(|n| n.ends_with(".reason"))
        .unwrap();
    let reason = q.read("dead", &reason_file);
    assert!(
        reason.contains("NoMemoryError: failed to allocate memory"),
        "{reason}"
    );
    let started = p.jobs_of("hog");
    let preloader = Preloaded::boot_pid(&started[0].boot);
    assert!(
        !pid_gone(preloader),
        "the preloader is not limited, and serves on"
    );
    assert_eq!(master.stop().code(), Some(0));
}
