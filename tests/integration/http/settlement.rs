//! How an answer settles a message: only 200 completes it; any other status, a refused
//! connection or an inactive request brings it back after the error-visibility-timeout
//! (the receive count going up) with a log line saying why; a 429's Retry-After sets the
//! delay; bytes arriving keep a slow answer alive; `retry = "sqsd"` never dead-letters,
//! `retry = "chore"` follows the queue's max-attempts.

use super::{fs_queue, log_lines, names_count, names_elapsed, target};
use crate::harness::*;
use crate::support::app::App;
use crate::support::service::free_port;
use serde_json::json;
use std::time::Duration;

#[test]
fn http_only_200_completes_other_statuses_come_back_after_the_error_visibility_timeout() {
    let sb = Sandbox::new("http-statuses");
    let app = App::start(sb.path(), "app", json!({}));
    sb.chorefile(&fs_queue(
        "statuses",
        &target(&app, "/", ", sqsd-log = true"),
        "",
    ));
    let statuses = [204, 201, 302, 500];
    let ids: Vec<String> = statuses
        .iter()
        .map(|s| sb.enqueue_id("statuses", &format!("{{\"answer\":{s}}}")))
        .collect();
    let rules: serde_json::Map<String, serde_json::Value> = ids
        .iter()
        .zip(statuses)
        .map(|(id, s)| (id.clone(), json!({"status": s, "times": 1})))
        .collect();
    app.set_rules(json!({ "ids": rules }));
    let mut master = sb.start(&[]);
    master.wait("each message posted twice and completed", || {
        ids.iter().all(|id| app.requests_for(id).len() >= 2) && sb.queue("statuses").is_idle()
    });
    for (id, status) in ids.iter().zip(statuses) {
        let rs = app.requests_for(id);
        assert_eq!(rs.len(), 2, "{status}, then 200 and done: {rs:?}");
        assert_eq!(
            (rs[0].receive_count(), rs[1].receive_count()),
            (1, 2),
            "{status}: the receive count goes up"
        );
        let answered = app.answer_to(&rs[0]).expect("the first was answered");
        assert_eq!(answered.status, status);
        let back_after = rs[1].at - answered.at;
        assert!(
            back_after >= 0.9,
            "after a {status} the message came back {back_after:.2}s later, before the \
             error-visibility-timeout (1 s)"
        );
        let lines = log_lines(&master, &[&format!("http-err: {id} (1) {status} - ")]);
        assert_eq!(
            lines.len(),
            1,
            "sqsd-log: the daemon's `http-err: <id> (<count>) <status> - <secs>` line for \
             {id}; log:\n{}",
            master.log_text()
        );
        let own = log_lines(&master, &[id, &status.to_string()]);
        assert!(
            own.iter()
                .any(|l| !l.contains("http-err") && names_count(l, 1) && names_elapsed(l)),
            "chore's own line names {id}, its receive count, the {status} and the time \
             taken: {own:#?}"
        );
    }
    assert!(sb.queue("statuses").dead().is_empty());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_a_refused_connection_is_retried_and_logged() {
    let sb = Sandbox::new("http-refused");
    let port = free_port();
    // The health gate would hold everything back while the port is closed.
    sb.chorefile(&fs_queue(
        "refused",
        &format!(
            "{{ url = \"http://127.0.0.1:{port}/\", error-visibility-timeout = 1, \
             health-check = \"off\" }}"
        ),
        "",
    ));
    let id = sb.enqueue_id("refused", "{}");
    let mut master = sb.start(&[]);
    master.wait("two refused attempts logged", || {
        let lines = log_lines(&master, &[&id]);
        [1, 2]
            .iter()
            .all(|&n| lines.iter().any(|l| names_count(l, n)))
    });
    let lines = log_lines(&master, &[&id]);
    assert!(
        lines.iter().any(|l| names_count(l, 1)
            && l.to_ascii_lowercase().contains("refused")
            && names_elapsed(l)),
        "a line names the message, its receive count, the refused connection and the time \
         taken: {lines:#?}"
    );
    assert!(sb.queue("refused").dead().is_empty(), "never dead-lettered");
    assert!(sb.queue("refused").holds(&id), "still in the queue");
    // The application comes up: the message gets through.
    let app = App::start_on(sb.path(), "app", port, json!({}));
    master.wait("the post once the app listens", || {
        !app.requests_for(&id).is_empty() && sb.queue("refused").is_idle()
    });
    let r = &app.requests_for(&id)[0];
    assert!(
        r.receive_count() >= 3,
        "the refused attempts counted: {r:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_an_inactive_request_is_aborted_and_retried() {
    let sb = Sandbox::new("http-inactive");
    let app = App::start(
        sb.path(),
        "app",
        json!({"paths": {"/slow": {"delay": 4, "times": 1}}}),
    );
    sb.chorefile(&fs_queue(
        "inactive",
        &target(&app, "/slow", ", inactivity-timeout = 1"),
        "",
    ));
    let id = sb.enqueue_id("inactive", "{}");
    let mut master = sb.start(&[]);
    master.wait("the second post, and the message completed", || {
        app.requests_for(&id).len() >= 2 && sb.queue("inactive").is_idle()
    });
    let rs = app.requests_for(&id);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!((rs[0].receive_count(), rs[1].receive_count()), (1, 2));
    let gap = rs[1].at - rs[0].at;
    assert!(
        gap >= 1.9,
        "aborted after inactivity-timeout (1 s), back after error-visibility-timeout \
         (1 s): {gap:.2}s between the posts"
    );
    assert!(
        gap < 4.0,
        "the first post was aborted, not waited out (its answer took 4 s): {gap:.2}s"
    );
    let lines = log_lines(&master, &[&id]);
    assert!(
        lines.iter().any(|l| names_count(l, 1)
            && l.to_ascii_lowercase().contains("inactiv")
            && names_elapsed(l)),
        "a line names the message, its receive count, the timeout that fired and the time \
         taken: {lines:#?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_bytes_arriving_in_the_head_keep_a_slow_answer_alive() {
    // The status line at once, then six header lines 0.4 s apart, then the end of the head:
    // about 2.8 s for the head, never a 1 s silence.
    slow_answer_kept_alive("head", json!([6, 0.4]));
}

#[test]
fn http_bytes_arriving_in_the_body_keep_a_slow_answer_alive() {
    // The head at once, then a body of six bytes, one every 0.4 s.
    slow_answer_kept_alive("body", json!([6, 0.4, "body"]));
}

/// With inactivity-timeout = 1, an answer trickled as `trickle` says completes the message
/// on the first post.
fn slow_answer_kept_alive(label: &str, trickle: serde_json::Value) {
    let sb = Sandbox::new(&format!("http-trickle-{label}"));
    let app = App::start(sb.path(), "app", json!({"default": {"trickle": trickle}}));
    sb.chorefile(&fs_queue(
        "trickle",
        &target(&app, "/", ", inactivity-timeout = 1"),
        "",
    ));
    let id = sb.enqueue_id("trickle", "{}");
    let mut master = sb.start(&[]);
    master.wait("the message completed, or posted again", || {
        sb.queue("trickle").is_idle() || app.requests_for(&id).len() >= 2
    });
    let rs = app.requests_for(&id);
    assert_eq!(
        rs.len(),
        1,
        "bytes kept arriving ({label}), yet the post was abandoned: {rs:?}"
    );
    master.wait("the answer recorded", || app.answer_to(&rs[0]).is_some());
    let answered = app.answer_to(&rs[0]).unwrap();
    assert!(
        answered.at - rs[0].at >= 2.0,
        "the answer did take longer than inactivity-timeout"
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_429_with_retry_after_comes_back_after_that_many_seconds() {
    let sb = Sandbox::new("http-429");
    let app = App::start(sb.path(), "app", json!({}));
    sb.chorefile(&fs_queue("busy", &target(&app, "/", ""), ""));
    let id = sb.enqueue_id("busy", "{}");
    app.set_rules(json!({"ids": {&id: {"status": 429, "retry_after": 3, "times": 1}}}));
    let mut master = sb.start(&[]);
    master.wait("the second post, and the message completed", || {
        app.requests_for(&id).len() >= 2 && sb.queue("busy").is_idle()
    });
    let rs = app.requests_for(&id);
    assert_eq!(rs.len(), 2, "{rs:?}");
    let answered = app.answer_to(&rs[0]).unwrap();
    assert_eq!(answered.status, 429);
    let back_after = rs[1].at - answered.at;
    assert!(
        back_after >= 2.8,
        "Retry-After: 3, yet back after {back_after:.2}s (error-visibility-timeout is 1 s)"
    );
    assert_eq!(rs[1].receive_count(), 2);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_retry_chore_dead_letters_after_max_attempts() {
    let sb = Sandbox::new("http-retry-chore");
    let app = App::start(sb.path(), "app", json!({"default": {"status": 500}}));
    sb.chorefile(&fs_queue(
        "doomed",
        &target(&app, "/", ", retry = \"chore\""),
        "max-attempts = 2\nbackoff = 1\n",
    ));
    let id = sb.enqueue_id("doomed", "{}");
    let mut master = sb.start(&[]);
    master.wait("a dead letter", || sb.queue("doomed").dead_letters() == 1);
    assert!(
        sb.queue("doomed").dead().iter().any(|n| id_of(n) == id),
        "{:?}",
        sb.queue("doomed").dead()
    );
    master.assert_for(
        Duration::from_millis(1500),
        "no post after dead-lettering",
        || app.requests_for(&id).len() == 2,
    );
    let counts: Vec<u32> = app
        .requests_for(&id)
        .iter()
        .map(|r| r.receive_count())
        .collect();
    assert_eq!(counts, [1, 2]);
    assert!(sb.queue("doomed").is_idle());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn http_retry_sqsd_never_dead_letters() {
    let sb = Sandbox::new("http-retry-sqsd");
    let app = App::start(sb.path(), "app", json!({"default": {"status": 500}}));
    // max-attempts does not apply: the daemon leaves the end to the queue's redrive policy.
    sb.chorefile(&format!(
        "max-attempts = 2\n{}",
        fs_queue("forever", &target(&app, "/", ""), "")
    ));
    let id = sb.enqueue_id("forever", "{}");
    let mut master = sb.start(&[]);
    master.wait("four failed posts", || app.requests_for(&id).len() >= 4);
    let counts: Vec<u32> = app
        .requests_for(&id)
        .iter()
        .map(|r| r.receive_count())
        .collect();
    assert_eq!(&counts[..4], [1, 2, 3, 4]);
    assert!(
        sb.queue("forever").dead().is_empty(),
        "chore dead-lettered it"
    );
    assert!(sb.queue("forever").holds(&id), "still in the queue");
    assert_eq!(master.stop().code(), Some(0));
    assert!(sb.queue("forever").holds(&id), "kept across the stop");
}
