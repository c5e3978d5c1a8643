//! HTTP handlers on SQS (moto): message attributes as `X-Aws-Sqsd-Attr-*` headers (the
//! Active Elastic Job digest among them, byte for byte; a value that cannot be a header
//! left out), SQS's own attributes, a redelivery's receive count (duplicate detection
//! letting it through), a periodic message written by an Elastic Beanstalk leader,
//! the visibility heartbeat while a slow post runs, the health gate, and the retention
//! period.

use super::{
    assert_daemon_headers, is_iso_z, log_lines, sqs_chorefile, sqs_queue, start_sqs, target,
};
use crate::harness::*;
use crate::support::app::App;
use crate::support::http::exchange;
use crate::support::memcached::Memcached;
use crate::support::moto::Moto;
use crate::support::service::{Service, Spec, free_port, program_path};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The SenderId moto gives every message.
const MOTO_SENDER_ID: &str = "AIDAIT2UOQQY3AUEKVGXU";

/// SendMessage with message attributes; the message id.
fn send_with(moto: &Moto, url: &str, body: &str, attributes: Value) -> String {
    let out = moto.call(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": body, "MessageAttributes": attributes}),
    );
    out["MessageId"].as_str().unwrap().to_owned()
}

fn string_attr(v: &str) -> Value {
    json!({"DataType": "String", "StringValue": v})
}

fn wait_empty(master: &Master, moto: &Moto, url: &str) {
    master.wait("the SQS queue to be empty", || moto.is_empty(url));
}

