//! The filesystem queue's files: files whose names share a base all run, canonical ones
//! held at once too; nothing chore creates is written through a planted link or left
//! readable by everyone; an enqueue that fails (file size limit) or is killed mid-write
//! leaves no empty or truncated file under a name a consumer takes; a body with its
//! `class` key twice runs.

use crate::harness::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `x`, `x.job` and `x.0.job` all parse to the base `x`: each is its own message and runs,
/// the canonical name with the id `x`, the others with `x-<inode>`.
#[test]
fn files_whose_names_share_a_base_all_run() {
    let sb = Sandbox::new("same-base");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let q = sb.queue("jobs");
    q.put("new", "x", br#"{"v":"A"}"#);
    q.put("new", "x.job", br#"{"v":"B"}"#);
    q.put("new", "x.0.job", br#"{"v":"C"}"#);
    let mut master = sb.start(&[]);
    master.wait("all three to run", || sb.runs("runs.txt").len() >= 3);
    master.wait("the queue to be idle", || q.is_idle());
    let runs = sb.runs("runs.txt");
    let mut bodies: Vec<&str> = runs.iter().map(|r| r.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, [r#"{"v":"A"}"#, r#"{"v":"B"}"#, r#"{"v":"C"}"#]);
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{runs:?}");
    assert!(
        ids.iter().all(|id| *id == "x" || id.starts_with("x-")),
        "{ids:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

/// `x.0.job` and `x.1.job` (bodies written by hand, attempts differing) are two messages,
/// held at once: each runs once, the second with an id of its own, not as a copy of the
/// first.
#[test]
fn canonical_files_of_one_base_held_at_once_both_run() {
    let sb = Sandbox::new("same-base-canonical");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 2");
    sb.chorefile(&format!(
        "concurrency = 2\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let q = sb.queue("jobs");
    q.put("new", "x.0.job", br#"{"v":"A"}"#);
    q.put("new", "x.1.job", br#"{"v":"B"}"#);
    let mut master = sb.start(&[]);
    master.wait("both to run", || sb.runs("runs.txt").len() >= 2);
    master.wait("the queue to be idle", || q.is_idle());
    assert_eq!(master.stop().code(), Some(0));
    let runs = sb.runs("runs.txt");
    let mut seen: Vec<(&str, u32)> = runs.iter().map(|r| (r.body.as_str(), r.attempt)).collect();
    seen.sort();
    assert_eq!(seen, [(r#"{"v":"A"}"#, 1), (r#"{"v":"B"}"#, 2)], "{runs:?}");
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids[0], "x", "{runs:?}");
    assert!(ids[1].starts_with("x-"), "{runs:?}");
}

/// A link planted where a dead letter's reason goes is replaced, never written through,
/// and the reason is recorded; what chore creates has mode 0640 (directories 0750)
/// whatever the umask.
#[test]
fn nothing_is_written_through_a_planted_link_and_modes_ignore_the_umask() {
    let sb = Sandbox::new("symlink");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let victim = sb.write("victim", "untouched\n");
    let q = sb.queue("jobs");
    fs::create_dir_all(q.path.join("dead")).unwrap();
    std::os::unix::fs::symlink(&victim, q.path.join("dead/evil.1.job.reason")).unwrap();
    q.put("new", "evil.0.job", b"this is not JSON");
    let cf = sb.chorefile_path();
    let cf = cf.to_str().unwrap();
    let mut master = sb
        .command(&["-c", cf])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reason = q.path.join("dead/evil.1.job.reason");
    let started = Instant::now();
    while !fs::read_to_string(&reason).is_ok_and(|r| r.contains("not valid JSON")) {
        assert!(started.elapsed() < PATIENCE, "no reason recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(master.id() as i32), Signal::SIGTERM);
    master.wait().unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched\n");
    assert!(!fs::symlink_metadata(&reason).unwrap().is_symlink());
    assert_eq!(mode(&reason), 0o640);
    // An enqueue under umask 000 (and under 077) still makes 0640 files and 0750 dirs.
    for umask in ["000", "077"] {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\""), CHORE])
            .args([
                "enqueue",
                "-c",
                cf,
                "--force",
                &format!("fresh{umask}"),
                "{}",
            ])
            .current_dir(sb.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let name = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let fresh = sb.queue(&format!("fresh{umask}"));
        assert_eq!(
            mode(&fresh.path.join("new").join(&name)),
            0o640,
            "umask {umask}"
        );
        for d in ["new", "inprogress", "dead", "tmp"] {
            assert_eq!(mode(&fresh.path.join(d)), 0o750, "umask {umask}: {d}/");
        }
    }
}

/// A write that fails (here a file size limit, which gives the same short write as a full
/// disk) leaves nothing under a final name, and nothing half-written: the enqueue exits 1
/// with the reason.
#[test]
fn an_enqueue_that_cannot_write_leaves_nothing_and_fails_clearly() {
    let sb = Sandbox::new("efbig");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let big = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200_000));
    let mut child = std::process::Command::new("sh")
        // Ignored, SIGXFSZ lets the write fail with EFBIG instead of killing the process.
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"",
            CHORE,
        ])
        .args(["enqueue", "-c", cf.to_str().unwrap(), "jobs", "-"])
        .current_dir(sb.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut w = child.stdin.take().unwrap();
        w.write_all(b"{\"small\":1}\n").unwrap();
        for _ in 0..5 {
            let _ = w.write_all(big.as_bytes());
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2:") && stderr.contains("too large"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 message(s) enqueued before it"),
        "{stderr}"
    );
    let q = sb.queue("jobs");
    let waiting = q.new_files();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(q.read("new", &waiting[0]), "{\"small\":1}");
    assert!(fs::read_dir(q.path.join("tmp")).unwrap().next().is_none());
}

/// An enqueue killed while it writes a large body leaves no file under a final name; a
/// later one completes.
#[test]
fn an_enqueue_killed_mid_write_leaves_no_truncated_file() {
    let sb = Sandbox::new("kill-enqueue");
    sb.chorefile("[queues.jobs]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let body = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(32 << 20));
    let q = sb.queue("jobs");
    let mut caught = 0;
    for _ in 0..3 {
        let mut child = sb
            .command(&["enqueue", "-c", cf.to_str().unwrap(), "jobs", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut w = child.stdin.take().unwrap();
        w.write_all(body.as_bytes()).unwrap();
        drop(w);
        // Kill it as soon as its file is being written.
        let started = Instant::now();
        loop {
            let writing = fs::read_dir(q.path.join("tmp"))
                .map(|d| d.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
                .unwrap_or(false);
            if writing {
                caught += 1;
                break;
            }
            if child.try_wait().unwrap().is_some() || started.elapsed() > PATIENCE {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        child.wait().unwrap();
        for name in q.new_files() {
            assert_eq!(
                q.read("new", &name).len(),
                body.trim().len(),
                "{name} is whole"
            );
        }
    }
    assert!(caught > 0, "no enqueue was caught writing");
}

/// A body with its `class` key twice is JSON: the last one counts (as for Ruby's
/// `JSON.parse`), and it runs.
#[test]
fn a_body_with_a_duplicated_class_key_runs_under_the_last_class() {
    let sb = Sandbox::new("dup-class");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nclasses = {{ B = [{h:?}] }}\n"));
    sb.enqueue("jobs", r#"{"class":"A","args":[],"class":"B"}"#);
    let mut master = sb.start(&[]);
    master.wait("the job to run", || sb.runs("runs.txt").len() == 1);
    assert_eq!(sb.runs("runs.txt")[0].class, "B");
    assert_eq!(master.stop().code(), Some(0));
}

/// A master reads a claimed file without touching its access time where it may; a file
/// another user owns (here root's, claimed by a master running as nobody) is still read.
/// One it may not read at all is logged once and left in `new/`, and holds nothing up:
/// once readable, it runs.
#[test]
fn a_file_another_user_owns_is_claimed_and_one_it_may_not_read_holds_nothing_up() {
    use std::os::unix::fs::MetadataExt;
    if fs::metadata("/proc/self").unwrap().uid() != 0 {
        panic!("this test runs as root, to own files the master does not");
    }
    let sb = Sandbox::new("other-owner");
    std::os::unix::fs::chown(sb.path(), Some(65534), Some(65534)).unwrap();
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let mut master = sb.start_as_nobody("master");
    let q = sb.queue("jobs");
    let new = sb.root().join("jobs/new");
    master.wait("the queue's directories", || new.is_dir());
    // Made unreadable under a name consumers ignore, then put in place.
    let secret = new.join("secret.0.job");
    let hidden = new.join(".secret");
    fs::write(&hidden, r#"{"v":"secret"}"#).unwrap();
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&hidden, &secret).unwrap();
    // Written by root (the test), owned by root.
    for i in 0..5 {
        q.put("new", &format!("mine-{i}.0.job"), br#"{"v":"root's"}"#);
    }
    master.wait("the readable jobs to run", || {
        sb.runs("runs.txt").len() == 5
    });
    assert!(
        sb.runs("runs.txt")
            .iter()
            .all(|r| r.body == r#"{"v":"root's"}"#)
    );
    // More passes over the directory, the unreadable file still in it: logged once.
    q.put("new", "later.0.job", br#"{"v":"later"}"#);
    master.wait("a later job to run", || sb.runs("runs.txt").len() == 6);
    assert!(secret.exists(), "left where it was");
    let log = master.log_text();
    let told = log
        .lines()
        .filter(|l| l.contains("cannot open a file of new/"))
        .collect::<Vec<_>>();
    assert_eq!(told.len(), 1, "{log}");
    assert!(
        told[0].contains("secret.0.job") && told[0].contains("queue=jobs"),
        "{}",
        told[0]
    );
    assert!(!log.contains("receive failed"), "{log}");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    // A new file wakes the consumer, whose next listing holds the mended one too.
    q.put("new", "wake.0.job", br#"{"v":"wake"}"#);
    master.wait("the mended job to run", || {
        sb.runs("runs.txt")
            .iter()
            .any(|r| r.body == r#"{"v":"secret"}"#)
    });
    master.wait("the queue to be idle", || q.is_idle());
    assert_eq!(q.dead_letters(), 0);
    assert_eq!(master.stop().code(), Some(0));
}

/// A name with a control character (here a newline, which would forge a log line through
/// the message id) runs under an id without it.
#[test]
fn a_name_with_a_newline_runs_under_an_id_that_cannot_forge_a_log_line() {
    let sb = Sandbox::new("newline-name");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!("[queues.jobs]\nhandler = [{h:?}]\n"));
    let q = sb.queue("jobs");
    q.put(
        "new",
        "x\n2026-01-01T00:00:00Z ERROR forged.0.job",
        br#"{"v":1}"#,
    );
    let mut master = sb.start(&[]);
    master.wait("the job to run", || sb.runs("runs.txt").len() == 1);
    master.wait("the queue to be idle", || q.is_idle());
    let id = &sb.runs("runs.txt")[0].id;
    assert!(
        id.starts_with("x_2026-01-01T00:00:00Z ERROR forged-"),
        "{id:?}"
    );
    let log = master.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "{log}"
    );
    assert_eq!(master.stop().code(), Some(0));
}
