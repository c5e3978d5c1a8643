//! SQS queues: the real `chore` binary against moto (an SQS emulator) on loopback.
//!
//! Each test starts its own moto (about half a second), so no test sees another's queues,
//! calls or recordings, and one can stop and restart its emulator. The tests use
//! `support::moto`'s client to create queues with the attributes they need, to publish as
//! another producer would, and to look at what is left in a queue afterwards.
//!
//! Assertions hold on real SQS too: moto's receive takes no lock, so two receivers on one
//! queue may now and then get the same message, as SQS's at-least-once delivery allows;
//! "exactly once" is only asserted where a single consumer thread receives.

use crate::harness::*;
use crate::support::moto::{AWS_ENV, Moto, Msg};
use crate::support::service::free_port;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Write the Chorefile: the endpoint of `moto`, then `text`.
fn sqs_chorefile(sb: &Sandbox, moto: &Moto, text: &str) {
    sb.chorefile(&format!("sqs-endpoint = {:?}\n{text}", moto.endpoint()));
}

/// Start the master with the AWS variables.
fn start(sb: &Sandbox) -> Master {
    sb.start_with_env("master", &[], &AWS_ENV)
}

/// `chore ARGS` with the AWS variables (and `stdin`).
fn chore(sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    sb.run_with_env(args, stdin, &AWS_ENV)
}

/// `chore enqueue -c Chorefile ARGS…` with the AWS variables, which must succeed: the
/// ids it printed.
fn enqueue(sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> Vec<String> {
    sb.enqueue_lines(args, stdin, &AWS_ENV)
}

/// Wait until the queue holds nothing: no visible, in-flight or delayed messages.
fn wait_empty(master: &Master, moto: &Moto, url: &str) {
    master.wait("the SQS queue to be empty", || moto.is_empty(url));
}

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
fn sqs_a_failed_attempt_reappears_after_its_backoff() {
    let moto = Moto::start();
    let url = moto.create("flaky", json!({}));
    let sb = Sandbox::new("sqs-retry");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "if [ \"$CHORE_ATTEMPT\" = 1 ]; then date +%s.%N > failed-at.txt; exit 1; fi\nexit 0",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "batch-size = 1\n[queues.flaky]\nbackend = \"sqs\"\nwait-time = 1\n\
             backoff = 3\nmax-attempts = 3\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    let id = moto.send(&url, "{\"flaky\":true}");
    master.wait("the second attempt", || sb.runs("runs.txt").len() >= 2);
    wait_empty(&master, &moto, &url);
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r.id == id && r.body == "{\"flaky\":true}"),
        "{runs:?}"
    );
    assert_eq!(
        (runs[0].attempt, runs[1].attempt),
        (1, 2),
        "CHORE_ATTEMPT follows ApproximateReceiveCount"
    );
    // From the end of the failed attempt to the start of the next.
    let failed_at: f64 = sb.read("failed-at.txt").trim().parse().unwrap();
    let gap = runs[1].at - failed_at;
    assert!(
        gap >= 2.5,
        "a 3 s backoff, yet the message was offered again {gap:.2}s after the failure"
    );
    assert!(gap < 7.0, "a 3 s backoff took {gap:.2}s");
    assert!(master.log_text().contains("will retry"));
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_max_attempts_sends_the_message_to_the_dead_letter_queue_and_the_hook() {
    let moto = Moto::start();
    let sb = Sandbox::new("sqs-dlq");
    let h = sb.recorder("job.sh", "runs.txt", "exit 3");
    let hook = sb.script(
        "dead.sh",
        "cat > dead-body.tmp\n\
         printf '%s|%s|%s|%s\\n' \"$CHORE_QUEUE\" \"$CHORE_MESSAGE_ID\" \"$CHORE_ATTEMPT\" \"$CHORE_REASON\" > dead-env.tmp\n\
         mv dead-body.tmp dead-body.txt\nmv dead-env.tmp dead-env.txt",
    );
    // Neither queue exists: `create` makes both.
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "batch-size = 1\n[queues.doomed]\nbackend = \"sqs\"\ncreate = true\nwait-time = 1\n\
             dead-letter-queue = \"doomed-dead\"\nbackoff = 1\nmax-attempts = 2\n\
             handler = [{h:?}]\non-permanent-failure = [{hook:?}]\n"
        ),
    );
    let mut master = start(&sb);
    master.wait_log("chore master started");
    let url = moto.queue_url("doomed").expect("chore created the queue");
    let dlq = moto
        .queue_url("doomed-dead")
        .expect("chore created the dead-letter queue");
    let body = r#"{"doomed":[1,2,3]}"#;
    let id = moto.send(&url, body);
    master.wait("the hook to be told", || sb.file("dead-env.txt").exists());
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0].attempt, runs[1].attempt), (1, 2));
    assert_eq!(
        sb.read("dead-body.txt"),
        body,
        "the hook gets the body on stdin"
    );
    let env = sb.read("dead-env.txt");
    let f: Vec<&str> = env.trim_end().splitn(4, '|').collect();
    assert_eq!(&f[..3], &["doomed", id.as_str(), "2"], "hook env: {env:?}");
    assert!(!f[3].is_empty(), "CHORE_REASON is set: {env:?}");
    // The dead letter: in the dead-letter queue, gone from the queue.
    let mut dead = Vec::new();
    master.wait("the dead letter in the dead-letter queue", || {
        dead.extend(moto.drain(&dlq));
        !dead.is_empty()
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, body);
    wait_empty(&master, &moto, &url);
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("dead-lettered") && l.contains(&id)),
        "the dead letter is logged with its id:\n{log}"
    );
    assert_eq!(master.stop().code(), Some(0));
    assert!(moto.drain(&dlq).is_empty(), "one dead letter only");
    assert_eq!(sb.runs("runs.txt").len(), 2);
}

