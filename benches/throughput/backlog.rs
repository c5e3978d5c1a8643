//! The throughput bench's backlog mode (`cargo bench --bench throughput -- backlog`): how
//! a master starts on a big backlog, on the filesystem queue (files in `new/`) and on SQS
//! (moto, launched fast at depth as in the sqs mode). For a backlog of 1,000 and of
//! `CHORE_BENCH_BACKLOG` messages (default 100,000), over `CHORE_BENCH_BACKLOG_ROUNDS`
//! rounds (default 3), it prints how long loading the backlog took, the time from the
//! master's start to its first job's start (the handler's `CHORE_BENCH_STAMPS` stamp), the
//! master's resident memory at that moment (VmRSS) and its peak (VmHWM) over the first
//! `CHORE_BENCH_BACKLOG_SECS` seconds after it (default 10), the batches started and the
//! master's CPU time by then. The master is stopped then: the backlog is not drained.
//!
//! The handler holds each message 50 ms, so two workers drain about 40 jobs a second and
//! the backlog stays a backlog for the whole run. On SQS the line also gives moto's own
//! cost at that depth (one `GetQueueAttributes` and one `ReceiveMessage`, timed from here)
//! and the calls chore made before its first job, so that what moto spends on a deep queue
//! (its receive and its `GetQueueAttributes` scan the whole queue) can be told from what
//! chore spends.

use super::support::moto::{AWS_ENV, Moto};
use super::*;
use std::collections::BTreeMap;

/// How long the handler holds each message, in milliseconds.
const HOLD_MS: &str = "50";
/// Threads publishing the SQS backlog (moto answers a few calls at once).
const LOADERS: usize = 4;

pub(super) fn figures(chore: &Path, me: &Path) {
    let big: usize = env_or("CHORE_BENCH_BACKLOG", 100_000);
    let rounds: usize = env_or("CHORE_BENCH_BACKLOG_ROUNDS", 3).max(1);
    let after = Duration::from_secs(env_or("CHORE_BENCH_BACKLOG_SECS", 10) as u64);
    let mut sizes = vec![1_000, big];
    sizes.dedup();
    println!(
        "big backlogs (concurrency 2, batch size 50, handler holding {HOLD_MS} ms a message; \
         {rounds} rounds; RSS at the first job, peak over the {} s after it)",
        after.as_secs()
    );
    for &n in &sizes {
        for _ in 0..rounds {
            let scratch = Scratch::new(&format!("backlog-fs-{n}"));
            let t = Instant::now();
            publish_noops(&scratch.0, n);
            let loaded = t.elapsed();
            let stamps = scratch.0.join("stamps");
            let file = chorefile(&scratch.0, &handler(me, &stamps), "");
            let t0 = wall_ns();
            let child = start(chore, &file, &scratch.0);
            let seen = watch(child, t0, &stamps, after, String::new);
            println!(
                "  filesystem {n:>7}: {} (loaded in {loaded:.1?})",
                seen.line()
            );
        }
    }
    sqs_figures(chore, me, &sizes, rounds, after);
}

fn sqs_figures(chore: &Path, me: &Path, sizes: &[usize], rounds: usize, after: Duration) {
    let scratch = Scratch::new("backlog-sqs");
    let Some(moto) = Moto::start_fast_recording(&scratch.0.join("recording.jsonl")) else {
        println!(
            "  SQS: moto_server not found (run `bash scripts/test.sh` once, or set CHORE_TEST_MOTO_SERVER)"
        );
        return;
    };
    for &n in sizes {
        let name = format!("backlog{n}");
        let url = moto.create(&name, serde_json::json!({}));
        let stamps = scratch.0.join(format!("stamps-{n}"));
        let file = scratch.0.join(format!("Chorefile-{n}"));
        let text = format!(
            "sqs-endpoint = {endpoint:?}\nconcurrency = 2\nbatch-size = 50\nlog-level = \"warn\"\n\n\
             [queues.{name}]\nbackend = \"sqs\"\ndedupe = false\nhandler = {handler}\n",
            endpoint = moto.endpoint(),
            handler = handler(me, &stamps),
        );
        std::fs::write(&file, text).unwrap();
        for round in 0..rounds {
            // Top the queue up to `n` visible: the last round's master took some.
            let missing = n.saturating_sub(moto.counts(&url).0 as usize);
            let t = Instant::now();
            load(&moto, &url, missing, round * n);
            let loaded = t.elapsed();
            let (visible, _, _) = moto.counts(&url);
            assert!(visible as usize >= n, "moto holds {visible} of {n}");
            let (open, receive) = moto_costs(&moto, &url);
            let _ = std::fs::remove_file(&stamps);
            moto.record();
            let t0 = wall_ns();
            let child = Command::new(chore)
                .envs(AWS_ENV)
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(scratch.0.join(format!("chore-{n}.log"))).unwrap())
                .spawn()
                .unwrap();
            let seen = watch(child, t0, &stamps, after, || calls_so_far(&moto));
            println!(
                "  SQS        {n:>7}: {} (loaded {missing} in {loaded:.1?})",
                seen.line()
            );
            // Before its first batch of 50 can start, chore opens the queue (one
            // GetQueueAttributes) and receives five times ten, one call after another.
            println!(
                "      moto at this depth: GetQueueAttributes {:.0} ms, ReceiveMessage {:.0} ms: \
                 {:.0} ms for the open and five receives; chore's calls before its first job: {}",
                ms(open),
                ms(receive),
                ms(open + receive * 5),
                seen.before_first
            );
        }
        moto.call("DeleteQueue", serde_json::json!({ "QueueUrl": url }));
    }
}

