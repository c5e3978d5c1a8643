//! Dedupe through memcached: the real `chore` binary against a real memcached (and moto
//! for SQS), on loopback.
//!
//! Each test starts its own memcached (`support::memcached`, which can stop it and start
//! it again on the same port: an outage and a recovery) and, for SQS, its own moto. A key
//! the test writes itself is written the way Ruby Chore writes it, so it stands for
//! another consumer (Ruby Chore, or a second chore) that has already taken the message.
//!
//! What is asserted holds on real SQS too: one receiver per queue, timings with margins.
//!
//! The tests are grouped by what they exercise: `keys`, `outages`, `ring`, `overhead`.

mod keys;
mod outages;
mod overhead;
mod ring;

use crate::harness::*;
use crate::support::moto::Moto;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;

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