#[test]
fn sqs_max_attempts_without_a_dead_letter_queue_deletes_the_message() {
    let moto = Moto::start();
    // A 2 s visibility timeout: a message left undeleted would soon come back.
    let url = moto.create("fatal", json!({"VisibilityTimeout": "2"}));
    let sb = Sandbox::new("sqs-no-dlq");
    let h = sb.recorder("job.sh", "runs.txt", "exit 1");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "batch-size = 1\n[queues.fatal]\nbackend = \"sqs\"\nwait-time = 1\n\
             max-attempts = 1\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    let id = moto.send(&url, "{\"x\":1}");
    master.wait_log("dead-lettered");
    wait_empty(&master, &moto, &url);
    // Past the 2 s visibility timeout: a message left undeleted would be back by now.
    master.assert_for(
        Duration::from_secs(3),
        "the message gone for good, run once",
        || sb.runs("runs.txt").len() == 1 && moto.is_empty(&url),
    );
    let runs = sb.runs("runs.txt");
    assert_eq!(runs.len(), 1, "deleted, never delivered again: {runs:?}");
    assert_eq!(runs[0].id, id);
    assert_eq!(moto.counts(&url), (0, 0, 0));
    let log = master.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("dead-lettered") && l.contains(&id) && l.contains("body_bytes")),
        "logged with its id and body size:\n{log}"
    );
    assert_eq!(master.stop().code(), Some(0));
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
fn sqs_fifo_groups_keep_their_order_through_retries() {
    let moto = Moto::start();
    let url = moto.create(
        "ordered.fifo",
        json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
    );
    let sb = Sandbox::new("sqs-fifo");
    // a2 and b1 fail their first attempt; everything else succeeds.
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "case \"$body\" in *fail*) [ \"$CHORE_ATTEMPT\" = 1 ] && exit 1;; esac\nsleep 0.2\nexit 0",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 2\nbatch-size = 2\nbatch-timeout = 0.5\n\
             [queues.\"ordered.fifo\"]\nbackend = \"sqs\"\nwait-time = 1\nbackoff = 1\n\
             max-attempts = 5\nhandler = [{h:?}]\n"
        ),
    );
    let lines = |g: &str, fail: u32| -> String {
        (1..=4)
            .map(|n| {
                if n == fail {
                    format!("{{\"g\":\"{g}\",\"n\":{n},\"fail\":true}}\n")
                } else {
                    format!("{{\"g\":\"{g}\",\"n\":{n}}}\n")
                }
            })
            .collect()
    };
    let a = enqueue(
        &sb,
        &["--group-id", "a", "ordered.fifo", "-"],
        Some(&lines("a", 2)),
    );
    let b = enqueue(
        &sb,
        &["--group-id", "b", "ordered.fifo", "-"],
        Some(&lines("b", 1)),
    );
    assert_eq!((a.len(), b.len()), (4, 4));
    let mut master = start(&sb);
    master.wait("ten runs", || sb.runs("runs.txt").len() >= 10);
    wait_empty(&master, &moto, &url);
    let runs = sb.runs("runs.txt");
    let seq = |g: &str| -> Vec<(u64, u32)> {
        runs.iter()
            .filter_map(|r| {
                let v: Value = serde_json::from_str(&r.body).unwrap();
                (v["g"] == g).then(|| (v["n"].as_u64().unwrap(), r.attempt))
            })
            .collect()
    };
    let order = |g: &str| seq(g).iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(
        order("a"),
        vec![1, 2, 2, 3, 4],
        "group a: a2 retried before a3 and a4 ran: {runs:?}"
    );
    assert_eq!(
        order("b"),
        vec![1, 1, 2, 3, 4],
        "group b: b1 retried before b2 ran: {runs:?}"
    );
    // The retries were the message's second receive.
    let a_seq = seq("a");
    assert_eq!((a_seq[1].1, a_seq[2].1), (1, 2), "{a_seq:?}");
    let b_seq = seq("b");
    assert_eq!((b_seq[0].1, b_seq[1].1), (1, 2), "{b_seq:?}");
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn sqs_sigterm_abandons_a_parked_long_poll() {
    let sb = Sandbox::new("sqs-parked");
    let moto = Moto::start_recording(&sb.file("recording.jsonl"));
    let url = moto.create("idle", json!({}));
    let h = sb.recorder("job.sh", "runs.txt", "");
    // The default long poll: 20 s.
    sqs_chorefile(
        &sb,
        &moto,
        &format!("[queues.idle]\nbackend = \"sqs\"\nhandler = [{h:?}]\n"),
    );
    moto.record();
    let mut master = start(&sb);
    // moto records a request when it arrives: a long poll shows while it is parked.
    master.wait("a long poll to be parked", || {
        moto.recording()
            .iter()
            .any(|r| r.action == "ReceiveMessage" && r.input["WaitTimeSeconds"] == 20)
    });
    master.signal(Signal::SIGTERM);
    let t = Instant::now();
    let status = master.wait_exit(PATIENCE);
    let took = t.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_millis(2500),
        "SIGTERM during a 20 s long poll took {took:?} to exit"
    );
    assert_eq!(moto.counts(&url), (0, 0, 0));
}

