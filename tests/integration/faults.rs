//! Reliability: poison messages, leftover processes, held stdin, slow stops, queue
//! directories that disappear, entries of `new/` that are not messages.

use crate::harness::*;
use crate::support::procs;
use std::time::{Duration, Instant};

/// Live processes whose argv contains `marker`.
fn with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if !procs::pid_gone(pid) && procs::cmdline(pid).iter().any(|a| a == marker) {
            out.push(pid);
        }
    }
    out
}

/// Kill what a failed test left behind, so it does not outlive the suite.
struct Reap(&'static str);
impl Drop for Reap {
    fn drop(&mut self) {
        for pid in with_marker(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_message_whose_handler_can_never_start_is_dead_lettered_at_once() {
    let sb = Sandbox::new("poison-class");
    let h = sb.recorder("job.sh", "runs.txt", "exit 0");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [{h:?}]\nbackoff = [0.1]\nmax-attempts = 1000\n"
    ));
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    // `chore enqueue` refuses such a class; another producer may not.
    q.put("new", "poison.0.job", br#"{"class":"A\u0000B"}"#);
    let poison = "poison";
    let fine = sb.enqueue_id("jobs", r#"{"class":"AB"}"#);
    master.wait("the poison message dead-lettered", || {
        q.dead_letters() == 1 && q.is_idle()
    });
    let name = format!("{poison}.1.job");
    let reason = q.read("dead", &format!("{name}.reason"));
    assert!(reason.contains("cannot start handler"), "{reason}");
    assert!(reason.to_lowercase().contains("nul"), "{reason}");
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, fine);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_missing_program_is_retried() {
    let sb = Sandbox::new("missing-program");
    sb.chorefile(
        "[queues.jobs]\nhandler = [\"./not-installed-yet\"]\nbackoff = [0.2]\nmax-attempts = 3\n",
    );
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("dead-lettered after its attempts", || q.dead_letters() == 1);
    let reason = q.read("dead", &format!("{id}.3.job.reason"));
    assert!(reason.contains("failed 3 of 3 attempts"), "{reason}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_leftover_child_holding_stdin_does_not_hold_back_the_verdict() {
    const MARK: &str = "1000.5";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("held-stdin");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"sh\", \"-c\", \"echo ran >> runs.txt; exec 3<&0; sleep {MARK} <&3 & exit 0\"]\n\
         timeout = 20\nbackoff = [0.1]\nmax-attempts = 2\n"
    ));
    let mut master = sb.start(&[]);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200 * 1024));
    let started = Instant::now();
    let q = sb.queue("jobs");
    q.put("new", "big.0.job", big.as_bytes());
    master.wait_for("the job completed", Duration::from_secs(15), || {
        q.is_idle() && sb.lines("runs.txt").len() == 1
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    master.assert_for(Duration::from_secs(1), "it stays done", || {
        q.dead_letters() == 0 && sb.lines("runs.txt").len() == 1
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn what_a_per_message_handler_leaves_behind_is_killed_with_its_batch() {
    leftover_is_killed("1000.61", "leftover-message", "sleep {MARK} &");
}

#[test]
fn an_orphaned_grandchild_of_a_handler_is_killed_with_its_batch() {
    // The subshell exits at once, so the sleep is an orphan: the worker inherits it (it is
    // a subreaper) and must still find and kill it.
    leftover_is_killed(
        "1000.63",
        "leftover-orphan",
        "(sleep {MARK} > /dev/null 2>&1 &);",
    );
}

/// A per-message handler runs `background` (with `{MARK}` standing for `mark`) and exits
/// at once: the job completes, and the `sleep` it left is gone within seconds.
fn leftover_is_killed(mark: &'static str, sandbox: &str, background: &str) {
    let _reap = Reap(mark);
    let sb = Sandbox::new(sandbox);
    let background = background.replace("{MARK}", mark);
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"sh\", \"-c\", \"echo ran >> runs.txt; {background} exit 0\"]\n"
    ));
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", "{}");
    let q = sb.queue("jobs");
    master.wait("the job completed", || {
        q.is_idle() && sb.lines("runs.txt").len() == 1
    });
    master.wait_for("no sleep left", Duration::from_secs(5), || {
        with_marker(mark).is_empty()
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_batch_handler_leaving_a_child_on_its_stdout_frees_its_slot_at_once() {
    const MARK: &str = "1000.62";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("leftover-batch");
    let h = sb.ok_batch_handler(
        "batch.sh",
        &format!("sleep {MARK} &"),
        "echo \"$id\" >> runs.txt",
    );
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-timeout = 0.1\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\ntimeout = 60\n"
    ));
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    let started = Instant::now();
    sb.enqueue("jobs", "{}");
    master.wait_for("the first job completed", Duration::from_secs(10), || {
        q.is_idle() && sb.lines("runs.txt").len() == 1
    });
    sb.enqueue("jobs", "{}");
    master.wait_for("the second job completed", Duration::from_secs(10), || {
        q.is_idle() && sb.lines("runs.txt").len() == 2
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    master.wait_for("no sleep left", Duration::from_secs(5), || {
        with_marker(MARK).is_empty()
    });
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_batch_handler_leaving_a_process_writing_without_end_still_frees_its_slot() {
    // `yes` writes to the log pipe faster than the log takes it: the worker must still
    // read the result, see the handler's exit, and kill the writer.
    const MARK: &str = "1000.71";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("leftover-spew-batch");
    let h = sb.ok_batch_handler(
        "batch.sh",
        &format!("yes {MARK} >&2 &"),
        "echo \"$id\" >> runs.txt",
    );
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-timeout = 0.1\n\
         [queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\ntimeout = 60\n"
    ));
    spewing_leftover_ends_with_its_batch(&sb, MARK);
}

#[test]
fn a_per_message_handler_leaving_a_process_writing_without_end_still_frees_its_slot() {
    const MARK: &str = "1000.72";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("leftover-spew-message");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"sh\", \"-c\", \"yes {MARK} & sleep 0.5; echo ran >> runs.txt\"]\n\
         timeout = 60\n"
    ));
    spewing_leftover_ends_with_its_batch(&sb, MARK);
}

/// One job, whose handler leaves `yes MARK` running: the job completes, the worker ends
/// long before the 60 s deadline, and the writer dies with it.
fn spewing_leftover_ends_with_its_batch(sb: &Sandbox, mark: &str) {
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    sb.enqueue("jobs", "{}");
    master.wait_for(
        "the job completed, its worker gone and the writer killed",
        Duration::from_secs(20),
        || {
            q.is_idle()
                && sb.lines("runs.txt").len() == 1
                && procs::workers_of(master.pid).is_empty()
                && with_marker(mark).is_empty()
        },
    );
    assert!(q.dead().is_empty(), "{:?}", q.dead());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn a_worker_killed_from_outside_takes_what_its_batch_left_running_along() {
    const MARK: &str = "1000.73";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("worker-killed-outside");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"sh\", \"-c\", \"sleep {MARK} & echo ran >> runs.txt; wait\"]\n\
         timeout = 300\nmax-attempts = 1\n"
    ));
    let mut master = sb.start(&[]);
    let q = sb.queue("jobs");
    sb.enqueue("jobs", "{}");
    master.wait("the handler running", || sb.lines("runs.txt").len() == 1);
    let workers = procs::workers_of(master.pid);
    assert_eq!(workers.len(), 1, "{workers:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(workers[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Its handler and the sleep it started were in its group: they go too, or the
    // message's retry would run beside them.
    master.wait_for("no sleep left", Duration::from_secs(10), || {
        with_marker(MARK).is_empty()
    });
    master.wait("the message dead-lettered", || q.dead_letters() == 1);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn hooks_run_a_few_at_a_time_and_none_outlives_the_master() {
    const MARK: &str = "1000.63";
    let _reap = Reap(MARK);
    let sb = Sandbox::new("hook-flood");
    sb.chorefile(&format!(
        "[queues.jobs]\nhandler = [\"true\"]\non-permanent-failure = [\"sleep\", \"{MARK}\"]\n"
    ));
    let q = sb.queue("jobs");
    for i in 0..50 {
        q.put("new", &format!("bad{i}.0.job"), b"not json");
    }
    let mut master = sb.start(&[]);
    master.wait("every bad body dead-lettered", || q.dead_letters() == 50);
    master.wait("hooks running", || !with_marker(MARK).is_empty());
    master.assert_for(Duration::from_secs(2), "at most 4 hooks at once", || {
        with_marker(MARK).len() <= 4
    });
    assert_eq!(master.stop().code(), Some(0));
    crate::support::poll::wait_until("no hook left", Duration::from_secs(5), || {
        with_marker(MARK).is_empty()
    });
}

#[test]
fn sqs_sigterm_while_sqs_is_unreachable_exits_within_the_shutdown_timeout() {
    use crate::support::moto::{AWS_ENV, Moto};
    use nix::sys::signal::Signal;
    let moto = Moto::start();
    let url = moto.create("gone", serde_json::json!({}));
    let sb = Sandbox::new("sqs-slow-stop");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 1");
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\nshutdown-timeout = 3\n\
         [queues.gone]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n",
        moto.endpoint()
    ));
    let mut master = sb.start_with_env("master", &[], &AWS_ENV);
    moto.send(&url, "{}");
    master.wait("the job to start", || !sb.runs("runs.txt").is_empty());
    // SQS goes away while the job runs: its delete keeps failing.
    drop(moto);
    master.wait_log("delete failed");
    master.signal(Signal::SIGTERM);
    let t = Instant::now();
    let status = master.wait_exit(Duration::from_secs(30));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", master.log_text());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        master.log_text().contains("will be delivered again"),
        "what was not flushed is logged:\n{}",
        master.log_text()
    );
}

/// A queue directory removed under a running master (`rmdir inprogress/`, or `new/`) is
/// recreated, loudly, and consumption goes on: no silent stall.
#[test]
fn a_queue_directory_that_disappears_is_recreated_and_consumption_goes_on() {
    let sb = Sandbox::new("rmdir");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let q = sb.queue("jobs");
    std::fs::remove_dir(q.path.join("inprogress")).unwrap();
    // Written as a producer would (`chore enqueue` would recreate the directory itself).
    q.put("new", "jobs-a.0.job", b"{\"n\":1}");
    master.wait("the job to run despite the missing inprogress/", || {
        sb.runs("runs.txt").len() == 1
    });
    master.wait_log("a queue directory had disappeared; recreated");
    std::fs::remove_dir(q.path.join("new")).unwrap();
    master.wait("new/ to be recreated", || q.path.join("new").is_dir());
    q.put("new", "jobs-b.0.job", b"{\"n\":2}");
    master.wait("the next job to run", || sb.runs("runs.txt").len() == 2);
    assert_eq!(master.stop().code(), Some(0));
}

/// What in `new/` cannot be a message (a FIFO, a socket, a symbolic link, a directory, a
/// name that is not UTF-8) is moved to `dead/` once, unread and unfollowed, while real jobs run; a FIFO
/// never wedges the consumer, and SIGTERM still stops the master.
#[test]
fn odd_entries_in_new_are_set_aside_and_never_block() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new("odd-entries");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let q = sb.queue("jobs");
    let new = q.path.join("new");
    std::fs::create_dir_all(&new).unwrap();
    nix::unistd::mkfifo(&new.join("f.0.job"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink(sb.file("runs.txt"), new.join("l.0.job")).unwrap();
    std::fs::create_dir(new.join("d.0.job")).unwrap();
    // Bound and kept open while the master runs (`open` of it fails with ENXIO).
    let _socket = std::os::unix::net::UnixListener::bind(new.join("s.0.job")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"bad-\xff.0.job");
    std::fs::write(new.join(odd), "{}").unwrap();
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    q.put("new", "jobs-real.0.job", b"{\"n\":1}");
    master.wait("the real job to run", || sb.runs("runs.txt").len() == 1);
    master.wait("the odd entries to be set aside", || {
        std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) == 0
    });
    for name in ["f.0.job", "s.0.job", "l.0.job", "d.0.job"] {
        assert!(
            q.path.join("dead").join(name).symlink_metadata().is_ok(),
            "{name} is in dead/"
        );
    }
    assert!(q.path.join("dead").join(odd).exists());
    let log = master.log_text();
    assert_eq!(log.matches("moved to dead/ unread").count(), 5, "{log}");
    assert!(!log.contains("receive failed"), "{log}");
    let started = Instant::now();
    assert_eq!(master.stop().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(30));
}
