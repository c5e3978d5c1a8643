//! Amazon SQS, used the way its cost and delivery model want
//! (docs/decisions/0014-sqs-cost-model.md).
//!
//! * Receiving (`receive`): long polls (up to 20 s) of up to `queue-polling-size` (≤ 10)
//!   messages, never more than the gate allows, asking for `ApproximateReceiveCount` (the
//!   attempt) and `MessageGroupId` (FIFO order). A parked long poll is abandoned as soon as
//!   the master stops, instead of being waited out.
//! * Settling (`settler`, its pure parts in `pending` and `calls`): the master settles
//!   every message (docs/decisions/0005-the-master-settles-every-message.md); one settler
//!   thread per queue coalesces those settlements into `DeleteMessageBatch` and
//!   `ChangeMessageVisibilityBatch` calls of up to 10 entries, flushing when ten of a kind
//!   are waiting or after a short window. Failed entries are logged and retried; a receipt
//!   SQS no longer accepts is logged and dropped (SQS will deliver the message again: at
//!   least once).
//! * A retry is a visibility change to the backoff; giving a message back is a change to
//!   0; the heartbeat (`renew`) extends a held message's visibility by the queue's
//!   visibility timeout, at half of it, until its worker's deadline kills it
//!   (docs/decisions/0010-deadline-and-kill.md). SQS's 12-hour limit is in `visibility`.
//! * Dead-lettering sends the body to the queue's dead-letter queue (when one is
//!   configured), then deletes the original; without one, the message is deleted (the
//!   master logs its id and body size).
//!
//! The other roles: `client` connects and publishes (`Sqs`, used by `chore enqueue` too),
//! `queue` opens a queue and implements `Queue` for it, `lazy` wraps a queue that could not
//! be reached at start.
//!
//! All calls run on one small tokio runtime shared by every SQS queue of the process; the
//! rest of chore stays synchronous.

mod calls;
mod client;
mod lazy;
mod pending;
mod queue;
mod receive;
mod settler;
mod visibility;

pub use client::{OpenError, Outgoing, Sqs};
pub use lazy::LazySqsQueue;
pub use queue::SqsQueue;

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the master must be gone (its drain began plus `shutdown-timeout`), once it drains.
static EXIT_DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);

/// The master is draining and must exit by `at`: the exit flush of every SQS queue sends
/// what it can until then, and logs what it could not (those messages are delivered again
/// after their visibility timeout; nothing is lost).
pub fn set_exit_deadline(at: Instant) {
    *EXIT_DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
}

/// The exit deadline, if the master is draining.
fn exit_deadline() -> Option<Instant> {
    *EXIT_DEADLINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most entries SQS takes in one batch call, and most messages in one receive.
pub const MAX_BATCH: usize = 10;
/// Most bytes of message bodies in one batch call (SQS's long-standing limit).
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
