//! Messages through chore on SQS: a backlog, a long batch kept from redelivery by the
//! visibility heartbeat, Ruby Chore's bodies routed by class, AWS credentials kept from
//! workers, and the calls chore makes (batched sends and settlements).

use super::{enqueue, sqs_chorefile, start, wait_empty};
use crate::harness::*;
use crate::support::moto::{Moto, Msg};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[test]
fn sqs_a_backlog_is_processed_and_the_queue_left_empty() {
    let moto = Moto::start();
    let url = moto.create("backlog", json!({}));
    let bodies: Vec<String> = (0..30).map(|i| format!("{{\"n\":{i}}}")).collect();
    let ids = moto.send_all(&url, &bodies);
    let sb = Sandbox::new("sqs-backlog");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 2\nbatch-size = 5\nbatch-timeout = 0.5\n\
             [queues.backlog]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    master.wait("30 runs", || sb.runs("runs.txt").len() >= 30);
    wait_empty(&master, &moto, &url);
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 30, "each message ran once: {runs:?}");
    let seen: BTreeSet<&str> = runs.iter().map(|r| r.body.as_str()).collect();
    let want: BTreeSet<&str> = bodies.iter().map(String::as_str).collect();
    assert_eq!(seen, want);
    let seen_ids: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let want_ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(seen_ids, want_ids, "CHORE_MESSAGE_ID is the SQS message id");
    assert!(
        runs.iter().all(|r| r.attempt == 1 && r.queue == "backlog"),
        "{runs:?}"
    );
    assert_eq!(master.stop().code(), Some(0));
    assert_eq!(moto.counts(&url), (0, 0, 0));
}

