//! Pure: is consumption live? The rule behind the systemd watchdog, `chore status`'s
//! health and the `chore_healthy` gauge.
//!
//! The master is unhealthy while any of these holds:
//! - a queue has had messages waiting (received and buffered, or in the queue itself) for
//!   `stall_timeout` while none of its messages started;
//! - a consumer thread ended while the master was not draining;
//! - a queue could not be looked at (its directory gone and not recreated).
//!
//! Every method takes `now`; the master feeds it what it sees each tick.

use std::time::{Duration, Instant};

/// One queue's progress.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// When a message of this queue last started (or the queue stopped waiting).
    last_start: Option<Instant>,
    /// Since when messages have waited with none started; None: nothing waits.
    waiting_since: Option<Instant>,
    /// Why the queue cannot be looked at, when it cannot.
    broken: Option<String>,
}

/// The liveness of every queue, in the master's queue order.
#[derive(Debug)]
pub struct Liveness {
    stall_timeout: Duration,
    queues: Vec<Progress>,
    /// A consumer thread that ended by itself: its queue's name.
    dead_consumer: Option<String>,
}

impl Liveness {
    /// `stall_timeout` zero: stalls are never reported.
    pub fn new(queues: usize, stall_timeout: Duration) -> Liveness {
        Liveness {
            stall_timeout,
            queues: vec![Progress::default(); queues],
            dead_consumer: None,
        }
    }

    /// One more queue (added by a reload), numbered next.
    pub fn add_queue(&mut self) {
        self.queues.push(Progress::default());
    }

    /// Messages of queue `q` started at `now`.
    pub fn started(&mut self, q: usize, now: Instant) {
        let p = &mut self.queues[q];
        p.last_start = Some(now);
        if p.waiting_since.is_some() {
            p.waiting_since = Some(now);
        }
    }

    /// Whether queue `q` has messages waiting at `now`.
    pub fn waiting(&mut self, q: usize, waiting: bool, now: Instant) {
        let p = &mut self.queues[q];
        match (waiting, p.waiting_since) {
            (true, None) => p.waiting_since = Some(now),
            (false, _) => p.waiting_since = None,
            (true, Some(_)) => {}
        }
    }

    /// Queue `q` could (None) or could not (Some(why)) be looked at.
    pub fn broken(&mut self, q: usize, why: Option<String>) {
        self.queues[q].broken = why;
    }

    /// A consumer thread (`name`: its queue and number) has ended by itself.
    pub fn consumer_died(&mut self, name: &str) {
        self.dead_consumer.get_or_insert_with(|| name.to_string());
    }

    /// Why the master is unhealthy at `now` (`names`: the queues' names), or None.
    pub fn verdict(&self, now: Instant, names: &[&str]) -> Option<String> {
        if let Some(q) = &self.dead_consumer {
            return Some(format!("consumer thread {q} has stopped"));
        }
        for (p, name) in self.queues.iter().zip(names) {
            if let Some(why) = &p.broken {
                return Some(format!("queue {name} cannot be read: {why}"));
            }
        }
        if self.stall_timeout.is_zero() {
            return None;
        }
        for (p, name) in self.queues.iter().zip(names) {
            let Some(since) = p.waiting_since else {
                continue;
            };
            // Worded without the running time, so the verdict is the same from tick to
            // tick and its change is logged once.
            if now.saturating_duration_since(since) >= self.stall_timeout {
                return Some(format!(
                    "queue {name} has had messages waiting for {}s (stall-timeout) with none started",
                    self.stall_timeout.as_secs_f64()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_queue_waiting_without_a_start_for_the_stall_timeout_is_unhealthy() {
        let t0 = Instant::now();
        let mut l = Liveness::new(2, 10 * S);
        l.waiting(1, true, t0);
        assert_eq!(l.verdict(t0 + 9 * S, &["a", "b"]), None);
        let why = l.verdict(t0 + 10 * S, &["a", "b"]).unwrap();
        assert!(why.contains("queue b") && why.contains("10s"), "{why}");
        assert_eq!(
            l.verdict(t0 + 99 * S, &["a", "b"]),
            Some(why),
            "the same words each tick"
        );
        // A start makes it live again, and the wait counts from there.
        l.started(1, t0 + 11 * S);
        l.waiting(1, true, t0 + 11 * S);
        assert_eq!(l.verdict(t0 + 20 * S, &["a", "b"]), None);
        assert!(l.verdict(t0 + 21 * S, &["a", "b"]).is_some());
    }

    #[test]
    fn nothing_waiting_is_never_a_stall_and_zero_turns_the_check_off() {
        let t0 = Instant::now();
        let mut l = Liveness::new(1, 10 * S);
        l.waiting(0, true, t0);
        l.waiting(0, false, t0 + 5 * S);
        assert_eq!(l.verdict(t0 + 100 * S, &["a"]), None);
        l.waiting(0, true, t0 + 100 * S);
        assert!(l.verdict(t0 + 111 * S, &["a"]).is_some());
        let mut off = Liveness::new(1, Duration::ZERO);
        off.waiting(0, true, t0);
        assert_eq!(off.verdict(t0 + 1_000_000 * S, &["a"]), None);
    }

    #[test]
    fn a_dead_consumer_or_a_broken_queue_is_unhealthy_at_once() {
        let t0 = Instant::now();
        let mut l = Liveness::new(1, Duration::ZERO);
        l.broken(0, Some("new/ is gone".into()));
        assert!(l.verdict(t0, &["a"]).unwrap().contains("new/ is gone"));
        l.broken(0, None);
        assert_eq!(l.verdict(t0, &["a"]), None);
        l.consumer_died("a-0");
        assert!(
            l.verdict(t0, &["a"])
                .unwrap()
                .contains("consumer thread a-0")
        );
    }
}
