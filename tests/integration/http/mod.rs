//! HTTP handlers and periodic tasks: the real `chore` binary posting to a real HTTP server
//! (`support::app`, a small Python application that records every request and answers as
//! the test tells it), on filesystem queues, and on SQS (moto) where the test needs SQS's
//! attributes, visibility or FIFO deduplication. What is checked is the contract in
//! docs/elastic-beanstalk.md: the request the Elastic Beanstalk SQS daemon sends, how its
//! answer settles the message, and `cron.yaml` periodic tasks.
//!
//! The tests are grouped by what they exercise: `request` (the request's shape),
//! `settlement` (answers, failures and retries), `flow` (connections, keep-alive, routing,
//! the health gate, draining), `sqs` (attributes, receive counts, the visibility heartbeat,
//! retention), `periodic` (cron.yaml).

mod flow;
mod periodic;
mod request;
mod settlement;
mod sqs;

use crate::harness::*;
use crate::support::app::{App, Request};
use crate::support::moto::{AWS_ENV, Moto};
use std::sync::atomic::{AtomicUsize, Ordering};

/// An HTTP handler table posting to `path` on `app`, failures back after 1 s, then `extra`
/// (more `key = value` pairs, comma first).
fn target(app: &App, path: &str, extra: &str) -> String {
    format!(
        "{{ url = {:?}, error-visibility-timeout = 1{extra} }}",
        app.url(path)
    )
}

/// A filesystem queue `name` whose handler is `handler` (an HTTP handler table), then
/// `extra` lines.
fn fs_queue(name: &str, handler: &str, extra: &str) -> String {
    format!("[queues.{name}]\nhandler = {handler}\n{extra}")
}

/// Write the Chorefile for SQS on `moto`: its endpoint, then `text`.
fn sqs_chorefile(sb: &Sandbox, moto: &Moto, text: &str) {
    sb.chorefile(&format!("sqs-endpoint = {:?}\n{text}", moto.endpoint()));
}

/// An SQS queue table (long polls of a second, so a drain is quick).
fn sqs_queue(name: &str, handler: &str, extra: &str) -> String {
    format!("[queues.{name}]\nbackend = \"sqs\"\nwait-time = 1\nhandler = {handler}\n{extra}")
}

/// Start a master with the AWS variables (for SQS), logging to `<label>.log`.
fn start_sqs(sb: &Sandbox, label: &str) -> Master {
    sb.start_with_env(label, &[], &AWS_ENV)
}

/// Put a message with any body straight into a filesystem queue's `new/`, named as a
/// publisher names it (for bodies `chore enqueue` would refuse: not JSON); its id.
fn put_raw(sb: &Sandbox, queue: &str, body: &[u8]) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "{queue}-Raw-{}-20260101-000000-{:06}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    sb.queue(queue).put("new", &format!("{id}.0.job"), body);
    id
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as the daemon writes times.
fn is_iso_z(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

/// Unix seconds of a `YYYY-MM-DDTHH:MM:SSZ` time (UTC), by the days-from-civil rule.
fn iso_z_secs(s: &str) -> i64 {
    assert!(is_iso_z(s), "not YYYY-MM-DDTHH:MM:SSZ: {s:?}");
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The headers every request carries: the daemon's set, in the daemon's formats; the
/// message is `id` of `queue`, received for the `count`th time, posted to `path`.
fn assert_daemon_headers(r: &Request, id: &str, queue: &str, count: u32, path: &str) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.version, "HTTP/1.1", "{r:?}");
    assert_eq!(r.header("X-Aws-Sqsd-Msgid"), Some(id), "{r:?}");
    assert_eq!(r.header("X-Aws-Sqsd-Queue"), Some(queue), "{r:?}");
    assert_eq!(
        r.header("X-Aws-Sqsd-Receive-Count"),
        Some(count.to_string().as_str()),
        "{r:?}"
    );
    assert_eq!(r.header("X-Aws-Sqsd-Path"), Some(path), "{r:?}");
    for h in ["X-Aws-Sqsd-Sent-At", "X-Aws-Sqsd-First-Received-At"] {
        if let Some(v) = r.header(h) {
            assert!(is_iso_z(v), "{h}: {v:?} is not YYYY-MM-DDTHH:MM:SSZ");
        }
    }
    // Exactly one of each: a repeated header is read differently by different servers.
    for h in [
        "Host",
        "User-Agent",
        "Content-Type",
        "Content-Length",
        "X-Aws-Sqsd-Msgid",
        "X-Aws-Sqsd-Queue",
        "X-Aws-Sqsd-Receive-Count",
        "X-Aws-Sqsd-Path",
    ] {
        assert_eq!(r.header_count(h), 1, "{h} once: {:?}", r.headers);
    }
    let length: usize = r.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(length, r.body.len(), "Content-Length is the body's: {r:?}");
    assert!(
        r.header("Transfer-Encoding").is_none() && r.header("Content-Encoding").is_none(),
        "neither chunked nor compressed: {:?}",
        r.headers
    );
    // Applications (Active Elastic Job) check that daemon requests come from loopback.
    assert_eq!(r.peer, "127.0.0.1", "{r:?}");
    for h in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
        assert!(r.header(h).is_none(), "chore added {h}: {:?}", r.headers);
    }
}

/// The master's log lines that mention every one of `needles`.
fn log_lines(master: &Master, needles: &[&str]) -> Vec<String> {
    master
        .log_text()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Does a log line give `count` as the message's receive count? Accepts the daemon's
/// `(<count>)` and the `key=value` spellings of chore's log.
fn names_count(line: &str, count: u32) -> bool {
    [
        format!("({count})"),
        format!("receive_count={count}"),
        format!("receive-count={count}"),
        format!("attempt={count}"),
        format!("count={count}"),
    ]
    .iter()
    .any(|s| line.contains(s.as_str()))
}

/// Does a log line give an elapsed time: an `elapsed` field, or seconds written with a
/// fraction and a unit (`1.002s`, `1.002 s`, `850.1ms`)?
fn names_elapsed(line: &str) -> bool {
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || "=\"(),;:".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let decimal =
        |n: &str| n.contains('.') && n.replace('.', "").chars().all(|c| c.is_ascii_digit());
    line.contains("elapsed")
        || words.iter().enumerate().any(|(i, w)| {
            let unit = |u: &str| ["s", "ms", "sec", "secs", "seconds"].contains(&u);
            let glued = ["ms", "s"]
                .iter()
                .any(|u| w.strip_suffix(u).is_some_and(decimal));
            glued || (decimal(w) && words.get(i + 1).is_some_and(|u| unit(u)))
        })
}

#[test]
fn an_elapsed_time_is_recognised_in_its_spellings() {
    for yes in [
        "x (after 0.001 s)",
        "took 1.5s",
        "a elapsed_secs=2",
        "in 850.1ms,",
    ] {
        assert!(names_elapsed(yes), "{yes}");
    }
    for no in ["retry_in_secs=1.0 error=x", "attempt=2", "version 1.0"] {
        assert!(!names_elapsed(no), "{no}");
    }
}
