//! The filesystem queue, compatible with Ruby Chore's
//! (docs/decisions/0007-filesystem-queue-is-ruby-chore-compatible.md).
//!
//! Layout under `<fs-queue-root>/<queue>/`: `new/` holds waiting jobs, `inprogress/` claimed
//! ones, `config/timeout` an optional per-queue timeout; chore adds `dead/` for messages
//! that can never succeed (Ruby Chore never looks there) and `tmp/` for bodies it is
//! publishing. File names:
//!
//! * published: `<queue>-<Class>-<pid>-<YYYYmmdd-HHMMSS-micro6>.0.job` (the `0` is the
//!   number of previous attempts);
//! * claimed: `inprogress/<base>.<previous attempts>.<claim epoch>.job`;
//! * recovered (claim older than the queue timeout): `new/<base>.<attempts + 1>.job`.
//!
//! Ruby Chore's publisher writes under a non-blocking `flock` into a file it found empty;
//! chore's writes the body whole under `tmp/` and renames it into `new/`. A consumer claims
//! a non-empty file by taking the same lock and renaming it into `inprogress/`, so it never
//! sees a half-written file, and Ruby Chore and chore can share a queue. No rename replaces
//! a file and nothing is written through a link (`files`,
//! docs/decisions/0020-claims-never-replace.md).
//!
//! Beyond Ruby Chore, everything is expressed through the claim epoch, which Ruby Chore
//! also honours: a claim is written so that it expires one *lease* from now (not one queue
//! timeout), and the master renews it while the message is held, so a crashed master's
//! messages return within a lease; a retry after a backoff is a claim that expires after
//! the delay; giving a message back is an immediate move to `new/`.

mod claim;
mod consume;
pub(crate) mod files;
mod look;
mod names;
mod periodic;
mod publish;
mod recover;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;

use super::{Consume, Delivery, Depth, Periodic, Queue};
use consume::FilesystemConsumer;
use files::rename_noreplace;
#[cfg(test)]
use files::try_lock;
pub use names::JobName;
use names::{epoch_now, epoch_now_ceil, secs_ceil};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct FilesystemQueue {
    name: String,
    dir: PathBuf,
    new_dir: PathBuf,
    inprogress_dir: PathBuf,
    dead_dir: PathBuf,
    tmp_dir: PathBuf,
    timeout: Duration,
    lease: Duration,
    idle_wait: Duration,
    /// The receipts this process holds claims under, shared by its clones (one per
    /// consumer thread). Our own recovery never takes them, whatever the wall clock says:
    /// a step of the clock cannot make this master run its own messages twice. Ordered, so
    /// that the claims on one base are found together (`holds_live_claim`).
    own: Arc<Mutex<BTreeSet<String>>>,
    /// Receipts released while a consumer thread held `own` (it holds it across a claim's
    /// rename): the master does not wait for that, and `own()` applies them.
    released: Arc<Mutex<Vec<String>>>,
}

