//! A step of the master's wall clock (libfaketime preloaded into the master, stepped
//! through its timestamp file while jobs run) makes no job run twice: the claims the master
//! holds look expired by the file names' rule, and its own recovery leaves them alone.

use crate::harness::*;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Debian's `libfaketime` (package `faketime`), or `CHORE_TEST_LIBFAKETIME`. Missing, the
/// test fails: it is a tool this suite needs, like memcached.
fn libfaketime() -> PathBuf {
    if let Some(p) = std::env::var_os("CHORE_TEST_LIBFAKETIME") {
        return p.into();
    }
    let p = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
        std::env::consts::ARCH
    ));
    assert!(
        p.is_file(),
        "{} is missing: install the faketime package (scripts/test.sh does) or set CHORE_TEST_LIBFAKETIME",
        p.display()
    );
    p
}

#[test]
fn a_wall_clock_step_of_the_master_reruns_no_job() {
    let lib = libfaketime();
    let sb = Sandbox::new("clock-step");
    let stamp = sb.file("faketime");
    fs::write(&stamp, "+0\n").unwrap();
    let h = sb.recorder("job.sh", "runs.txt", "sleep 5");
    // The lease is the default (60 s); the step below is larger.
    sb.chorefile(&format!(
        "concurrency = 4\nbatch-size = 1\n[queues.jobs]\nhandler = [{h:?}]\ntimeout = 120\n"
    ));
    let q = sb.queue("jobs");
    // Three waves of four: whatever the load, most claims are made after the step.
    for n in 0..12 {
        q.put(
            "new",
            &format!("j{n}.0.job"),
            format!("{{\"n\":{n}}}").as_bytes(),
        );
    }
    let env = [
        ("LD_PRELOAD", lib.to_str().unwrap()),
        ("FAKETIME_TIMESTAMP_FILE", stamp.to_str().unwrap()),
        // Read the file at every look at the clock, so that the step takes effect at once.
        ("FAKETIME_NO_CACHE", "1"),
        // Only the wall clock steps, as when an operator or NTP sets it.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut master = sb.start_with_env("master", &[], &env);
    master.wait("four jobs to start", || sb.runs("runs.txt").len() >= 4);
    let before = q.inprogress();
    // Written whole and renamed, so the master never reads half a timestamp.
    let tmp = sb.file(".faketime");
    fs::write(&tmp, "+90s\n").unwrap();
    fs::rename(&tmp, &stamp).unwrap();
    // The master's clock has moved: a claim it makes now expires, by the real clock, well
    // after a claim made before the step would (60 s after its making).
    let real_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let long = Duration::from_secs(60);
    master.wait_for("a claim made on the stepped clock", long, || {
        q.inprogress().iter().any(|n| {
            !before.contains(n)
                && n.split('.')
                    .nth(2)
                    .and_then(|t| t.parse::<i64>().ok())
                    .is_some_and(|t| t > real_now() + 10)
        })
    });
    master.wait_for("all twelve to run", long, || {
        sb.runs("runs.txt").len() >= 12
    });
    master.wait_for("the queue to be idle", long, || q.is_idle());
    // Several recovery sweeps more, had one of them been going to take a claim back.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(master.stop().code(), Some(0));
    let runs = sb.runs("runs.txt");
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..12).map(|n| format!("j{n}")).collect();
    want.sort();
    assert_eq!(ids, want, "{runs:?}");
    assert!(runs.iter().all(|r| r.attempt == 1), "{runs:?}");
}
