//! CPU accounting for the throughput bench: where a run's CPU time went (the master, its
//! workers with the spawner, the handlers), and what a bare `posix_spawn` of `/bin/true`
//! costs on this machine, the floor under a per-message handler.
//!
//! CPU time is steadier than rates on a loaded machine: it counts what chore did, not what
//! it waited for.

use std::process::Command;
use std::time::Instant;

/// User + system CPU, in µs, of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`: every
/// descendant waited for, and what it waited for in turn).
fn rusage_us(who: nix::libc::c_int) -> u64 {
    // SAFETY: getrusage fills the struct we own.
    let ru = unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        nix::libc::getrusage(who, &mut ru);
        ru
    };
    let us = |t: nix::libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// CPU of this process's reaped descendants so far, in µs.
pub fn children_us() -> u64 {
    rusage_us(nix::libc::RUSAGE_CHILDREN)
}

/// CPU of the calling thread so far, in µs.
pub fn thread_us() -> u64 {
    rusage_us(nix::libc::RUSAGE_THREAD)
}

/// CPU of this process so far, in µs.
pub fn self_us() -> u64 {
    rusage_us(nix::libc::RUSAGE_SELF)
}

/// CPU of live process `pid` itself (all its threads, not its children), in µs, from
/// `/proc/<pid>/stat` (clock ticks).
pub fn process_us(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // After comm: state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// Where a run's CPU went, in µs.
pub struct Split {
    pub master: u64,
    pub workers: u64,
    pub handlers: u64,
    /// The handlers' share is an estimate (from the `/bin/true` probe), not measured.
    pub estimated: bool,
}

impl Split {
    /// The whole run's CPU, in µs.
    pub fn total(&self) -> u64 {
        self.master + self.workers + self.handlers
    }

    /// One line: CPU per 1,000 jobs by part, and in all per job.
    pub fn line(&self, jobs: usize) -> String {
        let per_k = |us: u64| us as f64 / jobs as f64;
        let total = self.total();
        format!(
            "CPU per 1,000 jobs: master {:.1} ms, workers {:.1} ms (with the spawner), handlers {:.1} ms{}; {:.1} µs per job in all",
            per_k(self.master),
            per_k(self.workers),
            per_k(self.handlers),
            if self.estimated {
                " (estimated: jobs × the /bin/true probe)"
            } else {
                ""
            },
            total as f64 / jobs as f64
        )
    }
}

/// The `/bin/true` probe: spawns per second, and CPU per spawn (the parent's share and
/// the child's), in µs.
pub struct Probe {
    pub per_second: f64,
    pub cpu_us: f64,
}

/// Spawn `/bin/true` `n` times one after another, as a worker runs per-message handlers
/// (std's `Command`, which uses `posix_spawn` here: no `pre_exec`, no process group).
pub fn spawn_probe(n: usize) -> Probe {
    let (c0, s0, t0) = (children_us(), self_us(), Instant::now());
    for _ in 0..n {
        let status = Command::new("/bin/true").status().expect("/bin/true");
        assert!(status.success());
    }
    let elapsed = t0.elapsed();
    let cpu = (children_us() - c0) + (self_us() - s0);
    Probe {
        per_second: n as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu as f64 / n as f64,
    }
}

/// The filesystem queue's own floor: CPU per message of the file protocol alone, done
/// here on `n` small files under `dir` (the bench's scratch, on the same filesystem as its
/// queues): the claim's rename from `new/` into `inprogress/`, reading the body, the
/// unlink once done. Ruby Chore's protocol, and any consumer of these queues, pays it.
pub fn file_protocol_us(dir: &std::path::Path, n: usize) -> f64 {
    let (new, held) = (dir.join("floor-new"), dir.join("floor-held"));
    std::fs::create_dir_all(&new).unwrap();
    std::fs::create_dir_all(&held).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("floor-{i}.0.job")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(
            new.join(name),
            format!("{{\"class\":\"Noop\",\"args\":[{i}]}}"),
        )
        .unwrap();
    }
    let s0 = self_us();
    for name in &names {
        std::fs::rename(new.join(name), held.join(name)).unwrap();
        std::fs::read(held.join(name)).unwrap();
        std::fs::remove_file(held.join(name)).unwrap();
    }
    let cpu = self_us() - s0;
    let _ = std::fs::remove_dir_all(&new);
    let _ = std::fs::remove_dir_all(&held);
    cpu as f64 / n as f64
}
