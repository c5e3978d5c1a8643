//! SQS going away or never there, and chore stopping: a parked long poll abandoned, a
//! drain that loses nothing, the emulator gone and back, a missing queue, a queue
//! unreachable at start or by `chore enqueue`.

use super::{chore, sqs_chorefile, start, wait_empty};
use crate::harness::*;
use crate::support::moto::{Moto, Msg};
use crate::support::service::free_port;
use nix::sys::signal::Signal;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
    // Half the poll: a master that waited it out would take 20 s; a busy machine's
    // slowness must not fail this.
    assert!(
        took < Duration::from_secs(10),
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

/// SQS out of reach is a failure a producer may retry (exit 1), not a mistake in its
/// command or Chorefile (exit 2, as for a queue that does not exist).
#[test]
fn sqs_enqueue_while_sqs_is_unreachable_exits_1() {
    let port = free_port();
    let sb = Sandbox::new("sqs-enqueue-away");
    sb.chorefile(&format!(
        "sqs-endpoint = \"http://127.0.0.1:{port}\"\n\
         [queues.away]\nbackend = \"sqs\"\nhandler = [\"true\"]\n"
    ));
    let cf = sb.chorefile_path();
    let args = ["enqueue", "-c", cf.to_str().unwrap(), "away", "{}"];
    let out = chore(&sb, &args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot look up SQS queue `away`"),
        "{stderr}"
    );
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
