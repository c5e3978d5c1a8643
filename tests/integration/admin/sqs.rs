//! `chore queue` on SQS (moto), and dumps moved between SQS and the filesystem.

use super::{bodies, queue, queue_ok};
use crate::harness::*;
use crate::support::moto::{AWS_ENV, Moto};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// Queues `jobs` (SQS, dead letters in `jobs-dead`), `orders.fifo` and `local` (filesystem).
fn sandbox(name: &str, moto: &Moto) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\n\
         [queues.jobs]\nbackend = \"sqs\"\nhandler = [\"true\"]\ntimeout = 45\nmax-attempts = 4\n\
         dead-letter-queue = \"jobs-dead\"\n\
         [queues.\"orders.fifo\"]\nbackend = \"sqs\"\nhandler = [\"true\"]\n\
         [queues.local]\nhandler = [\"true\"]\n",
        moto.endpoint()
    ));
    let (out, _) = queue_ok(&sb, &["create"], None, &AWS_ENV);
    assert_eq!(out.matches("created:").count(), 4, "{out}");
    sb
}

#[test]
fn sqs_create_stats_peek_dump_and_load_across_backends() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-look", &moto);
    let url = moto.queue_url("jobs").unwrap();
    let dlq = moto.queue_url("jobs-dead").unwrap();
    assert_eq!(moto.attribute(&url, "VisibilityTimeout"), "45");
    let policy: serde_json::Value =
        serde_json::from_str(&moto.attribute(&url, "RedrivePolicy")).unwrap();
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "4");
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(":jobs-dead")
    );
    let fifo = moto.queue_url("orders.fifo").unwrap();
    assert_eq!(moto.attribute(&fifo, "FifoQueue"), "true");

    let sent = [
        r#"{"class":"Mail","args":["é"]}"#,
        r#"{"class":"Bill","args":[2]}"#,
        "{ \"spaced\" : [1.50] }  ",
    ];
    for b in sent {
        moto.send(&url, b);
    }
    moto.send(&dlq, r#"{"class":"Mail","args":["dead"]}"#);
    let (out, _) = queue_ok(&sb, &["stats", "--json", "jobs"], None, &AWS_ENV);
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((&s["new"], &s["dead"]), (&3.into(), &1.into()), "{out}");

    let (out, err) = queue_ok(&sb, &["peek", "jobs", "-n", "2"], None, &AWS_ENV);
    assert_eq!(
        out.lines().filter(|l| !l.starts_with(' ')).count(),
        2,
        "{out}"
    );
    assert!(err.contains("received and made visible again"), "{err}");
    assert_eq!(moto.counts(&url), (3, 0, 0), "peek left messages hidden");

    let dump = sb.file("jobs.jsonl");
    let (_, err) = queue_ok(
        &sb,
        &["dump", "jobs", "-o", dump.to_str().unwrap()],
        None,
        &AWS_ENV,
    );
    assert!(err.contains("dumped 3 messages"), "{err}");
    assert_eq!(moto.counts(&url), (3, 0, 0), "dump left messages hidden");
    let mut dumped = bodies(&sb.read("jobs.jsonl"));
    dumped.sort();
    let mut want: Vec<String> = sent.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(dumped, want);

    // SQS → filesystem → SQS, byte for byte.
    queue_ok(
        &sb,
        &["load", "local", dump.to_str().unwrap()],
        None,
        &AWS_ENV,
    );
    let local = sb.queue("local");
    let mut on_disk: Vec<String> = local
        .new_files()
        .iter()
        .map(|n| local.read("new", n))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, want);
    let (fs_dump, _) = queue_ok(&sb, &["dump", "local"], None, &AWS_ENV);
    queue_ok(
        &sb,
        &["load", "orders.fifo", "--group-id", "g"],
        Some(&fs_dump),
        &AWS_ENV,
    );
    let mut back: Vec<String> = moto.drain(&fifo).into_iter().map(|m| m.body).collect();
    back.sort();
    assert_eq!(back, want);
    // FIFO needs a group: refused before anything is sent.
    let out = queue(&sb, &["load", "orders.fifo"], Some(&fs_dump), &AWS_ENV);
    let line = one_line_exit_2(&out, &["load"]);
    assert!(line.contains("give --group-id"), "{line}");
}

