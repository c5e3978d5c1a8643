//! What `/proc` says about chore's processes and threads: whether a process is gone, its
//! argv and process group, a master's family (workers and handlers), peak memory, and
//! where a master's consumer threads are waiting.
//!
//! The last one lets a test wait for "the consumer has gone idle" or "the consumer has
//! stopped at its gate" instead of sleeping and hoping: a blocked thread's
//! `/proc/PID/task/TID/syscall` names the system call it is blocked in. chore names its
//! consumer threads `consume-<queue>-<n>`; an idle filesystem consumer is parked in
//! `poll` (its inotify watch, its stop pipe, its idle interval), and a consumer that has
//! no credits, or whose master is quiet (TSTP), waits on its gate's condition variable, a
//! `futex`.

use std::fs;

/// Is `pid` gone (no such process, or a zombie nobody has reaped yet)?
pub fn pid_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(stat_state(&stat), Some('Z') | Some('X')),
    }
}

/// The state letter of a `/proc/PID/stat` line: comm may hold spaces and parentheses, so
/// look after the last ')'.
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim_start())
        .and_then(|r| r.chars().next())
}

/// argv of a live process (empty when it is gone).
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Process group of a live process.
pub fn pgrp(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // state ppid pgrp ...
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Every live (non-zombie) process whose environment says it belongs to master `master`:
/// the master puts CHORE_MASTER_PID in its workers' environment, and handlers inherit it.
/// Unlike `pgrep -f chore-worker`, this does not see other tests' workers.
pub fn family_of(master: i32) -> Vec<i32> {
    let needle = format!("CHORE_MASTER_PID={master}");
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&c| c == 0).any(|kv| kv == needle.as_bytes()) && !pid_gone(pid) {
            out.push(pid);
        }
    }
    out
}

/// The workers of master `master`: its family members titled `chore-worker-…` (not a
/// handler about to exec, which shows its worker's title).
pub fn workers_of(master: i32) -> Vec<i32> {
    let titled: Vec<i32> = family_of(master)
        .into_iter()
        .filter(|&p| {
            cmdline(p)
                .first()
                .is_some_and(|a| a.starts_with("chore-worker-"))
        })
        .collect();
    // A handler between its spawn and its exec shares its worker's memory, so it shows the
    // worker's title too; no worker is a worker's child.
    titled
        .iter()
        .copied()
        .filter(|&p| !parent_of(p).is_some_and(|pp| titled.contains(&pp)))
        .collect()
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory of a live process (VmHWM), in KiB; 0 when it is gone.
pub fn peak_rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resident memory of a live process now (VmRSS), in KiB; 0 when it is gone.
pub fn rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Where a consumer thread waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerWait {
    /// Idle: parked in `poll` until a new file, its idle interval, or the stop pipe.
    ForFiles,
    /// At its gate (`futex`): out of credits, or the master is quiet or stopping.
    AtGate,
}

impl ConsumerWait {
    fn is(self, syscall: i64) -> bool {
        use nix::libc;
        match self {
            // glibc's poll() is the poll system call where the kernel has one.
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            ConsumerWait::ForFiles if syscall == libc::SYS_poll => true,
            ConsumerWait::ForFiles => syscall == libc::SYS_ppoll,
            ConsumerWait::AtGate => syscall == libc::SYS_futex,
        }
    }
}

/// The system call each consumer thread of `pid` is blocked in (None: running, or
/// blocked outside a system call). Panics when `/proc` does not show it: the tests that
/// ask cannot be run without.
pub fn consumer_syscalls(pid: i32) -> Vec<Option<i64>> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("consume-") {
            continue;
        }
        let path = task.path().join("syscall");
        let Ok(text) = fs::read_to_string(&path) else {
            // The thread may just have ended; a live one must be readable.
            assert!(
                !task.path().exists(),
                "cannot read {}: the tests need to see where chore's threads wait",
                path.display()
            );
            continue;
        };
        out.push(parse_syscall(&text));
    }
    out
}

/// `/proc/…/syscall`: "running", "-1 sp pc" (blocked, not in a call), or "NR args… sp pc".
fn parse_syscall(text: &str) -> Option<i64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|&nr| nr >= 0)
}

/// A condition for `wait_until`: every consumer thread of `pid` (there is at least one)
/// waits as `how` says, at this look and at the one before. Two looks in a row rule out
/// a thread caught passing through such a call on its way elsewhere.
pub fn consumers_settled(pid: i32, how: ConsumerWait) -> impl FnMut() -> bool {
    let mut before = false;
    move || {
        let calls = consumer_syscalls(pid);
        let now = !calls.is_empty() && calls.iter().all(|c| c.is_some_and(|nr| how.is(nr)));
        let settled = now && before;
        before = now;
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_state_is_read_after_the_last_parenthesis() {
        assert_eq!(stat_state("42 (a) b) (c) S 1 42 42"), Some('S'));
        assert_eq!(stat_state("42 (chore) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn a_syscall_line_names_the_call_only_when_blocked_in_one() {
        assert_eq!(
            parse_syscall("202 0x1 0x2 0x0 0x0 0x0 0x0 0x7ff 0x7f\n"),
            Some(202)
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ff 0x7f\n"), None);
    }

    #[test]
    fn this_thread_is_seen_running_or_reading() {
        // Reading our own syscall file: we are running (or in read) as we read it.
        let text = fs::read_to_string("/proc/thread-self/syscall").unwrap();
        assert!(
            text.starts_with("running") || text.starts_with(&nix::libc::SYS_read.to_string()),
            "{text:?}"
        );
    }

    #[test]
    fn own_peak_memory_is_known_and_a_gone_pid_is_gone() {
        assert!(peak_rss_kb(std::process::id() as i32) > 0);
        assert!(!pid_gone(std::process::id() as i32));
        assert!(pid_gone(i32::MAX));
        assert!(cmdline(i32::MAX).is_empty());
    }
}
