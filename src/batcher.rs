//! The batcher: received messages wait here, per queue, until they make a batch.
//!
//! A batch flushes (docs/decisions/0013-when-a-batch-flushes.md) when it is full; when its oldest message has waited
//! `batch-timeout`; or, unless batching is strict, when the queue's last receive came back
//! short (the queue has nothing more to give right now), so a lone job starts at once while
//! a backlog still runs in full batches. Batches never mix queues: each queue has its own
//! handler and timeout, and a worker's deadline is the sum of its messages' timeouts.
//! The master asks for a batch only when a worker slot is free.
//!
//! Pure: the clock comes in as `now`; nothing here does I/O. It keeps whatever the master
//! holds a message as (anything that is a `Delivery` underneath).

use crate::queue::Delivery;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Pending<T> {
    items: VecDeque<T>,
    /// The last receive for this queue came back short.
    drained: bool,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            items: VecDeque::new(),
            drained: false,
        }
    }
}

#[derive(Debug)]
pub struct Batcher<T> {
    queues: Vec<Pending<T>>,
    batch_size: usize,
    batch_timeout: Duration,
    strict: bool,
}

impl<T: AsRef<Delivery> + AsMut<Delivery>> Batcher<T> {
    pub fn new(queues: usize, batch_size: usize, batch_timeout: Duration, strict: bool) -> Self {
        Batcher {
            queues: (0..queues).map(|_| Pending::default()).collect(),
            batch_size,
            batch_timeout,
            strict,
        }
    }

    /// Messages from one receive of queue `q`; `short` says the receive gave less than it
    /// was allowed.
    pub fn add(&mut self, q: usize, deliveries: Vec<T>, short: bool) {
        let p = &mut self.queues[q];
        p.items.extend(deliveries);
        p.drained = short;
    }

    /// One message on its own (a held-back copy whose turn has come), leaving what the
    /// last receive said about the queue as it was.
    pub fn push(&mut self, q: usize, d: T) {
        self.queues[q].items.push_back(d);
    }

    /// How many messages wait, over all queues.
    pub fn len(&self) -> usize {
        self.queues.iter().map(|p| p.items.len()).sum()
    }

    fn ready(&self, p: &Pending<T>, now: Instant) -> bool {
        match p.items.front() {
            None => false,
            Some(oldest) => {
                p.items.len() >= self.batch_size
                    || now.saturating_duration_since(oldest.as_ref().received_at)
                        >= self.batch_timeout
                    || (!self.strict && p.drained)
            }
        }
    }

    /// The next batch to start, if any is ready: the ready queue whose oldest message has
    /// waited longest goes first, so no queue starves another. `busy(queue, group)` says a
    /// message group is running in another batch (FIFO queues): its messages stay here, in
    /// order, until that batch is over.
    pub fn next_batch(
        &mut self,
        now: Instant,
        busy: &dyn Fn(usize, &str) -> bool,
    ) -> Option<(usize, Vec<T>)> {
        let startable = |q: usize, d: &T| d.as_ref().group.as_deref().is_none_or(|g| !busy(q, g));
        let q = (0..self.queues.len())
            .filter(|&q| {
                self.ready(&self.queues[q], now)
                    && self.queues[q].items.iter().any(|d| startable(q, d))
            })
            .min_by_key(|&q| self.queues[q].items.front().map(|d| d.as_ref().received_at))?;
        let p = &mut self.queues[q];
        let mut batch = Vec::with_capacity(p.items.len().min(self.batch_size));
        let mut kept = VecDeque::new();
        while let Some(d) = p.items.pop_front() {
            if batch.len() < self.batch_size && startable(q, &d) {
                batch.push(d);
            } else {
                kept.push_back(d);
            }
        }
        p.items = kept;
        Some((q, batch))
    }

    /// Take every waiting message of one group of queue `q` (to give them back when an
    /// earlier message of the group is retried, so the group keeps its order).
    pub fn take_group(&mut self, q: usize, group: &str) -> Vec<T> {
        let p = &mut self.queues[q];
        let (taken, kept): (Vec<_>, Vec<_>) = p
            .items
            .drain(..)
            .partition(|d| d.as_ref().group.as_deref() == Some(group));
        p.items = kept.into();
        taken
    }