#[test]
fn sqs_requeue_moves_selected_dead_letters_and_dry_runs() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-requeue", &moto);
    let url = moto.queue_url("jobs").unwrap();
    let dlq = moto.queue_url("jobs-dead").unwrap();
    moto.send(&dlq, r#"{"class":"Mail","args":[1]}"#);
    moto.send(&dlq, r#"{"class":"Bill","args":[2]}"#);
    let (out, err) = queue_ok(&sb, &["requeue", "jobs", "--dry-run"], None, &AWS_ENV);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("would requeue 2 of 2"), "{err}");
    assert_eq!(
        moto.counts(&dlq),
        (2, 0, 0),
        "a dry run hid or moved something"
    );
    assert_eq!(moto.counts(&url), (0, 0, 0));

    let (_, err) = queue_ok(&sb, &["redrive", "jobs", "--class", "Bill"], None, &AWS_ENV);
    assert!(err.contains("requeued 1 of 1"), "{err}");
    assert_eq!(
        moto.counts(&dlq),
        (1, 0, 0),
        "the other is visible again at once"
    );
    let got = moto.drain(&url);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, r#"{"class":"Bill","args":[2]}"#);
    assert_eq!(got[0].receive_count, 1, "attempts reset");
    let out = queue(&sb, &["requeue", "jobs", "--reason", "x"], None, &AWS_ENV);
    assert!(one_line_exit_2(&out, &["requeue"]).contains("carry no reason"));
}

#[test]
fn sqs_a_requeue_killed_half_way_loses_and_doubles_nothing() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-killed", &moto);
    let url = moto.queue_url("jobs").unwrap();
    let dlq = moto.queue_url("jobs-dead").unwrap();
    let n = 150;
    let sent: Vec<String> = (0..n).map(|i| format!("{{\"n\":{i}}}")).collect();
    moto.send_all(&dlq, &sent);
    let cf = sb.chorefile_path();
    let journal = sb.file("requeue.journal");
    let args = [
        "queue",
        "-c",
        cf.to_str().unwrap(),
        "requeue",
        "jobs",
        "--hold",
        "3",
        "--journal",
        journal.to_str().unwrap(),
    ];
    let mut child = sb
        .command(&args)
        .envs(AWS_ENV.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("some dead letters to move", PATIENCE, || {
        moto.counts(&url).0 >= 10
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // What the killed run held comes back after its hold.
    std::thread::sleep(Duration::from_secs(4));
    let out = sb.run_with_env(&args, None, &AWS_ENV);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!journal.exists(), "a finished requeue leaves no journal");
    assert_eq!(moto.counts(&dlq), (0, 0, 0), "dead letters left behind");
    let got: Vec<String> = moto.drain(&url).into_iter().map(|m| m.body).collect();
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct, sent.iter().collect::<BTreeSet<_>>(), "lost");
    // The one window the journal cannot close: the kill landed after SQS took a send
    // batch and before its `sent` lines were synced. The second run sends those again and
    // names each; nothing else may come twice.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = stderr
        .lines()
        .find_map(|l| l.strip_prefix("warning: an earlier run was stopped while sending "))
        .map_or(0, |rest| {
            rest.split(';').next().unwrap_or("").split(", ").count()
        });
    assert!(
        got.len() <= n + named,
        "doubled beyond the {named} named: {} for {n}; {stderr}",
        got.len()
    );
}

#[test]
fn sqs_purge_and_delete_ask_first() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-purge", &moto);
    let url = moto.queue_url("jobs").unwrap();
    let dlq = moto.queue_url("jobs-dead").unwrap();
    moto.send(&url, "{}");
    moto.send(&dlq, "{}");
    let out = queue(&sb, &["purge", "jobs"], Some("no\n"), &AWS_ENV);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(moto.counts(&url), (1, 0, 0));
    queue_ok(&sb, &["purge", "jobs", "--yes"], None, &AWS_ENV);
    wait_until("the purge", PATIENCE, || moto.counts(&url) == (0, 0, 0));
    assert_eq!(
        moto.counts(&dlq),
        (1, 0, 0),
        "dead letters are purged separately"
    );
    queue_ok(&sb, &["purge", "jobs", "--dead"], Some("y\n"), &AWS_ENV);
    wait_until("the purge of dead letters", PATIENCE, || {
        moto.counts(&dlq) == (0, 0, 0)
    });
    let out = queue(&sb, &["delete", "jobs"], Some("\n"), &AWS_ENV);
    assert_eq!(out.status.code(), Some(1));
    assert!(moto.queue_url("jobs").is_ok());
    queue_ok(&sb, &["delete", "jobs", "--yes"], None, &AWS_ENV);
    assert!(moto.queue_url("jobs").is_err());
    let out = queue(&sb, &["stats", "jobs"], None, &AWS_ENV);
    assert!(one_line_exit_2(&out, &["stats"]).contains("does not exist"));
}

