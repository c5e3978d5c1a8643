//! `cargo bench --bench throughput`: chore's figures on the filesystem queue.
//!
//! Runs the real `chore` binary (release build) on temporary queues and prints:
//! 1. jobs/s end to end for N no-op jobs (default 20,000; `CHORE_BENCH_JOBS`) with
//!    concurrency 2 and batch size 50, through a batch-mode handler, and for a smaller
//!    run through a per-message handler (`/bin/true`, one process per message); each the
//!    best of `CHORE_BENCH_ROUNDS` runs (default 3), every round's figures listed beside;
//!    the queues are made under the temporary directory, whose filesystem is named, and
//!    the batch-mode figures are taken again on /dev/shm when that is tmpfs and the
//!    temporary directory is not (`throughput/place.rs`);
//! 2. enqueue→start latency of a lone job on an idle queue, p50/p99 over repeated runs
//!    (`CHORE_BENCH_LATENCY_RUNS`, default 100);
//! 3. peak RSS (VmHWM) of the master over the throughput run, and of one worker;
//! 4. CPU per 1,000 jobs of each throughput run, for the master, the workers (with the
//!    spawner that forks them) and the handlers separately, and the cost of a bare
//!    `posix_spawn` of `/bin/true` on this machine, the floor under a per-message handler,
//!    and of the file protocol alone (rename, read, unlink per message), the floor under
//!    the master on a filesystem queue (`throughput/cpu.rs`).
//!
//! The no-op batch handler answers `ok` for every line of its batch, and with
//! `CHORE_BENCH_STAMPS` set it appends the wall-clock time it started to that file (the
//! latency probe). On the filesystem figures it is a minimal C program built at the start
//! (`throughput/noop.rs`), so that the handlers' share is what a minimal program costs;
//! elsewhere, and without a C compiler, it is this very binary re-executed with
//! `--noop-handler`.
//!
//! With `-- sqs` (`cargo bench --bench throughput -- sqs`), it measures the SQS backend
//! against moto on loopback instead (`CHORE_TEST_MOTO_SERVER` or `./.venv/bin/moto_server`,
//! which `scripts/test.sh` installs): jobs/s for a backlog (`CHORE_BENCH_SQS_JOBS`, default
//! 2,000), SQS API calls per 1,000 jobs by action (counted with moto's request recorder),
//! and ReceiveMessage calls per idle queue-hour (from a 65 s idle run). moto is launched
//! patched to stay fast on a deep queue (see `support::moto`); the code is in
//! `throughput/sqs.rs`.
//!
//! With `-- http`, it measures HTTP handlers instead (`throughput/http.rs`): messages/s
//! and chore's CPU per message, posting to a keep-alive server in this process, on the
//! filesystem queue and on moto. With `-- preload`, it compares a preloaded Ruby handler
//! (a 2 s boot, paid once) with a Ruby batch handler that boots nothing
//! (`throughput/preload.rs`). With `-- metrics`, it runs the filesystem backlog with
//! metrics off and on (`throughput/metrics.rs`). With `-- backlog`, it starts a master on
//! a big backlog, on the filesystem queue and on moto: time to the first job and master
//! RSS (`throughput/backlog.rs`). `-- all` runs every mode.
//!
//! `CHORE_BENCH_CHORE=<path>` runs another `chore` binary instead of this build's (an A/B
//! against an earlier build, run alternately on the same machine).
//!
//! Figures, not pass/fail: nothing here asserts a speed.
//!
//! moto, `/proc` and polling helpers are the integration tests' (`tests/support`).

use chore::FilesystemQueue;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::poll::{PATIENCE, wait_until};
use support::procs::{ConsumerWait, consumers_settled, peak_rss_kb, workers_of};

// Shared with the integration tests; the bench uses a part of it. (`cargo check
// --benches` sets cfg(test) here but drops #[test] functions, so the unit tests' imports
// go unused.)
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--noop-handler") {
        noop_handler(&args);
        return;
    }
    // `cargo test --benches` runs this with no `--bench`: do nothing there.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let picked = |mode: &str| args.iter().any(|a| a == mode);
    let all = picked("all");
    let (sqs_mode, http_mode) = (all || picked("sqs"), all || picked("http"));
    let preload_mode = all || picked("preload");
    let metrics_mode = all || picked("metrics");
    let backlog_mode = all || picked("backlog");
    let fs_mode = all
        || !(picked("sqs")
            || picked("http")
            || picked("preload")
            || picked("metrics")
            || picked("backlog"));
    let chore = std::env::var_os("CHORE_BENCH_CHORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_chore")));
    let me = std::env::current_exe().expect("own path");
    if fs_mode {
        filesystem_figures(&chore, &me);
    }
    if sqs_mode {
        sqs::figures(&chore, &me);
    }
    if http_mode {
        http::figures(&chore);
    }
    if preload_mode {
        preload::figures(&chore);
    }
    if metrics_mode {
        metrics::figures(&chore, &me);
    }
    if backlog_mode {
        backlog::figures(&chore, &me);
    }
}