    /// When the oldest waiting message of any queue reaches the batch timeout.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|p| p.items.front())
            .map(|d| d.as_ref().received_at + self.batch_timeout)
            .min()
    }

    /// Every waiting message, for renewing claims.
    pub fn held_mut(&mut self) -> impl Iterator<Item = (usize, &mut Delivery)> {
        self.queues
            .iter_mut()
            .enumerate()
            .flat_map(|(q, p)| p.items.iter_mut().map(move |d| (q, d.as_mut())))
    }

    /// Every waiting message.
    pub fn held(&self) -> impl Iterator<Item = (usize, &Delivery)> {
        self.queues
            .iter()
            .enumerate()
            .flat_map(|(q, p)| p.items.iter().map(move |d| (q, d.as_ref())))
    }

    /// One more queue (added by a reload); returns its number.
    pub fn add_queue(&mut self) -> usize {
        self.queues.push(Pending::default());
        self.queues.len() - 1
    }

    /// New batching settings (a reload); what waits is batched by them from now on.
    pub fn set_policy(&mut self, batch_size: usize, batch_timeout: Duration, strict: bool) {
        self.batch_size = batch_size;
        self.batch_timeout = batch_timeout;
        self.strict = strict;
    }

    /// Empty one queue's buffer (a queue a reload removed, to give its messages back).
    pub fn take_queue(&mut self, q: usize) -> Vec<T> {
        self.queues
            .get_mut(q)
            .map(|p| p.items.drain(..).collect())
            .unwrap_or_default()
    }

    /// Empty the batcher (at shutdown, to give the messages back).
    pub fn take_all(&mut self) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (q, p) in self.queues.iter_mut().enumerate() {
            out.extend(p.items.drain(..).map(|d| (q, d)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_adds_a_queue_changes_the_policy_and_empties_one_queue() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 10, Duration::from_secs(60), true);
        let q = b.add_queue();
        assert_eq!(q, 1);
        b.add(0, vec![d("a", t0)], false);
        b.add(q, vec![d("b", t0), d("c", t0)], false);
        assert!(
            b.next_batch(t0, &|_, _| false).is_none(),
            "not full, not timed out"
        );
        b.set_policy(2, Duration::from_secs(60), true);
        let (bq, batch) = b
            .next_batch(t0, &|_, _| false)
            .expect("full at the new size");
        assert_eq!((bq, batch.len()), (1, 2));
        b.add(q, vec![d("d", t0)], false);
        let taken = b.take_queue(q);
        assert_eq!(
            taken.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
            ["d"]
        );
        assert_eq!(b.len(), 1, "the other queue keeps its message");
        assert!(b.take_queue(7).is_empty());
    }

    fn d(id: &str, at: Instant) -> Delivery {
        Delivery {
            id: id.into(),
            receipt: id.into(),
            body: "{}".into(),
            attempt: 1,
            received_at: at,
            renew_at: at + Duration::from_secs(30),
            class: None,
            group: None,
            dedupe_key: None,
            meta: None,
            post_to: None,
        }
    }

    fn many(n: usize, at: Instant) -> Vec<Delivery> {
        (0..n).map(|i| d(&i.to_string(), at)).collect()
    }

    #[test]
    fn full_batches_flush_and_leave_the_rest() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 5, Duration::from_secs(20), false);
        b.add(0, many(6, t0), false);
        let (q, batch) = b.next_batch(t0, &|_, _| false).unwrap();
        assert_eq!((q, batch.len()), (0, 5));
        assert_eq!(b.len(), 1);
        // The leftover is neither full, nor old, nor drained: it waits.
        assert!(b.next_batch(t0, &|_, _| false).is_none());
    }

    #[test]
    fn a_lone_job_starts_at_once_when_the_queue_is_drained() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 50, Duration::from_secs(20), false);
        b.add(0, many(1, t0), true);
        assert_eq!(b.next_batch(t0, &|_, _| false).unwrap().1.len(), 1);
    }

    #[test]
    fn strict_batching_waits_for_the_timeout() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 50, Duration::from_secs(20), true);
        b.add(0, many(3, t0), true);
        assert!(
            b.next_batch(t0 + Duration::from_secs(19), &|_, _| false)
                .is_none()
        );
        assert_eq!(b.next_timeout(), Some(t0 + Duration::from_secs(20)));
        assert_eq!(
            b.next_batch(t0 + Duration::from_secs(20), &|_, _| false)
                .unwrap()
                .1
                .len(),
            3
        );
        assert!(b.next_timeout().is_none());
    }

    #[test]
    fn the_longest_waiting_queue_goes_first() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, 2, Duration::from_secs(20), false);
        b.add(1, many(2, t0), false);
        b.add(0, many(2, t0 + Duration::from_secs(1)), false);
        assert_eq!(
            b.next_batch(t0 + Duration::from_secs(2), &|_, _| false)
                .unwrap()
                .0,
            1
        );
        assert_eq!(
            b.next_batch(t0 + Duration::from_secs(2), &|_, _| false)
                .unwrap()
                .0,
            0
        );
    }

    #[test]
    fn a_busy_group_waits_and_keeps_its_order() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 10, Duration::from_secs(20), false);
        let mut items = many(4, t0);
        for (d, g) in items.iter_mut().zip(["a", "b", "a", "b"]) {
            d.group = Some(g.into());
        }
        b.add(0, items, true);
        let (_, batch) = b.next_batch(t0, &|_, g| g == "a").unwrap();
        assert_eq!(
            batch.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["1", "3"]
        );
        assert!(b.next_batch(t0, &|_, g| g == "a").is_none());
        let (_, batch) = b.next_batch(t0, &|_, _| false).unwrap();
        assert_eq!(
            batch.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["0", "2"]
        );
        b.add(0, many(2, t0), true);
        assert!(b.take_group(0, "a").is_empty());
    }

    #[test]
    fn a_backlog_does_not_flush_partial_batches() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, 50, Duration::from_secs(20), false);
        b.add(0, many(10, t0), false);
        b.add(0, many(10, t0), false);
        assert!(
            b.next_batch(t0, &|_, _| false).is_none(),
            "receives came back full: more is coming"
        );
        b.add(0, many(3, t0), true);
        assert_eq!(b.next_batch(t0, &|_, _| false).unwrap().1.len(), 23);
        assert_eq!(b.take_all().len(), 0);
    }
}
