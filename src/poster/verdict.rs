//! What a post's outcome means, pure: the settlement (`verdict`), the log wording
//! (`describe`, and `sqsd_line` for the daemon's own log form), and the retention rule
//! (`expired`) applied before a message is posted at all.
//!
//! Only a 200 completes a message (docs/elastic-beanstalk.md). Anything else is retried:
//! under the daemon's rule after `error-visibility-timeout`, for ever (the queue's redrive
//! policy ends it); under chore's rule with the queue's backoff and max-attempts. A 429
//! with `Retry-After` is retried after the delay it asks for, under either rule.

use super::Outcome;
use crate::backoff::{Backoff, MAX_DELAY};
use crate::config::{HttpRetry, HttpTarget};
use crate::protocol::Verdict;
use crate::queue::Delivery;
use crate::settle::{Settlement, decide};
use std::time::{Duration, SystemTime};

/// The settlement of attempt `attempt` (from 1) that ended with `outcome`.
pub fn verdict(
    outcome: &Outcome,
    target: &HttpTarget,
    attempt: u32,
    max_attempts: Option<u32>,
    backoff: &Backoff,
) -> Settlement {
    let asked = match outcome {
        Outcome::Answered { status: 200, .. } => return Settlement::Complete,
        Outcome::Answered {
            status: 429,
            retry_after: Some(delay),
            ..
        } => Some(*delay),
        _ => None,
    };
    match target.retry {
        HttpRetry::Sqsd => Settlement::Retry {
            delay: asked
                .unwrap_or(target.error_visibility_timeout)
                .min(MAX_DELAY),
        },
        HttpRetry::Chore => decide(
            Verdict::Fail,
            attempt,
            max_attempts,
            backoff,
            asked.map(|d| d.as_secs_f64()),
            Some(&reason(outcome)),
        ),
    }
}

/// A message first received longer than `retention-period` before `now` is deleted
/// unposted. One whose first receive is unknown never expires.
pub fn expired(target: &HttpTarget, d: &Delivery, now: SystemTime) -> bool {
    d.meta
        .as_ref()
        .and_then(|m| m.first_received_at)
        .and_then(|first| now.duration_since(first).ok())
        .is_some_and(|age| age > target.retention_period)
}

/// How a post ended, for the one log line of a message that did not get a 200: the status
/// (with the start of the body) or which timeout fired, and how long it took.
pub fn describe(outcome: &Outcome, elapsed: Duration) -> String {
    format!("{} (after {:.3} s)", reason(outcome), elapsed.as_secs_f64())
}

/// The daemon's log line: `http-err: <id> (<receive count>) <status> - <seconds>`, or
/// `socket-err: ...` with the error (`Errno::ECONNREFUSED`, `Errno::ETIMEDOUT`, ...) when
/// nothing was answered.
pub fn sqsd_line(id: &str, receive_count: u32, outcome: &Outcome, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let error = match outcome {
        Outcome::Answered { status, .. } => {
            return format!("http-err: {id} ({receive_count}) {status} - {secs:.3}");
        }
        Outcome::NoConnection {
            timed_out: true, ..
        }
        | Outcome::Inactive => "Errno::ETIMEDOUT".to_owned(),
        Outcome::NoConnection { error, .. } | Outcome::Failed(error) => errno(error)
            .map(|e| format!("Errno::{e}"))
            .unwrap_or_else(|| one_line(error, 200)),
        Outcome::Aborted => "aborted".to_owned(),
    };
    format!("socket-err: {id} ({receive_count}) {error} - {secs:.3}")
}

/// The outcome in words, without the time.
fn reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered {
            status,
            retry_after,
            excerpt,
        } => {
            let mut s = format!("answered {status}");
            if let Some(d) = retry_after {
                s += &format!(" (Retry-After: {} s)", d.as_secs());
            }
            let excerpt = one_line(excerpt, 200);
            if excerpt.is_empty() {
                s += " with an empty body";
            } else {
                s += &format!(": {excerpt}");
            }
            s
        }
        Outcome::NoConnection {
            timed_out: true,
            error,
        } => format!("no connection within connect-timeout: {error}"),
        Outcome::NoConnection { error, .. } => format!("could not connect: {error}"),
        Outcome::Inactive => {
            "no response bytes for inactivity-timeout: the request was aborted".to_owned()
        }
        Outcome::Failed(error) => format!("the request failed: {error}"),
        Outcome::Aborted => {
            "aborted: the message's timeout or the drain's shutdown-timeout passed".to_owned()
        }
    }
}

/// `s` on one line (runs of whitespace and control characters become one space), cut to
/// `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// The errno name in an I/O error's text (`... (os error 111)`), as the daemon's Ruby
/// logged it.
fn errno(error: &str) -> Option<&'static str> {
    let code = error.rsplit_once("(os error ")?.1.strip_suffix(')')?;
    Some(match code.parse::<i32>().ok()? {
        nix::libc::ECONNREFUSED => "ECONNREFUSED",
        nix::libc::ECONNRESET => "ECONNRESET",
        nix::libc::ECONNABORTED => "ECONNABORTED",
        nix::libc::ETIMEDOUT => "ETIMEDOUT",
        nix::libc::EHOSTUNREACH => "EHOSTUNREACH",
        nix::libc::ENETUNREACH => "ENETUNREACH",
        nix::libc::EPIPE => "EPIPE",
        nix::libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        _ => return None,
    })
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
