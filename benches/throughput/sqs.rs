//! The throughput bench's SQS mode (`cargo bench --bench throughput -- sqs`): chore
//! against moto on loopback, through a batch-mode handler: jobs/s for a backlog, SQS API
//! calls per 1,000 jobs by action, ReceiveMessage calls per idle queue-hour, and how soon
//! a burst of 1, 9, 10 or 20 messages into an idle master starts after it became visible.

use super::support::moto::{AWS_ENV, Moto};
use super::*;
use std::collections::BTreeMap;

fn chorefile(dir: &Path, endpoint: &str, me: &Path, count: &Path) -> PathBuf {
    let path = dir.join("Chorefile");
    let text = format!(
        "sqs-endpoint = {endpoint:?}\nconcurrency = 2\nbatch-size = 50\nlog-level = \"warn\"\n\n\
         [queues.bench]\nbackend = \"sqs\"\ncreate = true\ndedupe = false\n\
         handler = {{ command = [{me:?}, \"--noop-handler\"], mode = \"batch\", env = {{ CHORE_BENCH_COUNT = {count:?} }} }}\n",
        me = me.display().to_string(),
        count = count.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn processed(count: &Path) -> usize {
    std::fs::read_to_string(count)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<usize>().ok())
        .sum()
}

fn master(chore: &Path, file: &Path, log: &Path) -> Child {
    Command::new(chore)
        .envs(AWS_ENV)
        .arg("-c")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// When each recorded ReceiveMessage started, in seconds of the day (from its
/// `X-Amz-Date`, `YYYYMMDDTHHMMSSZ`: enough for a run of a few minutes).
fn receive_times(moto: &Moto) -> Vec<i64> {
    let mut times = Vec::new();
    for r in moto.recording() {
        if r.action != "ReceiveMessage" {
            continue;
        }
        let stamp = r
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-date"))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("");
        let digits: String = stamp.chars().skip(9).take(6).collect();
        if let Ok(hms) = digits.parse::<i64>() {
            times.push(hms / 10_000 * 3600 + hms / 100 % 100 * 60 + hms % 100);
        }
    }
    times
}

pub fn figures(chore: &Path, me: &Path) {
    let jobs: usize = env_or("CHORE_BENCH_SQS_JOBS", 2_000);
    let scratch = Scratch::new("sqs");
    let Some(moto) = Moto::start_fast_recording(&scratch.0.join("recording.jsonl")) else {
        println!(
            "SQS mode: moto_server not found (run `bash scripts/test.sh` once, or set CHORE_TEST_MOTO_SERVER)"
        );
        return;
    };
    println!(
        "chore {} SQS benchmark (moto on loopback, concurrency 2, batch size 50)",
        env!("CARGO_PKG_VERSION")
    );
    let count = scratch.0.join("count");
    let file = chorefile(&scratch.0, &moto.endpoint(), me, &count);
    backlog(chore, &moto, &file, &count, jobs);
    bursts(chore, &moto, me, &scratch.0);
    idle_polls(chore, &moto, &file);
}

/// Bursts into an idle master (batch size 50, the default 20 s long poll and batch
/// timeout): the delay from the moment the burst's last SendMessageBatch returned (all of
/// it visible) to the start of the handler that ran its last message. A burst's first
/// messages are visible before that call returns, so a handler can start before it does:
/// the delay is then negative.
fn bursts(chore: &Path, moto: &Moto, me: &Path, dir: &Path) {
    let url = moto.create("burst", serde_json::json!({}));
    let (stamps, count) = (dir.join("burst-stamps"), dir.join("burst-count"));
    let file = dir.join("Chorefile-burst");
    let text = format!(
        "sqs-endpoint = {endpoint:?}\nconcurrency = 2\nbatch-size = 50\nlog-level = \"warn\"\n\n\
         [queues.burst]\nbackend = \"sqs\"\ndedupe = false\n\
         handler = {{ command = [{me:?}, \"--noop-handler\"], mode = \"batch\", env = {{ CHORE_BENCH_STAMPS = {stamps:?}, CHORE_BENCH_COUNT = {count:?} }} }}\n",
        endpoint = moto.endpoint(),
        me = me.display().to_string(),
        stamps = stamps.display().to_string(),
        count = count.display().to_string()
    );
    std::fs::write(&file, text).unwrap();
    let idle = master(chore, &file, &dir.join("chore-burst.log"));
    let mut done = 0;
    let mut line =
        String::from("start of a burst's last batch, from the send's start, idle master:");
    for burst in [1usize, 9, 10, 20] {
        // Long enough for the consumer to park its long poll again.
        std::thread::sleep(Duration::from_secs(2));
        let before = std::fs::read_to_string(&stamps)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let bodies: Vec<String> = (0..burst).map(|i| format!("{{\"n\":{i}}}")).collect();
        let unix_ns = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        };
        // The burst becomes visible somewhere inside the send: the delay is counted from
        // the send's start (an upper bound), and the send's own time is shown beside it
        // (moto may answer the sender after chore has already received the messages).
        let sending = unix_ns();
        moto.send_all(&url, &bodies);
        let visible = unix_ns();
        done += burst;
        let t0 = Instant::now();
        while processed(&count) < done {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "a burst of {burst} did not run; see chore-burst.log"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let last = std::fs::read_to_string(&stamps)
            .unwrap_or_default()
            .lines()
            .skip(before)
            .filter_map(|l| l.parse::<u128>().ok())
            .max()
            .unwrap_or(visible);
        let ms = (last as f64 - sending as f64) / 1e6;
        let send_ms = (visible - sending) as f64 / 1e6;
        line.push_str(&format!(" {burst}: {ms:.0} ms (send {send_ms:.0} ms);"));
    }
    stop(idle);
    println!("{}", line.trim_end_matches(';'));
}

/// A backlog of `jobs`: jobs/s and SQS calls per 1,000 jobs.
fn backlog(chore: &Path, moto: &Moto, file: &Path, count: &Path, jobs: usize) {
    let dir = file.parent().unwrap();
    // Publish the backlog (SendMessageBatch, ten a call), then count only the consumer.
    let lines: String = (0..jobs)
        .map(|i| format!("{{\"class\":\"Noop\",\"args\":[{i}]}}\n"))
        .collect();
    enqueue(chore, file, &lines);

    moto.record();
    let t0 = Instant::now();
    let busy = master(chore, file, &dir.join("chore.log"));
    while processed(count) < jobs {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the SQS run did not finish; see chore.log"
        );
        // Coarse on purpose, as in `throughput`: this poll shares the cores.
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t0.elapsed();
    // The drain flushes the last batched deletes before the master exits.
    stop(busy);
    let by_action: BTreeMap<String, usize> = moto
        .recorded()
        .into_iter()
        .map(|(action, calls)| (action, calls.len()))
        .collect();
    let total: usize = by_action.values().sum();
    println!(
        "throughput, batch handler:       {:>8.0} jobs/s  ({jobs} jobs in {:.2} s; moto bounds this)",
        jobs as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "SQS API calls per 1,000 jobs:    {:>8.0} in all, under a backlog:",
        total as f64 * 1000.0 / jobs as f64
    );
    for (action, n) in &by_action {
        println!("    {action:<29}{:>8.1}", *n as f64 * 1000.0 / jobs as f64);
    }
}

/// An empty queue: ReceiveMessage calls per idle queue-hour.
fn idle_polls(chore: &Path, moto: &Moto, file: &Path) {
    // Idle: an empty queue, long polls only, for a fixed stretch: the figure is a rate
    // over time, so time is what is measured here, not a wait for anything.
    moto.record();
    let idle = Duration::from_secs(65);
    let quiet = master(chore, file, &file.parent().unwrap().join("chore-idle.log"));
    std::thread::sleep(idle);
    stop(quiet);
    // The rate is the spacing of successive polls, free of where the window's edges fall.
    let times = receive_times(moto);
    let (first, last) = (
        times.first().copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
    );
    let per_hour = if times.len() > 1 && last > first {
        (times.len() - 1) as f64 * 3600.0 / (last - first) as f64
    } else {
        f64::NAN
    };
    println!(
        "idle ReceiveMessage calls:       {per_hour:>8.0} per queue-hour ({} polls in {} s, one consumer thread)",
        times.len(),
        idle.as_secs()
    );
}

/// Publish `lines` (JSON Lines) to the Chorefile's SQS queue `bench` with `chore enqueue`,
/// which sends them ten a call.
pub(super) fn enqueue(chore: &Path, file: &Path, lines: &str) {
    let mut enqueue = Command::new(chore)
        .envs(AWS_ENV)
        .args(["enqueue", "-c"])
        .arg(file)
        .arg("bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    enqueue
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(enqueue.wait().unwrap().success(), "enqueue failed");
}
