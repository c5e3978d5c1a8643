//! Dedupe through memcached: the real `chore` binary against a real memcached (and moto
//! for SQS), on loopback.
//!
//! Each test starts its own memcached (`support::memcached`, which can stop it and start
//! it again on the same port: an outage and a recovery) and, for SQS, its own moto. A key
//! the test writes itself is written the way Ruby Chore writes it, so it stands for
//! another consumer (Ruby Chore, or a second chore) that has already taken the message.
//!
//! What is asserted holds on real SQS too: one receiver per queue, timings with margins.

use crate::harness::*;
use crate::support::memcached::Memcached;
use crate::support::moto::Moto;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Dalli's ring, written from Dalli's Ruby (Dalli::Ring), to check where chore puts keys.

/// The server (index into `servers`, named `host:port` as Dalli names them) that Dalli
/// picks for `key`: 160 points per server at the first 8 hex digits of
/// SHA1("name:i"), sorted; the key's CRC32; the last point not above it (Dalli's
/// `binary_search` returns `upper`, and `continuum[-1]` wraps to the last point).
fn dalli_server_for(servers: &[String], key: &str) -> usize {
    if servers.len() == 1 {
        return 0;
    }
    let mut continuum: Vec<(u64, usize)> = Vec::new();
    for (s, name) in servers.iter().enumerate() {
        for idx in 0..160 {
            let hex = sha1_smol::Sha1::from(format!("{name}:{idx}"))
                .digest()
                .to_string();
            continuum.push((u64::from_str_radix(&hex[..8], 16).unwrap(), s));
        }
    }
    continuum.sort_by_key(|&(v, _)| v);
    let hkey = crc32fast::hash(key.as_bytes()) as u64;
    let (mut lower, mut upper) = (0i64, continuum.len() as i64 - 1);
    while lower <= upper {
        let idx = (lower + upper) / 2;
        let v = continuum[idx as usize].0;
        if v == hkey {
            return continuum[idx as usize].1;
        } else if v > hkey {
            upper = idx - 1;
        } else {
            lower = idx + 1;
        }
    }
    let i = if upper < 0 {
        continuum.len() - 1
    } else {
        upper as usize
    };
    continuum[i].1
}

// ---------------------------------------------------------------------------------------
// chore on moto.

/// A Chorefile for SQS queues on `moto` that dedupe through `servers`, then `text`. The
/// credentials are the Chorefile's (Ruby Chore's `aws-access-key` / `aws-secret-key`),
/// not the environment's: these tests are where that path runs.
fn sqs_chorefile(sb: &Sandbox, moto: &Moto, servers: &str, text: &str) {
    sb.chorefile(&format!(
        "sqs-endpoint = {:?}\naws-region = \"us-east-1\"\naws-access-key = \"test\"\n\
         aws-secret-key = \"test\"\ndedupe-servers = {servers:?}\n{text}",
        moto.endpoint()
    ));
}

/// No instance-metadata lookups: all the AWS environment chore gets here.
const NO_METADATA: [(&str, &str); 1] = [("AWS_EC2_METADATA_DISABLED", "true")];

/// `chore enqueue` to an SQS queue: the MessageId it printed.
fn sqs_enqueue(sb: &Sandbox, queue: &str, body: &str) -> String {
    let ids = sb.enqueue_lines(&[queue, body], None, &NO_METADATA);
    assert_eq!(ids.len(), 1, "enqueue printed {ids:?}");
    ids.into_iter().next().unwrap()
}

/// Start the master (no instance-metadata lookups).
fn start(sb: &Sandbox) -> Master {
    sb.start_with_env("master", &[], &NO_METADATA)
}

// ---------------------------------------------------------------------------------------
// Log helpers.

