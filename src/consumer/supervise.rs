//! Consumer threads that panic come back: `supervise` runs a thread's loop and, after a
//! panic, logs it with its queue and starts the loop again with a fresh receiver, after a
//! backoff (1 s doubling to 60 s, back to 1 s after a minute of health), so one bad
//! receive does not end the master.

use super::Thread;
use std::time::{Duration, Instant};

/// A panicked consumer thread starts again after this, doubling up to `RESTART_MAX`.
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Run a consumer thread, starting it again after a panic (with a fresh receiver, after a
/// backoff of 1 s doubling to 60 s, back to 1 s after a minute of health), so one bad
/// receive does not end the master. What the panicked receive had claimed comes back when
/// its claim or visibility lapses; its credits went back as the panic unwound.
pub(super) fn supervise(mut thread: Thread) {
    let mut delay = RESTART_FIRST;
    loop {
        let began = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.run()));
        let Err(panic) = run else {
            return;
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        if began.elapsed() > RESTART_MAX {
            delay = RESTART_FIRST;
        }
        let queue = thread.settler.queue.name().to_string();
        tracing::error!(queue = %queue, panic = %what, restart_in_secs = delay.as_secs_f64(), "consumer thread panicked; restarting it");
        loop {
            if thread.shared.stop.sleep(delay) || thread.retired() {
                return;
            }
            delay = (delay * 2).min(RESTART_MAX);
            match thread.settler.queue.consumer() {
                Ok(c) => {
                    thread.consume = c;
                    break;
                }
                Err(e) => {
                    tracing::error!(queue = %queue, error = %e, restart_in_secs = delay.as_secs_f64(), "cannot restart the consumer thread; trying again");
                }
            }
        }
        tracing::info!(queue = %queue, "consumer thread restarted");
    }
}

/// Tests only (debug builds): the first receive of the queue named in
/// `CHORE_TEST_CONSUMER_PANIC` panics, once per process, to show the thread comes back.
#[cfg(debug_assertions)]
pub(super) fn test_panic(queue: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if std::env::var("CHORE_TEST_CONSUMER_PANIC").is_ok_and(|q| q == queue)
        && !DONE.swap(true, Ordering::AcqRel)
    {
        panic!("CHORE_TEST_CONSUMER_PANIC");
    }
}
