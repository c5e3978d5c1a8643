//! Logs that cannot be written never end a master or a worker: a
//! closed standard-error pipe (`chore … 2>&1 | head`), a full disk (`/dev/full`) as
//! standard error, or as the log file the workers share.

use crate::harness::*;
use crate::support::procs::family_of;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

/// A master started with a standard error of the test's choosing; killed with its family
/// when dropped (the harness's `Master` always logs to a file).
struct Bare {
    child: Child,
    pid: i32,
}

impl Bare {
    fn start(sb: &Sandbox, extra: &[&str], stderr: Stdio) -> Bare {
        let cf = sb.chorefile_path();
        let mut args = vec!["-c", cf.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = sb
            .command(&args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("chore master starts");
        Bare {
            pid: child.id() as i32,
            child,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.pid), Signal::SIGTERM).unwrap();
        let mut status = None;
        wait_until("the master to exit", PATIENCE, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        for pid in family_of(self.pid).into_iter().chain([self.pid]) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Enqueue `n` jobs, wait for each to run once, and check the master is alive and stops
/// cleanly.
fn all_run_and_it_stops(sb: &Sandbox, master: &mut Bare, first: usize, n: usize) {
    for i in first..first + n {
        sb.enqueue("jobs", &format!("{{\"n\":{i}}}"));
    }
    wait_until("every job to run", PATIENCE, || {
        sb.runs("runs.txt").len() >= first + n || !master.running()
    });
    assert!(
        master.running(),
        "the master died: {:?}",
        master.child.try_wait()
    );
    assert_eq!(sb.runs("runs.txt").len(), first + n, "each job ran once");
    wait_until("the queue to empty", PATIENCE, || {
        sb.queue("jobs").is_idle()
    });
    assert!(sb.queue("jobs").dead().is_empty());
    let status = master.stop();
    assert_eq!(status.code(), Some(0), "a drained master exits 0");
}

#[test]
fn a_closed_stderr_pipe_does_not_end_the_master() {
    let sb = Sandbox::new("epipe");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "concurrency = 2\nshutdown-timeout = 10\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    sb.enqueue("jobs", "{\"n\":0}");
    // `chore 2>&1 | true`: the reader goes away at once. Debug logging: every job logs.
    let mut master = Bare::start(&sb, &["-vv"], Stdio::piped());
    drop(master.child.stderr.take());
    wait_until("the first job to run", PATIENCE, || {
        !sb.runs("runs.txt").is_empty() || !master.running()
    });
    all_run_and_it_stops(&sb, &mut master, 1, 10);
}

#[test]
fn a_full_disk_as_stderr_does_not_end_the_master_or_its_workers() {
    let sb = Sandbox::new("enospc");
    // The handler writes to its standard error too (the worker's, the master's).
    let h = sb.recorder("job.sh", "runs.txt", "echo noise >&2; exit 0");
    sb.chorefile(&format!(
        "concurrency = 2\nshutdown-timeout = 10\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut master = Bare::start(&sb, &["-vv"], Stdio::from(full));
    all_run_and_it_stops(&sb, &mut master, 0, 10);
}

#[test]
fn a_full_disk_as_the_log_file_does_not_end_the_master_or_its_workers() {
    let sb = Sandbox::new("enospc-log-file");
    let h = sb.recorder("job.sh", "runs.txt", "echo noise >&2; exit 0");
    sb.chorefile(&format!(
        "concurrency = 2\nshutdown-timeout = 10\nlog-file = \"/dev/full\"\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = Bare::start(&sb, &["-vv"], Stdio::null());
    all_run_and_it_stops(&sb, &mut master, 0, 10);
}

/// A batch handler's stray output line goes to the worker's log; on a full disk it is
/// dropped and the batch still succeeds.
#[test]
fn a_batch_handlers_stray_line_on_a_full_disk_does_not_end_its_worker() {
    let sb = Sandbox::new("enospc-batch");
    let h = sb.ok_batch_handler(
        "batch.sh",
        "echo 'a stray line'",
        "echo \"$id\" >> runs.txt",
    );
    sb.chorefile(&format!(
        "concurrency = 2\nshutdown-timeout = 10\nlog-file = \"/dev/full\"\n[queues.jobs]\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
    ));
    for i in 0..3 {
        sb.enqueue("jobs", &format!("{{\"n\":{i}}}"));
    }
    let mut master = Bare::start(&sb, &[], Stdio::null());
    wait_until("every job to run", PATIENCE, || {
        sb.lines("runs.txt").len() >= 3
    });
    wait_until("the queue to empty", PATIENCE, || {
        sb.queue("jobs").is_idle()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(sb.queue("jobs").dead().is_empty(), "nothing dead-lettered");
    assert_eq!(sb.lines("runs.txt").len(), 3, "each job ran once");
    assert_eq!(master.stop().code(), Some(0));
}

/// `chore enqueue` has published when it says so on standard error: a full disk there does
/// not turn the publication into a failure.
#[test]
fn enqueue_succeeds_with_a_full_disk_as_stderr() {
    let sb = Sandbox::new("enospc-enqueue");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = sb
        .command(&["enqueue", "-c", cf.to_str().unwrap(), "jobs", "{}"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(sb.queue("jobs").new_files().len(), 1);
}