#[test]
fn sqs_requeue_resumes_from_its_journal_without_sending_twice() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-journal", &moto);
    let url = moto.queue_url("jobs").unwrap();
    let dlq = moto.queue_url("jobs-dead").unwrap();
    let ids = moto.send_all(
        &dlq,
        &["{\"a\":1}".into(), "{\"b\":2}".into(), "{\"c\":3}".into()],
    );
    // As a run killed after sending `a` (not yet deleted) and while sending `b` leaves it.
    let journal = sb.write(
        "requeue.journal",
        &format!("sending {0}\nsending {1}\nsent {0}\n", ids[0], ids[1]),
    );
    let (out, err) = queue_ok(
        &sb,
        &["requeue", "jobs", "--journal", journal.to_str().unwrap()],
        None,
        &AWS_ENV,
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(err.contains("requeued 3 of 3"), "{err}");
    assert!(
        err.contains(&format!("stopped while sending {}; sent again", ids[1])),
        "{err}"
    );
    assert_eq!(moto.counts(&dlq), (0, 0, 0));
    let mut got: Vec<String> = moto.drain(&url).into_iter().map(|m| m.body).collect();
    got.sort();
    assert_eq!(got, ["{\"b\":2}", "{\"c\":3}"], "`a` was sent again");
    assert!(!journal.exists());
}

/// A message with one attribute of each kind SQS has, Elastic Beanstalk's periodic ones
/// included; its body is not plain ASCII.
fn send_with_attributes(moto: &Moto, url: &str, n: usize) {
    moto.call(
        "SendMessage",
        json!({
            "QueueUrl": url,
            "MessageBody": format!("{{\"class\":\"Mail\",\"args\":[{n},\"é\\u0000\"]}}  "),
            "MessageAttributes": {
                "beanstalk.sqsd.task_name": {"DataType": "String", "StringValue": format!("task {n}")},
                "beanstalk.sqsd.scheduled_time": {"DataType": "String", "StringValue": "2026-11-29 17:00:00 UTC"},
                "message-digest": {"DataType": "String.sha1", "StringValue": "ab\tcd é"},
                "weight": {"DataType": "Number.float", "StringValue": format!("-{n}.50")},
                "raw": {"DataType": "Binary", "BinaryValue": "AP8KDQ=="}
            }
        }),
    );
}

