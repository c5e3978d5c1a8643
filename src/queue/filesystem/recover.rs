//! Ruby Chore's expiry recovery, done in bounded steps: a claim in `inprogress/` whose
//! epoch is at most `now − timeout` goes back to `new/` with one more attempt. Each
//! consumer starts a sweep of `inprogress/` at most once a second (as Ruby Chore does) and
//! moves at most `STEP` claims per receive, so a huge backlog of lapsed claims (a crashed
//! master's) never holds back the first job, and the listing held is one directory stream.
//!
//! Claims this process holds are never taken, whatever the wall clock says (a step of the
//! clock): see docs/decisions/0021-leases-survive-clock-steps.md.
//!
//! After a complete sweep, the next one waits until `inprogress/` has changed or the
//! earliest claim it left is due to expire (`look`): a parked backlog of retries is not
//! read every second while nothing in it can be taken.

use super::FilesystemQueue;
use super::look::{Look, Seen};
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
    /// The sweep under way: how `inprogress/` looked as it began, and the earliest time
    /// (unix seconds) a claim it left expires.
    sweep: Option<(Option<Seen>, Option<i64>)>,
    /// The last complete sweep, and when the first claim it left expires: no sweep finds
    /// anything to take before then unless `inprogress/` changes.
    quiet: Option<(Seen, Option<i64>)>,
    /// Whether `inprogress/`'s `stat` can say it has not changed; if not, every second's
    /// sweep is made.
    trust_looks: bool,
}

impl Recovery {
    pub(super) fn new(trust_looks: bool) -> Recovery {
        Recovery {
            trust_looks,
            ..Recovery::default()
        }
    }

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
            if let Some((seen, expiry)) = &self.quiet
                && !seen.outdated(Look::of(&q.inprogress_dir), now)
                && expiry.is_none_or(|e| epoch_now() < e)
            {
                return;
            }
            q.prune_tmp(SystemTime::now());
            let seen = self
                .trust_looks
                .then(|| Seen::before_reading(&q.inprogress_dir))
                .flatten();
            match fs::read_dir(&q.inprogress_dir) {
                Ok(rd) => self.listing = Some(rd),
                Err(_) => return,
            }
            self.sweep = Some((seen, None));
        }
        let Some(listing) = self.listing.as_mut() else {
            return;
        };
        let wall = epoch_now();
        for _ in 0..STEP {
            match listing.next() {
                Some(Ok(entry)) => {
                    let expires = entry
                        .file_name()
                        .to_str()
                        .and_then(|name| q.recover(name, wall));
                    if let (Some(e), Some((_, first))) = (expires, self.sweep.as_mut()) {
                        *first = Some(first.map_or(e, |f| f.min(e)));
                    }
                }
                Some(Err(_)) => {}
                None => {
                    self.listing = None;
                    self.quiet = self
                        .sweep
                        .take()
                        .and_then(|(seen, first)| Some((seen?, first)));
                    return;
                }
            }
        }
    }
}

impl FilesystemQueue {
    /// Move claim `name` back to `new/` if it has expired at `wall` (unix seconds) and
    /// this process does not hold it. Races with other consumers are harmless. Returns
    /// when a claim left in place expires (unix seconds).
    ///
    /// A claim this process holds counts too: it is usually renamed (renewed) before then,
    /// which a sweep notices, but a retry parked under the very name its claim already had
    /// is not renamed, and must still come back when due.
    pub(super) fn recover(&self, name: &str, wall: i64) -> Option<i64> {
        if name.starts_with('.') {
            return None;
        }
        let job = JobName::parse(name);
        let timeout = secs_ceil(self.timeout);
        let expires = job.claimed_at.map(|t| t.saturating_add(timeout));
        if self.holds(name) || !names::expired(job.claimed_at, wall, timeout) {
            return expires;
        }
        let next = job.previous_attempts.saturating_add(1);
        let from = self.inprogress_dir.join(name);
        match self.move_unique(&from, &self.new_dir, job.base, &format!(".{next}.job")) {
            // Either a retry whose backoff has passed (the common case) or a claim whose
            // holder is gone (a crashed master): the claim alone cannot tell which.
            Ok(_) => {
                tracing::info!(queue = %self.name, id = %job.base, next_attempt = next.saturating_add(1), "claim expired; message offered again (a retry's backoff is over, or its holder stopped renewing it)");
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(queue = %self.name, id = %job.base, error = %e, "could not recover expired claim");
                // Still there and due: the next sweep tries again.
                Some(wall)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::filesystem::tests::{age, queue};

    /// The reading the last complete sweep began with.
    fn last_sweep(r: &Recovery) -> Instant {
        r.quiet.expect("a complete sweep").0.started
    }

    #[test]
    fn a_quiet_inprogress_is_swept_again_only_when_it_changed_or_a_claim_comes_due() {
        let (_dir, q) = queue(60, 60);
        let wall = epoch_now();
        // A retry parked for an hour: nothing to take until then.
        let parked = format!("1700000000-1.1.{}.job", wall + 3600);
        fs::write(q.inprogress_dir.join(&parked), "{}").unwrap();
        age(&q.inprogress_dir);
        let mut r = Recovery::new(true);
        let t0 = Instant::now();
        r.step(&q, t0);
        assert!(!r.sweeping(), "one entry: swept in one step");
        let first = last_sweep(&r);
        assert_eq!(
            r.quiet.unwrap().1,
            Some(wall + 3600 + 60),
            "due when it expires"
        );
        r.step(&q, t0 + 2 * INTERVAL);
        assert_eq!(
            last_sweep(&r),
            first,
            "nothing changed, nothing due: not read again"
        );
        // A claim of a master that stopped, long expired: the directory changed.
        let lapsed = "1700000000-2.0.1.job";
        fs::write(q.inprogress_dir.join(lapsed), "{}").unwrap();
        r.step(&q, t0 + 4 * INTERVAL);
        assert_ne!(last_sweep(&r), first, "read again");
        assert!(
            !q.inprogress_dir.join(lapsed).exists(),
            "and the lapsed claim taken"
        );
        assert!(
            q.inprogress_dir.join(&parked).exists(),
            "the parked one left"
        );
    }

    #[test]
    fn a_claim_let_go_under_its_own_name_still_comes_back_when_due() {
        use crate::queue::Queue;
        // A one-second timeout and lease: the claim expires a second or two from now.
        let (_dir, q) = queue(1, 1);
        q.publish(Some("Job"), "{}").unwrap();
        let stop = crate::queue::Stop::new().unwrap();
        let mut c = q.consumer().unwrap();
        let d = c.receive(1, &stop).unwrap().deliveries.remove(0);
        age(&q.inprogress_dir);
        let mut r = Recovery::new(true);
        let t0 = Instant::now();
        r.step(&q, t0);
        let due = JobName::parse(&d.receipt).claimed_at.unwrap() + 1;
        assert_eq!(
            r.quiet.unwrap().1,
            Some(due),
            "a held claim's expiry counts"
        );
        // As a retry parked under the very name its claim had: let go, not renamed, so
        // inprogress/ does not change.
        q.release(&d.receipt);
        while epoch_now() < due {
            std::thread::sleep(Duration::from_millis(100));
        }
        r.step(&q, t0 + 2 * INTERVAL);
        assert!(
            !q.inprogress_dir.join(&d.receipt).exists(),
            "swept when due and offered again"
        );
        assert_eq!(fs::read_dir(&q.new_dir).unwrap().count(), 1);
    }
}
