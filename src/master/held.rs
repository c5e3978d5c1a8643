//! Held messages: the one owner of every message the master holds, from the batchlet that
//! brought it to its settlement. A message is *buffered* (in the batcher, waiting to make
//! a batch), *waiting to be posted* (an HTTP handler takes it: no batching, it goes as soon
//! as its target has a free connection), *running* (in a worker's batch or an HTTP request,
//! until reported or the runner is gone) or *deferred* (a second copy of a message already
//! held: its claim was recovered elsewhere and came back; it waits for the first copy to
//! settle, so one master never runs two copies of a message at once). A batch whose worker
//! died before reporting on several of its messages is *isolating*: its unreported
//! messages wait, in two halves, to run again as batches of their own
//! (docs/decisions/0022-a-crashed-batch-is-bisected.md).
//!
//! Each message carries its gate credit (`consumer::Held`), so whatever takes a message out
//! of here and drops it returns the credit: none can leak or be returned twice. Pure: no
//! I/O, and the clock comes in as `now`.

use super::pool::WorkerId;
use crate::batcher::Batcher;
use crate::config::HttpTarget;
use crate::consumer::Held;
use crate::queue::Delivery;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

pub struct Holding {
    /// The ids of every buffered or running message, by queue (so that `release` looks
    /// an id up by `&str`, without making a key).
    ids: Vec<HashSet<String>>,
    batcher: Batcher<Held>,
    /// Messages for HTTP handlers, in arrival order.
    to_post: VecDeque<(usize, Held)>,
    deferred: Vec<(usize, Held)>,
    /// Parts of crashed batches, in order, each to run as a batch of its own before any
    /// new batch.
    isolating: VecDeque<(usize, Vec<Held>)>,
    running: HashMap<WorkerId, Batch>,
    /// No held claim is due for renewal before this (it may be early, never late): the
    /// master looks at every held message only when one may be due, not every turn.
    earliest_renewal: Option<Instant>,
}

/// A running batch: its queue, and its messages in order; a slot becomes None once its
/// message is reported.
struct Batch {
    queue: usize,
    slots: Vec<Option<Held>>,
}

impl Holding {
    pub fn new(batcher: Batcher<Held>) -> Holding {
        Holding {
            ids: Vec::new(),
            batcher,
            to_post: VecDeque::new(),
            deferred: Vec::new(),
            isolating: VecDeque::new(),
            running: HashMap::new(),
            earliest_renewal: None,
        }
    }

    /// Take in one receive of queue `q`. Returns the ids of second copies, which wait
    /// deferred for their first copy to settle.
    pub fn receive(&mut self, q: usize, messages: Vec<Held>, short: bool) -> Vec<String> {
        let mut fresh = Vec::with_capacity(messages.len());
        let mut second = Vec::new();
        for mut h in messages {
            self.note_renewal(h.delivery.renew_at);
            if self.insert_id(q, &h.delivery.id) {
                if h.delivery.post_to.is_some() {
                    self.to_post.push_back((q, h));
                } else {
                    fresh.push(h);
                }
            } else {
                // Its dedupe key, if it stored one, is the first copy's to forget.
                h.delivery.dedupe_key = None;
                second.push(h.delivery.id.clone());
                self.deferred.push((q, h));
            }
        }
        self.batcher.add(q, fresh, short);
        second
    }

    /// The next batch ready to start, if any. `ordered(q)` says queue `q` is FIFO: a
    /// message group running in one worker never starts in another.
    pub fn next_batch(
        &mut self,
        now: Instant,
        ordered: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, Vec<Held>)> {
        let busy = busy_groups(&self.running, ordered);
        let busy = |q: usize, g: &str| busy.contains(&(q, g));
        // A part of a crashed batch goes first, unless (FIFO) a group of it is running.
        let free = self.isolating.iter().position(|(q, part)| {
            part.iter()
                .all(|h| h.delivery.group.as_deref().is_none_or(|g| !busy(*q, g)))
        });
        if let Some(i) = free {
            return self.isolating.remove(i);
        }
        self.batcher.next_batch(now, &busy)
    }

    /// `unreported`, the messages of a batch of queue `q` whose worker died before
    /// reporting on them (at least two), run again as two smaller batches of their own, so
    /// that a message that makes its batch crash ends up alone. The first half holds the
    /// first messages: a batch runs in order, so it holds the one that was running.
    pub fn isolate(&mut self, q: usize, mut unreported: Vec<Held>) {
        let second = unreported.split_off(unreported.len().div_ceil(2));
        self.isolating.push_back((q, unreported));
        if !second.is_empty() {
            self.isolating.push_back((q, second));
        }
    }

