//! Chaos, bounded: SIGKILL the master five times while a backlog runs, on the filesystem
//! queue and on SQS (moto), then let a last master finish. Nothing may be lost, and every
//! message that ran more than once must have been running (or finished but not yet
//! settled) when a master was killed: the handler keeps a journal of starts and ends.

use crate::harness::*;
use crate::support::moto::{AWS_ENV, Moto};
use crate::support::procs::family_of;
use nix::sys::signal::Signal;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const MESSAGES: usize = 150;
const KILLS: usize = 5;

/// A per-message handler that journals `start ID TIME` and `end ID TIME` around a short
/// job.
fn journaling_handler(sb: &Sandbox) -> String {
    sb.script(
        "job.sh",
        "printf 'start %s %s\\n' \"$CHORE_MESSAGE_ID\" \"$(date +%s.%N)\" >> journal.txt\n\
         cat > /dev/null\nsleep 0.05\n\
         printf 'end %s %s\\n' \"$CHORE_MESSAGE_ID\" \"$(date +%s.%N)\" >> journal.txt",
    )
}

/// When a kill began (just before SIGKILL) and when it was over (the master and every
/// process of its family gone), in Unix seconds.
type Kill = (f64, f64);

/// Start masters in turn, killing each after `every` once it has made progress, `KILLS`
/// times; the last one is returned running.
fn kill_repeatedly(sb: &Sandbox, env: &[(&str, &str)], every: Duration) -> (Master, Vec<Kill>) {
    let mut kills = Vec::new();
    for round in 0..KILLS {
        let mut m = sb.start_with_env(&format!("master{round}"), &[], env);
        let before = sb.lines("journal.txt").len();
        m.wait("some progress before the kill", || {
            sb.lines("journal.txt").len() > before + 4
        });
        std::thread::sleep(every);
        let began = unix_now();
        m.signal(Signal::SIGKILL);
        m.wait_exit(Duration::from_secs(10));
        wait_until(
            "the killed master's workers and handlers to die",
            Duration::from_secs(10),
            || family_of(m.pid).is_empty(),
        );
        kills.push((began, unix_now()));
    }
    let last = sb.start_with_env("last", &[], env);
    // Until it has started, a SIGTERM (the test's stop) ends it by the default action: the
    // earlier masters may have finished the backlog already.
    last.wait_log("chore master started");
    (last, kills)
}

/// The journal: each message's start and end times.
fn journal(sb: &Sandbox) -> BTreeMap<String, (Vec<f64>, Vec<f64>)> {
    let mut j: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for line in sb.lines("journal.txt") {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "journal line {line:?}");
        let t: f64 = f[2].parse().unwrap();
        let e = j.entry(f[1].to_string()).or_default();
        match f[0] {
            "start" => e.0.push(t),
            "end" => e.1.push(t),
            other => panic!("journal line {other:?}"),
        }
    }
    j
}

/// Every message ran to its end at least once, no other ran, and every rerun is explained
/// by a kill between its two starts. Returns how many messages ran more than once.
fn check(sb: &Sandbox, ids: &BTreeSet<String>, kills: &[Kill]) -> usize {
    let j = journal(sb);
    let ran: BTreeSet<String> = j.keys().cloned().collect();
    assert_eq!(&ran, ids, "the messages that ran are the ones sent");
    let mut reruns = 0;
    for (id, (starts, ends)) in &j {
        assert!(!ends.is_empty(), "{id} never finished: lost");
        let mut starts = starts.clone();
        starts.sort_by(f64::total_cmp);
        for pair in starts.windows(2) {
            let explained = kills
                .iter()
                .any(|&(began, over)| pair[0] <= over && pair[1] >= began);
            assert!(
                explained,
                "{id} started at {} and again at {} with no kill between (kills: {kills:?})",
                pair[0], pair[1]
            );
        }
        if starts.len() > 1 {
            reruns += 1;
        }
    }
    reruns
}

#[test]
fn chaos_five_master_kills_under_a_filesystem_backlog_lose_nothing() {
    let sb = Sandbox::new("chaos-fs");
    let h = journaling_handler(&sb);
    sb.chorefile(&format!(
        "concurrency = 4\nbatch-size = 5\nfs-claim-lease = 2\n\
         [queues.jobs]\nhandler = [{h:?}]\ntimeout = 10\n"
    ));
    let input: String = (0..MESSAGES).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let ids: BTreeSet<String> = sb
        .enqueue_lines(&["jobs"], Some(&input), &[])
        .iter()
        .map(|n| id_of(n))
        .collect();
    assert_eq!(ids.len(), MESSAGES);
    let (mut last, kills) = kill_repeatedly(&sb, &[], Duration::from_millis(500));
    let q = sb.queue("jobs");
    last.wait_for("the backlog to finish", Duration::from_secs(60), || {
        q.is_idle()
            && journal(&sb).values().all(|(_, ends)| !ends.is_empty())
            && journal(&sb).len() == MESSAGES
    });
    let reruns = check(&sb, &ids, &kills);
    assert!(q.dead().is_empty(), "dead letters: {:?}", q.dead());
    eprintln!(
        "filesystem chaos: {MESSAGES} messages, {KILLS} kills, {reruns} reruns, all explained"
    );
    assert_eq!(last.stop().code(), Some(0));
}

#[test]
fn chaos_five_master_kills_under_an_sqs_backlog_lose_nothing() {
    let moto = Moto::start();
    let url = moto.create("jobs", json!({"VisibilityTimeout": "2"}));
    let bodies: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"n\":{i}}}")).collect();
    let ids: BTreeSet<String> = moto.send_all(&url, &bodies).into_iter().collect();
    let sb = Sandbox::new("chaos-sqs");
    let h = journaling_handler(&sb);
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\nconcurrency = 4\nbatch-size = 5\nthreads-per-queue = 1\n\
         [queues.jobs]\nbackend = \"sqs\"\nwait-time = 1\ndedupe = false\nhandler = [{h:?}]\n",
        moto.endpoint()
    ));
    let (mut last, kills) = kill_repeatedly(&sb, &AWS_ENV, Duration::from_millis(500));
    last.wait_for("the backlog to finish", Duration::from_secs(60), || {
        moto.is_empty(&url)
            && journal(&sb).len() == MESSAGES
            && journal(&sb).values().all(|(_, ends)| !ends.is_empty())
    });
    let reruns = check(&sb, &ids, &kills);
    eprintln!("SQS chaos: {MESSAGES} messages, {KILLS} kills, {reruns} reruns, all explained");
    assert_eq!(last.stop().code(), Some(0));
}