/// What moto takes, at the queue's present depth, for the GetQueueAttributes chore's open
/// sends and for a receive of ten (the median of three; what they return is visible again
/// at once).
fn moto_costs(moto: &Moto, url: &str) -> (Duration, Duration) {
    let t = Instant::now();
    moto.call(
        "GetQueueAttributes",
        serde_json::json!({"QueueUrl": url, "AttributeNames": ["VisibilityTimeout", "FifoQueue"]}),
    );
    let open = t.elapsed();
    let mut receives: Vec<Duration> = (0..3)
        .map(|_| {
            let t = Instant::now();
            moto.receive(url, 0);
            t.elapsed()
        })
        .collect();
    receives.sort();
    (open, receives[1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The batch-mode no-op handler, holding each message, stamping each start in `stamps`.
fn handler(me: &Path, stamps: &Path) -> String {
    format!(
        "{{ command = [{:?}, \"--noop-handler\", \"--hold-ms\", \"{HOLD_MS}\"], mode = \"batch\", \
         env = {{ CHORE_BENCH_STAMPS = {:?} }} }}",
        me.display().to_string(),
        stamps.display().to_string()
    )
}

/// Publish `count` no-op messages to `url` from `LOADERS` threads, in SendMessageBatch
/// calls of ten; their `args` count on from `from`.
fn load(moto: &Moto, url: &str, count: usize, from: usize) {
    let bodies: Vec<String> = (from..from + count)
        .map(|i| format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"))
        .collect();
    let share = count.div_ceil(LOADERS).max(1);
    std::thread::scope(|s| {
        for part in bodies.chunks(share) {
            s.spawn(move || moto.send_all(url, part));
        }
    });
}

/// The calls moto has recorded since `record`, by action: "ReceiveMessage 5, …".
fn calls_so_far(moto: &Moto) -> String {
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for r in moto.recording() {
        *by_action.entry(r.action).or_default() += 1;
    }
    let parts: Vec<String> = by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
    parts.join(", ")
}

/// What one master's start looked like.
struct Seen {
    first_job: Duration,
    rss_at_first_kb: u64,
    peak_kb: u64,
    batches: usize,
    cpu: f64,
    /// What `at_first` said when the first job started.
    before_first: String,
}

impl Seen {
    fn line(&self) -> String {
        format!(
            "first job {:>6.3} s after start; master RSS {:>5.1} MB at it, peak {:>5.1} MB; \
             {:>2} batches started, master CPU {:.2} s",
            self.first_job.as_secs_f64(),
            self.rss_at_first_kb as f64 / 1024.0,
            self.peak_kb as f64 / 1024.0,
            self.batches,
            self.cpu
        )
    }
}

/// Watch master `child`, started at wall-clock `t0` (ns), until `after` past its first
/// job (the first line in `stamps`); then stop it. `at_first` runs when the first job is
/// seen.
fn watch(
    child: Child,
    t0: u128,
    stamps: &Path,
    after: Duration,
    at_first: impl FnOnce() -> String,
) -> Seen {
    let pid = child.id() as i32;
    let started = Instant::now();
    let mut peak_kb = 0;
    let mut at_first = Some(at_first);
    let mut first: Option<(Duration, u64, Instant, String)> = None;
    loop {
        // Coarse enough not to compete with what it measures; fine enough for the first job.
        std::thread::sleep(Duration::from_millis(5));
        peak_kb = peak_kb.max(peak_rss_kb(pid));
        let text = std::fs::read_to_string(stamps).unwrap_or_default();
        if first.is_none()
            && let Some(stamp) = text.lines().next().and_then(|l| l.parse::<u128>().ok())
        {
            let rss = rss_kb(pid);
            let said = at_first.take().map(|f| f()).unwrap_or_default();
            let since = Duration::from_nanos(stamp.saturating_sub(t0) as u64);
            first = Some((since, rss, Instant::now(), said));
        }
        if let Some((_, _, seen_at, _)) = &first
            && seen_at.elapsed() >= after
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no first job in 10 minutes"
        );
    }
    peak_kb = peak_kb.max(peak_rss_kb(pid));
    let cpu = super::http::cpu_secs(pid, false);
    let batches = std::fs::read_to_string(stamps)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    stop(child);
    let (first_job, rss_at_first_kb, _, before_first) = first.unwrap();
    Seen {
        first_job,
        rss_at_first_kb,
        peak_kb,
        batches,
        cpu,
        before_first,
    }
}

/// Resident memory of a live process now (VmRSS), in KiB; 0 when it is gone.
fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
