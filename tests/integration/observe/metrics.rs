//! `/metrics` during and after a backlog: the counts match what ran.

use super::{free_address, scrape, value};
use crate::harness::*;
use std::time::Duration;

#[test]
fn metrics_count_a_backlog_while_it_runs_and_after() {
    let sb = Sandbox::new("metrics-backlog");
    // Bodies saying "bad" can never succeed (65: dead-lettered at once); the rest take a
    // moment each, so the backlog is visibly running when the page is first read.
    let h = sb.script(
        "handler.sh",
        "body=$(cat)\ncase \"$body\" in *bad*) exit 65;; esac\nsleep 0.5\n",
    );
    let addr = free_address();
    sb.chorefile(&format!(
        "concurrency = 1\nbatch-size = 1\nmetrics-listen = {addr:?}\n\
         [queues.jobs]\nhandler = [{h:?}]\n"
    ));
    for i in 0..6 {
        sb.enqueue("jobs", &format!("{{\"n\":{i}}}"));
    }
    sb.enqueue("jobs", "{\"bad\":1}");
    sb.enqueue("jobs", "{\"bad\":2}");
    // A body that is not JSON is dead-lettered by the consumer, never started.
    std::fs::write(
        sb.queue("jobs")
            .path
            .join("new/jobs-Job-1-20260101-000000-000001.0.job"),
        "not json",
    )
    .unwrap();
    let master = sb.start(&[]);
    master.wait_log("metrics served at");
    let q = "{queue=\"jobs\"}";
    let series = |name: &str| format!("{name}{q}");
    master.wait("a scrape while the backlog runs", || {
        let page = scrape(&addr);
        value(&page, "chore_workers_busy") == Some(1.0)
            && value(&page, &series("chore_messages_started_total")).is_some_and(|n| n >= 1.0)
    });
    let during = scrape(&addr);
    let started = value(&during, &series("chore_messages_started_total")).unwrap();
    assert!(
        started < 8.0,
        "the backlog is still running: {started} started\n{during}"
    );
    assert_eq!(value(&during, "chore_healthy"), Some(1.0), "{during}");

    master.wait("the backlog to finish", || sb.queue("jobs").is_idle());
    master.wait("the page to show it", || {
        value(&scrape(&addr), &series("chore_messages_succeeded_total")) == Some(6.0)
    });
    // Gauges are set once a second: give them a tick.
    master.wait("the gauges to settle", || {
        let page = scrape(&addr);
        value(&page, "chore_workers_busy") == Some(0.0)
            && value(&page, &series("chore_messages_held")) == Some(0.0)
    });
    let after = scrape(&addr);
    let expect = [
        ("chore_messages_received_total", 9.0),
        ("chore_messages_started_total", 8.0),
        ("chore_messages_succeeded_total", 6.0),
        ("chore_messages_failed_total", 2.0),
        ("chore_messages_retried_total", 0.0),
        ("chore_messages_dead_lettered_total", 3.0),
        ("chore_messages_duplicate_total", 0.0),
        ("chore_workers_started_total", 8.0),
        ("chore_workers_deadline_killed_total", 0.0),
        ("chore_messages_buffered", 0.0),
        ("chore_handler_run_seconds_count", 8.0),
        ("chore_message_wait_seconds_count", 8.0),
    ];
    for (name, n) in expect {
        assert_eq!(value(&after, &series(name)), Some(n), "{name}\n{after}");
    }
    assert_eq!(sb.queue("jobs").dead_letters(), 3);
    assert!(
        after.contains("# TYPE chore_handler_run_seconds histogram"),
        "{after}"
    );
    // The page answers only /metrics.
    let (code, _) = crate::support::http::exchange(&addr, "GET", "/", &[], b"");
    assert_eq!(code, 404);
}

