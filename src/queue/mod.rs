//! Queues: where messages come from and where their fate is recorded.
//!
//! One `Queue` trait (docs/decisions/0006-one-queue-trait.md) with one implementation per
//! backend. A queue hands out `Delivery`s through per-thread `Consume`rs and settles them
//! when told to: `complete`, `retry` after a delay, `dead_letter`, or `give_back` a message
//! that was received but never started. Only this module talks to queues; `open` is the
//! one way the rest of chore gets one.

pub mod filesystem;
#[cfg(test)]
pub mod memory;
pub mod sqs;

use crate::config::{Backend, Config, QueueConfig};
use filesystem::FilesystemQueue;
use sqs::{LazySqsQueue, OpenError, Sqs, SqsQueue};
use std::sync::Arc;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One received message, held by the master until it is settled.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable id for logs and handlers (filesystem: the published file's base name).
    pub id: String,
    /// What the backend needs to settle it (filesystem: the current in-progress file
    /// name, which changes when the claim is renewed).
    pub receipt: String,
    /// The raw body, exactly as published (JSON, checked by the consumer).
    pub body: String,
    /// This attempt, counting from 1.
    pub attempt: u32,
    /// When it was received, on the master's monotonic clock.
    pub received_at: Instant,
    /// When the claim must next be renewed so that no consumer recovers it.
    pub renew_at: Instant,
    /// The Ruby Chore job class of the body, when it has one.
    pub class: Option<String>,
    /// The FIFO message group, when the queue has groups (SQS FIFO).
    pub group: Option<String>,
    /// The memcached key stored for this delivery, when dedupe stored one.
    pub dedupe_key: Option<String>,
    /// What the backend knows beyond the body (SQS: times, sender, message attributes),
    /// for HTTP handlers' headers. Boxed: most deliveries never need it.
    pub meta: Option<Box<Meta>>,
    /// The HTTP handler that takes this message, when one does (set by the consumer's
    /// routing); None: a command handler runs it in a worker.
    pub post_to: Option<Arc<crate::config::HttpTarget>>,
}

/// A message's metadata beyond its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// When it was sent (SQS `SentTimestamp`; filesystem: when its file was written).
    pub sent_at: Option<std::time::SystemTime>,
    /// SQS `ApproximateFirstReceiveTimestamp`.
    pub first_received_at: Option<std::time::SystemTime>,
    /// SQS `SenderId`: the principal that sent it.
    pub sender_id: Option<String>,
    /// Message attributes in the order received.
    pub attributes: Vec<Attribute>,
    /// The size of a body that is not in `body` (too large to read, or not text), for the
    /// dead-letter line.
    pub unread_bytes: Option<u64>,
}

/// One message attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    /// `String`, `Number`, `Binary`, or a custom subtype such as `Number.float`.
    pub data_type: String,
    /// The value of a String or Number attribute; None for Binary.
    pub string_value: Option<String>,
    /// The value of a Binary attribute (kept so that a dead letter carries it on).
    pub binary_value: Option<Vec<u8>>,
}

impl AsRef<Delivery> for Delivery {
    fn as_ref(&self) -> &Delivery {
        self
    }
}

impl AsMut<Delivery> for Delivery {
    fn as_mut(&mut self) -> &mut Delivery {
        self
    }
}

/// What one receive brought.
#[derive(Debug, Default)]
pub struct Received {
    pub deliveries: Vec<Delivery>,
    /// Claimed messages whose body can never be read (not text, too large), each with the
    /// reason: the consumer dead-letters them. Not counted against the receive's `max`.
    pub unreadable: Vec<(Delivery, String)>,
    /// The receive gave fewer than it was allowed: the queue has nothing more right now.
    pub short: bool,
}

/// One tick of a periodic task, which `Queue::publish_periodic` writes in the backend's
/// wire form (docs/decisions/0017-periodic-tasks-without-a-leader.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Periodic {
    /// The task's `name`.
    pub task: String,
    /// The task's `url`: the path the request is posted to.
    pub path: String,
    /// The tick, in Unix seconds.
    pub tick: i64,
    /// The tick as `YYYY-MM-DD HH:MM:SS UTC`.
    pub scheduled_time: String,
}

impl Periodic {
    /// The three values that make a message periodic, by the names Elastic Beanstalk gives
    /// them: SQS message attributes, or the keys of a filesystem message's JSON body.
    pub fn fields(&self) -> [(&'static str, &str); 3] {
        [
            ("beanstalk.sqsd.path", &self.path),
            ("beanstalk.sqsd.task_name", &self.task),
            ("beanstalk.sqsd.scheduled_time", &self.scheduled_time),
        ]
    }
}

/// What waits in a queue, not yet received (for metrics and liveness).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth {
    pub messages: u64,
    /// The age of the oldest waiting message, when the backend knows it.
    pub oldest_age: Option<Duration>,
}

