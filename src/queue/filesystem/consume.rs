//! Receiving from a filesystem queue: one consumer thread's cached listing of `new/` (read
//! again only when the directory may have changed), its inotify watch, and its share of
//! the expiry recovery.

use super::claim::Claimed;
use super::look::{Look, Seen, looks_can_be_trusted};
use super::recover::Recovery;
use super::{FilesystemQueue, annotate};
use crate::queue::{Consume, Received, Stop};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::time::Instant;

/// How many names one directory listing keeps for later receives.
const LISTING_BATCH: usize = 4096;

/// How many files this process may not open are remembered, so each is logged once.
const FORBIDDEN_REMEMBERED: usize = 1024;

/// One consumer thread's view: a cached listing of `new/`, an inotify watch to wake on
/// new files, and its own recovery clock.
pub(super) struct FilesystemConsumer {
    queue: FilesystemQueue,
    listing: Vec<OsString>,
    /// The last complete listing, while nothing says `new/` holds more than it did: None
    /// after an inotify event, a listing cut at `LISTING_BATCH`, names left unclaimed or a
    /// failed claim, and always where looks are not trusted.
    listed: Option<Seen>,
    /// Whether `new/`'s `stat` can say it has not changed (`look::looks_can_be_trusted`).
    trust_looks: bool,
    watch: Option<nix::sys::inotify::Inotify>,
    recovery: Recovery,
    /// Files of `new/` this process may not open, already logged: they are skipped at
    /// every pass, and logged again only once forgotten.
    forbidden: HashSet<String>,
}

