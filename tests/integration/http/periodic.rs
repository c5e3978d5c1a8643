//! Periodic tasks (`cron.yaml`): each tick becomes one message, posted to the task's path
//! with an empty body and the task headers; two masters on one queue still send one
//! message per tick (filesystem, SQS with memcached, FIFO SQS); on SQS the message has the
//! Elastic Beanstalk leader's form; a mistake in cron.yaml stops the start.
//!
//! Schedules here have six fields (`cron-seconds = true`), a tick every two seconds.

use super::{fs_queue, is_iso_z, iso_z_secs, put_raw, sqs_chorefile, sqs_queue, start_sqs, target};
use crate::harness::*;
use crate::support::app::{App, Request};
use crate::support::memcached::Memcached;
use crate::support::moto::Moto;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A cron.yaml with one task `name` posting to `url` every two seconds.
fn every_two_seconds(sb: &Sandbox, name: &str, url: &str) {
    sb.write(
        "cron.yaml",
        &format!(
            "version: 1\ncron:\n  - name: \"{name}\"\n    url: \"{url}\"\n    \
             schedule: \"*/2 * * * * *\"\n    description: an unknown key, ignored\n"
        ),
    );
}

const CRON_KEYS: &str = "cron-file = \"cron.yaml\"\ncron-seconds = true\n";

/// The periodic requests the app received, by the tick they were scheduled for (unix
/// seconds).
fn by_tick(app: &App) -> BTreeMap<i64, Vec<Request>> {
    let mut ticks: BTreeMap<i64, Vec<Request>> = BTreeMap::new();
    for r in app.requests().into_iter().filter(Request::is_periodic) {
        let at = r.header("X-Aws-Sqsd-Scheduled-At").unwrap_or("").to_owned();
        assert!(is_iso_z(&at), "Scheduled-At {at:?}: {r:?}");
        ticks.entry(iso_z_secs(&at)).or_default().push(r);
    }
    ticks
}

/// A periodic request for task `task` at `path`: empty body, the ordinary headers plus
/// the task's, scheduled on an even second, and posted around then.
fn assert_periodic(r: &Request, queue: &str, task: &str, path: &str) {
    assert_eq!(r.path, path, "{r:?}");
    super::assert_daemon_headers(r, r.msgid(), queue, 1, path);
    assert!(!r.msgid().is_empty(), "{r:?}");
    assert!(r.body.is_empty(), "an empty body: {r:?}");
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("User-Agent"), Some("aws-sqsd/3.0.4"));
    assert_eq!(r.header("X-Aws-Sqsd-Taskname"), Some(task));
    let tick = iso_z_secs(r.header("X-Aws-Sqsd-Scheduled-At").unwrap());
    assert_eq!(tick % 2, 0, "*/2 ticks on even seconds: {r:?}");
    let late = r.at - tick as f64;
    assert!(
        (-1.5..10.0).contains(&late),
        "posted {late:.2}s after its tick: {r:?}"
    );
}

/// Every tick from the first to the last, each exactly once.
fn assert_one_per_tick(ticks: &BTreeMap<i64, usize>, what: &str) {
    let (first, last) = (
        *ticks.keys().next().unwrap(),
        *ticks.keys().next_back().unwrap(),
    );
    let want: BTreeMap<i64, usize> = (first..=last).step_by(2).map(|t| (t, 1)).collect();
    assert_eq!(ticks, &want, "{what}: ticks (unix seconds) → how many");
}

