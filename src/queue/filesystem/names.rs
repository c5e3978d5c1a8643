//! Ruby Chore's file names: the codec of `<base>.<previous attempts>.<claim epoch>.job`,
//! the published name's parts, and the clock in the whole seconds the names carry
//! (docs/decisions/0007-filesystem-queue-is-ruby-chore-compatible.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The parts of a job file name.
#[derive(Debug, PartialEq, Eq)]
pub struct JobName<'a> {
    pub base: &'a str,
    pub previous_attempts: u32,
    /// The claim epoch; None when the name has none (a `new/` name).
    pub claimed_at: Option<i64>,
}

impl<'a> JobName<'a> {
    /// Split on `.` as Ruby Chore does: base, attempts, then an epoch (where the word `job`
    /// stands, there is none).
    pub fn parse(name: &'a str) -> JobName<'a> {
        let mut parts = name.split('.');
        let base = parts.next().unwrap_or("");
        let previous_attempts = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
        let claimed_at = parts.next().and_then(|t| t.parse().ok());
        JobName {
            base,
            previous_attempts,
            claimed_at,
        }
    }

    /// Is `name` exactly a `new/` name as Ruby Chore and chore write them,
    /// `<base>.<previous attempts>.job`? Any other name (`x`, `x.job`, `x.0.7.job`) was put
    /// there by hand, and several of them can parse to one base. So was a base with a
    /// control character (a newline, an escape): as a message id it would forge lines in
    /// the log, so it is claimed under a base of its own (`unique_base`).
    pub fn is_canonical(name: &str) -> bool {
        let mut parts = name.split('.');
        let (Some(base), Some(attempts), Some("job"), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        // Digits only (no sign), and a number of attempts the parser reads back.
        !base.is_empty()
            && !base.chars().any(char::is_control)
            && attempts.bytes().all(|b| b.is_ascii_digit())
            && attempts.parse::<u32>().is_ok()
    }
}

/// Ruby Chore's expiry rule, which every consumer of a queue applies to every claim:
/// a claim is expired once its epoch is at most `now − timeout` (whole seconds); a name
/// without an epoch is always expired.
pub fn expired(claimed_at: Option<i64>, now: i64, timeout_secs: i64) -> bool {
    claimed_at.is_none_or(|t| t <= now.saturating_sub(timeout_secs))
}

/// A base for a message whose name another message already has: its own base (or `job`
/// when it has none) and its file's inode, which no other live file of the filesystem has
/// (`n` > 0 only if even that is taken, by a name someone wrote by hand).
/// Control characters in the base become `_`.
pub fn unique_base(base: &str, inode: u64, n: usize) -> String {
    let base: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let base = if base.is_empty() { "job" } else { &base };
    match n {
        0 => format!("{base}-{inode}"),
        n => format!("{base}-{inode}-{n}"),
    }
}

pub(super) fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now in whole seconds, rounded up.
pub(super) fn epoch_now_ceil() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    secs_ceil(now)
}

pub(super) fn secs_ceil(d: Duration) -> i64 {
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
}

/// Ruby Chore puts the job class in the file name; keep it from breaking the name's parts.
pub(super) fn sanitize_class(class: &str) -> String {
    let s: String = class
        .chars()
        .map(|c| {
            if c == '.' || c == '/' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() { "Job".into() } else { s }
}

/// `YYYYmmdd-HHMMSS-micro6` in local time, as Ruby's `%Y%m%d-%H%M%S-%6N`.
pub(super) fn local_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as nix::libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass; both pointers are valid.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !nix::libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("{}-{:06}", now.as_secs(), now.subsec_micros());
    }
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
    )
}
