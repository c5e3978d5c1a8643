//! The settler's pure core: what it is asked to do (`Op`), the settlements waiting to be
//! sent (`Waiting`), how long it gathers them before a call (`Gather`, `delete_window`),
//! and how they are cut into batch calls (`chunks`). The clock is a parameter; the thread
//! and the calls themselves are in `settler`.

use super::{MAX_BATCH, MAX_PAYLOAD};
use crate::queue::Attribute;
use crossbeam_channel::Sender;
use std::time::{Duration, Instant};

/// How long a visibility change or dead letter waits for others to fill a batch call.
const FLUSH_WINDOW: Duration = Duration::from_millis(50);
/// How long a delete may wait for others (shortened for short visibility timeouts).
const DELETE_WINDOW: Duration = Duration::from_secs(1);

/// What the settler is asked to do.
pub(super) enum Op {
    Delete {
        id: String,
        receipt: String,
    },
    Visibility {
        id: String,
        receipt: String,
        secs: i32,
    },
    DeadLetter {
        id: String,
        receipt: String,
        body: String,
        group: Option<String>,
        attributes: Vec<Attribute>,
    },
    /// Answer once everything before this has been sent.
    Flush(Sender<()>),
}

/// How long a delete may wait for nine more to fill its call. Never long: the message is
/// still invisible (at least half its visibility timeout remains after its last
/// heartbeat), and on a FIFO queue a delete is what frees the rest of the group.
pub(super) fn delete_window(fifo: bool, visibility: Duration) -> Duration {
    if fifo {
        FLUSH_WINDOW
    } else {
        DELETE_WINDOW.min(visibility.max(Duration::from_secs(1)) / 4)
    }
}

/// A message waiting to be settled, with the time its calls started failing.
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    pub id: String,
    pub receipt: String,
    pub failing_since: Option<Instant>,
}

impl Entry {
    pub fn new(id: String, receipt: String) -> Entry {
        Entry {
            id,
            receipt,
            failing_since: None,
        }
    }
}

/// One waiting settlement of a kind: the entry plus what that kind needs.
pub(super) trait Pending {
    fn entry(&mut self) -> &mut Entry;
    /// Bytes this entry adds to a call's payload (a dead letter's body and attributes).
    fn payload(&self) -> usize {
        0
    }
}

impl Pending for Entry {
    fn entry(&mut self) -> &mut Entry {
        self
    }
}

/// A visibility change to `secs`.
#[derive(Debug, PartialEq)]
pub(super) struct Change {
    pub entry: Entry,
    pub secs: i32,
}

impl Pending for Change {
    fn entry(&mut self) -> &mut Entry {
        &mut self.entry
    }
}

/// A dead letter: its body and FIFO group go to the dead-letter queue.
#[derive(Debug, PartialEq)]
pub(super) struct Dead {
    pub entry: Entry,
    pub body: String,
    pub group: Option<String>,
    /// Its message attributes, sent on with it as SQS's own redrive would.
    pub attributes: Vec<Attribute>,
}

impl Pending for Dead {
    fn entry(&mut self) -> &mut Entry {
        &mut self.entry
    }
    fn payload(&self) -> usize {
        // SQS counts an attribute's name, type and value against the message's size.
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|a| {
                    a.name.len()
                        + a.data_type.len()
                        + a.string_value.as_ref().map_or(0, String::len)
                        + a.binary_value.as_ref().map_or(0, Vec::len)
                })
                .sum::<usize>()
    }
}

/// The settlements waiting to be sent, by kind (one batch call carries one kind).
#[derive(Default)]
pub(super) struct Waiting {
    pub deletes: Vec<Entry>,
    pub changes: Vec<Change>,
    pub dead: Vec<Dead>,
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.changes.is_empty() && self.dead.is_empty()
    }

    /// Some kind has a full call waiting.
    fn full(&self) -> bool {
        self.deletes.len() >= MAX_BATCH
            || self.changes.len() >= MAX_BATCH
            || self.dead.len() >= MAX_BATCH
    }

    /// A delete makes a waiting visibility change for the same receipt moot.
    pub fn drop_moot_changes(&mut self) {
        let deletes = &self.deletes;
        self.changes
            .retain(|c| !deletes.iter().any(|d| d.receipt == c.entry.receipt));
    }
}

/// One gathering of settlements before the calls go out: it ends when a call is full, when
/// a flush is asked for, or when the oldest waiting op of this gathering has waited its
/// window (a delete's `delete_window`, 50 ms for the rest).
pub(super) struct Gather {
    delete_window: Duration,
    end: Option<Instant>,
    acks: Vec<Sender<()>>,
}

