//! The throughput bench's HTTP mode (`cargo bench --bench throughput -- http`): messages
//! through an HTTP handler (the master posts each one, docs/elastic-beanstalk.md) to a
//! minimal keep-alive HTTP/1.1 server in this process, which answers `200 OK` at once.
//!
//! Prints, on the filesystem queue (`CHORE_BENCH_HTTP_JOBS`, default 20,000) and on moto
//! (`CHORE_BENCH_HTTP_SQS_JOBS`, default 2,000; skipped when moto is not installed):
//! messages/s from the master's start to the last answer, and chore's own CPU time per
//! message (the master's user + system time from `/proc/<pid>/stat`, plus any children's,
//! start-up included), then the same split by the master's threads (consumer, master,
//! poster, settler), which says where a regression is. `CHORE_BENCH_HTTP_CONNECTIONS`
//! (default 50, the handler's own default) sets the handler's `connections`. Targets the
//! figures are read against: at most 50 µs of chore's CPU per message, at least 10,000
//! messages/s on the filesystem queue.
//!
//! When the temporary directory is not on tmpfs, the filesystem figures are taken again
//! on /dev/shm (`place`), which tells the disk's share from chore's.
//!
//! The server is a thread per connection with blocking I/O: cheap enough beside chore,
//! and its CPU is not counted in chore's.

