//! A queue's `memory-limit` in the worker (docs/decisions/0023-memory-limit-is-rlimit-data.md):
//! applied to the worker itself, so that every handler it starts inherits it, and what a
//! failure under it says.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// Apply the queue's `memory-limit` as this worker's data limit (RLIMIT_DATA, soft and
/// hard, so a handler cannot raise it), which every handler it starts inherits: no code
/// runs between fork and exec, so handlers still start by `posix_spawn`. The batch is read
/// already; what the worker allocates from here on (a batch handler's input, about the size
/// of the bodies) counts too.
pub fn apply(bytes: u64) {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_DATA, bytes, bytes) {
        // A hard limit already lower than this one: that one holds, and is the tighter.
        tracing::warn!(bytes, error = %e, "cannot set the memory limit");
    }
}

/// The data limit this worker (and so its handlers) runs under, if any.
pub fn limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, _) = getrlimit(Resource::RLIMIT_DATA).ok()?;
    (soft != nix::libc::RLIM_INFINITY).then_some(soft)
}

/// What a failure under a memory limit may mean. A failed allocation does not announce
/// itself: a C or Rust program aborts (SIGABRT) or crashes on the null it got (SIGSEGV,
/// SIGBUS), Ruby and Python raise and exit 1; so the limit is "likely hit" for those
/// signals, and "may have been hit" otherwise.
pub fn note(status: &ExitStatus, limit: u64) -> String {
    use nix::libc::{SIGABRT, SIGBUS, SIGKILL, SIGSEGV};
    let mib = limit as f64 / (1u64 << 20) as f64;
    match status.signal() {
        Some(SIGABRT | SIGSEGV | SIGBUS | SIGKILL) => {
            format!("memory-limit ({mib:.0} MiB) likely hit")
        }
        _ => format!("memory-limit ({mib:.0} MiB) may have been hit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_under_a_limit_says_how_likely_the_limit_was_the_cause() {
        let limit = 512 << 20;
        assert_eq!(
            note(&ExitStatus::from_raw(6), limit),
            "memory-limit (512 MiB) likely hit"
        );
        assert_eq!(
            note(&ExitStatus::from_raw(1 << 8), limit),
            "memory-limit (512 MiB) may have been hit"
        );
    }
}