#[test]
fn http_periodic_tasks_are_posted_each_tick_on_a_filesystem_queue() {
    let sb = Sandbox::new("http-cron-fs");
    let app = App::start(sb.path(), "app", json!({}));
    every_two_seconds(&sb, "tick", "/tasks/tick");
    sb.chorefile(&fs_queue("ticks", &target(&app, "/jobs", ""), CRON_KEYS));
    // A periodic message in the filesystem form, written by hand.
    let by_hand = put_raw(
        &sb,
        "ticks",
        br#"{"beanstalk.sqsd.path":"/legacy","beanstalk.sqsd.task_name":"legacy","beanstalk.sqsd.scheduled_time":"2026-11-29 17:00:00 UTC"}"#,
    );
    let mut master = sb.start(&[]);
    master.wait("three ticks posted", || {
        by_tick(&app)
            .values()
            .filter(|rs| rs[0].path == "/tasks/tick")
            .count()
            >= 3
    });
    assert_eq!(master.stop().code(), Some(0));
    let legacy = app.requests_for(&by_hand);
    assert_eq!(legacy.len(), 1, "{legacy:?}");
    assert_eq!(legacy[0].path, "/legacy");
    assert!(legacy[0].body.is_empty());
    assert_eq!(legacy[0].header("X-Aws-Sqsd-Taskname"), Some("legacy"));
    assert_eq!(
        legacy[0].header("X-Aws-Sqsd-Scheduled-At"),
        Some("2026-11-29T17:00:00Z")
    );
    let ticks: BTreeMap<i64, usize> = by_tick(&app)
        .into_iter()
        .filter(|(_, rs)| rs[0].path == "/tasks/tick")
        .map(|(t, rs)| {
            for r in &rs {
                assert_periodic(r, "ticks", "tick", "/tasks/tick");
            }
            (t, rs.len())
        })
        .collect();
    assert_one_per_tick(&ticks, "one master");
    assert!(
        app.requests().iter().all(|r| r.path != "/jobs"),
        "no ordinary posts"
    );
}

#[test]
fn http_two_masters_on_a_filesystem_queue_post_one_request_per_tick() {
    let sb = Sandbox::new("http-cron-fs-two");
    let app = App::start(sb.path(), "app", json!({}));
    every_two_seconds(&sb, "tick", "/tick");
    sb.chorefile(&fs_queue("ticks", &target(&app, "/", ""), CRON_KEYS));
    let mut one = sb.start_as("one", &[]);
    let mut two = sb.start_as("two", &[]);
    one.wait("four ticks posted", || by_tick(&app).len() >= 4);
    assert!(two.running(), "{}", two.log_text());
    assert_eq!(one.stop().code(), Some(0));
    assert_eq!(two.stop().code(), Some(0));
    let mut ticks: BTreeMap<i64, usize> = by_tick(&app)
        .into_iter()
        .map(|(t, rs)| {
            for r in &rs {
                assert_periodic(r, "ticks", "tick", "/tick");
            }
            (t, rs.len())
        })
        .collect();
    // Ticks sent but not posted before the stop wait in new/: they were sent once too.
    let q = sb.queue("ticks");
    for name in q.new_files() {
        let body: Value = serde_json::from_str(&q.read("new", &name)).unwrap();
        let at = body["beanstalk.sqsd.scheduled_time"].as_str().unwrap();
        let iso = format!("{}T{}Z", &at[..10], &at[11..19]);
        *ticks.entry(iso_z_secs(&iso)).or_default() += 1;
    }
    assert_one_per_tick(&ticks, "two masters");
}

/// The periodic sends moto recorded: each SendMessage (or batch entry, with its batch's
/// QueueUrl) whose body is the leader's, as its input.
fn periodic_sends(moto: &Moto) -> Vec<Value> {
    let calls = moto.recorded();
    let mut out = Vec::new();
    for input in calls.get("SendMessage").into_iter().flatten() {
        out.push(input.clone());
    }
    for input in calls.get("SendMessageBatch").into_iter().flatten() {
        for e in input["Entries"].as_array().unwrap() {
            let mut e = e.clone();
            e["QueueUrl"] = input["QueueUrl"].clone();
            out.push(e);
        }
    }
    out.retain(|e| e["MessageBody"] == "elasticbeanstalk scheduled job");
    out
}

