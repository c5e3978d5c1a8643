//! The HTTP handler: one POST per message to an application, the way Elastic Beanstalk's
//! SQS daemon sends them (docs/elastic-beanstalk.md).
//!
//! The master starts a post with `Poster::post` and learns how it ended as one `Posted` on
//! the channel it gave `Poster::start`; `verdict` turns that into a settlement. Posts run
//! as tasks on the poster's own small tokio runtime, over pooled keep-alive HTTP/1.1
//! connections (`exchange`). The request is built by `request`, the meaning of outcomes
//! is `verdict`'s, and `health` keeps consumers from receiving for a target that is down.

mod clocked;
mod exchange;
mod health;
mod request;
mod utc;
mod verdict;

pub use health::Health;
pub use verdict::{describe, expired, sqsd_line, verdict};

use crate::config::HttpTarget;
use crate::queue::Delivery;
use crossbeam_channel::Sender;
use exchange::Route;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// A post's number, chosen by the master (unique among those in flight).
pub type PostId = u64;

/// How one post ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The application answered: its status, a `Retry-After` it gave (429), and the start
    /// of the response body, for the log (empty for a 200).
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

/// Posts in flight, by id, so that the master can abort them.
type Live = Arc<Mutex<HashMap<PostId, AbortHandle>>>;

/// Sends the posts, on its own small runtime, with pooled keep-alive connections.
pub struct Poster {
    /// Taken by `drop`, so that shutting down waits for no one.
    runtime: Option<tokio::runtime::Runtime>,
    spawner: tokio::runtime::Handle,
    events: Sender<Posted>,
    /// One route (client and request template) per target, keyed by the target's address;
    /// the route holds the `Arc`, so the address is not reused while it is a key.
    routes: Mutex<HashMap<usize, Arc<Route>>>,
    live: Live,
}

impl Poster {
    /// Start the runtime. One worker thread: a post costs its thread a few microseconds,
    /// so one thread carries tens of thousands of posts a second, and leaves the other
    /// cores to the master and consumers.
    pub fn start(events: Sender<Posted>) -> io::Result<Poster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // Name resolution for new connections only.
            .max_blocking_threads(4)
            .thread_name("chore-poster")
            .enable_all()
            .build()?;
        Ok(Poster {
            spawner: runtime.handle().clone(),
            runtime: Some(runtime),
            events,
            routes: Mutex::default(),
            live: Live::default(),
        })
    }

    /// POST `d` (of queue `queue_name`) to `target`. Exactly one `Posted` for `id` follows
    /// on the events channel, however the post ends.
    pub fn post(&self, id: PostId, target: &Arc<HttpTarget>, queue_name: &str, d: &Delivery) {
        let report = Report {
            id,
            started: Instant::now(),
            events: self.events.clone(),
            done: false,
        };
        let route = self.route(target);
        let built = match &route.template {
            Ok(template) => request::build(template, queue_name, d),
            Err(e) => Err(e.clone()),
        };
        let built = match built {
            Ok(b) => b,
            Err(e) => return report.send(Outcome::Failed(e)),
        };
        // Only this (the master's) thread touches the table: a finished post's handle
        // stays until a sweep (aborting it is a no-op; a reused id replaces it), so the
        // poster's thread takes no lock per post.
        let task = self.spawner.spawn(exchange::run(route, built, report));
        let mut live = lock(&self.live);
        if live.len() >= live.capacity().max(64) {
            live.retain(|_, h| !h.is_finished());
        }
        live.insert(id, task.abort_handle());
    }

    /// Abort post `id`; its outcome then arrives as `Outcome::Aborted` (unless it had
    /// already ended: then as it ended). An id not in flight is ignored.
    pub fn abort(&self, id: PostId) {
        let handle = lock(&self.live).remove(&id);
        if let Some(h) = handle {
            h.abort();
        }
    }

    fn route(&self, target: &Arc<HttpTarget>) -> Arc<Route> {
        let mut routes = lock(&self.routes);
        let key = Arc::as_ptr(target) as usize;
        let route = routes
            .entry(key)
            .or_insert_with(|| Arc::new(Route::new(target.clone())));
        route.clone()
    }
}

impl Drop for Poster {
    fn drop(&mut self) {
        // Without waiting: a name lookup stuck in the blocking pool must not hold up the
        // master's exit. Posts still in flight are dropped, each reported as aborted.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends a post's one `Posted`: with its outcome, or as `Aborted` when the task is dropped
/// before it has one (aborted, or the runtime shut down).
struct Report {
    id: PostId,
    started: Instant,
    events: Sender<Posted>,
    done: bool,
}

impl Report {
    fn send(mut self, outcome: Outcome) {
        self.done = true;
        self.deliver(outcome);
    }

    fn deliver(&self, outcome: Outcome) {
        let _ = self.events.send(Posted {
            id: self.id,
            outcome,
            elapsed: self.started.elapsed(),
        });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.done {
            self.deliver(Outcome::Aborted);
        }
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
