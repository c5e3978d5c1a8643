//! The gate: credits for receiving, one per message that may be held at once.
//!
//! The gate starts with one credit per message the master can start soon (the running
//! batches plus one batch ahead), so messages never wait out their claim or visibility in
//! chore's buffer. A consumer takes a whole receive's worth before receiving; each message
//! it passes on carries one `Credits` of its own, and a credit goes back to the gate when
//! the value holding it is dropped. So no path can leak a credit or return one twice: a
//! settled, given-back or dead-lettered message returns its credit by going away.
//!
//! The gate is also how the master quiets (TSTP) and stops the consumers.

use std::sync::{Arc, Condvar, Mutex};

pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug)]
struct GateState {
    free: usize,
    /// Every credit there is, held or free.
    capacity: usize,
    /// Credits to withhold as they come back, after the capacity shrank (a reload).
    owed: usize,
    paused: bool,
    stopped: bool,
    /// What each waiting `take` wants: a returned credit wakes them only when it can
    /// satisfy one of them (a notify is a syscall, and credits come back one by one).
    waiting: Vec<usize>,
}

impl Gate {
    pub fn new(capacity: usize) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                free: capacity,
                capacity,
                owed: 0,
                paused: false,
                stopped: false,
                waiting: Vec::new(),
            }),
            changed: Condvar::new(),
        })
    }

    /// Take `want` credits (fewer only if the gate holds fewer in all), waiting while they
    /// are not free or the gate is paused. None once stopped.
    ///
    /// Waiting for a whole receive's worth, rather than taking what trickles back as
    /// messages settle one by one, keeps receives full and cheap.
    pub fn take(self: &Arc<Self>, want: usize) -> Option<Credits> {
        let mut s = self.lock();
        loop {
            let want = want.min(s.capacity).max(1);
            if s.stopped {
                return None;
            }
            if !s.paused && s.free >= want {
                s.free -= want;
                return Some(Credits {
                    gate: self.clone(),
                    n: want,
                });
            }
            s.waiting.push(want);
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            if let Some(i) = s.waiting.iter().position(|&w| w == want) {
                s.waiting.swap_remove(i);
            }
        }
    }

    /// Receiving paused (TSTP) or resumed (CONT).
    pub fn pause(&self, paused: bool) {
        self.lock().paused = paused;
        self.changed.notify_all();
    }

    /// Change the number of credits (a reload changed concurrency or batch size). Credits
    /// held now stay held; when the capacity shrinks, as many as it lost are kept back as
    /// they return.
    pub fn set_capacity(&self, capacity: usize) {
        let mut s = self.lock();
        if capacity >= s.capacity {
            let more = capacity - s.capacity;
            let repaid = more.min(s.owed);
            s.owed -= repaid;
            s.free += more - repaid;
        } else {
            let fewer = s.capacity - capacity;
            let now = fewer.min(s.free);
            s.free -= now;
            s.owed += fewer - now;
        }
        s.capacity = capacity;
        drop(s);
        self.changed.notify_all();
    }

    /// Stop for good: every waiting and later `take` returns None.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// Credits not held by anyone right now.
    pub fn free(&self) -> usize {
        self.lock().free
    }

    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        let kept = n.min(s.owed);
        s.owed -= kept;
        s.free += n - kept;
        let wake = s.waiting.iter().any(|&w| w <= s.free);
        drop(s);
        if wake {
            self.changed.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Credits taken from a gate; they return to it when dropped.
#[derive(Debug)]
pub struct Credits {
    gate: Arc<Gate>,
    n: usize,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("state", &*self.lock())
            .finish()
    }
}

impl Credits {
    pub fn len(&self) -> usize {
        self.n
    }

    /// Split one credit off, for one message to carry (None when none is left).
    pub fn split_one(&mut self) -> Option<Credits> {
        self.n = self.n.checked_sub(1)?;
        Some(Credits {
            gate: self.gate.clone(),
            n: 1,
        })
    }
}

impl Drop for Credits {
    fn drop(&mut self) {
        self.gate.give(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_hands_out_whole_receives() {
        let gate = Gate::new(10);
        let mut a = gate.take(4).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(gate.free(), 6);
        let one = a.split_one().unwrap();
        assert_eq!((a.len(), one.len()), (3, 1));
        drop(a);
        assert_eq!(gate.free(), 9);
        drop(one);
        assert_eq!(gate.free(), 10);
        // Never more than the whole capacity is waited for.
        let all = gate.take(50).unwrap();
        assert_eq!(all.len(), 10);
        drop(all);
        gate.stop();
        assert!(gate.take(1).is_none());
    }

    #[test]
    fn capacity_changes_keep_held_credits_and_withhold_returns() {
        let gate = Gate::new(10);
        let held = gate.take(8).unwrap();
        gate.set_capacity(4);
        assert_eq!(gate.free(), 0, "the two free credits go first");
        drop(held);
        assert_eq!(gate.free(), 4, "six of the eight returned are withheld");
        gate.set_capacity(6);
        assert_eq!(gate.free(), 6);
        let held = gate.take(6).unwrap();
        gate.set_capacity(2);
        gate.set_capacity(5);
        drop(held);
        assert_eq!(gate.free(), 5, "growing again repays what was owed first");
        assert_eq!(
            gate.take(50).unwrap().len(),
            5,
            "a receive is capped at the new size"
        );
    }

    #[test]
    fn split_stops_at_zero() {
        let gate = Gate::new(2);
        let mut c = gate.take(1).unwrap();
        let one = c.split_one().unwrap();
        assert!(c.split_one().is_none());
        assert_eq!(c.len(), 0);
        drop((c, one));
        assert_eq!(gate.free(), 2);
    }

    #[test]
    fn a_waiting_take_wakes_when_credits_come_back() {
        let gate = Gate::new(2);
        let held = gate.take(2).unwrap();
        let g = gate.clone();
        let waiter = std::thread::spawn(move || g.take(2).map(|c| c.len()));
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(2));
    }
}