/// Each dumped message as its body and its `attr.*` entries (what a load can carry; the
/// rest says where and when it was dumped), sorted.
fn carried(jsonl: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut all: Vec<_> = jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let attrs = v["attributes"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with("attr."))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (v["body"].as_str().unwrap().to_string(), attrs)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn sqs_dump_load_dump_keeps_bodies_and_message_attributes() {
    let moto = Moto::start();
    let sb = sandbox("admin-sqs-attrs", &moto);
    let url = moto.queue_url("jobs").unwrap();
    for n in 0..3 {
        send_with_attributes(&moto, &url, n);
    }
    let (first, _) = queue_ok(&sb, &["dump", "jobs"], None, &AWS_ENV);
    let want = carried(&first);
    assert_eq!(want.len(), 3, "{first}");
    for (_, attrs) in &want {
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "attr.beanstalk.sqsd.scheduled_time",
                "attr.beanstalk.sqsd.task_name",
                "attr.message-digest",
                "attr.message-digest:type",
                "attr.raw",
                "attr.raw:type",
                "attr.weight",
                "attr.weight:type",
            ],
            "{first}"
        );
    }
    assert!(first.contains(r#""attr.raw":"AP8KDQ==""#), "{first}");

    // Into another SQS queue (by URL) and out again: the same bodies and attributes.
    let copy = moto.create("copy", json!({}));
    let (_, err) = queue_ok(&sb, &["load", &copy], Some(&first), &AWS_ENV);
    assert!(err.contains("loaded 3 of 3"), "{err}");
    assert!(!err.contains("attribute"), "nothing was left out: {err}");
    let (second, _) = queue_ok(&sb, &["dump", &copy], None, &AWS_ENV);
    assert_eq!(carried(&second), want, "{second}");

    // A requeue through receive → send → delete keeps them too.
    let dlq = moto.queue_url("jobs-dead").unwrap();
    queue_ok(&sb, &["load", &dlq], Some(&first), &AWS_ENV);
    moto.drain(&url);
    let (_, err) = queue_ok(&sb, &["requeue", "jobs"], None, &AWS_ENV);
    assert!(err.contains("requeued 3 of 3"), "{err}");
    let (third, _) = queue_ok(&sb, &["dump", "jobs"], None, &AWS_ENV);
    assert_eq!(carried(&third), want, "{third}");

    // A filesystem queue keeps the bodies and says it dropped the attributes.
    let (_, err) = queue_ok(&sb, &["load", "local"], Some(&first), &AWS_ENV);
    assert!(
        err.contains("loaded 3 of 3")
            && err.contains(
                "15 SQS message attribute(s) not kept: a filesystem queue keeps only the body"
            ),
        "{err}"
    );
    let (fs_dump, _) = queue_ok(&sb, &["dump", "local"], None, &AWS_ENV);
    let bodies_only: Vec<_> = want.iter().map(|(b, _)| (b.clone(), vec![])).collect();
    assert_eq!(carried(&fs_dump), bodies_only);

    // Names SQS refuses are left out and named; a Binary value that is not base64 is a
    // malformed dump: exit 2, nothing loaded.
    let reserved = r#"{"id":"x","attributes":{"attr.AWS.trace":"t","attr.ok":"1","attr.ok:type":"Number"},"body":"b"}"#;
    let (_, err) = queue_ok(&sb, &["load", &copy], Some(reserved), &AWS_ENV);
    assert!(
        err.contains(
            "1 message attribute(s) left out, as SQS refuses their name or type: AWS.trace"
        ),
        "{err}"
    );
    let bad = r#"{"id":"y","attributes":{"attr.raw":"%%","attr.raw:type":"Binary"},"body":"b"}"#;
    let before = moto.counts(&copy);
    let out = queue(&sb, &["load", &copy], Some(bad), &AWS_ENV);
    assert!(one_line_exit_2(&out, &["load"]).contains("not base64"));
    assert_eq!(moto.counts(&copy), before);
}

/// `chore queue stats` without names shows every declared queue it can read: one not
/// created yet on SQS is said on a line of its own and the status is 1, the others shown.
#[test]
fn sqs_stats_of_all_queues_shows_those_there_and_names_the_missing_one() {
    let moto = Moto::start();
    let sb = Sandbox::new("admin-sqs-stats-missing");
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\n\
         [queues.ghost]\nbackend = \"sqs\"\nhandler = [\"true\"]\n\
         [queues.local]\nhandler = [\"true\"]\n",
        moto.endpoint()
    ));
    sb.enqueue("local", "{}");
    let out = queue(&sb, &["stats"], None, &AWS_ENV);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let local = stdout
        .lines()
        .find(|l| l.starts_with("local"))
        .unwrap_or_default();
    assert!(local.contains(" 1 "), "{stdout}");
    assert!(
        stderr.contains("ghost") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// A queue URL that names no queue is a mistake in the command: exit 2, one line.
#[test]
fn sqs_peek_of_a_url_naming_no_queue_exits_2() {
    let moto = Moto::start();
    let sb = Sandbox::new("admin-sqs-no-url");
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\n[queues.local]\nhandler = [\"true\"]\n",
        moto.endpoint()
    ));
    let url = format!("{}/123456789012/ghost", moto.endpoint());
    let out = queue(&sb, &["peek", &url], None, &AWS_ENV);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ghost does not exist"), "{stderr}");
}
