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
