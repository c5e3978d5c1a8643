//! What counts as a duplicate: an SQS message's id (a second delivery of a message another
//! consumer holds), a filesystem message's id, or a field of the body (`dedupe-key`); and
//! a failed attempt, whose key is removed so that its retry is not taken for a duplicate.

use super::{
    dedupe_status, error_lines, log_lines, names_queue, runs_of, sqs_chorefile, sqs_enqueue, start,
};
use crate::harness::*;
use crate::support::memcached::Memcached;
use crate::support::moto::Moto;
use serde_json::json;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// SQS: message ids.

#[test]
fn dedupe_sqs_a_message_delivered_twice_runs_once() {
    // Another consumer (Ruby Chore) has received this message and added its MessageId key,
    // as Ruby Chore does; SQS then delivers it to chore too. chore must not run it while the
    // key lives, must leave it in flight (not delete it, not change its visibility), and
    // must run it once SQS delivers it again after the key has expired.
    let moto = Moto::start();
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-sqs-twice");
    // Visibility 3 s: chore's own keys get the shortest TTL (3 - 10 → 1 s).
    let url = moto.create("twice", json!({"VisibilityTimeout": "3"}));
    let h = sb.recorder("job.sh", "runs.txt", "");
    sqs_chorefile(
        &sb,
        &moto,
        &mc.addr(),
        &format!("[queues.twice]\nbackend = \"sqs\"\nhandler = [{h:?}]\nwait-time = 1\n"),
    );
    let id = sqs_enqueue(&sb, "twice", "{\"n\":1}");
    assert!(mc.ruby_add(&id, 5), "the key was free");
    let added = unix_now();
    let mut master = start(&sb);

    master.wait("the delivery to be caught as a duplicate", || {
        !log_lines(&master, &["duplicate delivery; not run", &id]).is_empty()
    });
    let line = log_lines(&master, &["duplicate delivery; not run", &id]).remove(0);
    assert!(names_queue(&line, "twice"), "queue in {line:?}");
    // Left in flight: SQS still holds it, invisible, and nothing ran it.
    let (visible, in_flight, _) = moto.counts(&url);
    assert_eq!((visible, in_flight), (0, 1), "left in flight");
    assert!(sb.runs("runs.txt").is_empty(), "a duplicate ran");

    master.wait_for(
        "the message to run after its key expired",
        Duration::from_secs(30),
        || !sb.runs("runs.txt").is_empty(),
    );
    let runs = sb.runs("runs.txt");
    assert_eq!(runs[0].id, id, "the id is SQS's raw MessageId");
    assert!(runs[0].attempt >= 2, "it ran on a later delivery: {runs:?}");
    let waited = runs[0].at - added;
    assert!(
        waited >= 3.9,
        "the key lived 5 s but the message ran {waited:.2}s after it was added"
    );
    master.wait("the queue to empty", || moto.is_empty(&url));
    // Past one more visibility timeout: nothing comes back, nothing runs again.
    master.assert_for(Duration::from_secs(4), "one run and an empty queue", || {
        sb.runs("runs.txt").len() == 1 && moto.is_empty(&url)
    });
    assert_eq!(sb.runs("runs.txt").len(), 1, "{:?}", sb.runs("runs.txt"));
    assert_eq!(moto.counts(&url), (0, 0, 0));

    let status = dedupe_status(&master);
    assert!(status["duplicates"] >= 1, "{status:?}");
    assert!(status["checks"] > status["duplicates"], "{status:?}");
    assert_eq!(status["cache_failures"], 0, "{status:?}");
    assert!(master.running());
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn dedupe_sqs_a_failed_attempt_is_retried_not_held_as_a_duplicate() {
    // Visibility 30 s: keys live 20 s. Attempt 1 fails with a 1 s backoff; its key must be
    // removed, or attempt 2 would be caught as a duplicate and wait out 30 s.
    let moto = Moto::start();
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-sqs-retry");
    let url = moto.create("flaky", json!({"VisibilityTimeout": "30"}));
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "[ \"$CHORE_ATTEMPT\" = 1 ] && exit 1\nexit 0",
    );
    sqs_chorefile(
        &sb,
        &moto,
        &mc.addr(),
        &format!(
            "[queues.flaky]\nbackend = \"sqs\"\nhandler = [{h:?}]\nbackoff = [1]\nwait-time = 1\n"
        ),
    );
    let mut master = start(&sb);
    let id = sqs_enqueue(&sb, "flaky", "{\"n\":1}");
    master.wait("the second attempt", || sb.runs("runs.txt").len() >= 2);
    let runs = sb.runs("runs.txt");
    assert_eq!(
        runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2],
        "{runs:?}"
    );
    let gap = runs[1].at - runs[0].at;
    assert!(gap < 8.0, "a 1 s backoff took {gap:.2}s");
    assert!(
        log_lines(&master, &["duplicate delivery"]).is_empty(),
        "the retry was taken for a duplicate"
    );
    master.wait("the queue to empty", || moto.is_empty(&url));
    // A success leaves its key: value 1, TTL = visibility 30 - 10 (less whole seconds
    // waited since the receive).
    assert_eq!(mc.get(&id).as_deref(), Some("1"));
    let ttl = mc.ttl(&id).unwrap();
    assert!((15..=20).contains(&ttl), "key TTL {ttl}");
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// Filesystem queues: a dedupe key taken from the body.