#[test]
fn a_queue_depth_and_its_oldest_message_age_are_read_from_its_directory() {
    let sb = Sandbox::new("metrics-depth");
    let addr = free_address();
    // One worker, hung on the first message; one more is buffered; three stay in new/.
    let h = sb.script(
        "hang.sh",
        "cat > /dev/null
sleep 600
",
    );
    sb.chorefile(&format!(
        "concurrency = 1
batch-size = 1
metrics-listen = {addr:?}
         [queues.jobs]
handler = [{h:?}]
"
    ));
    for i in 0..5 {
        sb.enqueue("jobs", &format!("[{i}]"));
    }
    let master = sb.start(&[]);
    master.wait_log("metrics served at");
    let depth = "chore_queue_depth{queue=\"jobs\"}";
    let age = "chore_queue_oldest_age_seconds{queue=\"jobs\"}";
    // The directory is looked at every 15 s.
    master.wait_for(
        "the depth of new/",
        std::time::Duration::from_secs(60),
        || value(&scrape(&addr), depth) == Some(3.0),
    );
    let first = value(&scrape(&addr), age).unwrap();
    master.wait("the oldest message to age", || {
        value(&scrape(&addr), age).is_some_and(|a| a >= first + 1.0)
    });
    assert_eq!(
        value(&scrape(&addr), "chore_messages_buffered{queue=\"jobs\"}"),
        Some(1.0)
    );
}

#[test]
fn a_metrics_address_that_is_not_one_is_refused_and_one_in_use_stops_the_start() {
    let sb = Sandbox::new("metrics-bad-address");
    sb.chorefile("metrics-listen = \"localhost\"\n[queues.jobs]\nhandler = [\"true\"]\n");
    let cf = sb.chorefile_path();
    let args = ["-c", cf.to_str().unwrap()];
    let line = one_line_exit_2(&sb.run(&args), &args);
    assert!(line.contains("Chorefile:3: key `metrics-listen`"), "{line}");
    assert!(line.contains("not an IP address and port"), "{line}");

    // An address another process holds: exit 1, saying which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    sb.chorefile(&format!(
        "metrics-listen = {addr:?}\n[queues.jobs]\nhandler = [\"true\"]\n"
    ));
    let out = sb.run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics-listen: cannot listen on {addr}")),
        "{err}"
    );
}

/// Idle connections to `/metrics` cannot take the descriptors the master needs for its
/// queues: past a few dozen, new ones are closed at once.
#[test]
fn idle_metrics_connections_do_not_starve_the_master_of_descriptors() {
    let sb = Sandbox::new("metrics-flood");
    let h = sb.recorder("job.sh", "runs.txt", "");
    let addr = free_address();
    sb.chorefile(&format!(
        "metrics-listen = {addr:?}\n[queues.jobs]\nhandler = [{h:?}]\n"
    ));
    let mut master = sb.start(&[]);
    master.wait_log("metrics served at");
    // A small descriptor limit, as a unit's default would be for a few thousand clients.
    let limit = nix::libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: sets a limit of our child from a value we own; reads nothing back.
    let set = unsafe {
        nix::libc::prlimit(
            master.pid,
            nix::libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit");
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 100, "{} connections", idle.len());
    for i in 0..5 {
        sb.enqueue("jobs", &format!("{{\"n\":{i}}}"));
    }
    master.wait("the jobs to run", || sb.runs("runs.txt").len() == 5);
    let log = master.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
    // Their slots come free as the listener sees them close; a scrape made before that is
    // closed at once, as the flood's were.
    wait_until("a scrape answered", Duration::from_secs(10), || {
        answers_metrics(&addr)
    });
    assert!(scrape(&addr).contains("chore_"));
    assert_eq!(master.stop().code(), Some(0));
}

/// Whether a GET /metrics on `addr` gets a whole page (false for a connection closed on it).
fn answers_metrics(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reply = Vec::new();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .and_then(|_| s.read_to_end(&mut reply))
        .is_ok_and(|_| reply.starts_with(b"HTTP/1.1 200"))
}