/// A backend queue, shared by its consumer threads and the master.
pub trait Queue: Send + Sync {
    /// The full (prefixed) name.
    fn name(&self) -> &str;
    /// How long one message may run: its share of a worker's deadline.
    fn timeout(&self) -> Duration;
    /// A receiver for one consumer thread.
    fn consumer(&self) -> io::Result<Box<dyn Consume>>;
    /// The message succeeded: remove it for good.
    fn complete(&self, d: &Delivery) -> io::Result<()>;
    /// The attempt failed: offer the message again after `delay`.
    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()>;
    /// The message can never succeed: set it aside with the reason.
    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()>;
    /// The message was received but never started: offer it again now, attempt unchanged.
    fn give_back(&self, d: &Delivery) -> io::Result<()>;
    /// Keep the claim alive (called when `renew_at` has passed); updates `receipt` and
    /// `renew_at`.
    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()>;
    /// Set a duplicate aside, unrun, for `hold` (until its dedupe key has expired).
    fn leave_in_flight(&self, d: &Delivery, hold: Duration) -> io::Result<()> {
        self.retry(d, hold)
    }
    /// Send whatever settlements are still buffered (before the master exits).
    fn flush(&self) {}
    /// Whether one message group must never run in two batches at once (FIFO queues).
    fn ordered(&self) -> bool {
        false
    }
    /// How many messages wait in the queue itself, and the age of the oldest, where the
    /// backend can tell. `served`: metrics are served, so the costly figures are wanted
    /// too (an SQS request, which a backend rate-limits; a look at each waiting file for
    /// the oldest age). None: this backend cannot tell (now).
    fn depth(&self, served: bool) -> Option<io::Result<Depth>> {
        let _ = served;
        None
    }
    /// Publish one tick of a periodic task, in this backend's wire form.
    fn publish_periodic(&self, m: &Periodic) -> io::Result<()> {
        let _ = m;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this queue cannot publish periodic tasks",
        ))
    }
}

/// Receives for one consumer thread (which may keep state: listings, watches, clients).
pub trait Consume: Send {
    /// Up to `max` messages; when none are there, waits up to the idle interval (or until
    /// `stop` fires) for some to arrive.
    fn receive(&mut self, max: usize, stop: &Stop) -> io::Result<Received>;
}

/// A one-way "stop now" that blocking waits can poll on: `trigger` closes the write end of
/// a pipe, so the read end reports hang-up to every `poll` that includes it.
pub struct Stop {
    fired: AtomicBool,
    read: OwnedFd,
    write: Mutex<Option<OwnedFd>>,
}

impl Stop {
    pub fn new() -> io::Result<Stop> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        Ok(Stop {
            fired: AtomicBool::new(false),
            read,
            write: Mutex::new(Some(write)),
        })
    }
    pub fn trigger(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.write.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
    /// The fd to include in a `poll` set (readable/hung up once fired).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
    /// Sleep up to `d`, returning early (true) if stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.fired() {
            return true;
        }
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, ms);
        self.fired()
    }
}

/// Why a queue could not be opened at start.
#[derive(Debug)]
pub enum OpenFailure {
    /// The queue cannot work as configured (a directory that cannot be made, a missing SQS
    /// queue): a configuration mistake.
    Config(String),
    /// The SQS client could not be set up at all.
    Client(String),
}

/// The filesystem queue `full_name` under the configured root, with the timeout the
/// Chorefile gives it (None: its `config/timeout` file, else the default).
pub fn open_filesystem(
    config: &Config,
    full_name: &str,
    timeout: Option<Duration>,
) -> io::Result<FilesystemQueue> {
    FilesystemQueue::open(
        &config.fs_queue_root,
        full_name,
        timeout,
        config.default_queue_timeout,
        config.fs_claim_lease,
        config.consumer_sleep_interval,
    )
}

/// Open the queue `qc` describes. `sqs` is the one SQS client, made on first need and
/// shared by every SQS queue. An SQS queue that exists but cannot be reached now
/// (credentials, network) is opened lazily: its consumers keep trying while the other
/// queues are served.
pub fn open(
    config: &Config,
    qc: &QueueConfig,
    sqs: &mut Option<Sqs>,
) -> Result<Arc<dyn Queue>, OpenFailure> {
    match qc.backend {
        Backend::Filesystem => open_filesystem(config, &qc.full_name, qc.timeout)
            .map(|q| Arc::new(q) as Arc<dyn Queue>)
            .map_err(|e| OpenFailure::Config(e.to_string())),
        Backend::Sqs => {
            if sqs.is_none() {
                *sqs = Some(Sqs::connect(&config.sqs).map_err(|e| {
                    OpenFailure::Client(format!("cannot set up the SQS client: {e}"))
                })?);
            }
            let client = sqs.as_ref().expect("connected above");
            let lookup = qc.url.as_deref().unwrap_or(&qc.full_name);
            match SqsQueue::open(client, lookup, &qc.sqs) {
                Ok(q) => Ok(Arc::new(q)),
                Err(e @ OpenError::Missing(_)) => Err(OpenFailure::Config(e.to_string())),
                Err(e) => {
                    tracing::error!(queue = %qc.full_name, error = %e, "cannot open the SQS queue; the other queues are served while its consumers keep trying");
                    Ok(Arc::new(LazySqsQueue::new(client, lookup, &qc.sqs)))
                }
            }
        }
    }
}
