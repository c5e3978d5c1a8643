//! One SQS queue as chore's `Queue`: opening it (its URL, visibility timeout, FIFO-ness,
//! dead-letter queue, settler thread) and settling through its settler. Settlements are
//! handed to the settler as `Op`s; the visibility each asks for comes from `visibility`.

use super::client::is_fifo_name;
use super::pending::Op;
use super::receive::SqsConsumer;
use super::visibility::{heartbeat, retry_secs};
use super::{MAX_WAIT, OpenError, Sqs, calls, settler};
use crate::config::SqsQueueOptions;
use crate::queue::{Consume, Delivery, Depth, Periodic, Queue};
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What SQS says a queue's visibility timeout is when it does not say (its default).
const DEFAULT_VISIBILITY: u64 = 30;

pub struct SqsQueue {
    name: String,
    url: String,
    visibility: Duration,
    fifo: bool,
    wait: Duration,
    sqs: Sqs,
    settle: Sender<Op>,
    settler: Mutex<Option<JoinHandle<()>>>,
    /// A flush gave up waiting: the next one (when dropped) does not wait again.
    flush_timed_out: AtomicBool,
    /// The last depth asked of SQS, and when: asked at most once per `DEPTH_EVERY`.
    depth: Mutex<Option<(Instant, Depth)>>,
}

/// The least time between two `GetQueueAttributes` calls for a queue's depth.
const DEPTH_EVERY: Duration = Duration::from_secs(60);

/// The least an exit flush waits, even past the exit deadline.
const MIN_EXIT_FLUSH: Duration = Duration::from_secs(1);

impl SqsQueue {
    /// Open `name` (or a URL): look it up once, read its visibility timeout, start its
    /// settler.
    pub fn open(sqs: &Sqs, name: &str, options: &SqsQueueOptions) -> Result<SqsQueue, OpenError> {
        let url = sqs.queue_url(name, Some(options))?;
        let attrs = sqs
            .block_on(
                sqs.client
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::VisibilityTimeout)
                    .attribute_names(QueueAttributeName::FifoQueue)
                    .send(),
            )
            .map_err(|e| {
                OpenError::Failed(format!(
                    "cannot read SQS queue `{name}`: {}",
                    DisplayErrorContext(&e)
                ))
            })?;
        let (visibility, fifo) = read_attributes(attrs.attributes(), &url);
        let dlq_url = match &options.dead_letter_queue {
            Some(dlq) => {
                let plain = SqsQueueOptions::plain();
                Some(sqs.queue_url(dlq, options.create.then_some(&plain))?)
            }
            None => None,
        };
        let (settle, settler) = settler::start(sqs, name, &url, fifo, visibility, dlq_url)?;
        Ok(SqsQueue {
            name: name.to_string(),
            url,
            visibility,
            fifo,
            wait: options.wait.unwrap_or(MAX_WAIT).min(MAX_WAIT),
            sqs: sqs.clone(),
            settle,
            settler: Mutex::new(Some(settler)),
            flush_timed_out: AtomicBool::new(false),
            depth: Mutex::new(None),
        })
    }

    fn send(&self, op: Op) -> io::Result<()> {
        self.settle
            .send(op)
            .map_err(|_| io::Error::other("the SQS settler has stopped"))
    }
}

/// A queue's visibility timeout (at least a second) and whether it is FIFO, from its
/// attributes and its URL.
fn read_attributes(
    attrs: Option<&HashMap<QueueAttributeName, String>>,
    url: &str,
) -> (Duration, bool) {
    let attr = |k: QueueAttributeName| attrs.and_then(|a| a.get(&k));
    let visibility = attr(QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_VISIBILITY);
    let fifo =
        attr(QueueAttributeName::FifoQueue).is_some_and(|v| v == "true") || is_fifo_name(url);
    // Zero would make every held message due for renewal at once, forever.
    (Duration::from_secs(visibility.max(1)), fifo)
}

impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    /// `ApproximateNumberOfMessages`, asked only when metrics are `served` and at most once
    /// a minute (a failed call counts too, so an outage is not hammered). SQS does not tell the
    /// age of the oldest message.
    fn depth(&self, served: bool) -> Option<io::Result<Depth>> {
        if !served {
            return None;
        }
        let mut last = self.depth.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((at, d)) = *last
            && now.duration_since(at) < DEPTH_EVERY
        {
            return Some(Ok(d));
        }
        let asked = self.sqs.block_on(
            self.sqs
                .client
                .get_queue_attributes()
                .queue_url(&self.url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send(),
        );
        let messages = match asked {
            Ok(out) => out
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            Err(e) => {
                // Keep the last figure for a minute rather than ask again at once.
                let kept = last.map_or(
                    Depth {
                        messages: 0,
                        oldest_age: None,
                    },
                    |(_, d)| d,
                );
                *last = Some((now, kept));
                tracing::warn!(queue = %self.name, error = %DisplayErrorContext(&e), "cannot read the queue's depth");
                return None;
            }
        };
        let d = Depth {
            messages,
            oldest_age: None,
        };
        *last = Some((now, d));
        Some(Ok(d))
    }

    fn timeout(&self) -> Duration {
        self.visibility
    }

    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(SqsConsumer {
            sqs: self.sqs.clone(),
            url: self.url.clone(),
            wait: self.wait,
            visibility: self.visibility,
            fifo: self.fifo,
            more: false,
        }))
    }

    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.send(Op::Delete {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
        })
    }

    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs: retry_secs(delay, d.received_at, Instant::now()),
        })
    }

    fn dead_letter(&self, d: &Delivery, _reason: &str) -> io::Result<()> {
        self.send(Op::DeadLetter {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            body: d.body.clone(),
            group: d.group.clone(),
            attributes: d
                .meta
                .as_ref()
                .map(|m| m.attributes.clone())
                .unwrap_or_default(),
        })
    }

    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs: 0,
        })
    }

    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        let beat = heartbeat(self.visibility, d.received_at, now);
        d.renew_at = beat.next;
        let Some(secs) = beat.extend_to else {
            tracing::error!(queue = %self.name, id = %d.id, "held for SQS's 12-hour visibility limit; it can no longer be extended and will be delivered again");
            return Ok(());
        };
        self.send(Op::Visibility {
            id: d.id.clone(),
            receipt: d.receipt.clone(),
            secs,
        })
    }

    fn ordered(&self) -> bool {
        self.fifo
    }

    fn leave_in_flight(&self, _d: &Delivery, _hold: Duration) -> io::Result<()> {
        // Nothing to do: SQS makes it visible again when its visibility timeout ends,
        // after its key (TTL = visibility − 10 s) has expired
        // (docs/decisions/0011-dedupe-through-memcached.md).
        Ok(())
    }

    fn publish_periodic(&self, m: &Periodic) -> io::Result<()> {
        self.sqs
            .send_periodic(&self.url, m, self.fifo)
            .map(|_| ())
            .map_err(io::Error::other)
    }

    fn flush(&self) {
        if self.flush_timed_out.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        // Within what is left of the shutdown timeout (a second at least, for what is
        // already on its way), whatever SQS does; else within the settler's give-up time.
        let deadline = match super::exit_deadline() {
            Some(at) => at.max(now + MIN_EXIT_FLUSH),
            None => now + calls::SETTLE_GIVE_UP + Duration::from_secs(5),
        };
        let (ack, done) = crossbeam_channel::bounded(1);
        if self.send(Op::Flush(ack)).is_ok() && done.recv_deadline(deadline).is_err() {
            self.flush_timed_out.store(true, Ordering::SeqCst);
            tracing::error!(
                queue = %self.name,
                "settlements not sent to SQS before the shutdown timeout; their messages will be delivered again after their visibility timeout"
            );
        }
    }
}

impl Drop for SqsQueue {
    fn drop(&mut self) {
        self.flush();
        // The settler ends when its channel closes; the sender is dropped with `self`.
        let _ = self.settler.lock().map(|mut s| s.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QueueAttributeName as A;

    fn attrs(pairs: &[(A, &str)]) -> HashMap<A, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_visibility_timeout_and_fifo_come_from_the_attributes() {
        let a = attrs(&[(A::VisibilityTimeout, "45"), (A::FifoQueue, "true")]);
        assert_eq!(
            read_attributes(Some(&a), "http://h/1/q"),
            (Duration::from_secs(45), true)
        );
        let a = attrs(&[(A::VisibilityTimeout, "45"), (A::FifoQueue, "false")]);
        assert_eq!(
            read_attributes(Some(&a), "http://h/1/q"),
            (Duration::from_secs(45), false)
        );
    }

    #[test]
    fn a_fifo_url_is_fifo_whatever_the_attributes_say() {
        assert_eq!(
            read_attributes(None, "http://h/1/q.fifo"),
            (Duration::from_secs(30), true)
        );
    }

    #[test]
    fn a_missing_or_garbled_visibility_timeout_is_sqs_default() {
        assert_eq!(read_attributes(None, "u").0, Duration::from_secs(30));
        let a = attrs(&[(A::VisibilityTimeout, "soon")]);
        assert_eq!(read_attributes(Some(&a), "u").0, Duration::from_secs(30));
    }

    #[test]
    fn a_zero_visibility_timeout_counts_as_a_second() {
        let a = attrs(&[(A::VisibilityTimeout, "0")]);
        assert_eq!(read_attributes(Some(&a), "u").0, Duration::from_secs(1));
    }
}