impl FilesystemQueue {
    /// Open (creating its directories) the queue `name` under `root`. `timeout` is the
    /// Chorefile's, if it set one; otherwise `config/timeout`, otherwise `default_timeout`.
    pub fn open(
        root: &Path,
        name: &str,
        timeout: Option<Duration>,
        default_timeout: Duration,
        lease: Duration,
        idle_wait: Duration,
    ) -> io::Result<FilesystemQueue> {
        let root = std::path::absolute(root)?;
        let dir = root.join(name);
        let q = FilesystemQueue {
            name: name.to_string(),
            new_dir: dir.join("new"),
            inprogress_dir: dir.join("inprogress"),
            dead_dir: dir.join("dead"),
            tmp_dir: dir.join("tmp"),
            dir,
            timeout: default_timeout,
            lease,
            idle_wait,
            own: Arc::default(),
            released: Arc::default(),
        };
        for d in [&q.new_dir, &q.inprogress_dir, &q.dead_dir] {
            files::create_dirs(d).map_err(|e| annotate(e, d))?;
            let probe = nix::unistd::access(d.as_path(), nix::unistd::AccessFlags::W_OK);
            if probe.is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "directory for file system queue does not have write permission: {}",
                        d.display()
                    ),
                ));
            }
        }
        let from_file = q.config_timeout()?;
        let timeout = match (timeout, from_file) {
            (Some(t), Some(f)) if t != f => {
                // Claims are read against the timeout: a consumer using the shorter one
                // would recover the other's running messages.
                tracing::warn!(
                    queue = name,
                    chorefile_secs = t.as_secs_f64(),
                    config_timeout_secs = f.as_secs_f64(),
                    "the Chorefile's timeout differs from config/timeout, which other consumers (Ruby Chore among them) use; keep them equal"
                );
                t
            }
            (Some(t), _) => t,
            (None, f) => f.unwrap_or(default_timeout),
        };
        Ok(FilesystemQueue {
            timeout,
            lease: lease.min(timeout),
            ..q
        })
    }

    /// The per-queue `config/timeout` file, integer seconds, as Ruby Chore reads it.
    fn config_timeout(&self) -> io::Result<Option<Duration>> {
        let path = self.dir.join("config").join("timeout");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let secs: u64 = text.trim().parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: not a whole number of seconds", path.display()),
                    )
                })?;
                // Bounded like every timeout (30 days): deadlines add them up.
                Ok(Some(Duration::from_secs(
                    secs.clamp(1, crate::config::MAX_SECONDS as u64),
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(annotate(e, &path)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The claim epoch that makes a claim expire `after` from now, for every consumer
    /// that applies Ruby Chore's rule (claim epoch ≤ now − timeout).
    ///
    /// Rounded up throughout: consumers compare whole seconds of a clock they round down,
    /// so a claim written this way never looks expired before `after` has passed.
    fn claim_epoch(&self, after: Duration) -> i64 {
        epoch_now_ceil() - secs_ceil(self.timeout) + secs_ceil(after)
    }

    fn inprogress(&self, d: &Delivery) -> PathBuf {
        self.inprogress_dir.join(&d.receipt)
    }

    /// Rename `from` into `dir` as `<base><rest>` without replacing anything: when that
    /// name is taken (by another message sharing the base), as `<base>-<inode>[-<n>]<rest>`
    /// instead, a base no other live file of this filesystem can have. Returns the name.
    fn move_unique(&self, from: &Path, dir: &Path, base: &str, rest: &str) -> io::Result<String> {
        let mut name = format!("{base}{rest}");
        if dir.join(&name) == from {
            // Already there (a retry whose claim expires when the claim did): renaming a
            // file onto itself would look like a clash.
            return fs::symlink_metadata(from).map(|_| name);
        }
        for n in 0..100 {
            match rename_noreplace(from, &dir.join(&name)) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let ino = fs::symlink_metadata(from)?.ino();
                    let fresh = names::unique_base(JobName::parse(base).base, ino, n);
                    tracing::warn!(queue = %self.name, taken = %name, id = %fresh, "another message has this name; this one takes a base of its own");
                    name = format!("{fresh}{rest}");
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: no free name for {base}{rest}", dir.display()),
        ))
    }

    /// The claims this process holds, locked, with every release made so far applied.
    fn own(&self) -> MutexGuard<'_, BTreeSet<String>> {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        for r in self
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            own.remove(&r);
        }
        own
    }

    /// Note a claim this process holds (see `own`).
    fn hold(&self, receipt: &str) {
        self.own().insert(receipt.to_string());
    }

    /// Forget a claim this process no longer holds. A claim is settled by the master's
    /// thread, which must not sleep through a consumer's rename for this: when `own` is
    /// busy, the receipt waits in `released` for its next holder.
    fn release(&self, receipt: &str) {
        match self.own.try_lock() {
            Ok(mut own) => {
                own.remove(receipt);
            }
            Err(_) => self
                .released
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(receipt.to_string()),
        }
    }

    /// Does `own` hold a claim on the base `base` whose file is still in `inprogress/`? Then
    /// a canonical file of `new/` with that base is another message, not a copy of ours: a
    /// copy arises only when another consumer recovered our claim, and recovery moves the
    /// claim's file out of `inprogress/`.
    ///
    /// A renewal in another thread renames a claim while holding both its names; they sort
    /// old before new (same base and attempts, the later epoch), so the file is seen under
    /// one of them whenever the rename happens between the two looks.
    fn holds_live_claim(&self, own: &BTreeSet<String>, base: &str) -> bool {
        let prefix = format!("{base}.");
        own.range(prefix.clone()..)
            .take_while(|r| r.starts_with(&prefix))
            .any(|r| fs::symlink_metadata(self.inprogress_dir.join(r)).is_ok())
    }

    fn holds(&self, receipt: &str) -> bool {
        self.own().contains(receipt)
    }

    /// Recreate whichever of the queue's directories has gone (someone ran `rmdir` on
    /// `inprogress/`): loudly, since claims that were in it are lost to this master. True
    /// when one was recreated, so the caller tries again.
    fn recreate_dirs(&self) -> bool {
        let mut recreated = false;
        for d in [&self.new_dir, &self.inprogress_dir, &self.dead_dir] {
            if d.is_dir() {
                continue;
            }
            match files::create_dirs(d) {
                Ok(()) => {
                    tracing::error!(queue = %self.name, dir = %d.display(), "a queue directory had disappeared; recreated");
                    recreated = true;
                }
                Err(e) => {
                    tracing::error!(queue = %self.name, dir = %d.display(), error = %e, "a queue directory has disappeared and cannot be recreated");
                }
            }
        }
        recreated
    }

    /// Rename the claimed file, reporting a vanished claim clearly: it means another
    /// consumer recovered it (the lease ran out), so the message may run twice.
    fn move_claim(&self, d: &Delivery, to_dir: &Path, rest: &str, what: &str) -> io::Result<()> {
        self.release(&d.receipt);
        let base = JobName::parse(&d.receipt).base;
        match self.move_unique(&self.inprogress(d), to_dir, base, rest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message was {what} (recovered by another consumer after its lease ran out)");
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

impl Queue for FilesystemQueue {
    fn name(&self) -> &str {
        &self.name
    }

    /// The files in `new/`: one directory listing, never an open. When metrics are
    /// `served`, also the oldest one's age (by its modification time), at one `stat` per
    /// file (a second of CPU at 100,000 files, so not otherwise). A `new/` that has gone is
    /// recreated; one that cannot be is an error.
    fn depth(&self, served: bool) -> Option<io::Result<Depth>> {
        let listing = match fs::read_dir(&self.new_dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs() => {
                fs::read_dir(&self.new_dir)
            }
            other => other,
        };
        let listing = match listing {
            Ok(l) => l,
            Err(e) => return Some(Err(annotate(e, &self.new_dir))),
        };
        let now = std::time::SystemTime::now();
        let mut depth = Depth {
            messages: 0,
            oldest_age: None,
        };
        for entry in listing.flatten() {
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            depth.messages += 1;
            if !served {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if let Some(age) = age {
                depth.oldest_age = Some(depth.oldest_age.map_or(age, |a| a.max(age)));
            }
        }
        Some(Ok(depth))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(FilesystemConsumer::new(self)?))
    }

    fn complete(&self, d: &Delivery) -> io::Result<()> {
        self.release(&d.receipt);
        match fs::remove_file(self.inprogress(d)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message completed (recovered by another consumer after its lease ran out; it may run again)");
                Ok(())
            }
            other => other,
        }
    }

    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        let job = JobName::parse(&d.receipt);
        if delay.is_zero() {
            let rest = format!(".{}.job", job.previous_attempts.saturating_add(1));
            return self.move_claim(d, &self.new_dir, &rest, "retried");
        }
        // A claim that expires after the delay: any consumer's recovery (chore's or Ruby
        // Chore's) then returns it to new/ with one more attempt.
        let rest = format!(".{}.{}.job", job.previous_attempts, self.claim_epoch(delay));
        self.move_claim(d, &self.inprogress_dir, &rest, "retried")
    }

    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()> {
        self.release(&d.receipt);
        let note = format!(
            "queue: {}\nid: {}\nattempts: {}\nat: {}\nreason: {}\n",
            self.name,
            d.id,
            d.attempt,
            epoch_now(),
            reason.replace('\n', " ")
        );
        let rest = format!(".{}.job", d.attempt);
        let name = match self.move_unique(&self.inprogress(d), &self.dead_dir, &d.id, &rest) {
            Ok(name) => name,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message was dead-lettered (recovered by another consumer after its lease ran out)");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Whole or not at all, and never through whatever already has the name (a stale
        // reason, a planted link): it is replaced.
        let reason_path = self.dead_dir.join(format!("{name}.reason"));
        if let Err(e) = files::write_replacing(&reason_path, note.as_bytes()) {
            tracing::error!(queue = %self.name, id = %d.id, file = %reason_path.display(), error = %e, "dead letter kept, but its reason could not be written");
        }
        Ok(())
    }

    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        let job = JobName::parse(&d.receipt);
        let rest = format!(".{}.job", job.previous_attempts);
        self.move_claim(d, &self.new_dir, &rest, "given back")
    }

    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        let job = JobName::parse(&d.receipt);
        let rest = format!(
            ".{}.{}.job",
            job.previous_attempts,
            self.claim_epoch(self.lease)
        );
        let expected = format!("{}{rest}", job.base);
        if expected != d.receipt {
            // Held under both names for the moment of the rename: our recovery, running
            // meanwhile in a consumer thread, must take neither.
            self.hold(&expected);
            let moved =
                self.move_unique(&self.inprogress(d), &self.inprogress_dir, job.base, &rest);
            if moved.as_ref().ok() != Some(&expected) {
                self.release(&expected);
            }
            let receipt = moved?;
            self.hold(&receipt);
            self.release(&d.receipt);
            d.receipt = receipt;
        }
        d.renew_at = now + self.lease / 3;
        Ok(())
    }

    /// The JSON body form (no attributes here), its file named after the task as if it
    /// were a job class (cut short: a file name holds 255 bytes).
    fn publish_periodic(&self, m: &Periodic) -> io::Result<()> {
        let class: String = m.task.chars().take(64).collect();
        self.publish(Some(&class), &periodic::body(m)).map(|_| ())
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