#[test]
fn sqs_the_visibility_heartbeat_keeps_a_long_batch_from_redelivery() {
    let moto = Moto::start();
    // Messages are invisible for 2 s after a receive; the batch takes 5 × 1.5 s.
    let url = moto.create("slow", json!({"VisibilityTimeout": "2"}));
    let bodies: Vec<String> = (0..5).map(|i| format!("[{i}]")).collect();
    moto.send_all(&url, &bodies);
    let sb = Sandbox::new("sqs-heartbeat");
    let h = sb.recorder("job.sh", "runs.txt", "sleep 1.5");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 1\nbatch-size = 5\nbatch-timeout = 1\n\
             [queues.slow]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    // While the batch runs nothing may become visible again: another consumer (another
    // chore host) would run it a second time.
    let mut lapses = Vec::new();
    let t0 = Instant::now();
    master.wait_for("the batch to finish", Duration::from_secs(30), || {
        let started = !sb.runs("runs.txt").is_empty();
        let counts = moto.counts(&url);
        if started && counts.0 > 0 {
            lapses.push((t0.elapsed(), counts));
        }
        counts == (0, 0, 0)
    });
    let runs = sb.runs("runs.txt");
    assert!(
        lapses.is_empty(),
        "messages became visible again while chore held them, {} times; the first \
         (elapsed, (visible, in flight, delayed)): {:?}",
        lapses.len(),
        &lapses[..lapses.len().min(5)]
    );
    assert_eq!(runs.len(), 5, "each ran exactly once: {runs:?}");
    assert!(
        runs.iter().all(|r| r.attempt == 1),
        "never redelivered: {runs:?}"
    );
    let distinct: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(distinct.len(), 5);
    let span = runs[4].at - runs[0].at;
    assert!(span >= 5.5, "one batch, run one after another ({span:.2}s)");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_a_body_ruby_chore_publishes_is_routed_by_class() {
    let moto = Moto::start();
    let url = moto.create("rubyq", json!({}));
    let sb = Sandbox::new("sqs-ruby");
    let h = sb.recorder("job.sh", "runs.txt", "");
    let other = sb.recorder("other.sh", "other.txt", "");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "[queues.rubyq]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{other:?}]\n\
             classes = {{ MyJob = [{h:?}] }}\n"
        ),
    );
    let wire = r#"{"class":"MyJob","args":[1,"two"]}"#;
    // What `MyJob.perform_async(1, "two")` sends (one SendMessage), and the same job
    // published by `chore enqueue --class`.
    let ruby_id = moto.send(&url, wire);
    let ours = enqueue(&sb, &["--class", "MyJob", "rubyq", "[1,\"two\"]"], None);
    assert_eq!(ours.len(), 1);
    let mut master = start(&sb);
    master.wait("both jobs to run", || sb.runs("runs.txt").len() >= 2);
    wait_empty(&master, &moto, &url);
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert_eq!(r.body, wire, "the body untouched: {r:?}");
        assert_eq!(
            (r.class.as_str(), r.attempt, r.queue.as_str()),
            ("MyJob", 1, "rubyq")
        );
    }
    let ids: BTreeSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from([ruby_id.as_str(), ours[0].as_str()]));
    assert!(sb.runs("other.txt").is_empty(), "routed by class");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_workers_see_aws_credentials_only_when_their_queue_asks() {
    let moto = Moto::start();
    let secretive = moto.create("secretive", json!({}));
    let trusted = moto.create("trusted", json!({}));
    let sb = Sandbox::new("sqs-creds");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "env | grep '^AWS_' | sort > \"env-$CHORE_QUEUE.tmp\"\nmv \"env-$CHORE_QUEUE.tmp\" \"env-$CHORE_QUEUE.txt\"",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "[queues.secretive]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n\
             [queues.trusted]\nbackend = \"sqs\"\nwait-time = 1\npass-aws-credentials = true\n\
             handler = [{h:?}]\n"
        ),
    );
    moto.send(&secretive, "{}");
    moto.send(&trusted, "{}");
    let mut master = sb.start_with_env(
        "master",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDFORTEST"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-for-test"),
            ("AWS_SESSION_TOKEN", "token-for-test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    master.wait("both jobs", || {
        sb.file("env-secretive.txt").exists() && sb.file("env-trusted.txt").exists()
    });
    let hidden = sb.read("env-secretive.txt");
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    ] {
        assert!(
            !hidden.contains(var),
            "{var} reached a worker of a queue without pass-aws-credentials:\n{hidden}"
        );
    }
    assert!(!hidden.contains("s3cr3t-for-test"), "{hidden}");
    let shown = sb.read("env-trusted.txt");
    for var in [
        "AWS_SECRET_ACCESS_KEY=s3cr3t-for-test",
        "AWS_SESSION_TOKEN=token-for-test",
        "AWS_ACCESS_KEY_ID=AKIDFORTEST",
    ] {
        assert!(
            shown.lines().any(|l| l == var),
            "pass-aws-credentials = true, yet no {var}:\n{shown}"
        );
    }
    wait_empty(&master, &moto, &secretive);
    wait_empty(&master, &moto, &trusted);
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_enqueue_publishes_many_lines_in_batches_with_a_delay() {
    let sb = Sandbox::new("sqs-enqueue");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("bulk", json!({}));
    sqs_chorefile(
        &sb,
        &moto,
        "[queues.bulk]\nbackend = \"sqs\"\nhandler = [\"true\"]\n",
    );
    let bodies: Vec<String> = (0..25).map(|i| format!("{{\"line\":{i}}}")).collect();
    let input: String = bodies.iter().map(|b| format!("{b}\n")).collect();
    moto.record();
    let t0 = Instant::now();
    let ids = enqueue(&sb, &["--delay", "2", "bulk", "-"], Some(&input));
    let calls = moto.recorded();
    assert_eq!(ids.len(), 25, "one id per line: {ids:?}");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 25);
    let n = |a: &str| calls.get(a).map_or(0, Vec::len);
    assert_eq!(
        (n("SendMessageBatch"), n("SendMessage")),
        (3, 0),
        "25 lines: three SendMessageBatch calls: {:?}",
        calls.keys().collect::<Vec<_>>()
    );
    for input in &calls["SendMessageBatch"] {
        for e in input["Entries"].as_array().unwrap() {
            assert_eq!(e["DelaySeconds"], 2, "--delay on every entry: {e}");
        }
    }
    // Delayed: nothing to receive until two seconds after the first send.
    let mut got: Vec<Msg> = Vec::new();
    let mut first_at = None;
    wait_until("the delayed messages", PATIENCE, || {
        let r = moto.receive(&url, 60);
        if !r.is_empty() && first_at.is_none() {
            first_at = Some(t0.elapsed());
        }
        got.extend(r);
        got.len() >= 25
    });
    let first_at = first_at.unwrap();
    assert!(
        first_at >= Duration::from_millis(1900),
        "sent with --delay 2 yet received after {first_at:?}"
    );
    let got_bodies: BTreeSet<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(got_bodies, bodies.iter().map(String::as_str).collect());
    let got_ids: BTreeSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got_ids, ids.iter().map(String::as_str).collect());
}

