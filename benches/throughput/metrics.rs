//! The throughput bench's metrics mode (`cargo bench --bench throughput -- metrics`): the
//! filesystem backlog through the batch-mode no-op handler, with metrics off and on
//! (`metrics-listen`, the page scraped once a second during the run), alternated over
//! `CHORE_BENCH_METRICS_ROUNDS` rounds (default 3) of `CHORE_BENCH_JOBS` jobs (default
//! 20,000). Prints jobs/s and the master's own CPU time per job for each, and the median
//! of each side. Target the figures are read against: under 3% apart.

use super::http::cpu_secs;
use super::*;

pub(super) fn figures(chore: &Path, me: &Path) {
    let jobs: usize = env_or("CHORE_BENCH_JOBS", 20_000);
    let rounds: usize = env_or("CHORE_BENCH_METRICS_ROUNDS", 3);
    println!("metrics off and on (filesystem queue, concurrency 2, batch size 50, {jobs} jobs)");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for metrics in [false, true] {
            let (rate, cpu_us) = run(chore, me, jobs, metrics);
            let label = if metrics { "on " } else { "off" };
            println!("  metrics {label}: {rate:>8.0} jobs/s, master CPU {cpu_us:.1} µs/job");
            if metrics { &mut on } else { &mut off }.push((rate, cpu_us));
        }
    }
    let median = |v: &mut Vec<(f64, f64)>, i: usize| {
        let mut x: Vec<f64> = v.iter().map(|p| if i == 0 { p.0 } else { p.1 }).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (r_off, r_on) = (median(&mut off, 0), median(&mut on, 0));
    let (c_off, c_on) = (median(&mut off, 1), median(&mut on, 1));
    println!(
        "median: off {r_off:.0} jobs/s, {c_off:.1} µs/job; on {r_on:.0} jobs/s, {c_on:.1} µs/job; \
         rate {:+.1}%, CPU {:+.1}%",
        (r_on / r_off - 1.0) * 100.0,
        (c_on / c_off - 1.0) * 100.0
    );
}

/// One backlog: jobs/s, and the master's CPU microseconds per job.
fn run(chore: &Path, me: &Path, jobs: usize, metrics: bool) -> (f64, f64) {
    let scratch = Scratch::new(if metrics { "metrics-on" } else { "metrics-off" });
    let handler = format!(
        "{{ command = [{:?}, \"--noop-handler\"], mode = \"batch\" }}",
        me.display().to_string()
    );
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let extra = if metrics {
        format!("metrics-listen = {addr:?}")
    } else {
        String::new()
    };
    let file = chorefile(&scratch.0, &handler, &extra);
    publish_noops(&scratch.0, jobs);
    let new = scratch.0.join("queues/bench/new");
    let inprogress = scratch.0.join("queues/bench/inprogress");
    let t0 = Instant::now();
    let child = start(chore, &file, &scratch.0);
    let pid = child.id() as i32;
    let mut next_scrape = t0 + Duration::from_secs(1);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if metrics && Instant::now() >= next_scrape {
            next_scrape += Duration::from_secs(1);
            let (code, _) = support::http::exchange(&addr, "GET", "/metrics", &[], b"");
            assert_eq!(code, 200);
        }
        if is_empty(&new) && is_empty(&inprogress) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the run did not finish in 10 minutes"
        );
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_secs(pid, false);
    stop(child);
    (jobs as f64 / elapsed.as_secs_f64(), cpu * 1e6 / jobs as f64)
}
