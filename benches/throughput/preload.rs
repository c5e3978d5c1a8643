//! The throughput bench's preload mode (`cargo bench --bench throughput -- preload`):
//! no-op Ruby jobs on the filesystem queue (concurrency 2, batch size 50,
//! `CHORE_BENCH_PRELOAD_JOBS`, default 5,000), through
//!
//! (a) a preloaded handler: contrib/ruby/bin/chore-preload loading
//!     tests/fixtures/preload/app.rb, whose boot takes 2 s, paid once; each batch is a
//!     child forked from it;
//! (b) the same no-op in plain batch mode: tests/fixtures/preload/noop_batch.rb, which
//!     boots nothing but is a fresh Ruby for every batch.
//!
//! Each run starts the master on an empty queue and waits for one warm-up job (for (a),
//! the boot), then publishes the backlog while the master is quiet (SIGTSTP) and times it
//! from SIGCONT until the queue is empty. Prints
//! jobs/s of both, their ratio (the target: preload ≥ 90 % of the no-boot batch mode),
//! chore's own CPU per job (the master and its workers; in (b) without the handlers,
//! which report their own CPU as they exit), and Ruby's CPU per job (the preloader and its
//! children; the batch handlers).

use super::http::cpu_secs;
use super::support::procs::workers_of;
use super::*;

pub fn figures(chore: &Path) {
    let jobs: usize = env_or("CHORE_BENCH_PRELOAD_JOBS", 5_000);
    println!(
        "chore {} preload benchmark (filesystem queue, concurrency 2, batch size 50, {jobs} no-op Ruby jobs)",
        env!("CARGO_PKG_VERSION")
    );
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preload");
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/ruby/bin/chore-preload");
    let preload = run(chore, "preload", jobs, |dir| {
        format!(
            "{{ command = [\"ruby\", {:?}, \"--require\", {:?}], mode = \"preload\", \
             env = {{ PRELOAD_TEST_DIR = {:?}, PRELOAD_TEST_BOOT_SECS = \"2\" }} }}",
            runner.display().to_string(),
            fixtures.join("app.rb").display().to_string(),
            dir.display().to_string(),
        )
    });
    report("preloaded (2 s boot, once):", &preload);
    let batch = run(chore, "ruby-batch", jobs, |dir| {
        format!(
            "{{ command = [\"ruby\", {:?}], mode = \"batch\", env = {{ CHORE_BENCH_CPU = {:?} }} }}",
            fixtures.join("noop_batch.rb").display().to_string(),
            dir.join("handler-cpu").display().to_string(),
        )
    });
    report("batch mode (a Ruby per batch):", &batch);
    println!(
        "preload / batch mode: {:.0} %  (target ≥ 90 %; the preloader's boot took {:.2} s, before the timing)",
        100.0 * preload.rate() / batch.rate(),
        preload.warm_up.as_secs_f64()
    );
}

/// One run's figures.
struct Figures {
    jobs: usize,
    /// From the master's start to the warm-up job's end (the preloader's boot included).
    warm_up: Duration,
    elapsed: Duration,
    chore_cpu: f64,
    ruby_cpu: f64,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

fn report(what: &str, f: &Figures) {
    println!(
        "throughput, {what:<31}{:>8.0} jobs/s  ({} in {:.2} s; chore CPU {:.1} µs/job, Ruby CPU {:.1} µs/job)",
        f.rate(),
        f.jobs,
        f.elapsed.as_secs_f64(),
        f.chore_cpu * 1e6 / f.jobs as f64,
        f.ruby_cpu * 1e6 / f.jobs as f64,
    );
}

fn publish(queue: &FilesystemQueue, range: std::ops::Range<usize>) {
    for i in range {
        queue
            .publish(
                Some("Noop"),
                &format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"),
            )
            .unwrap();
    }
}

/// Start chore with `handler` (given the scratch directory), warm up, then time `jobs`.
fn run(chore: &Path, name: &str, jobs: usize, handler: impl Fn(&Path) -> String) -> Figures {
    let scratch = Scratch::new(&format!("preload-{name}"));
    let file = chorefile(&scratch.0, &handler(&scratch.0), "");
    let queue = open_queue(&scratch.0);
    let (new, inprogress) = (
        scratch.0.join("queues/bench/new"),
        scratch.0.join("queues/bench/inprogress"),
    );
    let drained = || is_empty(&new) && is_empty(&inprogress);
    let t_start = Instant::now();
    let child = start(chore, &file, &scratch.0);
    let pid = child.id() as i32;
    publish(&queue, 0..1);
    settle(&scratch.0, pid, &drained);
    let warm_up = t_start.elapsed();
    let preloader = preloader_of(&scratch.0);
    let chore0 = chore_cpu(pid);
    let ruby0 = preloader.map_or(0.0, |p| cpu_secs(p, true)) + handler_cpu(&scratch.0);

    // The backlog is written while the master is quiet (SIGTSTP), and timed from SIGCONT:
    // after a run's deletions, creating thousands of files can cost ext4 more than chore's
    // whole work (its inode allocator skips recently deleted inodes), which made the
    // figures swing by a factor of four when the writing was timed too.
    signal(pid, nix::sys::signal::Signal::SIGTSTP);
    std::thread::sleep(Duration::from_millis(200));
    publish(&queue, 1..jobs + 1);
    let t0 = Instant::now();
    signal(pid, nix::sys::signal::Signal::SIGCONT);
    while !drained() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the run did not finish in 10 minutes; see {}",
            scratch.0.join("chore.log").display()
        );
        // Coarse on purpose, as in `throughput`: this poll shares the cores.
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    // The last workers (and batch handlers) end just after their results: wait for them,
    // so that their CPU is counted.
    settle(&scratch.0, pid, &drained);
    let ruby1 = preloader.map_or(0.0, |p| cpu_secs(p, true)) + handler_cpu(&scratch.0);
    let ruby_cpu = ruby1 - ruby0;
    // In batch mode the master's reaped children include the handlers: take them out.
    let handlers = if preloader.is_none() { ruby_cpu } else { 0.0 };
    let chore_cpu = chore_cpu(pid) - chore0 - handlers;
    let dead = std::fs::read_dir(scratch.0.join("queues/bench/dead"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dead, 0, "no job may fail in the benchmark");
    stop(child);
    Figures {
        jobs,
        warm_up,
        elapsed,
        chore_cpu,
        ruby_cpu,
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("the master is running");
}

/// Wait until the queue is drained and master `pid` has no worker left.
fn settle(dir: &Path, pid: i32, drained: &dyn Fn() -> bool) {
    let t0 = Instant::now();
    while !(drained() && workers_of(pid).is_empty()) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "chore did not settle in 2 minutes; see {}",
            dir.join("chore.log").display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The preloader's pid, from the line the fixture app writes at boot (None in batch mode).
fn preloader_of(dir: &Path) -> Option<i32> {
    let boots = std::fs::read_to_string(dir.join("boots.txt")).ok()?;
    boots.lines().last()?.split(':').next()?.parse().ok()
}

/// The CPU seconds the batch handlers reported as they ended.
fn handler_cpu(dir: &Path) -> f64 {
    std::fs::read_to_string(dir.join("handler-cpu"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .sum()
}

/// chore's CPU seconds so far: the master with its reaped children (workers, and in batch
/// mode their handlers), and its live family.
fn chore_cpu(pid: i32) -> f64 {
    super::http::cpu_of(pid).as_secs_f64()
}