#[test]
fn sqs_sigterm_with_messages_running_and_buffered_loses_nothing() {
    let moto = Moto::start();
    let url = moto.create("drain", json!({"VisibilityTimeout": "60"}));
    let bodies: Vec<String> = (0..12).map(|i| format!("{{\"n\":{i}}}")).collect();
    moto.send_all(&url, &bodies);
    let sb = Sandbox::new("sqs-drain");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "sleep 0.7\necho \"$body\" >> done.txt",
    );
    // Two batches of two run, a third waits in the buffer.
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 2\nbatch-size = 2\nbatch-timeout = 0.5\nshutdown-timeout = 15\n\
             [queues.drain]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    master.wait("the first run", || !sb.runs("runs.txt").is_empty());
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(0));
    // Right away: what chore held but did not complete is visible again, not waiting
    // out its 60 s visibility.
    let counts = moto.counts(&url);
    let started: BTreeSet<String> = sb.runs("runs.txt").into_iter().map(|r| r.body).collect();
    let done: BTreeSet<String> = sb.lines("done.txt").into_iter().collect();
    assert_eq!(started, done, "every started job finished");
    assert_eq!(
        counts.1, 0,
        "nothing left in flight after the drain: (visible, in flight, delayed) = {counts:?}; done: {done:?}"
    );
    let left: Vec<Msg> = moto.drain(&url);
    let left_bodies: BTreeSet<String> = left.iter().map(|m| m.body.clone()).collect();
    assert_eq!(left.len(), left_bodies.len());
    assert!(
        done.is_disjoint(&left_bodies),
        "a completed message is still in the queue: done {done:?}, left {left_bodies:?}"
    );
    let all: BTreeSet<String> = done.union(&left_bodies).cloned().collect();
    assert_eq!(
        all,
        bodies.iter().cloned().collect::<BTreeSet<_>>(),
        "every message completed or back in the queue"
    );
    assert!(
        !left.is_empty(),
        "the drain came before the backlog was done"
    );
    // The buffered batch was received, then given back: this is its second receive.
    assert!(
        left.iter().any(|m| m.receive_count == 2),
        "no buffered message was given back: {left:?}"
    );
}

