//! Sharing queues with Ruby Chore: files written exactly as Ruby Chore writes them.

use crate::harness::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

#[test]
fn a_queue_file_written_by_ruby_chore_is_consumed() {
    let sb = Sandbox::new("ruby-file");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "[queues.rq]\nhandler = [\"./other.sh\"]\nclasses = {{ MyJob = [{h:?}] }}\n"
    ));
    let q = sb.queue("rq");
    // What `MyJob.perform_async(1, "two")` leaves behind, from pid 4242.
    let base = "rq-MyJob-4242-20240510-120000-123456";
    q.put(
        "new",
        &format!("{base}.0.job"),
        br#"{"class":"MyJob","args":[1,"two"]}"#,
    );
    let mut master = sb.start(&[]);
    master.wait("the Ruby job to run", || !sb.runs("runs.txt").is_empty());
    let r = &sb.runs("runs.txt")[0];
    assert_eq!(
        r.body, r#"{"class":"MyJob","args":[1,"two"]}"#,
        "the body untouched"
    );
    assert_eq!(r.class, "MyJob");
    assert_eq!(r.attempt, 1);
    assert_eq!(r.id, base);
    assert_eq!(r.queue, "rq");
    master.wait("the file to be gone", || q.is_idle());
    assert!(q.dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn an_expired_ruby_claim_is_recovered_with_its_attempts() {
    let sb = Sandbox::new("ruby-expired");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.rq]\nhandler = [{h:?}]\ntimeout = 60\n"));
    let q = sb.queue("rq");
    // Ruby Chore claimed it once before (1 previous attempt), at an epoch long gone, and
    // died. Recovery moves it to new/<base>.2.job; this run is then attempt 3.
    let base = "rq-MyJob-4242-20240510-120000-654321";
    let old_epoch = unix_now() as i64 - 3600;
    q.put(
        "inprogress",
        &format!("{base}.1.{old_epoch}.job"),
        br#"{"class":"MyJob","args":[]}"#,
    );
    // A claim that is still fresh is left alone.
    let fresh = "rq-MyJob-4242-20240510-120000-777777";
    let now_epoch = unix_now() as i64;
    q.put(
        "inprogress",
        &format!("{fresh}.0.{now_epoch}.job"),
        br#"{"class":"MyJob","args":[]}"#,
    );
    let mut master = sb.start(&[]);
    master.wait("the recovered job to run", || {
        !sb.runs("runs.txt").is_empty()
    });
    // Past a recovery pass or two (once a second): the fresh claim stays put.
    master.assert_for(
        Duration::from_millis(1500),
        "the fresh claim left alone",
        || sb.runs("runs.txt").len() == 1,
    );
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].id, base);
    assert_eq!(
        runs[0].attempt, 3,
        "previous attempts 1, +1 on recovery, this is the 3rd"
    );
    assert_eq!(runs[0].class, "MyJob");
    assert_eq!(q.inprogress(), vec![format!("{fresh}.0.{now_epoch}.job")]);
    assert!(
        master
            .log_text()
            .contains("claim expired; message offered again")
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_file_still_being_written_is_not_taken() {
    // Ruby Chore's publisher creates the file, locks it, then writes. An empty file, or a
    // locked one, is not taken; once written and unlocked, it is.
    let sb = Sandbox::new("ruby-partial");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.rq]\nhandler = [{h:?}]\n"));
    let q = sb.queue("rq");
    std::fs::create_dir_all(q.path.join("new")).unwrap();
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let empty = q
        .path
        .join("new/rq-MyJob-4242-20240510-120000-000001.0.job");
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&empty)
        .unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file we hold open.
        let rc =
            unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
        assert_eq!(rc, 0);
    }
    master.assert_for(
        Duration::from_millis(800),
        "the empty file not taken",
        || sb.runs("runs.txt").is_empty(),
    );
    file.write_all(br#"{"class":"MyJob","args":["late"]}"#)
        .unwrap();
    file.flush().unwrap();
    // Written but still locked: the publisher has not finished.
    master.assert_for(
        Duration::from_millis(800),
        "the locked file not taken",
        || sb.runs("runs.txt").is_empty(),
    );
    assert!(empty.exists());
    drop(file);
    // Unlocked by close: taken within a poll or two.
    master.wait("the finished file to be taken", || {
        !sb.runs("runs.txt").is_empty()
    });
    assert_eq!(
        sb.runs("runs.txt")[0].body,
        r#"{"class":"MyJob","args":["late"]}"#
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_ruby_config_timeout_file_sets_the_deadline() {
    // No `timeout` in the Chorefile: the queue's config/timeout (Ruby Chore's) rules.
    let sb = Sandbox::new("ruby-timeout");
    let h = sb.recorder("job.sh", "runs.txt", "exec sleep 1000");
    sb.chorefile(&format!(
        "[queues.rq]\nhandler = [{h:?}]\nmax-attempts = 1\n"
    ));
    sb.write("queues/rq/config/timeout", "1\n");
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("rq", "{}");
    let q = sb.queue("rq");
    master.wait("the job to be killed and dead-lettered", || {
        q.dead_letters() == 1
    });
    assert!(master.log_text().contains("passed its deadline"));
    let reason = q.read("dead", &format!("{id}.1.job.reason"));
    assert!(reason.contains("killed"), "{reason}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn an_empty_file_older_than_the_queue_timeout_is_removed() {
    // Ruby Chore's rule: a publisher that died before writing leaves an empty file, which
    // is deleted once it is older than the queue timeout.
    let sb = Sandbox::new("ruby-empty");
    sb.chorefile("[queues.rq]\nhandler = [\"true\"]\n");
    sb.write("queues/rq/config/timeout", "1\n");
    let q = sb.queue("rq");
    q.put("new", "rq-MyJob-4242-20240510-120000-000009.0.job", b"");
    let mut master = sb.start(&[]);
    master.wait("the empty file to be removed", || q.new_files().is_empty());
    assert!(q.inprogress().is_empty() && q.dead().is_empty());
    assert!(master.log_text().contains("empty job file"));
    assert_eq!(master.stop().code(), Some(0));
}
