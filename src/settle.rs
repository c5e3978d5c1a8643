//! Settling: turning how a message ended into what happens to it
//! (docs/decisions/0005-the-master-settles-every-message.md).
//!
//! `decide` is the pure core: a verdict, the attempt number and the queue's policy in, a
//! `Settlement` out. A failure below max-attempts is retried after the backoff (or the
//! delay the handler asked for); a failure at max-attempts, or a permanent one, is
//! dead-lettered with its reason.
//!
//! `Settler::apply` is the one place a settlement is carried out, wherever it was decided
//! (the master for what a worker ran; a consumer for a body that can never run): one log
//! line (target `chore::fate`: the message's fate), the `on-permanent-failure` hook for a
//! dead letter, the queue call, and the dedupe key forgotten for a message that will be
//! offered again.

use crate::backoff::{Backoff, MAX_DELAY};
use crate::config::Handler;
use crate::dedupe::Dedupe;
use crate::hooks::Hooks;
use crate::logging::FATE;
use crate::protocol::Verdict;
use crate::queue::{Delivery, Queue};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Complete,
    /// Offer it again now, unrun (the filesystem queue does not count an attempt; SQS
    /// counts every receive).
    GiveBack,
    Retry {
        delay: Duration,
    },
    DeadLetter {
        reason: String,
    },
}

/// What to do with a message whose attempt `attempt` (from 1) ended with `verdict`.
pub fn decide(
    verdict: Verdict,
    attempt: u32,
    max_attempts: Option<u32>,
    backoff: &Backoff,
    requested_delay: Option<f64>,
    error: Option<&str>,
) -> Settlement {
    match verdict {
        Verdict::Ok => Settlement::Complete,
        Verdict::Skip => Settlement::GiveBack,
        Verdict::Permanent => Settlement::DeadLetter {
            reason: format!(
                "permanent failure: {}",
                error.unwrap_or("the handler reported a permanent failure")
            ),
        },
        Verdict::Retry | Verdict::Fail | Verdict::Unfinished => {
            if let Some(max) = max_attempts.filter(|&m| attempt >= m) {
                return Settlement::DeadLetter {
                    reason: format!(
                        "failed {attempt} of {max} attempts; last error: {}",
                        error.unwrap_or("none given")
                    ),
                };
            }
            // A delay asked for is capped like any other (one too large to be a duration
            // too); one that is no delay at all (negative, not a number) is not heeded.
            let delay = requested_delay
                .filter(|s| *s >= 0.0)
                .map(|s| {
                    Duration::try_from_secs_f64(s.min(MAX_DELAY.as_secs_f64())).unwrap_or(MAX_DELAY)
                })
                .unwrap_or_else(|| backoff.delay(attempt))
                .min(MAX_DELAY);
            Settlement::Retry { delay }
        }
    }
}

/// A queue's `on-permanent-failure` command, shared by every copy of its settler (the
/// master's, and each consumer thread's, which dead-letters what can never run), so that
/// the command a reload sets reaches them all at once.
#[derive(Clone, Default)]
pub struct FailureHook(Arc<RwLock<Option<Handler>>>);

impl FailureHook {
    pub fn new(command: Option<Handler>) -> FailureHook {
        FailureHook(Arc::new(RwLock::new(command)))
    }

    pub fn set(&self, command: Option<Handler>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = command;
    }

    fn get(&self) -> Option<Handler> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Carries out settlements for one queue.
#[derive(Clone)]
pub struct Settler {
    pub queue: Arc<dyn Queue>,
    pub on_permanent_failure: FailureHook,
    pub hooks: Hooks,
    /// To forget the dedupe key of a message that will be offered again, so that the next
    /// delivery is not taken for a duplicate.
    pub dedupe: Option<Arc<Dedupe>>,
}

impl Settler {
    /// Apply `settlement` to `d`; `error` is what the attempt said, for the log. A failed
    /// queue call is logged and leaves the claim where it is: it lapses and the message is
    /// offered again, so nothing is lost.
    pub fn apply(&self, d: &Delivery, settlement: &Settlement, error: Option<&str>) {
        self.carry_out(d, settlement, error, true);
    }

    /// Apply to a second copy of a message the fate of its first copy, already applied:
    /// the same queue call, without telling the hook twice about one message.
    pub fn apply_to_copy(&self, d: &Delivery, settlement: &Settlement) {
        tracing::debug!(queue = %self.queue.name(), id = %d.id, "the held-back second copy shares the first copy's fate");
        self.carry_out(d, settlement, None, false);
    }

