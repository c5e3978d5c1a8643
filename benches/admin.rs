//! `cargo bench --bench admin`: how long `chore queue dump` and `chore queue requeue` take
//! for a large queue, on the filesystem queue (10,000 messages; `CHORE_BENCH_ADMIN_MESSAGES`)
//! and on SQS (moto on loopback, launched patched to stay fast on a deep queue as the
//! throughput bench does; 10,000 messages, `CHORE_BENCH_ADMIN_SQS_MESSAGES`), then `load`
//! of the SQS dump into a fresh SQS queue. Prints wall time, messages/s and the command's
//! CPU time per message (user + system, which depends less on a loaded machine, and for
//! SQS less on the emulator's speed).
//!
//! Figures, not pass/fail: nothing here asserts a speed.

use chore::FilesystemQueue;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::moto::{AWS_ENV, Moto};

#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

const CHORE: &str = env!("CARGO_BIN_EXE_chore");

fn main() {
    // `cargo test --benches` runs this with no `--bench`: do nothing there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size = |var: &str, default: usize| -> usize {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = size("CHORE_BENCH_ADMIN_MESSAGES", 10_000);
    let sqs_n = size("CHORE_BENCH_ADMIN_SQS_MESSAGES", 10_000);
    let dir = std::env::temp_dir().join(format!("chore-bench-admin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!("chore queue (a loaded machine makes wall times noisy; CPU less so)");
    filesystem(&dir, n);
    sqs(&dir, sqs_n);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU seconds (user + system) of the children reaped so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Run `chore ARGS` in `dir`, which must succeed; print its figures.
fn timed(label: &str, dir: &Path, args: &[&str], env: &[(&str, &str)], n: usize) {
    let cpu = children_cpu();
    let start = Instant::now();
    let out = Command::new(CHORE)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let wall = start.elapsed();
    let cpu = children_cpu() - cpu;
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "  {label:<28} {:>7.2} s  {:>8.0} msg/s  CPU {:>6.1} µs/msg   ({})",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        cpu * 1e6 / n as f64,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn filesystem(base: &Path, n: usize) {
    let dir = base.join("fs");
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("queues");
    std::fs::write(
        dir.join("Chorefile"),
        format!(
            "fs-queue-root = {:?}\n[queues.jobs]\nhandler = [\"true\"]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    let q = FilesystemQueue::open(
        &root,
        "jobs",
        None,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .unwrap();
    for i in 0..n {
        q.publish(
            Some("Bench"),
            &format!("{{\"class\":\"Bench\",\"args\":[{i}]}}"),
        )
        .unwrap();
    }
    println!("filesystem, {n} messages:");
    timed(
        "dump",
        &dir,
        &[
            "queue",
            "-c",
            "Chorefile",
            "dump",
            "jobs",
            "-o",
            "dump.jsonl",
        ],
        &[],
        n,
    );
    // Every message dead, as the master leaves one: `<id>.<attempts>.job` and its note.
    let (new, dead) = (root.join("jobs/new"), root.join("jobs/dead"));
    for e in std::fs::read_dir(&new).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        let id = name.split('.').next().unwrap();
        let to = format!("{id}.3.job");
        std::fs::rename(e.path(), dead.join(&to)).unwrap();
        std::fs::write(dead.join(format!("{to}.reason")), "reason: exit status 1\n").unwrap();
    }
    timed(
        "requeue (dead/ to new/)",
        &dir,
        &["queue", "-c", "Chorefile", "requeue", "jobs"],
        &[],
        n,
    );
}

fn sqs(base: &Path, n: usize) {
    let dir = base.join("sqs");
    std::fs::create_dir_all(&dir).unwrap();
    let recording: PathBuf = dir.join("moto.rec");
    let Some(moto) = Moto::start_fast_recording(&recording) else {
        println!("sqs: moto's python is not beside moto_server; skipped");
        return;
    };
    std::fs::write(
        dir.join("Chorefile"),
        format!(
            "sqs-endpoint = {:?}\n[queues.jobs]\nbackend = \"sqs\"\nhandler = [\"true\"]\n\
             dead-letter-queue = \"jobs-dead\"\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let created = Command::new(CHORE)
        .args(["queue", "-c", "Chorefile", "create"])
        .current_dir(&dir)
        .envs(AWS_ENV.iter().copied())
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let dlq = moto.queue_url("jobs-dead").unwrap();
    let bodies: Vec<String> = (0..n)
        .map(|i| format!("{{\"class\":\"Bench\",\"args\":[{i}]}}"))
        .collect();
    let fill = Instant::now();
    moto.send_all(&dlq, &bodies);
    println!(
        "sqs (moto), {n} messages (filled in {:.1} s):",
        fill.elapsed().as_secs_f64()
    );
    timed(
        "dump --dead",
        &dir,
        &[
            "queue",
            "-c",
            "Chorefile",
            "dump",
            "jobs",
            "--dead",
            "-o",
            "dump.jsonl",
        ],
        &AWS_ENV,
        n,
    );
    timed(
        "requeue (DLQ to queue)",
        &dir,
        &[
            "queue",
            "-c",
            "Chorefile",
            "requeue",
            "jobs",
            "--hold",
            "900",
        ],
        &AWS_ENV,
        n,
    );
    let copy = moto.create("copy", serde_json::json!({}));
    timed(
        "load (dump to a new queue)",
        &dir,
        &["queue", "-c", "Chorefile", "load", &copy, "dump.jsonl"],
        &AWS_ENV,
        n,
    );
}