/// The three attributes of a leader's message: (path, task name, scheduled time).
fn leader_attributes(send: &Value) -> (String, String, String) {
    let attrs = send["MessageAttributes"].as_object().unwrap();
    assert_eq!(attrs.len(), 3, "exactly three attributes: {send}");
    let get = |k: &str| {
        assert_eq!(attrs[k]["DataType"], "String", "{send}");
        attrs[k]["StringValue"].as_str().unwrap().to_owned()
    };
    let scheduled = get("beanstalk.sqsd.scheduled_time");
    // `YYYY-MM-DD HH:MM:SS UTC`
    let iso = format!(
        "{}T{}Z",
        &scheduled[..10],
        scheduled.get(11..19).unwrap_or("")
    );
    assert!(
        is_iso_z(&iso)
            && &scheduled[10..11] == " "
            && scheduled.ends_with(" UTC")
            && scheduled.len() == 23,
        "scheduled_time {scheduled:?}"
    );
    (
        get("beanstalk.sqsd.path"),
        get("beanstalk.sqsd.task_name"),
        iso,
    )
}

#[test]
fn sqs_http_a_tick_is_sent_in_the_elastic_beanstalk_leaders_form() {
    let sb = Sandbox::new("http-cron-sqs");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("sched", json!({}));
    let app = App::start(sb.path(), "app", json!({}));
    every_two_seconds(&sb, "report", "/tasks/report");
    sqs_chorefile(
        &sb,
        &moto,
        &sqs_queue("sched", &target(&app, "/", ""), CRON_KEYS),
    );
    moto.record();
    let mut master = start_sqs(&sb, "master");
    master.wait("two ticks posted", || by_tick(&app).len() >= 2);
    assert_eq!(master.stop().code(), Some(0));
    let sends = periodic_sends(&moto);
    assert!(!sends.is_empty(), "no periodic SendMessage recorded");
    let mut sent_ticks = BTreeMap::new();
    for s in &sends {
        assert_eq!(s["QueueUrl"], url.as_str(), "{s}");
        assert!(s.get("MessageGroupId").is_none(), "a standard queue: {s}");
        let (path, task, at) = leader_attributes(s);
        assert_eq!((path.as_str(), task.as_str()), ("/tasks/report", "report"));
        *sent_ticks.entry(iso_z_secs(&at)).or_insert(0) += 1;
    }
    assert_one_per_tick(&sent_ticks, "one master's sends");
    for (tick, rs) in by_tick(&app) {
        assert!(
            sent_ticks.contains_key(&tick),
            "posted a tick never sent: {tick}"
        );
        for r in &rs {
            assert_periodic(r, "sched", "report", "/tasks/report");
            assert!(r.header("X-Aws-Sqsd-Sender-Id").is_some(), "{r:?}");
            assert!(
                !r.headers
                    .iter()
                    .any(|(k, _)| k.to_ascii_lowercase().contains("beanstalk")),
                "{:?}",
                r.headers
            );
        }
    }
}

#[test]
fn sqs_http_two_masters_send_one_message_per_tick_through_memcached() {
    let sb = Sandbox::new("http-cron-sqs-two");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let memcached = Memcached::start();
    moto.create("shared", json!({}));
    let app = App::start(sb.path(), "app", json!({}));
    every_two_seconds(&sb, "sweep", "/sweep");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "dedupe-servers = {:?}\n{}",
            memcached.addr(),
            sqs_queue("shared", &target(&app, "/", ""), CRON_KEYS)
        ),
    );
    moto.record();
    let mut one = start_sqs(&sb, "one");
    let mut two = start_sqs(&sb, "two");
    one.wait("four ticks posted", || by_tick(&app).len() >= 4);
    assert!(two.running(), "{}", two.log_text());
    assert_eq!(one.stop().code(), Some(0));
    assert_eq!(two.stop().code(), Some(0));
    let mut sent_ticks = BTreeMap::new();
    for s in periodic_sends(&moto) {
        let (_, task, at) = leader_attributes(&s);
        assert_eq!(task, "sweep");
        *sent_ticks.entry(iso_z_secs(&at)).or_insert(0) += 1;
    }
    assert_one_per_tick(&sent_ticks, "two masters' sends");
    for (tick, rs) in by_tick(&app) {
        let ids: std::collections::BTreeSet<&str> = rs.iter().map(|r| r.msgid()).collect();
        assert_eq!(ids.len(), 1, "tick {tick}: one message: {rs:?}");
    }
}

