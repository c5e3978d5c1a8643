//! What the master does for HTTP handlers: start posts while targets have free
//! connections, turn each post's outcome into a settlement, and abort posts at their
//! deadline or at the end of a drain.
//!
//! Only a 200 completes a message. Anything else is retried the way the target's `retry`
//! rule says (the SQS daemon's fixed error visibility timeout, or chore's backoff and
//! dead letters), and logged once, by the settlement, with the message id, its receive
//! count, what happened and how long it took (docs/elastic-beanstalk.md).

use super::Master;
use crate::poster::{self, Outcome, Posted};
use crate::settle::Settlement;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

impl Master {
    /// Start posts while their targets have free connections.
    pub(super) fn start_posts(&mut self, now: Instant) {
        let wall = SystemTime::now();
        loop {
            let (posts, settlers) = (&self.posts, &self.settlers);
            let Some((q, h)) = self
                .holding
                .next_post(&|q| settlers[q].queue.ordered(), &|t| {
                    posts.in_flight(t) < t.connections
                })
            else {
                return;
            };
            let expired = h
                .delivery
                .post_to
                .as_deref()
                .is_some_and(|t| poster::expired(t, &h.delivery, wall));
            if expired {
                // The daemon's retention rule: too old to be worth posting.
                tracing::warn!(queue = %self.qconfigs[q].full_name, id = %h.delivery.id, receive_count = h.delivery.attempt, "first received longer ago than retention-period; deleted without being posted");
                self.settle_as(q, h, Settlement::Complete, None);
                continue;
            }
            let id = self.pool.new_id();
            let budget = self.message_timeout(q);
            // X-Aws-Sqsd-Queue is the queue's name: the last segment of its URL when the
            // queue was given by URL.
            let full = self.settlers[q].queue.name();
            let name = full.rsplit('/').next().unwrap_or(full);
            self.posts.start_post(id, q, name, &h.delivery, budget, now);
            self.obs.started(q, h.delivery.received_at, now);
            self.holding.start(id, q, vec![h]);
        }
    }

    /// A post has ended: settle its message.
    pub(super) fn on_posted(&mut self, p: Posted) {
        let Some(post) = self.posts.remove(p.id) else {
            return;
        };
        let Some((q, mut one)) = self.holding.worker_gone(p.id) else {
            return;
        };
        let Some(h) = one.pop() else {
            return;
        };
        self.obs.metrics[q]
            .run_seconds
            .record(p.elapsed.as_secs_f64());
        let qc = &self.qconfigs[q];
        let d = &h.delivery;
        let target = &post.target;
        if matches!(p.outcome, Outcome::NoConnection { .. })
            && let Some((_, health)) = self.health.iter().find(|(t, _)| Arc::ptr_eq(t, target))
        {
            health.mark_down();
        }
        let settlement =
            poster::verdict(&p.outcome, target, d.attempt, qc.max_attempts, &qc.backoff);
        if matches!(p.outcome, Outcome::Answered { status: 200, .. }) {
            self.settle_as(q, h, settlement, None);
            return;
        }
        // The settlement's own log line (`settle::Settler`) carries this, with the queue,
        // the id and the attempt, which is the receive count: one line per non-200.
        let mut what = format!(
            "POST {}: {}",
            target.url,
            poster::describe(&p.outcome, p.elapsed)
        );
        if let Some(why) = post.aborted {
            what = format!("{what} (aborted: {why})");
        }
        if target.sqsd_log {
            tracing::warn!(
                "{}",
                poster::sqsd_line(&d.id, d.attempt, &p.outcome, p.elapsed)
            );
        }
        self.settle_as(q, h, settlement, Some(&what));
    }

    /// Abort the posts past their deadline.
    pub(super) fn abort_expired(&mut self, now: Instant) {
        for id in self.posts.expired(now) {
            if let Some(p) = self.posts.all().iter().find(|p| p.id == id) {
                tracing::error!(
                    queue = %self.qconfigs[p.queue].full_name,
                    ids = %self.holding.ids_of(id).join(","),
                    url = %p.target.url,
                    ran_secs = now.duration_since(p.started).as_secs_f64(),
                    "post passed its deadline (the queue's timeout); aborted"
                );
            }
            self.posts.abort(id, "it passed its deadline");
        }
    }

    /// Abort every post (a drain past `shutdown-timeout`, a second signal).
    pub(super) fn abort_all(&mut self, why: &'static str) {
        let ids: Vec<_> = self.posts.all().iter().map(|p| p.id).collect();
        if !ids.is_empty() {
            tracing::error!(posts = ids.len(), "{why}; aborting the posts in flight");
        }
        for id in ids {
            self.posts.abort(id, why);
        }
    }

    /// The status dump's lines for posts.
    pub(super) fn status_posts(&self, now: Instant) {
        for p in self.posts.all() {
            tracing::info!(
                queue = %self.qconfigs[p.queue].full_name,
                ids = %self.holding.ids_of(p.id).join(","),
                url = %p.target.url,
                age_secs = now.duration_since(p.started).as_secs_f64(),
                deadline_in_secs = p.deadline.saturating_duration_since(now).as_secs_f64(),
                "status: post"
            );
        }
    }
}