fn filesystem_figures(chore: &Path, me: &Path) {
    let jobs: usize = env_or("CHORE_BENCH_JOBS", 20_000);
    // Enough that the master's CPU, read from /proc in 10 ms ticks, is within a few µs a job.
    let per_message_jobs: usize = env_or("CHORE_BENCH_PER_MESSAGE_JOBS", 3_000);
    let runs: usize = env_or("CHORE_BENCH_LATENCY_RUNS", 100);
    println!(
        "chore {} benchmark (filesystem queue, concurrency 2, batch size 50)",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let probe = cpu::spawn_probe(per_message_jobs);
    let noop = noop::Noop::new(me);
    println!("the no-op batch handler: {}", noop.what);
    let rounds = env_or("CHORE_BENCH_ROUNDS", 3).max(1);
    let disk = place::Place::temporary();
    println!("queues in: {}", disk.label());
    batch_figures(chore, &noop, &disk, jobs, rounds, &probe);
    if let Some(tmpfs) = disk.tmpfs_beside(jobs) {
        println!(
            "  again on {}, where rename and unlink cost no journal (the rest of the figures are on {}):",
            tmpfs.label(),
            disk.fs
        );
        batch_figures(chore, &noop, &tmpfs, jobs, rounds, &probe);
    }
    let (single, all) = best_of(rounds, || {
        throughput(chore, &noop, &disk, per_message_jobs, false, &probe)
    });
    println!(
        "throughput, per-message handler: {:>8.0} jobs/s  ({} jobs in {:.2} s, the best of {all}; one /bin/true per job)",
        single.jobs_per_second(),
        single.jobs,
        single.elapsed.as_secs_f64()
    );
    println!("    {}", single.cpu.line(single.jobs));
    let chore_us = (single.cpu.master + single.cpu.workers) as f64 / single.jobs as f64;
    println!(
        "posix_spawn of /bin/true alone:  {:>8.0} spawns/s, {:.0} µs CPU per spawn (parent and child); chore adds {:.0} µs CPU per job above it",
        probe.per_second, probe.cpu_us, chore_us
    );
    let (p50, p99, max) = latency(chore, &noop, runs);
    println!(
        "lone-job latency, enqueue→start: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({runs} runs)"
    );
    let worker_kb = worker_rss(chore, &noop);
    println!(
        "worker peak RSS:                 {:.1} MB (a chore-worker running a 50-message batch)",
        worker_kb as f64 / 1024.0
    );
}

/// Batch mode's figures with the queues under `place`: the best of `rounds`, its CPU by
/// part, and the file protocol's floor there.
fn batch_figures(
    chore: &Path,
    noop: &noop::Noop,
    place: &place::Place,
    jobs: usize,
    rounds: usize,
    probe: &cpu::Probe,
) {
    let (batch, all) = best_of(rounds, || throughput(chore, noop, place, jobs, true, probe));
    println!(
        "throughput, batch handler:       {:>8.0} jobs/s  ({} jobs in {:.2} s, the best of {all}; master peak RSS {:.1} MB)",
        batch.jobs_per_second(),
        batch.jobs,
        batch.elapsed.as_secs_f64(),
        batch.master_rss_kb as f64 / 1024.0
    );
    println!("    {}", batch.cpu.line(batch.jobs));
    let floor = {
        let scratch = Scratch::under(&place.dir, "floor");
        cpu::file_protocol_us(&scratch.0, jobs)
    };
    println!(
        "    the file protocol alone (rename into inprogress/, read, unlink; {jobs} files here): {floor:.1} µs CPU per job; the master adds {:.1} µs above it, workers and spawner {:.1}",
        batch.cpu.master as f64 / batch.jobs as f64 - floor,
        batch.cpu.workers as f64 / batch.jobs as f64
    );
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Append `line` to the file named by environment variable `var`, when it is set.
fn append_to(var: &str, line: impl std::fmt::Display) {
    if let Ok(path) = std::env::var(var) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        // One write, so that lines from handlers running at once never interleave.
        f.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
}

/// The batch-mode no-op handler: `ok` for every input line.
fn noop_handler(args: &[String]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    append_to("CHORE_BENCH_STAMPS", now);
    let hold = args
        .iter()
        .position(|a| a == "--hold-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut processed = 0usize;
    for line in stdin.lines() {
        let line = line.unwrap();
        if let Some(ms) = hold {
            std::thread::sleep(Duration::from_millis(ms));
        }
        // The id is the first field chore writes: {"id":"...",...}
        let id_start = line.find("\"id\":\"").expect("an id") + 6;
        let id_end = id_start + line[id_start..].find('"').expect("end of id");
        writeln!(
            out,
            "{{\"id\":\"{}\",\"result\":\"ok\"}}",
            &line[id_start..id_end]
        )
        .unwrap();
        processed += 1;
    }
    out.flush().unwrap();
    append_to("CHORE_BENCH_COUNT", processed);
    append_to("CHORE_BENCH_CPU", cpu::self_us());
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        Scratch::under(&std::env::temp_dir(), name)
    }

    fn under(dir: &Path, name: &str) -> Scratch {
        let p = dir.join(format!("chore-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chorefile(dir: &Path, handler: &str, extra: &str) -> PathBuf {
    let path = dir.join("Chorefile");
    let text = format!(
        "fs-queue-root = {root:?}\nconcurrency = 2\nbatch-size = 50\nlog-level = \"warn\"\n{extra}\n\n[queues.bench]\nhandler = {handler}\n",
        root = dir.join("queues").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start(chore: &Path, chorefile: &Path, dir: &Path) -> Child {
    Command::new(chore)
        .arg("-c")
        .arg(chorefile)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("chore.log")).unwrap())
        .spawn()
        .expect("start chore")
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn open_queue(dir: &Path) -> FilesystemQueue {
    FilesystemQueue::open(
        &dir.join("queues"),
        "bench",
        None,
        Duration::from_secs(43_200),
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .unwrap()
}

/// `jobs` no-op messages of class `Noop` published to the bench queue under `dir`.
fn publish_noops(dir: &Path, jobs: usize) {
    let queue = open_queue(dir);
    for i in 0..jobs {
        queue
            .publish(
                Some("Noop"),
                &format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"),
            )
            .unwrap();
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

struct Run {
    jobs: usize,
    elapsed: Duration,
    master_rss_kb: u64,
    cpu: cpu::Split,
}

impl Run {
    fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

/// The fastest of `rounds` runs, and every round's rate and CPU per job in a few words: a
/// shared machine's rates vary by a tenth from one run to the next, and the slow rounds
/// are the machine's, not chore's.
fn best_of(rounds: usize, mut run: impl FnMut() -> Run) -> (Run, String) {
    let runs: Vec<Run> = (0..rounds).map(|_| run()).collect();
    let all = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0}/s at {:.1} µs",
                r.jobs_per_second(),
                r.cpu.total() as f64 / r.jobs as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let best = runs
        .into_iter()
        .max_by(|a, b| a.jobs_per_second().total_cmp(&b.jobs_per_second()))
        .expect("at least one round");
    let rounds = if rounds == 1 {
        "1 round".to_string()
    } else {
        format!("{rounds} rounds")
    };
    (best, format!("{rounds}: {all}"))
}

fn throughput(
    chore: &Path,
    noop: &noop::Noop,
    place: &place::Place,
    jobs: usize,
    batch_mode: bool,
    probe: &cpu::Probe,
) -> Run {
    let scratch = Scratch::under(&place.dir, if batch_mode { "batch" } else { "single" });
    let handler_cpu = scratch.0.join("handler-cpu");
    let handler = if batch_mode {
        format!(
            "{{ command = {}, mode = \"batch\", env = {{ CHORE_BENCH_CPU = {:?} }} }}",
            noop.command(&[]),
            handler_cpu.display().to_string()
        )
    } else {
        "[\"/bin/true\"]".to_string()
    };
    let file = chorefile(&scratch.0, &handler, "");
    publish_noops(&scratch.0, jobs);
    let new = scratch.0.join("queues/bench/new");
    let inprogress = scratch.0.join("queues/bench/inprogress");
    let cpu0 = cpu::children_us();
    let t0 = Instant::now();
    let child = start(chore, &file, &scratch.0);
    let pid = child.id() as i32;
    let mut master_rss_kb = 0;
    loop {
        // Coarse on purpose: this poll shares the two cores with what it measures.
        std::thread::sleep(Duration::from_millis(10));
        master_rss_kb = master_rss_kb.max(peak_rss_kb(pid));
        if is_empty(&new) && is_empty(&inprogress) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            panic!(
                "the run did not finish in 10 minutes; see {}",
                scratch.0.join("chore.log").display()
            );
        }
    }
    let elapsed = t0.elapsed();
    master_rss_kb = master_rss_kb.max(peak_rss_kb(pid));
    let dead = std::fs::read_dir(scratch.0.join("queues/bench/dead"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dead, 0, "no job may fail in the benchmark");
    let master = cpu::process_us(pid);
    stop(child);
    // Everything the master started was reaped by the time it exited.
    let total = cpu::children_us() - cpu0;
    let (handlers, estimated) = if batch_mode {
        let text = std::fs::read_to_string(&handler_cpu).unwrap_or_default();
        (
            text.lines().filter_map(|l| l.parse::<u64>().ok()).sum(),
            false,
        )
    } else {
        ((probe.cpu_us * jobs as f64) as u64, true)
    };
    let master = master.min(total);
    let cpu = cpu::Split {
        master,
        workers: total.saturating_sub(master + handlers),
        handlers,
        estimated,
    };
    Run {
        jobs,
        elapsed,
        master_rss_kb,
        cpu,
    }
}

fn latency(chore: &Path, noop: &noop::Noop, runs: usize) -> (f64, f64, f64) {
    let scratch = Scratch::new("latency");
    let stamps = scratch.0.join("stamps");
    let handler = format!(
        "{{ command = {}, mode = \"batch\", env = {{ CHORE_BENCH_STAMPS = {:?} }} }}",
        noop.command(&[]),
        stamps.display().to_string()
    );
    let file = chorefile(&scratch.0, &handler, "");
    let queue = open_queue(&scratch.0);
    let child = start(chore, &file, &scratch.0);
    let idle = idle_master(child.id() as i32);
    idle();
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let before = std::fs::read_to_string(&stamps)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let t_publish = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        queue
            .publish(
                Some("Noop"),
                &format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = loop {
            let text = std::fs::read_to_string(&stamps).unwrap_or_default();
            if text.lines().count() > before {
                break text.lines().last().unwrap().parse::<u128>().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "a lone job did not start within 30 s"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        samples.push((started.saturating_sub(t_publish)) as f64 / 1e6);
        idle();
    }
    stop(child);
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    (pick(0.50), pick(0.99), *samples.last().unwrap())
}

/// Waits until master `pid` is idle: no worker running, and its consumer parked waiting
/// for new files, so that the next job is news to it.
fn idle_master(pid: i32) -> impl Fn() {
    move || {
        let mut consumer_idle = consumers_settled(pid, ConsumerWait::ForFiles);
        wait_until("the master to be idle", PATIENCE, || {
            workers_of(pid).is_empty() && consumer_idle()
        });
    }
}

/// Peak RSS of a worker, caught while its (slow) batch runs.
fn worker_rss(chore: &Path, noop: &noop::Noop) -> u64 {
    let scratch = Scratch::new("rss");
    let handler = format!(
        "{{ command = {}, mode = \"batch\" }}",
        noop.command(&["--hold-ms", "20"])
    );
    let file = chorefile(&scratch.0, &handler, "");
    let queue = open_queue(&scratch.0);
    for i in 0..50 {
        queue
            .publish(
                Some("Noop"),
                &format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"),
            )
            .unwrap();
    }
    let child = start(chore, &file, &scratch.0);
    let master = child.id() as i32;
    let (new, inprogress) = (
        scratch.0.join("queues/bench/new"),
        scratch.0.join("queues/bench/inprogress"),
    );
    let mut peak = 0;
    // VmHWM is a high-water mark: a look every poll while the batch runs catches it.
    wait_until("the slow batch to finish", PATIENCE, || {
        for pid in workers_of(master) {
            peak = peak.max(peak_rss_kb(pid));
        }
        is_empty(&new) && is_empty(&inprogress)
    });
    stop(child);
    peak
}

#[path = "throughput/cpu.rs"]
mod cpu;

#[path = "throughput/place.rs"]
mod place;

#[path = "throughput/noop.rs"]
mod noop;

#[path = "throughput/sqs.rs"]
mod sqs;

#[path = "throughput/http.rs"]
mod http;

#[path = "throughput/preload.rs"]
mod preload;

#[path = "throughput/metrics.rs"]
mod metrics;

#[path = "throughput/backlog.rs"]
mod backlog;
