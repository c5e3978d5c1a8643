//! The Python preloader of examples/preload/ run with its own Chorefile (only the queue
//! root moved into the sandbox), and the Ruby runner's protocol tests
//! (contrib/ruby/test/driver.py), run here so that CI runs them.

use super::{copy_dir, log_count, repo};
use crate::harness::*;
use std::process::Command;

#[test]
fn preload_the_python_example_runs_its_chorefiles_jobs() {
    let sb = Sandbox::new("preload-python");
    copy_dir(&repo().join("examples/preload"), sb.path());
    let original = sb.read("Chorefile");
    let root_line = original
        .lines()
        .find(|l| l.starts_with("fs-queue-root"))
        .expect("the example names its queue root");
    let chorefile = original.replace(
        root_line,
        &format!("fs-queue-root = {:?}", sb.root().display().to_string()),
    );
    sb.write("Chorefile", &chorefile);
    for (class, args) in [
        ("Greet", "[\"ada\"]"),
        ("Divide", "[1, 0]"),
        ("Busy", "[]"),
        ("Nope", "[]"),
    ] {
        sb.enqueue_lines(&["work", "--class", class, args], None, &[]);
    }
    let mut master = sb.start(&[]);
    let q = sb.queue("work");
    master.wait_log("app.py: hello, ada");
    master.wait("Nope dead-lettered", || q.dead_letters() == 1);
    let reason_file = q
        .dead()
        .into_iter()
        .find(|n| n.ends_with(".reason"))
        .unwrap();
    assert!(
        q.read("dead", &reason_file)
            .contains("no job for class 'Nope'"),
        "{}",
        q.read("dead", &reason_file)
    );
    // Divide fails and is retried after the queue's first backoff (2 s); Busy asks for 2 s.
    master.wait("Divide's second attempt", || {
        log_count(&master, "ZeroDivisionError: division by zero") >= 2
    });
    master.wait("Busy's second attempt", || {
        log_count(&master, "the database is busy") >= 2
    });
    assert_eq!(log_count(&master, "app.py: booted"), 1, "one boot");
    assert_eq!(log_count(&master, "app.py: hello, ada"), 1);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn preload_the_ruby_runners_protocol_tests_pass() {
    let out = Command::new("python3")
        .arg(repo().join("contrib/ruby/test/driver.py"))
        .current_dir(repo())
        // Nothing compiled into the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "contrib/ruby/test/driver.py failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
