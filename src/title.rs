//! Process titles, as Ruby Chore writes them: `chore-master-<version>:Started:<time>`,
//! `chore-worker-<version>:Started:<time>` (and our spawner's, `chore-spawner-…`), the time
//! as Ruby prints `Time.now`: `2026-11-30 11:40:05 +0000`, in local time with its offset.
//! Operators' monitoring finds the processes by them (`pgrep -f '^chore-master'`).
//!
//! A worker and the spawner get theirs as argv[0] (or written over the argument area the
//! spawner leaves them). The master takes its own once, at start, by executing itself again
//! with its title as argv[0] (`become_master`): its own argument area is only as long as
//! the command it was started with
//! (docs/decisions/0035-the-master-takes-its-title-by-exec.md).

use nix::libc;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

/// The master's argv[0] starts so.
pub const MASTER_PREFIX: &str = "chore-master-";

/// The spawner's argv[0] starts so: how `worker::main` knows it is to serve.
pub const SPAWNER_PREFIX: &str = "chore-spawner-";

/// A worker's argv[0] starts so.
pub const WORKER_PREFIX: &str = "chore-worker-";

/// The master's argv[0].
pub fn master(started_unix: u64) -> String {
    format!(
        "{MASTER_PREFIX}{}:Started:{}",
        env!("CARGO_PKG_VERSION"),
        ruby_time(started_unix)
    )
}

/// A worker's argv[0].
pub fn worker(started_unix: u64) -> String {
    format!(
        "{WORKER_PREFIX}{}:Started:{}",
        env!("CARGO_PKG_VERSION"),
        ruby_time(started_unix)
    )
}

/// The spawner's argv[0]. The time has a fixed width, so this is always one byte longer
/// than a worker's title: the argument area a worker inherits holds its own title and
/// `work`.
pub fn spawner(started_unix: u64) -> String {
    format!(
        "{SPAWNER_PREFIX}{}:Started:{}",
        env!("CARGO_PKG_VERSION"),
        ruby_time(started_unix)
    )
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Ruby's `Time#to_s` of `unix`, as Ruby Chore writes it in titles and log lines:
/// `YYYY-MM-DD HH:MM:SS +ZZZZ` in local time (UTC, `+0000`, where the local time cannot be
/// had, or its year is not 1000 to 9999); always 25 bytes (the year is clamped to 9999).
pub fn ruby_time(unix: u64) -> String {
    let t = libc::time_t::try_from(unix).unwrap_or(libc::time_t::MAX);
    // SAFETY: localtime_r writes only the `tm` we own; it is thread-safe. The time zone is
    // read once per process (glibc caches it), so a forked worker does not read it again.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let local = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    let (date, time, offset) = if local && (1000..=9999).contains(&(tm.tm_year + 1900)) {
        (
            (
                i64::from(tm.tm_year) + 1900,
                tm.tm_mon as u32 + 1,
                tm.tm_mday as u32,
            ),
            (tm.tm_hour as u64, tm.tm_min as u64, tm.tm_sec as u64),
            tm.tm_gmtoff,
        )
    } else {
        let secs = unix % 86_400;
        let days = (unix / 86_400) as i64;
        (
            crate::calendar::civil_from_days(days),
            (secs / 3600, secs % 3600 / 60, secs % 60),
            0,
        )
    };
    let (sign, off) = if offset < 0 {
        ('-', -offset)
    } else {
        ('+', offset)
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        date.0.clamp(0, 9999),
        date.1,
        date.2,
        time.0,
        time.1,
        time.2,
        (off / 3600).min(99),
        off % 3600 / 60
    )
}

/// Give the master its title: execute this binary again, as the same process, with the
/// same arguments and environment and `master(now)` as argv[0]. Returns once argv[0] is a
/// master's title, or where the exec cannot be done (the master then runs with the
/// command line it was started with), having named the process `chore-master`.
pub fn become_master() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let titled = args
        .first()
        .is_some_and(|a| a.as_bytes().starts_with(MASTER_PREFIX.as_bytes()));
    if !titled
        && let Ok(argv) = std::iter::once(OsString::from(master(now())))
            .chain(args.into_iter().skip(1))
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
    {
        // execv keeps the pid (so systemd's main pid and a supervisor's child stay this
        // process), the environment, the descriptors without close-on-exec, and the signal
        // dispositions and mask. Nothing has started yet: no thread, no file, no log.
        let _ = nix::unistd::execv(c"/proc/self/exe", &argv);
    }
    // `ps`, `top` and `pgrep -x chore-master` know the master by this name from here on;
    // the kernel named it after the file the exec ran (`exe`).
    let _ = nix::sys::prctl::set_name(c"chore-master");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_read_as_ruby_chores_do() {
        let t = 1_764_502_805; // 2025-11-30 11:40:05 UTC
        let stamp = ruby_time(t);
        assert_eq!(stamp.len(), 25, "{stamp}");
        let (date_time, offset) = stamp.rsplit_once(' ').unwrap();
        assert!(offset.starts_with(['+', '-']) && offset[1..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(date_time.len(), 19);
        assert_eq!(
            master(t),
            format!("chore-master-{}:Started:{stamp}", env!("CARGO_PKG_VERSION"))
        );
        assert!(worker(t).starts_with("chore-worker-"));
        assert!(spawner(t).starts_with(SPAWNER_PREFIX));
        assert!(!spawner(t).contains("chore-worker"));
    }

    #[test]
    fn the_stamp_is_local_time_with_its_offset() {
        let t: u64 = 1_764_502_805;
        let stamp = ruby_time(t);
        let (date_time, offset) = stamp.rsplit_once(' ').unwrap();
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let off = sign
            * (offset[1..3].parse::<i64>().unwrap() * 3600
                + offset[3..5].parse::<i64>().unwrap() * 60);
        let (d, tm) = date_time.split_once(' ').unwrap();
        let d: Vec<i64> = d.split('-').map(|x| x.parse().unwrap()).collect();
        let tm: Vec<i64> = tm.split(':').map(|x| x.parse().unwrap()).collect();
        let days = crate::calendar::days_from_civil(d[0], d[1] as u32, d[2] as u32);
        let local = days * 86_400 + tm[0] * 3600 + tm[1] * 60 + tm[2];
        // The local time minus its offset is the instant (offsets with seconds aside).
        assert!((local - off - t as i64).abs() < 60, "{stamp}");
    }

    #[test]
    fn a_worker_title_fits_in_the_area_the_spawner_title_leaves() {
        for t in [0, 1_764_400_000, 9_999_999_999, 253_402_300_799] {
            let worker = worker(t);
            // The worker writes its title, a NUL, `work` and a NUL over the spawner's.
            assert_eq!(worker.len() + 1, spawner(t).len(), "{worker}");
            assert!(worker.len() < spawner(0).len(), "{worker}");
        }
    }
}