impl FilesystemConsumer {
    pub(super) fn new(q: &FilesystemQueue) -> io::Result<FilesystemConsumer> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        // Waking on new files is an optimisation: without inotify we poll every idle wait.
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .ok()
            .and_then(|i| {
                i.add_watch(
                    &q.new_dir,
                    AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
                )
                .ok()
                .map(|_| i)
            });
        if watch.is_none() {
            tracing::debug!(queue = %q.name, "inotify unavailable; polling new/ every idle interval");
        }
        Ok(FilesystemConsumer {
            queue: q.clone(),
            listing: Vec::new(),
            listed: None,
            trust_looks: looks_can_be_trusted(&q.new_dir),
            watch,
            recovery: Recovery::new(looks_can_be_trusted(&q.inprogress_dir)),
            forbidden: HashSet::new(),
        })
    }

    fn refill(&mut self) -> io::Result<()> {
        let q = &self.queue;
        let look = self
            .trust_looks
            .then(|| Seen::before_reading(&q.new_dir))
            .flatten();
        let mut entries = fs::read_dir(&q.new_dir);
        if matches!(&entries, Err(e) if e.kind() == io::ErrorKind::NotFound) && q.recreate_dirs() {
            entries = fs::read_dir(&q.new_dir);
        }
        let entries = entries.map_err(|e| annotate(e, &q.new_dir))?;
        self.listing.clear();
        let mut seen = 0;
        for entry in entries.take(LISTING_BATCH) {
            seen += 1;
            let name = entry?.file_name();
            if !name.as_encoded_bytes().starts_with(b".") {
                self.listing.push(name);
            }
        }
        self.listed = look.filter(|_| seen < LISTING_BATCH);
        // Take from the end of the Vec, so reverse to keep directory order.
        self.listing.reverse();
        Ok(())
    }

    /// One pass: claim up to `max` names, then take a bounded step of the recovery (after
    /// claiming, so a backlog of lapsed claims never holds back what waits in `new/`).
    fn pass(&mut self, max: usize, out: &mut Received) -> io::Result<()> {
        let now = Instant::now();
        let claimed = self.claim_some(max, now, out);
        self.recovery.step(&self.queue, now);
        claimed
    }

    fn claim_some(&mut self, max: usize, now: Instant, out: &mut Received) -> io::Result<()> {
        let outdated = |l: &Seen| l.outdated(Look::of(&self.queue.new_dir), now);
        if self.listing.is_empty() && self.listed.as_ref().is_none_or(outdated) {
            self.refill()?;
        }
        let mut looked = 0;
        while looked < max {
            let Some(name) = self.listing.pop() else {
                break;
            };
            looked += 1;
            let Some(name) = name.to_str() else {
                self.queue
                    .set_aside(&name, "named in bytes that are not UTF-8");
                continue;
            };
            match self.queue.claim(name, now) {
                Ok(Some(Claimed::Body(d))) => out.deliveries.push(d),
                Ok(Some(Claimed::Unreadable(d, why))) => out.unreadable.push((d, why)),
                // Still there: looked at again after the next wait.
                Ok(Some(Claimed::Forbidden(e))) => {
                    self.listed = None;
                    self.forbidden(name, e);
                }
                // Being written, or taken by someone else: looked at again too.
                Ok(None) => self.listed = None,
                // What was claimed before the error is kept (it is renewed and run).
                // The file is still there, to be tried again after the next wait.
                Err(e) if !out.deliveries.is_empty() || !out.unreadable.is_empty() => {
                    self.listed = None;
                    tracing::error!(queue = %self.queue.name, error = %e, "claim failed; keeping what this pass claimed");
                    break;
                }
                Err(e) => {
                    self.listed = None;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Log, once, a file of `new/` this process may not open; the queue goes on without it.
    fn forbidden(&mut self, name: &str, e: io::Error) {
        if self.forbidden.contains(name) {
            return;
        }
        if self.forbidden.len() >= FORBIDDEN_REMEMBERED {
            self.forbidden.clear();
        }
        self.forbidden.insert(name.to_string());
        tracing::error!(queue = %self.queue.name, file = name, error = %e, "cannot open a file of new/; it stays there unclaimed until chore's user may read it");
    }

    #[cfg(test)]
    pub(super) fn recovery_sweeping(&self) -> bool {
        self.recovery.sweeping()
    }

    /// Wait for a new file, the stop signal, or the idle interval.
    fn wait(&mut self, stop: &Stop) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let ms = self.queue.idle_wait.as_millis().min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        match &self.watch {
            Some(watch) => {
                let mut fds = [
                    PollFd::new(watch.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, timeout);
                // Drain: we only needed to know something happened.
                while let Ok(events) = watch.read_events() {
                    if events.is_empty() {
                        break;
                    }
                    self.listed = None;
                }
            }
            None => {
                stop.sleep(self.queue.idle_wait);
            }
        }
    }
}

impl Consume for FilesystemConsumer {
    fn receive(&mut self, max: usize, stop: &Stop) -> io::Result<Received> {
        let mut out = Received::default();
        self.pass(max, &mut out)?;
        // While a recovery sweep is under way, no waiting: it goes on at the next receive.
        if out.deliveries.is_empty()
            && self.listing.is_empty()
            && !self.recovery.sweeping()
            && !stop.fired()
        {
            self.wait(stop);
            if !stop.fired() {
                // Lists `new/` again only if something may have come.
                self.pass(max, &mut out)?;
            }
        }
        out.short = out.deliveries.len() < max && self.listing.is_empty();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::filesystem::tests::{age, queue};

    #[test]
    fn an_idle_consumer_lists_new_again_only_when_it_changed() {
        let (_dir, q) = queue(60, 60);
        let stop = Stop::new().unwrap();
        let mut c = FilesystemConsumer::new(&q).unwrap();
        // Whatever filesystem the tests run on.
        c.trust_looks = true;
        age(&q.new_dir);
        assert!(c.receive(10, &stop).unwrap().deliveries.is_empty());
        let first = c.listed.expect("listed").started;
        assert!(c.receive(10, &stop).unwrap().deliveries.is_empty());
        assert_eq!(
            c.listed.expect("listed").started,
            first,
            "an unchanged, settled new/ is not read again"
        );
        // A hard link raises no event inotify is asked for; the directory's change shows.
        let outside = q.new_dir.parent().unwrap().join("outside.job");
        fs::write(&outside, r#"{"class":"Linked","args":[]}"#).unwrap();
        fs::hard_link(&outside, q.new_dir.join("1700000000-1.0.job")).unwrap();
        let got = c.receive(10, &stop).unwrap().deliveries;
        assert_eq!(got.len(), 1, "the linked file is found");
    }
}