    /// The next message to post: the oldest whose target has a free connection (`room`)
    /// and, on a FIFO queue, whose group is not running.
    pub fn next_post(
        &mut self,
        ordered: &dyn Fn(usize) -> bool,
        room: &dyn Fn(&HttpTarget) -> bool,
    ) -> Option<(usize, Held)> {
        if self.to_post.is_empty() {
            return None;
        }
        // Only FIFO messages need the running groups: worked out once, when one comes up.
        let mut busy: Option<HashSet<(usize, &str)>> = None;
        let running = &self.running;
        let i = self.to_post.iter().position(|(q, h)| {
            let d = &h.delivery;
            d.post_to.as_deref().is_some_and(room)
                && d.group.as_deref().is_none_or(|g| {
                    !busy
                        .get_or_insert_with(|| busy_groups(running, ordered))
                        .contains(&(*q, g))
                })
        })?;
        self.to_post.remove(i)
    }

    /// A batch from `next_batch` now runs in `worker`.
    pub fn start(&mut self, worker: WorkerId, queue: usize, batch: Vec<Held>) {
        let slots = batch.into_iter().map(Some).collect();
        self.running.insert(worker, Batch { queue, slots });
    }

    /// Take message `i` of `worker`'s batch, reported on. It stays held (its id known) until
    /// `release`.
    pub fn report(&mut self, worker: WorkerId, i: usize) -> Option<(usize, Held)> {
        let b = self.running.get_mut(&worker)?;
        Some((b.queue, b.slots.get_mut(i)?.take()?))
    }

    /// `worker` is gone: take what it never reported on.
    pub fn worker_gone(&mut self, worker: WorkerId) -> Option<(usize, Vec<Held>)> {
        let b = self.running.remove(&worker)?;
        Some((b.queue, b.slots.into_iter().flatten().collect()))
    }

    /// Message `id` of queue `q` has been settled or given back: forget it. Returns its
    /// deferred second copy, if one waits, for the caller to settle the same way or `hold`.
    pub fn release(&mut self, q: usize, id: &str) -> Option<Held> {
        if let Some(ids) = self.ids.get_mut(q) {
            ids.remove(id);
        }
        if self.deferred.is_empty() {
            return None;
        }
        let i = self
            .deferred
            .iter()
            .position(|(dq, h)| *dq == q && h.delivery.id == id)?;
        Some(self.deferred.swap_remove(i).1)
    }

    /// Hold `h` again, buffered (a deferred copy whose first copy was given back unrun).
    pub fn hold(&mut self, q: usize, h: Held) {
        self.insert_id(q, &h.delivery.id);
        self.note_renewal(h.delivery.renew_at);
        if h.delivery.post_to.is_some() {
            self.to_post.push_back((q, h));
        } else {
            self.batcher.push(q, h);
        }
    }

    /// Every buffered message of one group of queue `q` (to give back behind a retried
    /// message of that group, so the group keeps its order).
    pub fn take_group(&mut self, q: usize, group: &str) -> Vec<Held> {
        let mut taken = self.batcher.take_group(q, group);
        let (same, rest) = std::mem::take(&mut self.to_post)
            .into_iter()
            .partition(|(pq, h)| *pq == q && h.delivery.group.as_deref() == Some(group));
        self.to_post = rest;
        taken.extend(same.into_iter().map(|(_, h)| h));
        for (_, part) in self.isolating.iter_mut().filter(|(pq, _)| *pq == q) {
            let (same, rest): (Vec<Held>, Vec<Held>) = std::mem::take(part)
                .into_iter()
                .partition(|h| h.delivery.group.as_deref() == Some(group));
            *part = rest;
            taken.extend(same);
        }
        self.isolating.retain(|(_, part)| !part.is_empty());
        taken
    }

    /// Every buffered message, every one waiting to be posted and every part of a crashed
    /// batch waiting to run again (at a drain, to give back).
    pub fn take_buffered(&mut self) -> Vec<(usize, Held)> {
        let mut all = self.batcher.take_all();
        all.extend(self.to_post.drain(..));
        for (q, part) in self.isolating.drain(..) {
            all.extend(part.into_iter().map(|h| (q, h)));
        }
        all
    }

    /// One more queue (a reload added it); returns its number.
    pub fn add_queue(&mut self) -> usize {
        self.batcher.add_queue()
    }

    /// New batching settings (a reload).
    pub fn set_policy(
        &mut self,
        batch_size: usize,
        batch_timeout: std::time::Duration,
        strict: bool,
    ) {
        self.batcher.set_policy(batch_size, batch_timeout, strict);
    }