#[test]
fn sqs_http_two_masters_on_a_fifo_queue_send_one_message_per_tick() {
    let sb = Sandbox::new("http-cron-fifo");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("ticks.fifo", json!({"FifoQueue": "true"}));
    let app = App::start(sb.path(), "app", json!({}));
    every_two_seconds(&sb, "tick", "/tick");
    sqs_chorefile(
        &sb,
        &moto,
        &sqs_queue(
            "ticks",
            &target(&app, "/", ""),
            &format!("url = {url:?}\n{CRON_KEYS}"),
        ),
    );
    moto.record();
    let mut one = start_sqs(&sb, "one");
    let mut two = start_sqs(&sb, "two");
    one.wait("three ticks posted", || by_tick(&app).len() >= 3);
    assert!(two.running(), "{}", two.log_text());
    assert_eq!(one.stop().code(), Some(0));
    assert_eq!(two.stop().code(), Some(0));
    let sends = periodic_sends(&moto);
    assert!(!sends.is_empty());
    for s in &sends {
        let (_, task, at) = leader_attributes(s);
        assert_eq!(
            s["MessageGroupId"],
            task.as_str(),
            "the group is the task: {s}"
        );
        assert_eq!(
            s["MessageDeduplicationId"],
            format!("{task}-{}", iso_z_secs(&at)).as_str(),
            "deduplicated by task and tick: {s}"
        );
    }
    let ticks: BTreeMap<i64, usize> = by_tick(&app)
        .into_iter()
        .map(|(tick, rs)| {
            for r in &rs {
                assert_eq!(
                    r.header("X-Aws-Sqsd-Queue"),
                    Some("ticks.fifo"),
                    "the last segment of the queue URL: {r:?}"
                );
            }
            let ids: std::collections::BTreeSet<&str> = rs.iter().map(|r| r.msgid()).collect();
            (tick, ids.len())
        })
        .collect();
    assert_one_per_tick(&ticks, "two masters on a FIFO queue: messages per tick");
}

#[test]
fn http_a_mistake_in_cron_yaml_stops_the_start_naming_the_entry() {
    let cases: [(&str, &str, bool, &[&str]); 5] = [
        (
            "no-version",
            "cron:\n  - name: nightly\n    url: /nightly\n    schedule: \"0 23 * * *\"\n",
            false,
            &["version"],
        ),
        (
            "bad-version",
            "version: 2\ncron:\n  - name: nightly\n    url: /nightly\n    schedule: \"0 23 * * *\"\n",
            false,
            &["version"],
        ),
        (
            "bad-schedule",
            "version: 1\ncron:\n  - name: ok\n    url: /ok\n    schedule: \"0 23 * * *\"\n  \
             - name: broken\n    url: /broken\n    schedule: \"61 * * * *\"\n",
            false,
            &["broken"],
        ),
        (
            "no-url",
            "version: 1\ncron:\n  - name: nourl\n    schedule: \"0 23 * * *\"\n",
            false,
            &["nourl", "url"],
        ),
        (
            "six-fields",
            "version: 1\ncron:\n  - name: sixer\n    url: /six\n    schedule: \"*/2 * * * * *\"\n",
            false,
            &["sixer"],
        ),
    ];
    for (label, yaml, seconds, needles) in cases {
        let sb = Sandbox::new(&format!("http-cron-bad-{label}"));
        sb.write("cron.yaml", yaml);
        sb.chorefile(&fs_queue(
            "ticks",
            "\"http://127.0.0.1:9/\"",
            &format!("cron-file = \"cron.yaml\"\ncron-seconds = {seconds}\n"),
        ));
        let cf = sb.chorefile_path();
        let args = ["-c", cf.to_str().unwrap()];
        let out = sb.run(&args);
        let line = one_line_exit_2(&out, &args);
        for n in needles {
            assert!(line.contains(n), "{label}: {n:?} not in {line:?}");
        }
        assert!(
            line.contains("cron.yaml"),
            "{label}: names the file: {line:?}"
        );
    }
}