impl Gather {
    pub fn new(delete_window: Duration) -> Gather {
        Gather {
            delete_window,
            end: None,
            acks: Vec::new(),
        }
    }

    /// `op`, received at `now`, joins the waiting settlements.
    pub fn take(&mut self, op: Op, waiting: &mut Waiting, now: Instant) {
        let window = match &op {
            Op::Delete { .. } => Some(self.delete_window),
            Op::Visibility { .. } | Op::DeadLetter { .. } => Some(FLUSH_WINDOW),
            Op::Flush(_) => None,
        };
        if let Some(w) = window {
            let end = now + w;
            self.end = Some(self.end.map_or(end, |e| e.min(end)));
        }
        match op {
            Op::Delete { id, receipt } => waiting.deletes.push(Entry::new(id, receipt)),
            Op::Visibility { id, receipt, secs } => {
                // A newer change for the same receipt replaces one still waiting.
                waiting.changes.retain(|c| c.entry.receipt != receipt);
                waiting.changes.push(Change {
                    entry: Entry::new(id, receipt),
                    secs,
                });
            }
            Op::DeadLetter {
                id,
                receipt,
                body,
                group,
                attributes,
            } => waiting.dead.push(Dead {
                entry: Entry::new(id, receipt),
                body,
                group,
                attributes,
            }),
            Op::Flush(ack) => self.acks.push(ack),
        }
    }

    /// Until when to wait for more ops; None: send now. `open` is false once no more ops
    /// can come (the queue is gone).
    pub fn until(&self, waiting: &Waiting, open: bool) -> Option<Instant> {
        let end = self.end?;
        if !self.acks.is_empty() || waiting.full() || !open {
            return None;
        }
        Some(end)
    }

    /// The flushes asked for during this gathering, to answer once all is sent.
    pub fn acks(self) -> Vec<Sender<()>> {
        self.acks
    }
}