    /// Every buffered message of queue `q` (a reload removed it: they go back).
    pub fn take_buffered_of(&mut self, q: usize) -> Vec<Held> {
        let mut taken = self.batcher.take_queue(q);
        let (same, rest) = std::mem::take(&mut self.to_post)
            .into_iter()
            .partition(|(pq, _)| *pq == q);
        self.to_post = rest;
        taken.extend(same.into_iter().map(|(_, h): (usize, Held)| h));
        taken
    }

    /// Every deferred copy (at a drain, to give back).
    pub fn take_deferred(&mut self) -> Vec<(usize, Held)> {
        std::mem::take(&mut self.deferred)
    }

    /// Every held message, buffered, deferred or running, for renewing claims; afterwards
    /// the earliest renewal is known exactly again.
    pub fn each_mut(&mut self, mut f: impl FnMut(usize, &mut Delivery)) {
        self.visit(&mut f);
        self.earliest_renewal = self.compute_earliest();
    }

    fn visit(&mut self, f: &mut impl FnMut(usize, &mut Delivery)) {
        for (q, d) in self.batcher.held_mut() {
            f(q, d);
        }
        for (q, h) in self.to_post.iter_mut().chain(&mut self.deferred) {
            f(*q, &mut h.delivery);
        }
        for (q, part) in &mut self.isolating {
            for h in part {
                f(*q, &mut h.delivery);
            }
        }
        for b in self.running.values_mut() {
            for h in b.slots.iter_mut().flatten() {
                f(b.queue, &mut h.delivery);
            }
        }
    }

    /// Note `id` of queue `q` as held; false when it already was.
    fn insert_id(&mut self, q: usize, id: &str) -> bool {
        if self.ids.len() <= q {
            self.ids.resize_with(q + 1, HashSet::new);
        }
        let ids = &mut self.ids[q];
        !ids.contains(id) && ids.insert(id.to_owned())
    }

    /// When the next held claim may have to be renewed (never later than the truth).
    pub fn next_renewal(&self) -> Option<Instant> {
        self.earliest_renewal
    }

    fn note_renewal(&mut self, at: Instant) {
        self.earliest_renewal = Some(self.earliest_renewal.map_or(at, |e| e.min(at)));
    }

    fn compute_earliest(&self) -> Option<Instant> {
        let buffered = self.batcher.held().map(|(_, d)| d.renew_at);
        let deferred =
            (self.to_post.iter().chain(&self.deferred)).map(|(_, h)| h.delivery.renew_at);
        let running = self
            .running
            .values()
            .flat_map(|b| b.slots.iter().flatten())
            .chain(self.isolating.iter().flat_map(|(_, part)| part))
            .map(|h| h.delivery.renew_at);
        buffered.chain(deferred).chain(running).min()
    }

    /// When the oldest buffered message reaches the batch timeout.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.batcher.next_timeout()
    }

    /// The ids `worker` runs and has not reported on yet.
    pub fn ids_of(&self, worker: WorkerId) -> Vec<&str> {
        self.running
            .get(&worker)
            .map(|b| {
                b.slots
                    .iter()
                    .flatten()
                    .map(|h| h.delivery.id.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages buffered, waiting for a batch.
    pub fn buffered(&self) -> usize {
        self.batcher.len()
    }

    /// Messages waiting for a free connection to their HTTP handler.
    pub fn waiting_to_post(&self) -> usize {
        self.to_post.len()
    }

    /// Messages of crashed batches waiting to run again in smaller batches.
    pub fn isolating(&self) -> usize {
        self.isolating.iter().map(|(_, part)| part.len()).sum()
    }

    /// Second copies waiting for their first.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    /// Per queue (`queues` of them): messages waiting to start (for a batch or a post),
    /// and every message held (waiting, running or deferred).
    pub fn per_queue(&self, queues: usize) -> Vec<(usize, usize)> {
        let mut counts = vec![(0, 0); queues];
        let waiting = self.batcher.held().map(|(q, _)| q);
        for q in waiting.chain(self.to_post.iter().map(|(q, _)| *q)) {
            counts[q].0 += 1;
        }
        for (q, ids) in self.ids.iter().enumerate().take(queues) {
            counts[q].1 = ids.len();
        }
        for (q, _) in &self.deferred {
            counts[*q].1 += 1;
        }
        counts
    }
}

/// The (queue, group) pairs running on FIFO queues: a group runs in one place at a time.
fn busy_groups<'a>(
    running: &'a HashMap<WorkerId, Batch>,
    ordered: &dyn Fn(usize) -> bool,
) -> HashSet<(usize, &'a str)> {
    running
        .values()
        .filter(|b| ordered(b.queue))
        .flat_map(|b| {
            b.slots
                .iter()
                .flatten()
                .filter_map(move |h| Some((b.queue, h.delivery.group.as_deref()?)))
        })
        .collect()
}
