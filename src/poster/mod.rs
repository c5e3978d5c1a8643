//! The HTTP handler: one POST per message to an application, the way Elastic Beanstalk's
//! SQS daemon sends them (docs/elastic-beanstalk.md).
//!
//! (Skeleton: filled in by the HTTP work.) The master starts a post with `Poster::post`
//! and learns its outcome as a `Posted` on the channel it gave `Poster::start`.

use crate::config::HttpTarget;
use crate::queue::Delivery;
use crossbeam_channel::Sender;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// A post's number, chosen by the master (unique among those in flight).
pub type PostId = u64;

/// How one post ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The application answered: its status, a `Retry-After` it gave (429), and the start
    /// of the response body, for the log.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        excerpt: String,
    },
    /// No connection: refused, unreachable, or not within `connect-timeout`.
    NoConnection { timed_out: bool, error: String },
    /// Connected, but no response byte for `inactivity-timeout`.
    Inactive,
    /// Any other failure of the exchange.
    Failed(String),
    /// Aborted by the master (deadline, drain).
    Aborted,
}

/// A post's outcome, for the master.
#[derive(Debug)]
pub struct Posted {
    pub id: PostId,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// Sends the posts, on its own small runtime, with pooled keep-alive connections.
pub struct Poster {
    events: Sender<Posted>,
}

impl Poster {
    pub fn start(events: Sender<Posted>) -> io::Result<Poster> {
        Ok(Poster { events })
    }

    /// POST `d` (of queue `queue_name`) to `target`.
    pub fn post(&self, id: PostId, target: &Arc<HttpTarget>, queue_name: &str, d: &Delivery) {
        let _ = (target, queue_name, d);
        let _ = self.events.send(Posted {
            id,
            outcome: Outcome::Failed("not implemented".into()),
            elapsed: Duration::ZERO,
        });
    }

    /// Abort post `id`; its outcome then arrives as `Outcome::Aborted`.
    pub fn abort(&self, id: PostId) {
        let _ = id;
    }
}

/// Whether a target accepts connections (stub until the poster lands).
pub struct Health;

impl Health {
    pub fn new(target: &HttpTarget) -> Health {
        let _ = target;
        Health
    }
    pub fn wait_ready(&self, stop: &crate::queue::Stop) {
        let _ = stop;
    }
    pub fn mark_down(&self) {}
}

/// What an outcome means for the message (stub).
pub fn verdict(
    outcome: &Outcome,
    target: &HttpTarget,
    attempt: u32,
    max_attempts: Option<u32>,
    backoff: &crate::backoff::Backoff,
) -> crate::settle::Settlement {
    let _ = (target, attempt, max_attempts, backoff);
    match outcome {
        Outcome::Answered { status: 200, .. } => crate::settle::Settlement::Complete,
        _ => crate::settle::Settlement::Retry {
            delay: target.error_visibility_timeout,
        },
    }
}

/// One phrase for the log (stub).
pub fn describe(outcome: &Outcome, elapsed: Duration) -> String {
    format!("{outcome:?} after {:.3}s", elapsed.as_secs_f64())
}

/// The daemon's log form (stub).
pub fn sqsd_line(id: &str, receive_count: u32, outcome: &Outcome, elapsed: Duration) -> String {
    format!(
        "http-err: {id} ({receive_count}) {outcome:?} - {:.3}",
        elapsed.as_secs_f64()
    )
}

/// Past the retention period (stub).
pub fn expired(target: &HttpTarget, d: &Delivery, now: std::time::SystemTime) -> bool {
    let _ = (target, d, now);
    false
}
