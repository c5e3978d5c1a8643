//! Time in tests, in two shapes only:
//!
//! - `wait_until`: something must happen; look again every `POLL` until it has, and fail
//!   after a generous deadline. A wait ends as soon as the thing happened, so a fast
//!   machine is not slowed and a slow one is given time.
//! - `assert_for`: something must NOT happen for a while (no second run, no job while
//!   quiet). Only a stretch of time can show that; the stretch is named by what it proves,
//!   and the condition is checked all through it, not just at its end.
//!
//! A bare `sleep` in a test is neither, and is a bug waiting for a loaded machine.

use std::time::{Duration, Instant};

/// How long any wait lasts before the test fails: generous, for a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(25);

/// Wait until `cond` holds, polling; panic after `timeout` naming `what`.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Poll `cond` until it holds (true) or `timeout` has passed (false), for a caller that
/// has more to say than `wait_until` when time runs out.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Check that `cond` holds, and keeps holding, for `how_long` (polling); panic the moment
/// it does not, naming `what` should have stayed true.
pub fn assert_for(how_long: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        assert!(
            cond(),
            "expected {what} for {how_long:?}, but it stopped after {:?}",
            start.elapsed()
        );
        let elapsed = start.elapsed();
        if elapsed >= how_long {
            return;
        }
        std::thread::sleep(POLL.min(how_long - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn wait_until_returns_as_soon_as_the_condition_holds() {
        let looks = Cell::new(0);
        let start = Instant::now();
        wait_until("the third look", PATIENCE, || {
            looks.set(looks.get() + 1);
            looks.get() == 3
        });
        assert_eq!(looks.get(), 3);
        assert!(start.elapsed() < PATIENCE);
    }

    #[test]
    #[should_panic(expected = "timed out after 50ms waiting for never")]
    fn wait_until_fails_at_its_deadline() {
        wait_until("never", Duration::from_millis(50), || false);
    }

    #[test]
    fn assert_for_lasts_the_whole_stretch() {
        let start = Instant::now();
        let looks = Cell::new(0);
        assert_for(Duration::from_millis(100), "quiet", || {
            looks.set(looks.get() + 1);
            true
        });
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(looks.get() >= 2, "checked all through, not once");
    }

    #[test]
    #[should_panic(expected = "expected no second run for")]
    fn assert_for_fails_the_moment_the_condition_breaks() {
        let looks = Cell::new(0);
        assert_for(PATIENCE, "no second run", || {
            looks.set(looks.get() + 1);
            looks.get() < 3
        });
    }
}
