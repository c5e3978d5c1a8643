//! Visibility arithmetic: how long a received message may stay invisible. SQS refuses a
//! visibility that ends more than 12 hours after the receive, so a retry's delay and every
//! heartbeat are cut to what is left of those 12 hours. Pure: the clock is a parameter.

use std::time::{Duration, Instant};

/// Longest visibility SQS allows (12 hours), counted from the receive.
const MAX_VISIBILITY: i32 = 43_200;
/// Seconds kept in hand for the settle call's own delay on its way to SQS.
const MARGIN: i32 = 30;
/// When a message has used up its 12 hours, how long until its next (useless) heartbeat:
/// longer than SQS takes to deliver it again, so it is not logged over and over.
const EXHAUSTED_PAUSE: Duration = Duration::from_secs(86_400);

/// Seconds of visibility SQS still allows a receipt taken at `received_at` (12 hours from
/// the receive, less a margin); zero or less when none is left.
pub(super) fn visibility_left(received_at: Instant, now: Instant) -> i32 {
    MAX_VISIBILITY - whole_secs(now.saturating_duration_since(received_at)) - MARGIN
}

/// `d` in whole seconds, rounded up (SQS counts visibility in seconds; rounding down could
/// make a message visible before its delay), at most 12 hours.
pub(super) fn whole_secs(d: Duration) -> i32 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).min(MAX_VISIBILITY as u64) as i32
}

/// The visibility, in seconds, that makes a retry wait `delay`: the delay, cut to what is
/// left of the 12 hours (then SQS delivers it again sooner than asked, never later).
pub(super) fn retry_secs(delay: Duration, received_at: Instant, now: Instant) -> i32 {
    whole_secs(delay).min(visibility_left(received_at, now).max(0))
}

/// What one heartbeat of a held message does.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Heartbeat {
    /// When the next heartbeat is due.
    pub next: Instant,
    /// The visibility to ask for, in seconds; None when the 12 hours are used up and SQS
    /// allows no more (it will deliver the message again).
    pub extend_to: Option<i32>,
}

/// The heartbeat at `now` of a message received at `received_at` from a queue whose
/// visibility timeout is `visibility`: extend by one visibility timeout (cut to the 12
/// hours), and come back at half of it, well before it ends.
pub(super) fn heartbeat(visibility: Duration, received_at: Instant, now: Instant) -> Heartbeat {
    let left = visibility_left(received_at, now);
    if left <= 0 {
        return Heartbeat {
            next: now + EXHAUSTED_PAUSE,
            extend_to: None,
        };
    }
    Heartbeat {
        next: now + visibility / 2,
        extend_to: Some(whole_secs(visibility).min(left)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn whole_secs_rounds_up_and_stops_at_twelve_hours() {
        assert_eq!(whole_secs(Duration::ZERO), 0);
        assert_eq!(whole_secs(Duration::from_secs(5)), 5);
        assert_eq!(whole_secs(Duration::from_millis(5001)), 6);
        assert_eq!(whole_secs(Duration::from_nanos(1)), 1);
        assert_eq!(whole_secs(12 * HOUR), 43_200);
        assert_eq!(whole_secs(30 * 24 * HOUR), 43_200);
        assert_eq!(whole_secs(Duration::from_secs(u64::MAX / 2)), 43_200);
    }

    #[test]
    fn visibility_left_counts_down_from_twelve_hours_less_a_margin() {
        let t0 = Instant::now();
        assert_eq!(visibility_left(t0, t0), 43_200 - 30);
        assert_eq!(visibility_left(t0, t0 + HOUR), 43_200 - 3600 - 30);
        // Part of a second counts as a whole one gone.
        assert_eq!(
            visibility_left(t0, t0 + Duration::from_millis(1500)),
            43_200 - 2 - 30
        );
        assert_eq!(
            visibility_left(t0, t0 + 12 * HOUR - Duration::from_secs(30)),
            0
        );
        assert!(visibility_left(t0, t0 + 12 * HOUR) < 0);
        assert!(visibility_left(t0, t0 + 48 * HOUR) < 0);
    }

    #[test]
    fn a_clock_reading_before_the_receive_counts_as_the_receive() {
        let t0 = Instant::now() + HOUR;
        assert_eq!(visibility_left(t0, t0 - HOUR), 43_200 - 30);
    }

    #[test]
    fn a_retry_waits_its_delay_within_the_twelve_hours() {
        let t0 = Instant::now();
        assert_eq!(retry_secs(Duration::ZERO, t0, t0), 0);
        assert_eq!(retry_secs(Duration::from_millis(2500), t0, t0), 3);
        assert_eq!(retry_secs(HOUR, t0, t0 + HOUR), 3600);
        // Eleven and a half hours in, one hour of backoff is cut to what is left.
        let late = t0 + 11 * HOUR + HOUR / 2;
        assert_eq!(retry_secs(HOUR, t0, late), 1800 - 30);
        // Past the limit: visible again at once, never a negative visibility.
        assert_eq!(retry_secs(HOUR, t0, t0 + 13 * HOUR), 0);
    }

    #[test]
    fn a_heartbeat_extends_by_the_visibility_timeout_and_returns_at_half_of_it() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        assert_eq!(
            heartbeat(Duration::from_secs(30), t0, now),
            Heartbeat {
                next: now + Duration::from_secs(15),
                extend_to: Some(30),
            }
        );
        assert_eq!(
            heartbeat(Duration::from_millis(1500), t0, now),
            Heartbeat {
                next: now + Duration::from_millis(750),
                extend_to: Some(2),
            }
        );
    }

    #[test]
    fn near_twelve_hours_a_heartbeat_asks_only_for_what_is_left() {
        let t0 = Instant::now();
        let now = t0 + 12 * HOUR - Duration::from_secs(100);
        let h = heartbeat(Duration::from_secs(600), t0, now);
        assert_eq!(h.extend_to, Some(70));
        assert_eq!(h.next, now + Duration::from_secs(300));
    }

    #[test]
    fn after_twelve_hours_a_heartbeat_extends_nothing_and_waits_a_day() {
        let t0 = Instant::now();
        let now = t0 + 12 * HOUR;
        assert_eq!(
            heartbeat(Duration::from_secs(600), t0, now),
            Heartbeat {
                next: now + Duration::from_secs(86_400),
                extend_to: None,
            }
        );
    }
}