use super::support::moto::{AWS_ENV, Moto};
use super::support::procs::family_of;
use super::*;
use std::io::{BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn figures(chore: &Path) {
    let jobs: usize = env_or("CHORE_BENCH_HTTP_JOBS", 20_000);
    let sqs_jobs: usize = env_or("CHORE_BENCH_HTTP_SQS_JOBS", 2_000);
    let connections: usize = env_or("CHORE_BENCH_HTTP_CONNECTIONS", 50);
    println!(
        "chore {} HTTP handler benchmark (a keep-alive server answering 200 at once, connections = {connections})",
        env!("CARGO_PKG_VERSION")
    );
    let server = Server::start();
    let request = request_floor_us(&server, jobs);
    let disk = place::Place::temporary();
    println!("queues in: {}", disk.label());
    filesystem_figures(chore, &server, &disk, jobs, connections, request);
    if let Some(tmpfs) = disk.tmpfs_beside(jobs) {
        println!(
            "  again on {}, where rename and unlink cost no journal:",
            tmpfs.label()
        );
        filesystem_figures(chore, &server, &tmpfs, jobs, connections, request);
    }
    let scratch = Scratch::new("http-sqs");
    match Moto::start_fast_recording(&scratch.0.join("recording.jsonl")) {
        Some(moto) => {
            let run = sqs(chore, &server, &moto, &scratch.0, sqs_jobs, connections);
            report("SQS (moto)", &run);
        }
        None => println!(
            "HTTP on SQS: moto_server not found (run `bash scripts/test.sh` once, or set CHORE_TEST_MOTO_SERVER)"
        ),
    }
    println!(
        "targets: ≤ 50 µs of chore CPU per message; ≥ 10,000 messages/s on the filesystem queue"
    );
}

/// The filesystem queue's figures with the queues under `place`, and the floors there:
/// the file protocol's, and `request`, one POST's.
fn filesystem_figures(
    chore: &Path,
    server: &Server,
    place: &place::Place,
    jobs: usize,
    connections: usize,
    request: f64,
) {
    let fs = filesystem(chore, server, place, jobs, connections);
    report("filesystem queue", &fs);
    let files = {
        let scratch = Scratch::under(&place.dir, "http-floor");
        cpu::file_protocol_us(&scratch.0, jobs)
    };
    println!(
        "    floors here: the file protocol {files:.1} µs/msg (rename, read, unlink), a POST and its answer on a keep-alive connection {request:.1} µs (the client's side); chore adds {:.1} µs above both",
        fs.cpu.as_secs_f64() * 1e6 / fs.jobs as f64 - files - request
    );
}

/// One run's figures.
struct Posted {
    jobs: usize,
    elapsed: Duration,
    cpu: Duration,
    /// The master's threads by name (threads that ended are not counted).
    threads: Vec<Thread>,
    retries: usize,
}

fn report(what: &str, r: &Posted) {
    let label = format!("throughput, HTTP, {what}:");
    println!(
        "{label:<34}{:>8.0} msgs/s  ({} in {:.2} s; chore CPU {:.1} µs/msg{})",
        r.jobs as f64 / r.elapsed.as_secs_f64(),
        r.jobs,
        r.elapsed.as_secs_f64(),
        r.cpu.as_secs_f64() * 1e6 / r.jobs as f64,
        if r.retries > 0 {
            format!("; {} retries logged, see chore.log", r.retries)
        } else {
            String::new()
        }
    );
    let per_msg = |d: &Duration| d.as_secs_f64() * 1e6 / r.jobs as f64;
    let busy = || r.threads.iter().filter(|t| per_msg(&t.cpu) >= 0.05);
    let by_thread: Vec<String> = busy()
        .map(|t| format!("{} {:.1}", t.name, per_msg(&t.cpu)))
        .collect();
    println!("    by thread, µs/msg: {}", by_thread.join(", "));
    // User time is chore's own code; the rest is the kernel's work for it, which
    // contention on the shared cores makes the noisier part.
    let user: Vec<String> = busy()
        .map(|t| format!("{} {:.1}", t.name, per_msg(&t.user)))
        .collect();
    println!("    of which user, µs/msg: {}", user.join(", "));
    let switches: Vec<String> = busy()
        .map(|t| format!("{} {:.2}", t.name, t.switches as f64 / r.jobs as f64))
        .collect();
    println!("    context switches per msg: {}", switches.join(", "));
}

fn handler(server: &Server, connections: usize) -> String {
    format!(
        "{{ url = \"http://{}/\", connections = {connections} }}",
        server.addr
    )
}

fn filesystem(
    chore: &Path,
    server: &Server,
    place: &place::Place,
    jobs: usize,
    connections: usize,
) -> Posted {
    let scratch = Scratch::under(&place.dir, "http-fs");
    let file = chorefile(&scratch.0, &handler(server, connections), "");
    let queue = open_queue(&scratch.0);
    for i in 0..jobs {
        queue.publish(None, &format!("{{\"n\":{i}}}")).unwrap();
    }
    let (new, inprogress) = (
        scratch.0.join("queues/bench/new"),
        scratch.0.join("queues/bench/inprogress"),
    );
    let before = server.served();
    let t0 = Instant::now();
    let child = start(chore, &file, &scratch.0);
    let pid = child.id() as i32;
    // Done when every message was answered and settled (a 200 deletes its file).
    wait_for(t0, &scratch.0, || {
        server.served() - before >= jobs && is_empty(&new) && is_empty(&inprogress)
    });
    let elapsed = t0.elapsed();
    let (cpu, threads) = (cpu_of(pid), threads_of(pid));
    stop(child);
    Posted {
        jobs,
        elapsed,
        cpu,
        threads,
        retries: retries_logged(&scratch.0.join("chore.log")),
    }
}

fn sqs(
    chore: &Path,
    server: &Server,
    moto: &Moto,
    dir: &Path,
    jobs: usize,
    connections: usize,
) -> Posted {
    let file = dir.join("Chorefile");
    std::fs::write(
        &file,
        format!(
            "sqs-endpoint = {endpoint:?}\nlog-level = \"warn\"\n\n\
             [queues.bench]\nbackend = \"sqs\"\ncreate = true\ndedupe = false\nhandler = {handler}\n",
            endpoint = moto.endpoint(),
            handler = handler(server, connections),
        ),
    )
    .unwrap();
    // The backlog first (SendMessageBatch, ten a call); then only the consumer is timed.
    let lines: String = (0..jobs).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    super::sqs::enqueue(chore, &file, &lines);

    let log = dir.join("chore.log");
    let before = server.served();
    let t0 = Instant::now();
    let child = Command::new(chore)
        .envs(AWS_ENV)
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for(t0, dir, || server.served() - before >= jobs);
    let elapsed = t0.elapsed();
    let (cpu, threads) = (cpu_of(pid), threads_of(pid));
    // The drain sends the last batched deletes before the master exits.
    stop(child);
    Posted {
        jobs,
        elapsed,
        cpu,
        threads,
        retries: retries_logged(&log),
    }
}

/// Polls `done` until it holds; a run may take at most ten minutes.
fn wait_for(t0: Instant, dir: &Path, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the HTTP run did not finish in 10 minutes; see {}",
            dir.join("chore.log").display()
        );
        // Coarse on purpose, as in `throughput`: this poll shares the cores.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// User + system CPU seconds of `pid` (and, with `children`, of its reaped children).
pub(super) fn cpu_secs(pid: i32, children: bool) -> f64 {
    ticks_to_time(stat_ticks(pid, children)).as_secs_f64()
}

/// User + system CPU time of `pid`, its reaped children and its live family, so far.
pub(super) fn cpu_of(pid: i32) -> Duration {
    let ticks: u64 = std::iter::once(pid)
        .chain(family_of(pid))
        .map(|p| stat_ticks(p, p == pid))
        .sum();
    ticks_to_time(ticks)
}

/// One thread name's figures (summed over the threads of that name).
struct Thread {
    name: String,
    /// User + system time.
    cpu: Duration,
    user: Duration,
    /// Context switches, voluntary (it slept and was woken) or not.
    switches: u64,
}

/// CPU time and context switches of each live thread of `pid`, summed by thread name,
/// most CPU first.
fn threads_of(pid: i32) -> Vec<Thread> {
    let mut by_name: Vec<Thread> = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let cpu = ticks_to_time(ticks_in(&stat, 2));
        let user = ticks_to_time(ticks_in(&stat, 1));
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        match by_name.iter_mut().find(|t| t.name == name.trim()) {
            Some(t) => {
                t.cpu += cpu;
                t.user += user;
                t.switches += switches;
            }
            None => by_name.push(Thread {
                name: name.trim().to_owned(),
                cpu,
                user,
                switches,
            }),
        }
    }
    by_name.sort_by_key(|t| std::cmp::Reverse(t.cpu));
    by_name
}