#[test]
fn sqs_settling_uses_batch_calls() {
    let sb = Sandbox::new("sqs-calls");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("counted", json!({}));
    let bodies: Vec<String> = (0..100).map(|i| format!("{{\"n\":{i}}}")).collect();
    moto.send_all(&url, &bodies);
    // A handler as quick as real ones get: starting any script takes about this long.
    let h = sb.recorder("job.sh", "runs.txt", "sleep 0.05");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 2\nbatch-size = 50\nbatch-timeout = 1\n\
             [queues.counted]\nbackend = \"sqs\"\nhandler = [{h:?}]\n"
        ),
    );
    moto.record();
    let mut master = start(&sb);
    master.wait("100 runs", || sb.runs("runs.txt").len() >= 100);
    wait_empty(&master, &moto, &url);
    assert_eq!(master.stop().code(), Some(0));
    let calls = moto.recorded();
    let n = |a: &str| calls.get(a).map_or(0, Vec::len);
    let summary: BTreeMap<&str, usize> = calls.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    eprintln!("SQS calls for 100 messages: {summary:?}");
    assert_eq!(sb.runs("runs.txt").len(), 100);
    assert_eq!(n("DeleteMessage"), 0, "no single deletes: {summary:?}");
    assert_eq!(n("ChangeMessageVisibility"), 0, "{summary:?}");
    let sizes: Vec<usize> = calls
        .get("DeleteMessageBatch")
        .map(|cs| {
            cs.iter()
                .map(|c| c["Entries"].as_array().map_or(0, Vec::len))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        100,
        "every message deleted in a batch call: {summary:?}"
    );
    // Under a backlog the deletes fill their calls: ten entries each, give or take.
    assert!(
        sizes.len() <= 15,
        "{} DeleteMessageBatch calls for 100 messages under a backlog, {:.1} entries per \
         call (entries per call: {sizes:?}); all calls: {summary:?}",
        sizes.len(),
        100.0 / sizes.len() as f64
    );
    // One receive per ten messages, plus the parked long polls at the end.
    assert!(n("ReceiveMessage") <= 15, "{summary:?}");
}

#[test]
fn sqs_a_partial_batch_after_a_full_receive_starts_before_the_batch_timeout() {
    // Ten or twenty messages fill every receive they take, so only the next receive can
    // say the queue has no more: it must not be a 20 s long poll.
    let sb = Sandbox::new("sqs-burst");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("burst", json!({}));
    let h = sb.recorder("job.sh", "runs.txt", "");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 2\nbatch-size = 50\nbatch-timeout = 20\n\
             [queues.burst]\nbackend = \"sqs\"\nwait-time = 20\nhandler = [{h:?}]\n"
        ),
    );
    moto.record();
    let mut master = start(&sb);
    let long_polls = || {
        moto.recording()
            .iter()
            .filter(|r| {
                r.action == "ReceiveMessage" && r.input["WaitTimeSeconds"].as_i64() == Some(20)
            })
            .count()
    };
    let (mut done, mut polls_before) = (0, 0);
    for burst in [10, 20] {
        // Idle: the consumer has parked a long poll since the last burst.
        master.wait("a parked long poll", || long_polls() > polls_before);
        std::thread::sleep(Duration::from_millis(500));
        polls_before = long_polls();
        let bodies: Vec<String> = (0..burst).map(|i| format!("{{\"n\":{i}}}")).collect();
        let t0 = Instant::now();
        moto.send_all(&url, &bodies);
        done += burst;
        master.wait_for(
            &format!("a burst of {burst} to run, well before the 20 s batch-timeout"),
            Duration::from_secs(10),
            || sb.runs("runs.txt").len() >= done,
        );
        eprintln!("a burst of {burst} ran within {:?}", t0.elapsed());
        wait_empty(&master, &moto, &url);
    }
    assert_eq!(sb.runs("runs.txt").len(), 30);
    assert_eq!(master.stop().code(), Some(0));
}