#[test]
fn dedupe_key_field_holds_a_second_job_with_the_same_key() {
    // Queue timeout 16 s: keys live 16 - 10 = 6 s, and a held copy's claim lapses after 7 s.
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-field");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\n[queues.orders]\nhandler = [{h:?}]\ntimeout = 16\n\
         dedupe-key = \"order\"\n",
        mc.addr()
    ));
    let q = sb.queue("orders");
    // Another consumer (Ruby Chore's dedupe_lambda) has this order: its key is there.
    assert!(mc.ruby_add("order-ruby", 6));
    let first = sb.enqueue_id("orders", r#"{"order":"o-1","n":1}"#);
    let second = sb.enqueue_id("orders", r#"{"order":"o-1","n":2}"#);
    let missing = sb.enqueue_id("orders", r#"{"n":3}"#);
    let empty = sb.enqueue_id("orders", r#"{"order":"","n":4}"#);
    let null = sb.enqueue_id("orders", r#"{"order":null,"n":5}"#);
    let ruby = sb.enqueue_id("orders", r#"{"order":"order-ruby","n":6}"#);
    let numeric = sb.enqueue_id("orders", r#"{"order":42,"n":7}"#);
    let mut master = sb.start(&[]);

    master.wait("the jobs without a key, and one o-1, to run", || {
        [3, 4, 5, 7].iter().all(|&n| runs_of(&sb, n).len() == 1)
            && runs_of(&sb, 1).len() + runs_of(&sb, 2).len() == 1
    });
    master.wait("the second o-1 and the Ruby one to be held", || {
        log_lines(&master, &["duplicate delivery; not run"]).len() >= 2
    });
    // Give a wrongly released copy time to show up (well inside the keys' 6 s).
    master.assert_for(
        Duration::from_millis(1500),
        "one o-1 job run and the Ruby one held",
        || runs_of(&sb, 1).len() + runs_of(&sb, 2).len() == 1 && runs_of(&sb, 6).is_empty(),
    );
    let ran_o1: Vec<u64> = [1, 2]
        .into_iter()
        .filter(|&n| !runs_of(&sb, n).is_empty())
        .collect();
    assert_eq!(ran_o1.len(), 1, "exactly one o-1 job runs: {ran_o1:?}");
    let held = if ran_o1[0] == 1 { &second } else { &first };
    assert!(
        runs_of(&sb, 6).is_empty(),
        "a key added by Ruby Chore was ignored"
    );
    for id in [held, &ruby] {
        let lines = log_lines(&master, &["duplicate delivery; not run", id]);
        assert_eq!(lines.len(), 1, "{id}: {lines:?}");
        assert!(names_queue(&lines[0], "orders"), "{lines:?}");
        assert!(q.holds(id), "a held duplicate is kept, not lost: {id}");
    }
    assert!(q.dead().is_empty(), "dead letters: {:?}", q.dead());
    // The done ones are gone; every job ran at most once.
    for id in [&missing, &empty, &null, &numeric] {
        assert!(!q.holds(id), "{id} is still queued");
    }
    assert_eq!(sb.runs("runs.txt").len(), 5, "{:?}", sb.runs("runs.txt"));
    // Keys are the field's value, raw, holding 1; jobs without a key were never checked.
    assert_eq!(mc.get("o-1").as_deref(), Some("1"));
    assert_eq!(mc.get("42").as_deref(), Some("1"));
    for id in [&missing, &empty, &null] {
        assert_eq!(mc.get(id), None, "{id} was checked by id");
    }
    let status = dedupe_status(&master);
    assert!(status["duplicates"] >= 2, "{status:?}");
    assert!(
        status["checks"] >= 4,
        "o-1 twice, order-ruby, 42: {status:?}"
    );
    assert_eq!(status["cache_failures"], 0, "{status:?}");
    assert!(
        error_lines(&master).is_empty(),
        "{:?}",
        error_lines(&master)
    );
    assert_eq!(master.stop().code(), Some(0));
}

#[test]
fn dedupe_a_failed_attempt_on_a_filesystem_queue_is_retried_not_held() {
    // `dedupe = true` on a filesystem queue dedupes by message id; the key is the prefix
    // and the id. Keys live 30 - 10 = 20 s: a retry taken for a duplicate would wait that
    // long.
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-fs-retry");
    let h = sb.recorder(
        "job.sh",
        "runs.txt",
        "[ \"$CHORE_ATTEMPT\" = 1 ] && exit 1\nexit 0",
    );
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\ndedupe-prefix = \"chore:\"\n[queues.jobs]\nhandler = [{h:?}]\n\
         timeout = 30\nbackoff = [1]\ndedupe = true\n",
        mc.addr()
    ));
    let mut master = sb.start(&[]);
    let id = sb.enqueue_id("jobs", "{\"n\":1}");
    let q = sb.queue("jobs");
    master.wait("the second attempt", || sb.runs("runs.txt").len() >= 2);
    master.wait("the queue to empty", || q.is_idle());
    let runs = sb.runs("runs.txt");
    assert_eq!(
        runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2],
        "{runs:?}"
    );
    let gap = runs[1].at - runs[0].at;
    assert!(gap < 6.0, "a 1 s backoff took {gap:.2}s");
    assert!(
        log_lines(&master, &["duplicate delivery"]).is_empty(),
        "the retry was taken for a duplicate"
    );
    let key = format!("chore:{id}");
    assert_eq!(mc.get(&key).as_deref(), Some("1"), "{key}");
    assert_eq!(mc.get(&id), None, "the prefix is used");
    let ttl = mc.ttl(&key).unwrap();
    assert!((15..=20).contains(&ttl), "key TTL {ttl}");
    assert_eq!(master.stop().code(), Some(0));
}
