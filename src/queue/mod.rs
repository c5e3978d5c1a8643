//! Queues: where messages come from and where their fate is recorded.
//!
//! One `Queue` trait (design decision 3) with one implementation per backend. A queue
//! hands out `Delivery`s through per-thread `Consume`rs and settles them when the master
//! says so: `complete`, `retry` after a delay, `dead_letter`, or `give_back` a message that
//! was received but never started. Only this module talks to queues.

pub mod filesystem;
pub mod sqs;

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
}

/// What one receive brought.
#[derive(Debug, Default)]
pub struct Received {
    pub deliveries: Vec<Delivery>,
    /// The receive gave fewer than it was allowed: the queue has nothing more right now.
    pub short: bool,
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