    fn carry_out(&self, d: &Delivery, settlement: &Settlement, error: Option<&str>, hook: bool) {
        let queue = self.queue.as_ref();
        let name = queue.name();
        // One line per settlement, under its own target so `log-settlements = false` can
        // drop the info-level ones; `secs` is from receipt to now (the wait and the run).
        let secs = d.received_at.elapsed().as_secs_f64();
        let result = match settlement {
            Settlement::Complete => {
                tracing::info!(target: FATE, queue = %name, id = %d.id, attempt = d.attempt, outcome = "completed", secs, "completed");
                queue.complete(d)
            }
            Settlement::Retry { delay } => {
                tracing::warn!(target: FATE, queue = %name, id = %d.id, attempt = d.attempt, outcome = "retry", secs, retry_in_secs = delay.as_secs_f64(), error = error.unwrap_or("retry requested"), "failed; will retry");
                queue.retry(d, *delay)
            }
            Settlement::GiveBack => {
                tracing::info!(target: FATE, queue = %name, id = %d.id, attempt = d.attempt, outcome = "given-back", secs, reason = error.unwrap_or(""), "given back");
                queue.give_back(d)
            }
            Settlement::DeadLetter { reason } => {
                // The reason may quote the message (its class): fit for one log line, an
                // environment variable and a small file, whatever the message holds.
                let reason = &fit_reason(reason);
                let body_bytes = d
                    .meta
                    .as_ref()
                    .and_then(|m| m.unread_bytes)
                    .unwrap_or(d.body.len() as u64);
                tracing::error!(target: FATE, queue = %name, id = %d.id, attempt = d.attempt, outcome = "dead-letter", secs, body_bytes, reason = %reason, "dead-lettered");
                if let Some(command) = self.on_permanent_failure.get().filter(|_| hook) {
                    self.hooks.permanent_failure(&command, name, d, reason);
                }
                queue.dead_letter(d, reason)
            }
        };
        if matches!(settlement, Settlement::Retry { .. } | Settlement::GiveBack)
            && let (Some(dedupe), Some(key)) = (&self.dedupe, &d.dedupe_key)
        {
            dedupe.forget(key.clone());
        }
        if let Err(e) = result {
            tracing::error!(queue = %name, id = %d.id, error = %e, "could not settle message; it will be offered again when its claim lapses");
        }
    }
}

/// The longest dead-letter reason kept, in bytes; the rest is cut off with a mark.
pub const MAX_REASON: usize = 4096;

/// `reason` cut at `MAX_REASON` bytes, on one line, its control characters escaped, so that a
/// message's own text (a class, a periodic task's path) can neither forge a log line nor
/// grow a log event, a hook's environment or a `.reason` file to the size of its body.
pub fn fit_reason(reason: &str) -> String {
    let cut = reason.floor_char_boundary(MAX_REASON);
    // Line breaks (a handler's multi-line error) read best as spaces; other control
    // characters are escaped.
    let flat = reason[..cut].replace(['\r', '\n'], " ");
    let mut fit = crate::logging::capture::printable(&flat).into_owned();
    if cut < reason.len() {
        fit.push_str(&format!("… ({} bytes in all)", reason.len()));
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_cut_and_its_control_characters_escaped() {
        let forged = "no handler for job class `X\n2026-01-01 INFO completed id=F\x1b[2J`";
        let fit = fit_reason(forged);
        assert!(!fit.contains('\n') && !fit.contains('\x1b'), "{fit:?}");
        assert!(fit.starts_with("no handler for job class `X"), "{fit:?}");
        let huge = format!("no handler for job class `{}`", "é".repeat(10_000));
        let fit = fit_reason(&huge);
        assert!(fit.len() < MAX_REASON + 64, "{}", fit.len());
        assert!(
            fit.ends_with(&format!("… ({} bytes in all)", huge.len())),
            "{fit}"
        );
        assert_eq!(fit_reason("plain"), "plain");
    }

    #[test]
    fn outcomes() {
        let b = Backoff::parse("attempt * 10").unwrap();
        assert_eq!(
            decide(Verdict::Ok, 1, Some(1), &b, None, None),
            Settlement::Complete
        );
        assert_eq!(
            decide(Verdict::Fail, 2, Some(5), &b, None, Some("x")),
            Settlement::Retry {
                delay: Duration::from_secs(20)
            }
        );
        assert_eq!(
            decide(Verdict::Retry, 2, None, &b, Some(3.0), None),
            Settlement::Retry {
                delay: Duration::from_secs(3)
            }
        );
        assert!(
            matches!(decide(Verdict::Fail, 5, Some(5), &b, None, Some("boom")),
            Settlement::DeadLetter { reason } if reason.contains("5 of 5") && reason.contains("boom"))
        );
        assert!(
            matches!(decide(Verdict::Permanent, 1, None, &b, None, Some("bad input")),
            Settlement::DeadLetter { reason } if reason.contains("bad input"))
        );
        // A retry the handler asked for still counts against max-attempts.
        assert!(matches!(
            decide(Verdict::Retry, 3, Some(3), &b, Some(1.0), None),
            Settlement::DeadLetter { .. }
        ));
        // Negative or absurd requested delays fall back to the backoff / the cap.
        assert_eq!(
            decide(Verdict::Retry, 1, None, &b, Some(-4.0), None),
            Settlement::Retry {
                delay: Duration::from_secs(10)
            }
        );
        for huge in [1e9, 1e20, 1e308, f64::INFINITY] {
            assert_eq!(
                decide(Verdict::Retry, 1, None, &b, Some(huge), None),
                Settlement::Retry { delay: MAX_DELAY },
                "{huge}"
            );
        }
        assert_eq!(
            decide(Verdict::Retry, 1, None, &b, Some(f64::NAN), None),
            Settlement::Retry {
                delay: Duration::from_secs(10)
            }
        );
    }
}