/// Log lines containing every one of `needles`.
fn log_lines(master: &Master, needles: &[&str]) -> Vec<String> {
    master
        .log_text()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Lines logged at ERROR level.
fn error_lines(master: &Master) -> Vec<String> {
    log_lines(master, &[" ERROR "])
}

/// Does a log line name `queue` (as `queue=NAME` or `queue="NAME"`)?
fn names_queue(line: &str, queue: &str) -> bool {
    line.contains(&format!("queue={queue} ")) || line.contains(&format!("queue=\"{queue}\""))
}

/// TTIN, then the counters of the new `status: dedupe` line.
fn dedupe_status(master: &Master) -> BTreeMap<String, u64> {
    let before = log_lines(master, &["status: dedupe"]).len();
    master.signal(Signal::SIGTTIN);
    master.wait("a `status: dedupe` line", || {
        log_lines(master, &["status: dedupe"]).len() > before
    });
    let line = log_lines(master, &["status: dedupe"]).pop().unwrap();
    let counters: BTreeMap<String, u64> = line
        .split_whitespace()
        .filter_map(|f| {
            let (k, v) = f.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    for k in ["checks", "duplicates", "cache_failures"] {
        assert!(counters.contains_key(k), "no {k} in {line:?}");
    }
    counters
}

/// The runs (by `n` of a `{"n":…}` body) a recorder logged.
fn runs_of(sb: &Sandbox, n: u64) -> Vec<Run> {
    sb.runs("runs.txt")
        .into_iter()
        .filter(|r| {
            serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|b| b["n"].as_u64())
                == Some(n)
        })
        .collect()
}

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

// ---------------------------------------------------------------------------------------
// Outages.

#[test]
fn dedupe_memcached_down_jobs_still_run_and_dedupe_resumes_when_it_is_back() {
    // dupe-on-cache-failure is left at its default, false: run what memcached cannot vouch
    // for.
    let mut mc = Memcached::start();
    let sb = Sandbox::new("dedupe-outage");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\n[queues.jobs]\nhandler = [{h:?}]\ntimeout = 30\n\
         dedupe-key = \"k\"\n",
        mc.addr()
    ));
    let q = sb.queue("jobs");
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", r#"{"k":"before","n":0}"#);
    master.wait("the first job", || runs_of(&sb, 0).len() == 1);
    assert_eq!(mc.get("before").as_deref(), Some("1"));

    // Down: jobs keep running (dupe-on-cache-failure = false), spread over a few seconds
    // so that several reconnection probes (one a second at most) fail; the outage is
    // logged once. The spacing is the scenario, not a wait for anything.
    mc.stop();
    let down_at = Instant::now();
    for n in 1..=8u64 {
        sb.enqueue("jobs", &format!(r#"{{"k":"down-{n}","n":{n}}}"#));
        std::thread::sleep(Duration::from_millis(300));
    }
    // memcached cannot vouch for it, so a job whose key was stored before runs too.
    sb.enqueue("jobs", r#"{"k":"before","n":9}"#);
    master.wait("the jobs sent during the outage", || {
        (1..=9).all(|n| runs_of(&sb, n).len() == 1)
    });
    let down_for = down_at.elapsed();
    assert!(master.running(), "the master lives through the outage");
    assert!(q.dead().is_empty());
    // Checked at the end, once the rest has been seen to work.
    let errors_in_outage = error_lines(&master);

    // Back on the same port (empty): the client reconnects within its 1 s probe. Jobs with
    // fresh keys show when it has: their key appears in memcached.
    mc.restart();
    let mut n = 100;
    let back = Instant::now();
    master.wait_for(
        "chore to reconnect to memcached (a probe job's key stored)",
        Duration::from_secs(15),
        || {
            n += 1;
            let key = format!("probe-{n}");
            sb.enqueue("jobs", &format!(r#"{{"k":"{key}","n":{n}}}"#));
            master.wait("a probe job", || runs_of(&sb, n).len() == 1);
            mc.get(&key).is_some()
        },
    );
    eprintln!(
        "dedupe outage: reconnected {:.2}s after memcached came back",
        back.elapsed().as_secs_f64()
    );
    master.wait_log("memcached is back");

    // Dedupe works again: a key taken by another consumer holds its job back.
    assert!(mc.ruby_add("taken", 30));
    let blocked = sb.enqueue_id("jobs", r#"{"k":"taken","n":200}"#);
    sb.enqueue("jobs", r#"{"k":"after","n":201}"#);
    master.wait("a job after the recovery", || runs_of(&sb, 201).len() == 1);
    master.wait("the blocked job to be held", || {
        !log_lines(&master, &["duplicate delivery; not run", &blocked]).is_empty()
    });
    master.assert_for(
        Duration::from_millis(500),
        "the duplicate not run after the recovery",
        || runs_of(&sb, 200).is_empty(),
    );
    assert!(q.holds(&blocked));
    let errors_after_recovery = error_lines(&master);

    // A second outage is a second error line.
    mc.stop();
    for n in 300..303u64 {
        sb.enqueue("jobs", &format!(r#"{{"k":"again-{n}","n":{n}}}"#));
    }
    master.wait("the jobs of the second outage", || {
        (300..303).all(|n| runs_of(&sb, n).len() == 1)
    });
    let status = dedupe_status(&master);
    assert!(status["cache_failures"] >= 12, "{status:?}");
    assert!(master.running());
    assert_eq!(master.stop().code(), Some(0));

    // The log: one error line per outage, however many messages and probes it saw.
    assert_eq!(
        errors_in_outage.len(),
        1,
        "one error line for the first outage ({down_for:?} down, 9 jobs, probed once a \
         second): {errors_in_outage:#?}"
    );
    assert!(
        errors_in_outage[0].contains("memcached unavailable"),
        "{errors_in_outage:?}"
    );
    assert_eq!(
        errors_after_recovery, errors_in_outage,
        "no error line once memcached is back"
    );
    let errors = error_lines(&master);
    assert_eq!(errors.len(), 2, "one error line per outage: {errors:#?}");
}

#[test]
fn dedupe_memcached_down_with_dupe_on_cache_failure_holds_jobs_until_it_is_back() {
    // Queue timeout 12 s: keys (and holds) of 12 - 10 = 2 s, so a held job comes back
    // about every 3 s and is checked again.
    let mut mc = Memcached::start();
    let sb = Sandbox::new("dedupe-outage-hold");
    let h = sb.recorder("job.sh", "runs.txt", "");
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\ndupe-on-cache-failure = true\n[queues.jobs]\nhandler = [{h:?}]\n\
         timeout = 12\ndedupe = true\n",
        mc.addr()
    ));
    let q = sb.queue("jobs");
    let mut master = sb.start(&[]);
    sb.enqueue("jobs", r#"{"n":0}"#);
    master.wait("the first job", || runs_of(&sb, 0).len() == 1);

    mc.stop();
    let ids: Vec<String> = (1..=4u64)
        .map(|n| sb.enqueue_id("jobs", &format!(r#"{{"n":{n}}}"#)))
        .collect();
    master.wait("the jobs to be held", || {
        ids.iter().all(|id| {
            !log_lines(
                &master,
                &[
                    "memcached unavailable and dupe-on-cache-failure is set; not run",
                    id,
                ],
            )
            .is_empty()
        })
    });
    // Held through at least one return to the queue (hold 3 s, recovery each second).
    master.assert_for(
        Duration::from_secs(5),
        "no job run while memcached is down",
        || (1..=4).all(|n| runs_of(&sb, n).is_empty()),
    );
    for id in &ids {
        assert!(q.holds(id), "held, not lost: {id}");
    }
    assert!(q.dead().is_empty(), "dead letters: {:?}", q.dead());
    assert!(master.running(), "the master lives through the outage");

    mc.restart();
    let back = Instant::now();
    master.wait_for(
        "the held jobs to run once memcached is back",
        Duration::from_secs(30),
        || (1..=4).all(|n| !runs_of(&sb, n).is_empty()),
    );
    eprintln!(
        "dedupe hold: held jobs ran {:.2}s after memcached came back",
        back.elapsed().as_secs_f64()
    );
    master.wait("the queue to empty", || q.is_idle());
    master.assert_for(
        Duration::from_millis(500),
        "every job run once, none again",
        || (0..=4).all(|n| runs_of(&sb, n).len() == 1),
    );
    for n in 0..=4 {
        assert_eq!(runs_of(&sb, n).len(), 1, "job {n}: {:?}", runs_of(&sb, n));
    }
    assert!(q.dead().is_empty());
    let status = dedupe_status(&master);
    assert!(status["cache_failures"] >= 4, "{status:?}");
    assert!(status["checks"] >= 5, "{status:?}");
    assert_eq!(master.stop().code(), Some(0));
    let errors = error_lines(&master);
    assert_eq!(errors.len(), 1, "one error line per outage: {errors:#?}");
    assert!(errors[0].contains("memcached unavailable"), "{errors:?}");
}

// ---------------------------------------------------------------------------------------
// Several servers.

#[test]
fn dedupe_keys_spread_over_two_servers_on_dallis_ring() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let sb = Sandbox::new("dedupe-two");
    sb.ok_batch_handler("batch.sh", "", "echo \"$id\" >> done.txt");
    sb.chorefile(&format!(
        "dedupe-servers = \"{},{}\"\n[queues.jobs]\n\
         handler = {{ command = [\"./batch.sh\"], mode = \"batch\" }}\ntimeout = 60\ndedupe = true\n",
        a.addr(),
        b.addr()
    ));
    let lines: String = (0..50).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let ids: Vec<String> = sb
        .enqueue_lines(&["jobs", "-"], Some(&lines), &[])
        .iter()
        .map(|n| id_of(n))
        .collect();
    assert_eq!(ids.len(), 50);
    let mut master = sb.start(&[]);
    master.wait("all 50 jobs", || sb.lines("done.txt").len() >= 50);
    master.wait("the queue to empty", || sb.queue("jobs").is_idle());
    assert_eq!(sb.lines("done.txt").len(), 50);

    let names = [a.addr(), b.addr()];
    let mut on = [0usize; 2];
    for id in &ids {
        let held = [a.get(id).is_some(), b.get(id).is_some()];
        assert!(
            held[0] ^ held[1],
            "{id} must be on exactly one server: on {}: {}, on {}: {}",
            names[0],
            held[0],
            names[1],
            held[1]
        );
        let server = if held[0] { 0 } else { 1 };
        on[server] += 1;
        assert_eq!(
            server,
            dalli_server_for(&names, id),
            "{id} is not where Dalli (Ruby Chore) would look for it"
        );
    }
    eprintln!("dedupe two servers: keys per server {on:?}");
    assert!(on.iter().all(|&n| n > 0), "keys per server {on:?}");
    assert_eq!(master.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// Overhead.

/// A TCP proxy in front of memcached that counts the binary-protocol requests passing
/// through it, by opcode (chore speaks the binary protocol: every request is a 24-byte
/// header, magic 0x80, then `total body length` bytes).
struct CountingProxy {
    addr: String,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(upstream: String) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counts.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if let Ok(server) = TcpStream::connect(&upstream) {
                            Self::relay(client, server, c.clone());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        CountingProxy { addr, counts, stop }
    }

    fn relay(client: TcpStream, server: TcpStream, counts: Arc<Mutex<BTreeMap<String, u64>>>) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut from_server, mut to_client) =
            (server.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Both);
        });
        let (mut from_client, mut to_server) = (client, server);
        std::thread::spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = [0u8; 16384];
            loop {
                let n = match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                loop {
                    if pending.first().is_some_and(|&m| m != 0x80) {
                        // Not the binary protocol: count the bytes as one text request.
                        *counts.lock().unwrap().entry("text".into()).or_default() += 1;
                        pending.clear();
                        break;
                    }
                    if pending.len() < 24 {
                        break;
                    }
                    let body = u32::from_be_bytes(pending[8..12].try_into().unwrap()) as usize;
                    if pending.len() < 24 + body {
                        break;
                    }
                    let op = match pending[1] {
                        0x00 => "get".to_string(),
                        0x01 => "set".to_string(),
                        0x02 => "add".to_string(),
                        0x04 => "delete".to_string(),
                        0x0a => "noop".to_string(),
                        0x0b => "version".to_string(),
                        0x1c => "touch".to_string(),
                        other => format!("opcode-{other:#04x}"),
                    };
                    *counts.lock().unwrap().entry(op).or_default() += 1;
                    pending.drain(..24 + body);
                }
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(std::net::Shutdown::Both);
        });
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn dedupe_overhead_is_at_most_one_memcached_request_per_message() {
    // 200 messages through a fast batch handler, on a queue without dedupe and on one that
    // dedupes on a body field; each run twice, alternately, keeping the faster (figures
    // printed, not asserted). Then one more run through a proxy that counts chore's
    // requests to memcached: at most one per message (an `add`; nothing to delete here,
    // since nothing is retried).
    const JOBS: usize = 200;
    let mc = Memcached::start();
    let sb = Sandbox::new("dedupe-overhead");
    sb.ok_batch_handler(
        "batch.sh",
        "echo \"$CHORE_BATCH_SIZE\" >> \"batches-$CHORE_QUEUE.txt\"",
        "echo \"$id\" >> \"done-$CHORE_QUEUE.txt\"",
    );
    let handler = "handler = { command = [\"./batch.sh\"], mode = \"batch\" }";
    sb.chorefile(&format!(
        "dedupe-servers = {:?}\n\
         [queues.plain]\n{handler}\ndedupe = false\n\
         [queues.keyed]\n{handler}\ndedupe-key = \"k\"\n",
        mc.addr()
    ));
    let mut round = 0;
    // One run: JOBS fresh messages, then the master on that queue alone (with `extra`
    // flags); the seconds from its start to the last job done, the batches, and the
    // requests memcached counted.
    let mut run = |queue: &str, extra: &[&str]| -> (f64, usize, u64) {
        round += 1;
        let lines: String = (0..JOBS)
            .map(|n| format!("{{\"k\":\"r{round}-{n}\",\"n\":{n}}}\n"))
            .collect();
        sb.enqueue_lines(&[queue, "-"], Some(&lines), &[]);
        let _ = std::fs::remove_file(sb.file(&format!("done-{queue}.txt")));
        let _ = std::fs::remove_file(sb.file(&format!("batches-{queue}.txt")));
        let before = mc.key_requests();
        let t0 = Instant::now();
        let mut flags = vec!["-q", queue];
        flags.extend_from_slice(extra);
        let mut master = sb.start_as(&format!("master-{round}"), &flags);
        master.wait("every job", || {
            sb.lines(&format!("done-{queue}.txt")).len() >= JOBS
        });
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(master.stop().code(), Some(0));
        let requests = mc.key_requests() - before;
        assert_eq!(sb.lines(&format!("done-{queue}.txt")).len(), JOBS);
        (
            secs,
            sb.lines(&format!("batches-{queue}.txt")).len(),
            requests,
        )
    };
    let mut plain = Vec::new();
    let mut keyed = Vec::new();
    for _ in 0..2 {
        plain.push(run("plain", &[]));
        keyed.push(run("keyed", &[]));
    }
    let proxy = CountingProxy::start(mc.addr());
    let counted = run("keyed", &["--dedupe-servers", &proxy.addr]);
    let wire = proxy.counts();
    let best = |v: &[(f64, usize, u64)]| v.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let (p, k) = (best(&plain), best(&keyed));
    // memcached's own round trip from here, for scale.
    let t0 = Instant::now();
    for i in 0..JOBS {
        mc.ruby_add(&format!("scale-{i}"), 60);
    }
    let rtt_us = t0.elapsed().as_secs_f64() * 1e6 / JOBS as f64;
    let on_wire: u64 = wire.values().sum();
    eprintln!(
        "dedupe overhead: {JOBS} jobs without dedupe {p:.3}s, with dedupe-key {k:.3}s (best of \
         2; runs as (secs, batches, memcached key commands): {plain:?} / {keyed:?}); added \
         latency {:+.3} ms per message; key commands per message {:.2}; requests on the wire \
         (counting proxy, {} batches): {wire:?} = {:.2} per message, {:.1} per batch; a \
         text-protocol add from the test on a fresh connection takes {rtt_us:.0} µs",
        (k - p) * 1000.0 / JOBS as f64,
        keyed[0].2 as f64 / JOBS as f64,
        counted.1,
        on_wire as f64 / JOBS as f64,
        on_wire as f64 / counted.1.max(1) as f64,
    );
    for (secs, batches, requests) in &plain {
        assert_eq!(
            *requests, 0,
            "a queue without dedupe asked memcached ({secs:.3}s, {batches} batches)"
        );
    }
    for (secs, batches, requests) in keyed.iter().chain([&counted]) {
        assert!(
            *requests <= JOBS as u64,
            "{requests} memcached key commands for {JOBS} messages ({secs:.3}s, {batches} batches)"
        );
    }
    assert_eq!(wire.get("add").copied(), Some(JOBS as u64), "{wire:?}");
    assert!(
        on_wire <= JOBS as u64,
        "at most one memcached request per message: {on_wire} requests for {JOBS} messages \
         ({wire:?})"
    );
}
