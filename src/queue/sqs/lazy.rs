//! The lazy opener: `LazySqsQueue` stands for an SQS queue that SQS did not answer for at
//! start, opens it on first use (one opener at a time), then passes everything through.

use super::{Sqs, SqsQueue};
use crate::config::SqsQueueOptions;
use crate::queue::{Consume, Delivery, Periodic, Queue, Received, Stop};
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// An SQS queue that could not be opened at start for a reason other than "it does not
/// exist" (credentials not yet valid, SQS unreachable): chore starts anyway, serves its
/// other queues, and this one's consumers keep trying to open it (logging each failure,
/// backing off), so it starts consuming as soon as SQS answers.
pub struct LazySqsQueue {
    shared: Arc<LazyShared>,
}

struct LazyShared {
    name: String,
    sqs: Sqs,
    options: SqsQueueOptions,
    queue: OnceLock<SqsQueue>,
    opening: Mutex<()>,
}

impl LazyShared {
    fn get(&self) -> io::Result<&SqsQueue> {
        if let Some(q) = self.queue.get() {
            return Ok(q);
        }
        let _one_at_a_time = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = self.queue.get() {
            return Ok(q);
        }
        let q = SqsQueue::open(&self.sqs, &self.name, &self.options)
            .map_err(|e| io::Error::other(e.to_string()))?;
        tracing::info!(queue = %self.name, "SQS queue opened; consuming");
        Ok(self.queue.get_or_init(|| q))
    }
}

impl LazySqsQueue {
    pub fn new(sqs: &Sqs, name: &str, options: &SqsQueueOptions) -> LazySqsQueue {
        LazySqsQueue {
            shared: Arc::new(LazyShared {
                name: name.to_string(),
                sqs: sqs.clone(),
                options: options.clone(),
                queue: OnceLock::new(),
                opening: Mutex::new(()),
            }),
        }
    }
}

/// Messages exist only once the queue is open, so settling always finds it open.
impl Queue for LazySqsQueue {
    fn name(&self) -> &str {
        &self.shared.name
    }
    fn timeout(&self) -> Duration {
        self.shared
            .queue
            .get()
            .map_or(Duration::from_secs(30), |q| q.timeout())
    }
    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(LazyConsumer {
            shared: self.shared.clone(),
            inner: None,
        }))
    }
    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.shared.get()?.complete(d)
    }
    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        self.shared.get()?.retry(d, delay)
    }
    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()> {
        self.shared.get()?.dead_letter(d, reason)
    }
    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        self.shared.get()?.give_back(d)
    }
    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        self.shared.get()?.renew(d, now)
    }
    fn leave_in_flight(&self, d: &Delivery, hold: Duration) -> io::Result<()> {
        self.shared.get()?.leave_in_flight(d, hold)
    }
    /// Opens the queue if need be: a tick is due whether or not anything was received.
    fn publish_periodic(&self, m: &Periodic) -> io::Result<()> {
        self.shared.get()?.publish_periodic(m)
    }
    fn flush(&self) {
        if let Some(q) = self.shared.queue.get() {
            q.flush();
        }
    }
    fn ordered(&self) -> bool {
        self.shared.queue.get().is_some_and(|q| q.ordered())
    }
    /// Once its consumers have opened it; never opens it itself.
    fn depth(&self, served: bool) -> Option<io::Result<crate::queue::Depth>> {
        self.shared.queue.get()?.depth(served)
    }
}

struct LazyConsumer {
    shared: Arc<LazyShared>,
    inner: Option<Box<dyn Consume>>,
}

impl Consume for LazyConsumer {
    fn receive(&mut self, max: usize, stop: &Stop) -> io::Result<Received> {
        if self.inner.is_none() {
            // An error here is logged by the consumer thread, which backs off and retries.
            self.inner = Some(self.shared.get()?.consumer()?);
        }
        self.inner.as_mut().expect("set above").receive(max, stop)
    }
}