#[test]
fn sqs_the_master_survives_the_emulator_going_away_and_resumes() {
    let moto = Moto::start();
    let port = moto.port();
    let url = moto.create("phoenix", json!({}));
    let sb = Sandbox::new("sqs-outage");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "case \"$body\" in *slow*) sleep 2;; esac\nexit 0",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 1\nbatch-size = 1\n\
             [queues.phoenix]\nbackend = \"sqs\"\nwait-time = 1\nhandler = [{h:?}]\n"
        ),
    );
    let mut master = start(&sb);
    moto.send(&url, "{\"slow\":true}");
    master.wait("the slow job to start", || !sb.runs("runs.txt").is_empty());
    // SQS goes away while a job runs: its receive and the job's delete both fail.
    drop(moto);
    // Two failed receives at least (each takes the SDK's retries, a few seconds).
    master.wait("two failed receives", || {
        master.log_text().matches("receive failed").count() >= 2
    });
    master.wait_log("delete failed");
    master.assert_for(
        Duration::from_secs(1),
        "the master alive while SQS is away",
        || master.running(),
    );
    // Back, empty (moto keeps no state): the same queue URL again.
    let moto = Moto::start_on(port);
    assert_eq!(moto.create("phoenix", json!({})), url);
    let bodies: Vec<String> = (0..3).map(|i| format!("{{\"after\":{i}}}")).collect();
    moto.send_all(&url, &bodies);
    master.wait("the new messages to run", || {
        let seen: BTreeSet<String> = sb.runs("runs.txt").into_iter().map(|r| r.body).collect();
        bodies.iter().all(|b| seen.contains(b))
    });
    wait_empty(&master, &moto, &url);
    assert!(master.running());
    let status = master.stop();
    assert_eq!(status.code(), Some(0), "log:\n{}", master.log_text());
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
fn sqs_a_missing_queue_without_create_exits_2_with_one_clear_line() {
    let moto = Moto::start();
    let sb = Sandbox::new("sqs-missing");
    sqs_chorefile(
        &sb,
        &moto,
        "[queues.ghost]\nbackend = \"sqs\"\nhandler = [\"true\"]\n",
    );
    let cf = sb.chorefile_path();
    let cf = cf.to_str().unwrap();
    for args in [vec!["-c", cf], vec!["enqueue", "-c", cf, "ghost", "{}"]] {
        let out = chore(&sb, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(out.status.code(), Some(2), "chore {args:?}: {stderr}");
        assert_eq!(lines.len(), 1, "chore {args:?}: one line: {stderr}");
        assert!(
            lines[0].contains("ghost") && lines[0].contains("does not exist"),
            "chore {args:?}: {stderr}"
        );
    }
    assert!(moto.queue_url("ghost").is_err(), "nothing created");
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
fn sqs_fifo_a_batch_handler_gets_one_message_per_group_and_a_failure_holds_the_group() {
    let moto = Moto::start();
    let url = moto.create(
        "grouped.fifo",
        json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
    );
    let sb = Sandbox::new("sqs-fifo-batch");
    // Records, per call, how many lines it got, and per message `n attempt start end`;
    // n = 1 fails its first attempt.
    let h = sb.script(
        "batch.sh",
        "echo \"$CHORE_BATCH_SIZE\" >> calls.txt\n\
         while IFS= read -r line; do\n\
           start=$(date +%s.%N)\n\
           id=$(printf '%s\\n' \"$line\" | sed 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/')\n\
           attempt=$(printf '%s\\n' \"$line\" | sed 's/.*\"attempt\":\\([0-9]*\\).*/\\1/')\n\
           n=$(printf '%s\\n' \"$line\" | sed 's/.*\"n\":\\([0-9]*\\).*/\\1/')\n\
           sleep 0.2\n\
           if [ \"$n\" = 1 ] && [ \"$attempt\" = 1 ]; then\n\
             r='{\"id\":\"%s\",\"result\":\"fail\",\"error\":\"first try\"}\\n'\n\
           else\n\
             r='{\"id\":\"%s\",\"result\":\"ok\"}\\n'\n\
           fi\n\
           echo \"$n $attempt $start $(date +%s.%N)\" >> order.txt\n\
           printf \"$r\" \"$id\"\n\
         done",
    );
    // Debug logging shows the skipped message given back.
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "concurrency = 1\nbatch-size = 2\nbatch-timeout = 1\nlog-level = \"debug\"\n\
             [queues.\"grouped.fifo\"]\nbackend = \"sqs\"\nwait-time = 1\nbackoff = 1\n\
             max-attempts = 5\nhandler = {{ command = [{h:?}], mode = \"batch\" }}\n"
        ),
    );
    let ids = enqueue(
        &sb,
        &["--group-id", "g", "grouped.fifo", "-"],
        Some("{\"g\":\"g\",\"n\":1}\n{\"g\":\"g\",\"n\":2}\n"),
    );
    assert_eq!(ids.len(), 2);
    let mut master = start(&sb);
    master.wait("g1 twice and g2", || sb.lines("order.txt").len() >= 3);
    wait_empty(&master, &moto, &url);
    let order: Vec<(u32, u32, f64, f64)> = sb
        .lines("order.txt")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let ns: Vec<(u32, u32)> = order.iter().map(|o| (o.0, o.1)).collect();
    assert_eq!(
        ns.iter().map(|o| o.0).collect::<Vec<_>>(),
        vec![1, 1, 2],
        "g2 ran only after g1's retry: (n, attempt) = {ns:?}"
    );
    assert_eq!((ns[0].1, ns[1].1), (1, 2), "{ns:?}");
    assert!(
        order[2].2 >= order[1].3,
        "g2 started before g1's retry finished: {order:?}"
    );
    let calls = sb.lines("calls.txt");
    assert!(
        calls.iter().all(|c| c == "1"),
        "a batch handler call got two messages of one group: CHORE_BATCH_SIZE per call {calls:?}"
    );
    // g1 and g2 came in one batch: g2 was skipped there and given back.
    let log = master.log_text();
    assert!(
        log.contains("held back: an earlier message of group"),
        "g2 was not held back in the batch it came in:\n{log}"
    );
    assert_eq!(master.stop().code(), Some(0));
}

