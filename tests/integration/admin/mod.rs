//! `chore queue VERB`: the operator's verbs through the real binary, on filesystem queues
//! (`filesystem`, `requeue`) and on SQS (moto: `sqs`), and dumps moved from one backend to the other.
//!
//! Each test checks a verb's output and its effect on the queue: what peek, stats and dump
//! leave unchanged, what requeue, purge and delete change, a requeue killed half-way that
//! a second run finishes without losing or doubling a message, and bad input answered by
//! one clear line and exit status 2.

mod filesystem;
mod requeue;
mod sqs;

use crate::harness::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

/// `chore queue -c Chorefile ARGS…` with `stdin` and extra environment.
fn queue(sb: &Sandbox, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let cf = sb.chorefile_path();
    let mut all = vec!["queue", "-c", cf.to_str().unwrap()];
    all.extend_from_slice(args);
    sb.run_with_env(&all, stdin, env)
}

/// The same, which must succeed: (stdout, stderr).
fn queue_ok(
    sb: &Sandbox,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (String, String) {
    let out = queue(sb, args, stdin, env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "chore queue {args:?} failed ({}): {stderr}",
        out.status
    );
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// Every file under `dir`: its relative path, contents, mtime (ns) and inode.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, i64, u64)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, i64, u64)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                out.insert(rel, (std::fs::read(&p).unwrap(), mtime, meta.ino()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The `body` of each JSON line, in order.
fn bodies(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["body"].as_str().unwrap().to_string()
        })
        .collect()
}
