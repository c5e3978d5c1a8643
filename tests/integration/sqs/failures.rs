//! Failures on SQS: a retry after its backoff, the last attempt dead-lettered (to a
//! dead-letter queue and the hook, or deleted), and FIFO groups keeping their order through
//! failed attempts.

use super::{enqueue, sqs_chorefile, start, wait_empty};
use crate::harness::*;
use crate::support::moto::Moto;
use serde_json::{Value, json};
use std::time::Duration;

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
    // With message attributes of each kind, which the dead letter keeps (as SQS's own
    // redrive does): an Active Elastic Job digest, a number, bytes.
    let attributes = json!({
        "message-digest": {"DataType": "String", "StringValue": "abc123"},
        "weight": {"DataType": "Number.float", "StringValue": "1.5"},
        "raw": {"DataType": "Binary", "BinaryValue": "AP8K"},
    });
    let id = moto.send_with_attributes(&url, body, &attributes);
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
    // The dead letter: in the dead-letter queue, with its attributes, gone from the queue.
    let mut dead = Vec::new();
    master.wait("the dead letter in the dead-letter queue", || {
        let got = moto.call(
            "ReceiveMessage",
            json!({"QueueUrl": dlq, "MaxNumberOfMessages": 10, "VisibilityTimeout": 60,
                   "MessageAttributeNames": ["All"]}),
        );
        dead.extend(got["Messages"].as_array().cloned().unwrap_or_default());
        !dead.is_empty()
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["Body"], body);
    assert_eq!(dead[0]["MessageAttributes"], attributes, "{dead:?}");
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

/// A queue chore creates (`create = true`) gets what its declaration says, whether the
/// master or `chore enqueue` finds it missing, as `chore queue create` makes it: the
/// queue's `timeout` as its visibility timeout, and a redrive policy to its dead-letter
/// queue after `max-attempts` receives (for what chore could not settle).
#[test]
fn sqs_a_queue_chore_creates_has_its_declared_timeout_and_redrive() {
    let moto = Moto::start();
    let sb = Sandbox::new("sqs-create-declared");
    let h = sb.recorder("job.sh", "runs.txt", "exit 0");
    sqs_chorefile(
        &sb,
        &moto,
        &format!(
            "[queues.made]\nbackend = \"sqs\"\ncreate = true\nwait-time = 1\ntimeout = 45\n\
             dead-letter-queue = \"made-dead\"\nmax-attempts = 3\nhandler = [{h:?}]\n\
             [queues.pushed]\nbackend = \"sqs\"\ncreate = true\ntimeout = 20\n\
             handler = [{h:?}]\n"
        ),
    );
    let attribute = |url: &str, name: &str| moto.attribute(url, name);
    // `chore enqueue` into a queue nobody made yet.
    enqueue(&sb, &["pushed", r#"{"n":1}"#], None);
    let pushed = moto.queue_url("pushed").expect("enqueue created the queue");
    assert_eq!(attribute(&pushed, "VisibilityTimeout"), "20");
    let mut master = start(&sb);
    master.wait_log("chore master started");
    let made = moto
        .queue_url("made")
        .expect("the master created the queue");
    assert_eq!(attribute(&made, "VisibilityTimeout"), "45");
    let policy: serde_json::Value =
        serde_json::from_str(&attribute(&made, "RedrivePolicy")).expect("a redrive policy");
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "3");
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(":made-dead"),
        "{policy}"
    );
    master.wait("the enqueued job", || sb.runs("runs.txt").len() == 1);
    assert_eq!(master.stop().code(), Some(0));
}
