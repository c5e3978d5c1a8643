//! Ruby Chore's expiry recovery, done in bounded steps: a claim in `inprogress/` whose
//! epoch is at most `now − timeout` goes back to `new/` with one more attempt. Each
//! consumer starts a sweep of `inprogress/` at most once a second (as Ruby Chore does) and
//! moves at most `STEP` claims per receive, so a huge backlog of lapsed claims (a crashed
//! master's) never holds back the first job, and the listing held is one directory stream.
//!
//! Claims this process holds are never taken, whatever the wall clock says (a step of the
//! clock): see docs/decisions/0021-leases-survive-clock-steps.md.

use super::FilesystemQueue;
use super::names::{self, JobName, epoch_now, secs_ceil};
use std::fs;
use std::io;
use std::time::{Duration, Instant, SystemTime};

/// How often each consumer starts a sweep of `inprogress/`.
const INTERVAL: Duration = Duration::from_secs(1);
/// How many entries one receive looks at.
const STEP: usize = 512;

/// One consumer's sweep: an open listing of `inprogress/`, and when it was started.
#[derive(Default)]
pub(super) struct Recovery {
    listing: Option<fs::ReadDir>,
    started: Option<Instant>,
}

impl Recovery {
    /// Is a sweep under way?
    pub(super) fn sweeping(&self) -> bool {
        self.listing.is_some()
    }

    /// Go on with the sweep, or start one if a second has passed since the last began.
    pub(super) fn step(&mut self, q: &FilesystemQueue, now: Instant) {
        if self.listing.is_none() {
            if self
                .started
                .is_some_and(|t| now.duration_since(t) < INTERVAL)
            {
                return;
            }
            self.started = Some(now);
            q.prune_tmp(SystemTime::now());
            match fs::read_dir(&q.inprogress_dir) {
                Ok(rd) => self.listing = Some(rd),
                Err(_) => return,
            }
        }
        let Some(listing) = self.listing.as_mut() else {
            return;
        };
        let wall = epoch_now();
        for _ in 0..STEP {
            match listing.next() {
                Some(Ok(entry)) => {
                    if let Some(name) = entry.file_name().to_str() {
                        q.recover(name, wall);
                    }
                }
                Some(Err(_)) => {}
                None => {
                    self.listing = None;
                    return;
                }
            }
        }
    }
}

impl FilesystemQueue {
    /// Move claim `name` back to `new/` if it has expired at `wall` (unix seconds) and
    /// this process does not hold it. Races with other consumers are harmless.
    pub(super) fn recover(&self, name: &str, wall: i64) {
        if name.starts_with('.') || self.holds(name) {
            return;
        }
        let job = JobName::parse(name);
        if !names::expired(job.claimed_at, wall, secs_ceil(self.timeout)) {
            return;
        }
        let next = job.previous_attempts.saturating_add(1);
        let from = self.inprogress_dir.join(name);
        match self.move_unique(&from, &self.new_dir, job.base, &format!(".{next}.job")) {
            // Either a retry whose backoff has passed (the common case) or a claim whose
            // holder is gone (a crashed master): the claim alone cannot tell which.
            Ok(_) => {
                tracing::info!(queue = %self.name, id = %job.base, next_attempt = next.saturating_add(1), "claim expired; message offered again (a retry's backoff is over, or its holder stopped renewing it)")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(queue = %self.name, id = job.base, error = %e, "could not recover expired claim")
            }
        }
    }
}

#[cfg(test)]
impl Recovery {
    /// A whole sweep, now (for tests).
    pub(super) fn sweep(q: &FilesystemQueue) {
        let mut r = Recovery::default();
        let now = Instant::now();
        r.step(q, now);
        while r.listing.is_some() {
            r.step(q, now);
        }
    }
}