/// `items` cut into batch calls: ten entries at most, and within SQS's payload limit per
/// call (one entry always goes, whatever its size), in order.
pub(super) fn chunks<T: Pending>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut calls = Vec::new();
    let mut all = items.into_iter().peekable();
    while all.peek().is_some() {
        let mut chunk: Vec<T> = Vec::with_capacity(MAX_BATCH);
        let mut bytes = 0;
        while let Some(next) = all.peek() {
            if chunk.len() == MAX_BATCH
                || (!chunk.is_empty() && bytes + next.payload() > MAX_PAYLOAD)
            {
                break;
            }
            bytes += next.payload();
            chunk.push(all.next().expect("peeked"));
        }
        calls.push(chunk);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(n: usize) -> Op {
        Op::Delete {
            id: format!("m{n}"),
            receipt: format!("r{n}"),
        }
    }

    fn change(n: usize, secs: i32) -> Op {
        Op::Visibility {
            id: format!("m{n}"),
            receipt: format!("r{n}"),
            secs,
        }
    }

    fn dead(n: usize, bytes: usize) -> Dead {
        Dead {
            entry: Entry::new(format!("m{n}"), format!("r{n}")),
            body: "x".repeat(bytes),
            group: None,
            attributes: Vec::new(),
        }
    }

    fn sizes<T>(calls: &[Vec<T>]) -> Vec<usize> {
        calls.iter().map(Vec::len).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn deletes_wait_a_quarter_of_the_visibility_timeout_at_most_a_second() {
        assert_eq!(delete_window(false, Duration::from_secs(30)), 1000 * MS);
        assert_eq!(delete_window(false, Duration::from_secs(2)), 500 * MS);
        assert_eq!(delete_window(false, Duration::from_secs(1)), 250 * MS);
        assert_eq!(delete_window(false, Duration::ZERO), 250 * MS);
        // FIFO: a delete frees the rest of its group, so it hardly waits.
        assert_eq!(delete_window(true, Duration::from_secs(30)), 50 * MS);
    }

    #[test]
    fn entries_are_cut_into_calls_of_ten() {
        let entries = |n| (0..n).map(|i| Entry::new(i.to_string(), i.to_string()));
        assert_eq!(sizes(&chunks(entries(0).collect())), Vec::<usize>::new());
        assert_eq!(sizes(&chunks(entries(10).collect())), vec![10]);
        assert_eq!(sizes(&chunks(entries(23).collect())), vec![10, 10, 3]);
        let calls = chunks(entries(11).collect());
        assert_eq!(calls[1][0].id, "10", "order is kept");
    }

    #[test]
    fn dead_letters_are_cut_within_the_payload_limit() {
        let quarter = MAX_PAYLOAD / 4;
        // Four quarters fill a call exactly; the fifth starts the next.
        let calls = chunks((0..5).map(|i| dead(i, quarter)).collect());
        assert_eq!(sizes(&calls), vec![4, 1]);
        // One byte over: three per call.
        let calls = chunks((0..5).map(|i| dead(i, quarter + 1)).collect());
        assert_eq!(sizes(&calls), vec![3, 2]);
        // Small ones still stop at ten.
        let calls = chunks((0..12).map(|i| dead(i, 10)).collect());
        assert_eq!(sizes(&calls), vec![10, 2]);
    }

    #[test]
    fn an_entry_over_the_payload_limit_still_goes_alone() {
        let calls = chunks(vec![dead(0, 10), dead(1, MAX_PAYLOAD + 1), dead(2, 10)]);
        assert_eq!(sizes(&calls), vec![1, 1, 1]);
    }

    #[test]
    fn a_newer_visibility_change_replaces_the_waiting_one() {
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        let now = Instant::now();
        g.take(change(1, 30), &mut w, now);
        g.take(change(2, 30), &mut w, now);
        g.take(change(1, 0), &mut w, now);
        let got: Vec<_> = w
            .changes
            .iter()
            .map(|c| (c.entry.id.as_str(), c.secs))
            .collect();
        assert_eq!(got, vec![("m2", 30), ("m1", 0)]);
    }

    #[test]
    fn a_delete_makes_a_change_of_the_same_receipt_moot() {
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        let now = Instant::now();
        g.take(change(1, 30), &mut w, now);
        g.take(change(2, 30), &mut w, now);
        g.take(delete(1), &mut w, now);
        w.drop_moot_changes();
        assert_eq!(w.changes.len(), 1);
        assert_eq!(w.changes[0].entry.id, "m2");
        assert_eq!(w.deletes.len(), 1);
    }

    #[test]
    fn the_gathering_ends_at_the_earliest_window() {
        let t0 = Instant::now();
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        g.take(delete(1), &mut w, t0);
        assert_eq!(g.until(&w, true), Some(t0 + Duration::from_secs(1)));
        // A visibility change's shorter window pulls the end in...
        g.take(change(2, 5), &mut w, t0 + 100 * MS);
        assert_eq!(g.until(&w, true), Some(t0 + 150 * MS));
        // ...and a later delete does not push it out.
        g.take(delete(3), &mut w, t0 + 120 * MS);
        assert_eq!(g.until(&w, true), Some(t0 + 150 * MS));
    }

    #[test]
    fn the_gathering_ends_at_once_when_a_call_is_full() {
        let t0 = Instant::now();
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        for i in 0..MAX_BATCH - 1 {
            g.take(delete(i), &mut w, t0);
        }
        assert!(g.until(&w, true).is_some());
        g.take(delete(99), &mut w, t0);
        assert_eq!(g.until(&w, true), None);
    }

    #[test]
    fn the_gathering_ends_at_once_on_a_flush_or_when_no_more_can_come() {
        let t0 = Instant::now();
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        g.take(delete(1), &mut w, t0);
        assert_eq!(g.until(&w, false), None);
        let (ack, _done) = crossbeam_channel::bounded(1);
        g.take(Op::Flush(ack), &mut w, t0);
        assert_eq!(g.until(&w, true), None);
        assert_eq!(g.acks().len(), 1);
    }

    #[test]
    fn a_gathering_with_nothing_new_sends_at_once() {
        // Woken only to retry failed entries, or by a lone flush: nothing opens a window.
        let mut w = Waiting::default();
        w.deletes.push(Entry::new("m".into(), "r".into()));
        let g = Gather::new(Duration::from_secs(1));
        assert_eq!(g.until(&w, true), None);
        let mut g = Gather::new(Duration::from_secs(1));
        let (ack, _done) = crossbeam_channel::bounded(1);
        g.take(Op::Flush(ack), &mut w, Instant::now());
        assert_eq!(g.until(&w, true), None);
    }

    #[test]
    fn dead_letters_fill_a_call_too() {
        let mut w = Waiting::default();
        let mut g = Gather::new(Duration::from_secs(1));
        for i in 0..MAX_BATCH {
            g.take(
                Op::DeadLetter {
                    id: format!("m{i}"),
                    receipt: format!("r{i}"),
                    body: "{}".into(),
                    group: Some("g".into()),
                    attributes: vec![Attribute {
                        name: "n".into(),
                        data_type: "Number".into(),
                        string_value: Some("7".into()),
                        binary_value: None,
                    }],
                },
                &mut w,
                Instant::now(),
            );
        }
        assert_eq!(g.until(&w, true), None);
        assert_eq!(w.dead[0].group.as_deref(), Some("g"));
        // The body, and the attribute's name, type and value.
        assert_eq!(w.dead[0].payload(), 2 + 1 + 6 + 1);
    }
}
