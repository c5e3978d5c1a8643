//! An in-memory queue, for unit tests only (users never meet it): it hands out what a test
//! put in and records every settlement, so the master's logic can be tested in
//! milliseconds, without files, processes or services.

use super::{Consume, Delivery, Periodic, Queue, Received, Stop};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened to a message, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Complete(String),
    Retry(String, Duration),
    DeadLetter(String, String),
    GiveBack(String),
    Renew(String),
    LeaveInFlight(String),
    /// A periodic task's tick: task name and tick.
    Periodic(String, i64),
}

pub struct MemoryQueue {
    name: String,
    timeout: Duration,
    ordered: bool,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Delivery>,
    ops: Vec<Op>,
}

impl MemoryQueue {
    pub fn new(name: &str, timeout: Duration, ordered: bool) -> MemoryQueue {
        MemoryQueue {
            name: name.to_string(),
            timeout,
            ordered,
            state: Arc::default(),
        }
    }

    /// Make a message available to `receive`.
    pub fn push(&self, d: Delivery) {
        self.lock().ready.push_back(d);
    }

    /// Every settlement so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().ops.clone()
    }

    fn record(&self, op: Op) -> io::Result<()> {
        self.lock().ops.push(op);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Chorefile's declaration of the queue `jobs`: no handler, a 60 s timeout, backoff
/// `attempt * 10`, unlimited attempts.
pub fn queue_config() -> crate::config::QueueConfig {
    crate::config::QueueConfig {
        name: "jobs".into(),
        full_name: "jobs".into(),
        backend: crate::config::Backend::Filesystem,
        handler: None,
        classes: Default::default(),
        http: None,
        http_classes: Default::default(),
        cron: None,
        timeout: Some(Duration::from_secs(60)),
        backoff: crate::backoff::Backoff::parse("attempt * 10").expect("a valid backoff"),
        max_attempts: None,
        url: None,
        sqs: Default::default(),
        pass_aws_credentials: false,
        memory_limit: None,
        on_permanent_failure: None,
        dedupe: false,
        dedupe_key: None,
    }
}

/// A message as a backend would deliver it: attempt `attempt`, received at `now`.
pub fn delivery(id: &str, attempt: u32, group: Option<&str>, now: Instant) -> Delivery {
    Delivery {
        id: id.to_string(),
        receipt: format!("{id}-receipt"),
        body: format!("{{\"id\":\"{id}\"}}"),
        attempt,
        received_at: now,
        renew_at: now + Duration::from_secs(20),
        class: None,
        group: group.map(str::to_owned),
        dedupe_key: None,
        meta: None,
        post_to: None,
    }
}

impl Queue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(MemoryConsumer(self.state.clone())))
    }
    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.record(Op::Complete(d.id.clone()))
    }
    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        self.record(Op::Retry(d.id.clone(), delay))
    }
    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()> {
        self.record(Op::DeadLetter(d.id.clone(), reason.to_string()))
    }
    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        self.record(Op::GiveBack(d.id.clone()))
    }
    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        d.renew_at = now + Duration::from_secs(20);
        self.record(Op::Renew(d.id.clone()))
    }
    fn leave_in_flight(&self, d: &Delivery, _hold: Duration) -> io::Result<()> {
        self.record(Op::LeaveInFlight(d.id.clone()))
    }
    fn ordered(&self) -> bool {
        self.ordered
    }
    fn publish_periodic(&self, m: &Periodic) -> io::Result<()> {
        self.record(Op::Periodic(m.task.clone(), m.tick))
    }
}

struct MemoryConsumer(Arc<Mutex<State>>);

impl Consume for MemoryConsumer {
    fn receive(&mut self, max: usize, _stop: &Stop) -> io::Result<Received> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = max.min(s.ready.len());
        let deliveries: Vec<Delivery> = s.ready.drain(..n).collect();
        Ok(Received {
            short: deliveries.len() < max,
            deliveries,
            unreadable: Vec::new(),
        })
    }
}
