//! How messages flow to the application: never more posts in flight than `connections`,
//! keep-alive connections reused, a mixed queue posting one class and running commands for
//! the rest, nothing received while the application is down (the health gate), and a
//! drain that lets posts in flight finish (up to `shutdown-timeout`) and gives back the
//! rest.

use super::{fs_queue, target};
use crate::harness::*;
use crate::support::app::App;
use crate::support::service::free_port;
use nix::sys::signal::Signal;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn http_never_more_posts_in_flight_than_connections() {
    let sb = Sandbox::new("http-connections");
    let app = App::start(sb.path(), "app", json!({"default": {"delay": 1}}));
    sb.chorefile(&fs_queue(
        "limited",
        &target(&app, "/", ", connections = 2"),
        "",
    ));
    for i in 0..6 {
        sb.enqueue("limited", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    master.wait("six posts, and the queue emptied", || {
        app.requests().len() >= 6 && sb.queue("limited").is_idle()
    });
    let rs = app.requests();
    assert_eq!(rs.len(), 6, "each posted once: {rs:?}");
    let peak = rs.iter().map(|r| r.inflight).max().unwrap();
    assert!(peak <= 2, "{peak} posts in flight at once, connections = 2");
    assert_eq!(peak, 2, "two at a time, not one after another");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_consecutive_posts_reuse_a_kept_alive_connection() {
    let sb = Sandbox::new("http-keepalive");
    let mut app = App::start(sb.path(), "app", json!({}));
    sb.chorefile(&fs_queue(
        "serial",
        &target(&app, "/", ", connections = 1"),
        "",
    ));
    for i in 0..5 {
        sb.enqueue("serial", &format!("[{i}]"));
    }
    let mut master = sb.start(&[]);
    master.wait("five posts, and the queue emptied", || {
        app.requests().len() >= 5 && sb.queue("serial").is_idle()
    });
    let conns: BTreeSet<u64> = app.requests().iter().map(|r| r.conn).collect();
    assert_eq!(
        conns.len(),
        1,
        "five posts one after another over one kept-alive connection: {:?}",
        app.requests()
            .iter()
            .map(|r| (r.n, r.conn))
            .collect::<Vec<_>>()
    );
    // The application restarts: the pooled connection is dead. The next message goes out
    // on a fresh one, as its first attempt, at once.
    app.restart();
    let id = sb.enqueue_id("serial", "[5]");
    master.wait("the post after the restart", || {
        !app.requests_for(&id).is_empty() && sb.queue("serial").is_idle()
    });
    let rs = app.requests_for(&id);
    assert_eq!(
        rs.len(),
        1,
        "a closed pooled connection is not a failure: {rs:?}"
    );
    assert_eq!(rs[0].receive_count(), 1);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_a_mixed_queue_posts_one_class_and_runs_commands_for_the_rest() {
    let sb = Sandbox::new("http-mixed");
    let app = App::start(sb.path(), "app", json!({}));
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "[queues.mixed]\nhandler = [{h:?}]\nclasses.Report = {:?}\n",
        app.url("/reports")
    ));
    let report = sb.enqueue_lines(&["--class", "Report", "mixed", "[7,\"x\"]"], None, &[]);
    let report_id = id_of(&report[0]);
    let other_id = sb.enqueue_id("mixed", r#"{"class":"Other","args":[1]}"#);
    let plain_id = sb.enqueue_id("mixed", r#"{"plain":true}"#);
    let mut master = sb.start(&[]);
    master.wait("one post, two runs, the queue emptied", || {
        !app.requests().is_empty() && sb.runs("runs.txt").len() >= 2 && sb.queue("mixed").is_idle()
    });
    let rs = app.requests();
    assert_eq!(rs.len(), 1, "only the Report is posted: {rs:?}");
    assert_eq!(rs[0].msgid(), report_id);
    assert_eq!(rs[0].path, "/reports");
    assert_eq!(rs[0].header("X-Aws-Sqsd-Queue"), Some("mixed"));
    assert_eq!(
        String::from_utf8_lossy(&rs[0].body),
        r#"{"class":"Report","args":[7,"x"]}"#,
        "the message as published"
    );
    let ran: BTreeSet<String> = sb.runs("runs.txt").into_iter().map(|r| r.id).collect();
    assert_eq!(ran, BTreeSet::from([other_id, plain_id]));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_nothing_is_received_while_the_application_is_down() {
    let sb = Sandbox::new("http-health");
    let port = free_port();
    // Its process runs, but it is still booting: connections are refused.
    let mut app = App::booting(sb.path(), "app", port, json!({}));
    sb.chorefile(&fs_queue(
        "gated",
        &format!("{{ url = \"http://127.0.0.1:{port}/\", error-visibility-timeout = 1 }}"),
        "",
    ));
    let mut master = sb.start(&[]);
    master.wait_log("chore master started");
    let ids: BTreeSet<String> = (0..2)
        .map(|i| sb.enqueue_id("gated", &format!("[{i}]")))
        .collect();
    let q = sb.queue("gated");
    master.assert_for(
        Duration::from_secs(3),
        "both messages waiting in new/, none claimed",
        || q.new_files().len() == 2 && q.inprogress().is_empty(),
    );
    app.finish_booting();
    master.wait("both posted, and the queue emptied", || {
        app.requests().len() >= 2 && q.is_idle()
    });
    let rs = app.requests();
    assert_eq!(rs.len(), 2, "{rs:?}");
    let posted: BTreeSet<String> = rs.iter().map(|r| r.msgid().to_owned()).collect();
    assert_eq!(posted, ids);
    assert!(
        rs.iter().all(|r| r.receive_count() == 1),
        "no attempt was burnt while the app was down: {rs:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_a_drain_finishes_the_post_in_flight_and_gives_back_the_rest() {
    let sb = Sandbox::new("http-drain");
    let app = App::start(sb.path(), "app", json!({"default": {"delay": 2}}));
    sb.chorefile(&format!(
        "shutdown-timeout = 15\n{}",
        fs_queue("draining", &target(&app, "/", ", connections = 1"), "")
    ));
    let ids: Vec<String> = (0..3)
        .map(|i| sb.enqueue_id("draining", &format!("[{i}]")))
        .collect();
    let mut master = sb.start(&[]);
    master.wait("the first post", || !app.requests().is_empty());
    let first = app.requests()[0].clone();
    master.signal(Signal::SIGTERM);
    let t = Instant::now();
    let status = master.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0), "a drain exits 0");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the drain waited for the post, not for shutdown-timeout: {:?}",
        t.elapsed()
    );
    wait_until("the answer recorded", PATIENCE, || {
        app.answer_to(&first).is_some()
    });
    let answer = app.answer_to(&first).unwrap();
    assert!(answer.ok && answer.status == 200, "{answer:?}");
    let q = sb.queue("draining");
    assert!(
        !q.holds(first.msgid()),
        "the 200 completed it: {:?}",
        q.new_files()
    );
    assert_eq!(app.requests().len(), 1, "nothing posted after the TERM");
    let waiting: BTreeSet<String> = q.new_files().iter().map(|n| id_of(n)).collect();
    let rest: BTreeSet<String> = ids.into_iter().filter(|i| i != first.msgid()).collect();
    assert_eq!(waiting, rest, "the others given back to new/");
    assert!(q.inprogress().is_empty(), "{:?}", q.inprogress());
}

#[test]
fn http_a_post_outlasting_shutdown_timeout_is_aborted_and_its_message_kept() {
    let sb = Sandbox::new("http-drain-abort");
    let app = App::start(sb.path(), "app", json!({"default": {"delay": 30}}));
    sb.chorefile(&format!(
        "shutdown-timeout = 1\n{}",
        fs_queue("stuck", &target(&app, "/", ""), "")
    ));
    let id = sb.enqueue_id("stuck", "{}");
    let mut master = sb.start(&[]);
    master.wait("the post", || !app.requests().is_empty());
    master.signal(Signal::SIGTERM);
    let t = Instant::now();
    let status = master.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the post was aborted at shutdown-timeout (1 s): {:?}",
        t.elapsed()
    );
    assert!(sb.queue("stuck").holds(&id), "the message was lost");
    // A new master posts it again, to an application now quick.
    app.set_rules(json!({}));
    let mut again = sb.start_as("again", &[]);
    again.wait("the message posted again and completed", || {
        app.requests_for(&id).len() >= 2 && sb.queue("stuck").is_idle()
    });
    assert!(sb.queue("stuck").dead().is_empty());
    assert_eq!(again.stop().code(), Some(0));
}