#[test]
fn sqs_http_attributes_become_headers_and_a_redelivery_counts_up() {
    let moto = Moto::start();
    let url = moto.create("attrs", json!({}));
    let sb = Sandbox::new("http-sqs-attrs");
    let app = App::start(sb.path(), "app", json!({}));
    // Duplicate detection on: it must not take a redelivery after a non-200 for a duplicate.
    let memcached = Memcached::start();
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "dedupe-servers = {:?}\n{}",
            memcached.addr(),
            sqs_queue("attrs", &target(&app, "/", ""), "")
        ),
    );
    // What Active Elastic Job sends: the job, its HMAC-SHA1 and its origin.
    let aej_body = r#"{"job_class":"TestJob","arguments":["test"]}"#;
    let digest = "025eec2883d6e42672d22c11522a239c80a402e8";
    let aej = send_with(
        &moto,
        &url,
        aej_body,
        json!({
            "message-digest": string_attr(digest),
            "origin": string_attr("AEJ"),
            "count": {"DataType": "Number", "StringValue": "42"},
            "ratio": {"DataType": "Number.float", "StringValue": "1.5"},
            "blob": {"DataType": "Binary", "BinaryValue": "AAEC"},
            "beanstalk.sqsd.extra": string_attr("internal"),
            "multiline": string_attr("one\r\nX-Injected: yes"),
        }),
    );
    let retried_body = "not JSON ✓";
    let retried = moto.send(&url, retried_body);
    app.set_rules(json!({"ids": {&retried: {"status": 500, "times": 1}}}));
    let mut master = start_sqs(&sb, "master");
    master.wait("the job posted, the other posted twice", || {
        !app.requests_for(&aej).is_empty() && app.requests_for(&retried).len() >= 2
    });
    let sent_at = unix_now();
    wait_empty(&master, &moto, &url);
    assert!(
        unix_now() - sent_at < 5.0,
        "deleted within a few seconds of the 200"
    );

    let rs = app.requests_for(&aej);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = &rs[0];
    assert_daemon_headers(r, &aej, "attrs", 1, "/");
    assert_eq!(
        r.body,
        aej_body.as_bytes(),
        "byte for byte, or the digest fails"
    );
    assert_eq!(r.header("X-Aws-Sqsd-Attr-message-digest"), Some(digest));
    assert_eq!(r.header("X-Aws-Sqsd-Attr-origin"), Some("AEJ"));
    assert_eq!(r.header("X-Aws-Sqsd-Attr-count"), Some("42"));
    assert_eq!(r.header("X-Aws-Sqsd-Attr-ratio"), Some("1.5"));
    assert!(
        r.header("X-Aws-Sqsd-Attr-blob").is_none(),
        "no header for Binary"
    );
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().contains("beanstalk")),
        "beanstalk.sqsd.* attributes are never forwarded: {:?}",
        r.headers
    );
    assert!(
        r.header("X-Aws-Sqsd-Attr-multiline").is_none() && r.header("X-Injected").is_none(),
        "a value with CR LF cannot be a header value: left out, {:?}",
        r.headers
    );
    assert!(
        !log_lines(&master, &[&aej, "multiline"]).is_empty(),
        "a line says the attribute was left out:\n{}",
        master.log_text()
    );
    assert!(r.header("X-Aws-Sqsd-Taskname").is_none(), "not periodic");
    assert_eq!(r.header("X-Aws-Sqsd-Sender-Id"), Some(MOTO_SENDER_ID));
    for h in ["X-Aws-Sqsd-Sent-At", "X-Aws-Sqsd-First-Received-At"] {
        let v = r
            .header(h)
            .unwrap_or_else(|| panic!("no {h}: {:?}", r.headers));
        assert!(is_iso_z(v), "{h}: {v:?}");
        let age = unix_now() - super::iso_z_secs(v) as f64;
        assert!((-2.0..60.0).contains(&age), "{h} is now-ish: {v}");
    }

    let rs = app.requests_for(&retried);
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert_eq!(rs[1].body, retried_body.as_bytes());
    assert_eq!(
        (rs[0].receive_count(), rs[1].receive_count()),
        (1, 2),
        "ApproximateReceiveCount"
    );
    assert_eq!(
        rs[0].header("X-Aws-Sqsd-First-Received-At"),
        rs[1].header("X-Aws-Sqsd-First-Received-At"),
        "the first receive stays the first"
    );
    let back_after = rs[1].at - app.answer_to(&rs[0]).unwrap().at;
    assert!(back_after >= 0.9, "back after {back_after:.2}s, before 1 s");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_http_a_periodic_message_from_an_elastic_beanstalk_leader_is_posted_to_its_path() {
    let moto = Moto::start();
    let url = moto.create("eb", json!({}));
    let sb = Sandbox::new("http-sqs-eb-periodic");
    let app = App::start(sb.path(), "app", json!({}));
    sqs_chorefile(&sb, &moto, &sqs_queue("eb", &target(&app, "/jobs", ""), ""));
    // Exactly what the daemon's leader sends at a tick.
    let id = send_with(
        &moto,
        &url,
        "elasticbeanstalk scheduled job",
        json!({
            "beanstalk.sqsd.path": string_attr("/periodic/cleanup"),
            "beanstalk.sqsd.task_name": string_attr("cleanup"),
            "beanstalk.sqsd.scheduled_time": string_attr("2026-01-02 03:04:05 UTC"),
        }),
    );
    let mut master = start_sqs(&sb, "master");
    master.wait("the periodic post", || !app.requests_for(&id).is_empty());
    wait_empty(&master, &moto, &url);
    let rs = app.requests_for(&id);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let r = &rs[0];
    assert_eq!(
        r.path, "/periodic/cleanup",
        "the task's path, not the handler's"
    );
    assert_daemon_headers(r, &id, "eb", 1, "/periodic/cleanup");
    assert!(r.body.is_empty(), "an empty body: {r:?}");
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Aws-Sqsd-Taskname"), Some("cleanup"));
    assert_eq!(
        r.header("X-Aws-Sqsd-Scheduled-At"),
        Some("2026-01-02T03:04:05Z")
    );
    assert_eq!(r.header("X-Aws-Sqsd-Sender-Id"), Some(MOTO_SENDER_ID));
    assert!(
        !r.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().contains("beanstalk")),
        "{:?}",
        r.headers
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_http_the_heartbeat_keeps_a_slow_post_from_redelivery() {
    let moto = Moto::start();
    // Visible again 2 s after a receive; the application takes 5 s.
    let url = moto.create("slow", json!({"VisibilityTimeout": "2"}));
    let sb = Sandbox::new("http-sqs-heartbeat");
    let app = App::start(sb.path(), "app", json!({"default": {"delay": 5}}));
    sqs_chorefile(
        &sb,
        &moto,
        &sqs_queue("slow", &target(&app, "/", ""), "timeout = 10\n"),
    );
    let id = moto.send(&url, "{}");
    let mut master = start_sqs(&sb, "master");
    let mut lapses = Vec::new();
    let t0 = Instant::now();
    master.wait("the post answered and the message deleted", || {
        // The post is looked for first: counts sampled before it was made may still show
        // the message visible from before its receive.
        let posted = !app.requests().is_empty();
        let counts = moto.counts(&url);
        if posted && counts.0 > 0 {
            lapses.push((t0.elapsed(), counts));
        }
        counts == (0, 0, 0)
    });
    assert!(
        lapses.is_empty(),
        "the message became visible while its post ran ({} times; first (elapsed, \
         (visible, in flight, delayed)): {:?})",
        lapses.len(),
        lapses.first()
    );
    let rs = app.requests();
    assert_eq!(rs.len(), 1, "posted once: {rs:?}");
    assert_eq!((rs[0].msgid(), rs[0].receive_count()), (id.as_str(), 1));
    assert_eq!(app.answer_to(&rs[0]).map(|a| a.status), Some(200));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_http_nothing_is_received_while_the_application_is_down() {
    let moto = Moto::start();
    let url = moto.create("gated", json!({}));
    let sb = Sandbox::new("http-sqs-health");
    let port = free_port();
    let mut app = App::booting(sb.path(), "app", port, json!({}));
    sqs_chorefile(
        &sb,
        &moto,
        &sqs_queue(
            "gated",
            &format!("{{ url = \"http://127.0.0.1:{port}/\", error-visibility-timeout = 1 }}"),
            "",
        ),
    );
    let mut master = start_sqs(&sb, "master");
    master.wait_log("chore master started");
    moto.send(&url, "[1]");
    moto.send(&url, "[2]");
    master.assert_for(
        Duration::from_secs(3),
        "both messages visible, none received",
        || moto.counts(&url) == (2, 0, 0),
    );
    app.finish_booting();
    master.wait("both posted", || app.requests().len() >= 2);
    wait_empty(&master, &moto, &url);
    let rs = app.requests();
    assert_eq!(rs.len(), 2, "{rs:?}");
    assert!(
        rs.iter().all(|r| r.receive_count() == 1),
        "received only once the app listened: {rs:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// Retention. A message's first receive cannot be made old on moto in the test's time, so
// this moto is launched with one change: a message whose body starts `aged:` reports its
// first receive as two days ago. chore sees exactly what SQS would show for such a message.

const AGED_MOTO: &str = r#"
import sys, time
import moto.sqs.models as m
first = m.Message.mark_received
def mark_received(self, visibility_timeout=None):
    first(self, visibility_timeout)
    if self.body.startswith("aged:"):
        self.approximate_first_receive_timestamp = int((time.time() - 2 * 86400) * 1000)
m.Message.mark_received = mark_received
from moto.server import main
main(["-H", "127.0.0.1", "-p", sys.argv[1]])
"#;

fn aged_moto() -> Service {
    let server = program_path(
        "CHORE_TEST_MOTO_SERVER",
        None,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
    );
    Service::start(Spec {
        name: "moto_server (aged first receives)",
        program: server.with_file_name("python"),
        args: vec!["-c".into(), AGED_MOTO.into(), "{port}".into()],
        env: Vec::new(),
        patience: Duration::from_secs(60),
        install_hint: "moto_server's Python (CHORE_TEST_MOTO_SERVER); run scripts/test.sh",
    })
}

/// An SQS call to `svc` (as `support::moto` makes them).
fn sqs_call(svc: &Service, action: &str, input: Value) -> Value {
    let (status, body) = exchange(
        &svc.addr(),
        "POST",
        "/",
        &[
            ("X-Amz-Target", &format!("AmazonSQS.{action}")),
            ("Content-Type", "application/x-amz-json-1.0"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=0",
            ),
        ],
        input.to_string().as_bytes(),
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{action}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sqs_http_a_message_past_the_retention_period_is_deleted_unposted() {
    let svc = aged_moto();
    let sb = Sandbox::new("http-sqs-retention");
    let app = App::start(sb.path(), "app", json!({}));
    let url = sqs_call(&svc, "CreateQueue", json!({"QueueName": "aging"}))["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |body: &str| {
        sqs_call(
            &svc,
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body}),
        )["MessageId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let aged = send("aged: first received two days ago");
    let fresh = send("fresh");
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\n{}",
        svc.url(),
        sqs_queue("aging", &target(&app, "/", ", retention-period = 3600"), "")
    ));
    let mut master = start_sqs(&sb, "master");
    master.wait("the fresh message posted", || {
        !app.requests_for(&fresh).is_empty()
    });
    master.wait("the queue emptied", || {
        let out = sqs_call(
            &svc,
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["All"]}),
        );
        let n = |k: &str| out["Attributes"][k].as_str().unwrap_or("?").to_owned();
        n("ApproximateNumberOfMessages") == "0" && n("ApproximateNumberOfMessagesNotVisible") == "0"
    });
    assert!(
        app.requests_for(&aged).is_empty(),
        "the aged message was posted: {:?}",
        app.requests_for(&aged)
    );
    assert_eq!(app.requests().len(), 1);
    assert!(
        !log_lines(&master, &[&aged]).is_empty(),
        "a line says the aged message was deleted unposted:\n{}",
        master.log_text()
    );
    assert_eq!(master.stop().code(), Some(0));
}