fn ticks_to_time(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a constant of the C library.
    let per_sec = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_sec.max(1) as f64)
}

/// utime + stime of `pid` (fields 14 and 15 of `/proc/<pid>/stat`), and with `children`
/// cutime + cstime (16 and 17), in clock ticks; 0 when it is gone.
fn stat_ticks(pid: i32, children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    ticks_in(&stat, if children { 4 } else { 2 })
}

/// The sum of the first `n` of utime, stime, cutime, cstime in a `stat` line.
fn ticks_in(stat: &str, n: usize) -> u64 {
    // The command name may hold spaces: count fields after its closing parenthesis, where
    // field 3 (the state) comes first.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    rest.split_whitespace()
        .skip(11)
        .take(n)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum()
}

/// The retries chore logged (`failed; will retry`): none is expected.
fn retries_logged(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("will retry"))
        .count()
}

/// CPU of this thread per request, in µs, posting `n` small bodies one after another on
/// one keep-alive connection to `server` with blocking calls: the least a client's side of
/// a request costs here (the loopback's delivery included, as it is for chore).
fn request_floor_us(server: &Server, n: usize) -> f64 {
    let stream = TcpStream::connect(&server.addr).expect("the bench server");
    stream.set_nodelay(true).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut input = BufReader::new(stream);
    let request = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 7\r\n\r\n{\"n\":1}";
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
    let mut got = vec![0u8; answer.len()];
    let t0 = cpu::thread_us();
    for _ in 0..n {
        out.write_all(request).unwrap();
        input.read_exact(&mut got).unwrap();
    }
    let us = cpu::thread_us() - t0;
    assert_eq!(&got[..], &answer[..]);
    us as f64 / n as f64
}

/// A keep-alive HTTP/1.1 server on a loopback port: a thread per connection, `200 OK`
/// with the body `OK` for every request, at once.
struct Server {
    addr: String,
    served: Arc<AtomicUsize>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || {
                    let _ = connection(stream, &count);
                });
            }
        });
        Server { addr, served }
    }

    /// Requests answered so far.
    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

/// Serve one connection until the client closes it (or asks to, `Connection: close`).
fn connection(stream: TcpStream, served: &AtomicUsize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // The request line; end of input is the client closing (a health probe does so).
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut length, mut close) = (0u64, false);
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        std::io::copy(&mut (&mut input).take(length), &mut std::io::sink())?;
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")?;
        served.fetch_add(1, Ordering::Relaxed);
        if close {
            return Ok(());
        }
    }
}