/// An SQS queue that cannot be reached when chore starts does not stop the master: the
/// other queues are served, and the SQS queue starts consuming once SQS answers.
#[test]
fn sqs_a_queue_unreachable_at_start_does_not_stop_the_others() {
    let port = free_port();
    let sb = Sandbox::new("sqs-late");
    let h = sb.recorder("job.sh", "runs.txt", "exit 0");
    sb.chorefile(&format!(
        "sqs-endpoint = \"http://127.0.0.1:{port}\"\n\
         [queues.local]\nhandler = [{h:?}]\n\
         [queues.late]\nbackend = \"sqs\"\ncreate = true\nwait-time = 1\ndedupe = false\n\
         handler = [{h:?}]\n"
    ));
    let mut master = start(&sb);
    sb.enqueue("local", r#"{"where":"local"}"#);
    master.wait("the filesystem job to run while SQS is away", || {
        sb.runs("runs.txt").iter().any(|r| r.body.contains("local"))
    });
    master.wait_log("cannot open the SQS queue");
    assert!(master.running(), "{}", master.log_text());
    // SQS comes up; chore creates its queue itself (create = true) and consumes it.
    let moto = Moto::start_on(port);
    master.wait_log("SQS queue opened; consuming");
    let url = moto.create("late", json!({}));
    moto.send(&url, r#"{"where":"sqs"}"#);
    master.wait("the SQS job", || {
        sb.runs("runs.txt").iter().any(|r| r.body.contains("sqs"))
    });
    assert_eq!(master.stop().code(), Some(0));
}
