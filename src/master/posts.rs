//! Requests in flight to HTTP handlers: the posts' records (queue, target, deadline, why
//! aborted), and the one door through which the master starts and aborts them.
//!
//! The counterpart of `pool` for HTTP handlers: a post is a runner of one message, held by
//! `master::held` like a worker's batch, with its own deadline (the queue's timeout), so a
//! deadline, a drain and the status dump treat both alike. Which message a post carries is
//! `held`'s business; the requests themselves are `poster`'s.

use super::pool::WorkerId;
use crate::config::HttpTarget;
use crate::poster::{Posted, Poster};
use crate::queue::Delivery;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts and aborts requests (the real one is `poster::Poster`; tests use a fake).
pub trait Deliver {
    fn post(&self, id: WorkerId, target: &Arc<HttpTarget>, queue_name: &str, d: &Delivery);
    fn abort(&self, id: WorkerId);
}

impl Deliver for Poster {
    fn post(&self, id: WorkerId, target: &Arc<HttpTarget>, queue_name: &str, d: &Delivery) {
        Poster::post(self, id, target, queue_name, d);
    }
    fn abort(&self, id: WorkerId) {
        Poster::abort(self, id);
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct Post {
    pub id: WorkerId,
    pub queue: usize,
    pub target: Arc<HttpTarget>,
    pub started: Instant,
    pub deadline: Instant,
    /// Why it was aborted, when it was.
    pub aborted: Option<&'static str>,
}

pub struct Posts {
    posts: Vec<Post>,
    /// Requests in flight per target (keyed by the target's address), kept with `posts`
    /// so the dispatch's check costs one lookup.
    counts: HashMap<usize, usize>,
    sender: Option<Box<dyn Deliver>>,
}

fn key(target: &HttpTarget) -> usize {
    target as *const HttpTarget as usize
}

impl Posts {
    /// No HTTP handler: nothing will ever be posted.
    pub fn none() -> Posts {
        Posts {
            posts: Vec::new(),
            counts: HashMap::new(),
            sender: None,
        }
    }

    /// Post with `poster`, whose outcomes arrive on the channel it was started with.
    pub fn new(sender: Box<dyn Deliver>) -> Posts {
        Posts {
            posts: Vec::new(),
            counts: HashMap::new(),
            sender: Some(sender),
        }
    }

    /// Start a real poster whose outcomes go to `events`.
    pub fn start(events: Sender<Posted>) -> std::io::Result<Posts> {
        Ok(Posts::new(Box::new(Poster::start(events)?)))
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    pub fn all(&self) -> &[Post] {
        &self.posts
    }

    /// Requests in flight to `target`.
    pub fn in_flight(&self, target: &HttpTarget) -> usize {
        self.counts.get(&key(target)).copied().unwrap_or(0)
    }

    /// Post `d` (of queue `queue`, named `queue_name`) to its target, due within `budget`.
    pub fn start_post(
        &mut self,
        id: WorkerId,
        queue: usize,
        queue_name: &str,
        d: &Delivery,
        budget: Duration,
        now: Instant,
    ) {
        let (Some(sender), Some(target)) = (&self.sender, &d.post_to) else {
            return;
        };
        sender.post(id, target, queue_name, d);
        *self.counts.entry(key(target)).or_default() += 1;
        self.posts.push(Post {
            id,
            queue,
            target: target.clone(),
            started: now,
            deadline: now
                .checked_add(budget)
                .unwrap_or(now + Duration::from_secs(crate::config::MAX_SECONDS as u64)),
            aborted: None,
        });
    }

    /// Forget a finished request, returning its record.
    pub fn remove(&mut self, id: WorkerId) -> Option<Post> {
        let i = self.posts.iter().position(|p| p.id == id)?;
        let p = self.posts.swap_remove(i);
        if let Some(n) = self.counts.get_mut(&key(&p.target)) {
            *n -= 1;
        }
        Some(p)
    }

    /// Abort a request, remembering why; its outcome still arrives.
    pub fn abort(&mut self, id: WorkerId, why: &'static str) {
        if let Some(p) = self.posts.iter_mut().find(|p| p.id == id) {
            if p.aborted.is_none() {
                p.aborted = Some(why);
            }
            if let Some(s) = &self.sender {
                s.abort(id);
            }
        }
    }

    /// Requests past their deadline not aborted yet.
    pub fn expired(&self, now: Instant) -> Vec<WorkerId> {
        self.posts
            .iter()
            .filter(|p| p.aborted.is_none() && now >= p.deadline)
            .map(|p| p.id)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.posts
            .iter()
            .filter(|p| p.aborted.is_none())
            .map(|p| p.deadline)
            .min()
    }
}
