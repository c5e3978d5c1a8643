//! Settling: turning how a message ended into what happens to it (design decision 2).
//!
//! `decide` is the pure core: a verdict, the attempt number and the queue's policy in, a
//! `Settlement` out. The master applies it through the queue. A failure below max-attempts
//! is retried after the backoff (or the delay the handler asked for); a failure at
//! max-attempts, or a permanent one, is dead-lettered with its reason.

use crate::backoff::{Backoff, MAX_DELAY};
use crate::protocol::Verdict;
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
        Verdict::Retry | Verdict::Fail => {
            if let Some(max) = max_attempts.filter(|&m| attempt >= m) {
                return Settlement::DeadLetter {
                    reason: format!(
                        "failed {attempt} of {max} attempts; last error: {}",
                        error.unwrap_or("none given")
                    ),
                };
            }
            let delay = requested_delay
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .unwrap_or_else(|| backoff.delay(attempt))
                .min(MAX_DELAY);
            Settlement::Retry { delay }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            decide(Verdict::Retry, 1, None, &b, Some(1e9), None),
            Settlement::Retry { delay: MAX_DELAY }
        );
    }
}
