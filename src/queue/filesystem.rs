//! The filesystem queue, compatible with Ruby Chore's
//! (docs/decisions/0007-filesystem-queue-is-ruby-chore-compatible.md).
//!
//! Layout under `<fs-queue-root>/<queue>/`: `new/` holds waiting jobs, `inprogress/` claimed
//! ones, `config/timeout` an optional per-queue timeout; chore adds `dead/` for messages
//! that can never succeed (Ruby Chore never looks there). File names:
//!
//! * published: `<queue>-<Class>-<pid>-<YYYYmmdd-HHMMSS-micro6>.0.job` (the `0` is the
//!   number of previous attempts);
//! * claimed: `inprogress/<base>.<previous attempts>.<claim epoch>.job`;
//! * recovered (claim older than the queue timeout): `new/<base>.<attempts + 1>.job`.
//!
//! A publisher writes under a non-blocking `flock` into a file it found empty; a consumer
//! claims a non-empty file by taking the same lock and renaming it into `inprogress/`, so
//! a consumer never sees a half-written file, and Ruby Chore and chore can share a queue.
//!
//! Beyond Ruby Chore, everything is expressed through the claim epoch, which Ruby Chore
//! also honours: a claim is written so that it expires one *lease* from now (not one queue
//! timeout), and the master renews it while the message is held, so a crashed master's
//! messages return within a lease; a retry after a backoff is a claim that expires after
//! the delay; giving a message back is an immediate move to `new/`.

use super::{Consume, Delivery, Queue, Received, Stop};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ruby Chore's EXPIRATION_CHECK_INTERVAL: how often a consumer recovers expired claims.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);
/// Bodies larger than this are dead-lettered unread (SQS's own limit is 1 MiB): a stray
/// huge file must not exhaust the master's memory.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// How many names one directory listing keeps for later receives.
const LISTING_BATCH: usize = 4096;

#[derive(Clone)]
pub struct FilesystemQueue {
    name: String,
    dir: PathBuf,
    new_dir: PathBuf,
    inprogress_dir: PathBuf,
    dead_dir: PathBuf,
    timeout: Duration,
    lease: Duration,
    idle_wait: Duration,
}

/// What a claim took: a message to run, or one whose body can never be read as text.
#[derive(Debug)]
enum Claimed {
    Body(Delivery),
    Unreadable(Delivery, String),
}

/// The parts of a job file name
/// (docs/decisions/0007-filesystem-queue-is-ruby-chore-compatible.md).
#[derive(Debug, PartialEq, Eq)]
pub struct JobName<'a> {
    pub base: &'a str,
    pub previous_attempts: u32,
    /// The claim epoch; None when the name has none (a `new/` name).
    pub claimed_at: Option<i64>,
}

impl<'a> JobName<'a> {
    /// Split on `.` as Ruby Chore does: base, attempts, then an epoch (where the word `job`
    /// stands, there is none).
    pub fn parse(name: &'a str) -> JobName<'a> {
        let mut parts = name.split('.');
        let base = parts.next().unwrap_or("");
        let previous_attempts = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
        let claimed_at = parts.next().and_then(|t| t.parse().ok());
        JobName {
            base,
            previous_attempts,
            claimed_at,
        }
    }
}

fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now in whole seconds, rounded up.
fn epoch_now_ceil() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    secs_ceil(now)
}

fn secs_ceil(d: Duration) -> i64 {
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0)
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
            dir,
            timeout: default_timeout,
            lease,
            idle_wait,
        };
        for d in [&q.new_dir, &q.inprogress_dir, &q.dead_dir] {
            fs::create_dir_all(d).map_err(|e| annotate(e, d))?;
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

    /// Publish one body, the way Ruby Chore's publisher does: append into a
    /// fresh name under an exclusive non-blocking lock, only if the file is still empty.
    /// Returns the file name.
    pub fn publish(&self, class: Option<&str>, body: &str) -> io::Result<String> {
        let class = sanitize_class(class.unwrap_or("Job"));
        let pid = std::process::id();
        loop {
            let name = format!(
                "{}-{}-{}-{}.0.job",
                self.name,
                class,
                pid,
                local_timestamp()
            );
            let path = self.new_dir.join(&name);
            let mut file = OpenOptions::new()
                .append(true)
                .create(true)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| annotate(e, &path))?;
            if try_lock(&file) && file.metadata()?.len() == 0 {
                file.write_all(body.as_bytes())?;
                return Ok(name);
            }
            // Someone else owns that name this microsecond: take the next one.
        }
    }

    /// Move every claim older than the timeout back to `new/` with one more attempt
    /// (Ruby Chore's expiry recovery). Races with other consumers are harmless.
    fn recover_expired(&self) {
        let Ok(entries) = fs::read_dir(&self.inprogress_dir) else {
            return;
        };
        let now = epoch_now();
        let limit = now - secs_ceil(self.timeout);
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let job = JobName::parse(name);
            if job.claimed_at.is_none_or(|t| t <= limit) {
                let to = self.new_dir.join(format!(
                    "{}.{}.job",
                    job.base,
                    job.previous_attempts.saturating_add(1)
                ));
                match fs::rename(entry.path(), &to) {
                    Ok(()) => {
                        // Either a retry whose backoff has passed, or a claim whose holder
                        // is gone (a crashed master): the claim alone cannot tell which.
                        tracing::info!(queue = %self.name, id = job.base, next_attempt = job.previous_attempts.saturating_add(2), "claim lapsed; message offered again")
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(queue = %self.name, id = job.base, error = %e, "could not recover expired claim")
                    }
                }
            }
        }
    }

    /// The claim epoch that makes a claim expire `after` from now, for every consumer
    /// that applies Ruby Chore's rule (claim epoch ≤ now − timeout).
    ///
    /// Rounded up throughout: consumers compare whole seconds of a clock they round down,
    /// so a claim written this way never looks expired before `after` has passed.
    fn claim_epoch(&self, after: Duration) -> i64 {
        epoch_now_ceil() - secs_ceil(self.timeout) + secs_ceil(after)
    }

    /// Try to claim `name` from `new/`. `Ok(None)`: not claimable now (being written, taken
    /// by someone else, or gone).
    ///
    /// A body that cannot be read as text comes back `Unreadable`, claimed, for the consumer
    /// to dead-letter like any other message that can never run.
    fn claim(&self, name: &str, now: Instant) -> io::Result<Option<Claimed>> {
        let path = self.new_dir.join(name);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(annotate(e, &path)),
        };
        let meta = file.metadata()?;
        if meta.len() == 0 {
            // A publisher is about to write, or died before it did. Ruby Chore deletes it
            // once it is older than the queue timeout.
            let age = epoch_now() - meta.ctime();
            if age >= secs_ceil(self.timeout) && fs::remove_file(&path).is_ok() {
                tracing::warn!(queue = %self.name, file = name, "removed an empty job file older than the queue timeout");
            }
            return Ok(None);
        }
        if !try_lock(&file) {
            return Ok(None);
        }
        let job = JobName::parse(name);
        let receipt = format!(
            "{}.{}.{}.job",
            job.base,
            job.previous_attempts,
            self.claim_epoch(self.lease)
        );
        match fs::rename(&path, self.inprogress_dir.join(&receipt)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(annotate(e, &path)),
        }
        let delivery = Delivery {
            id: job.base.to_string(),
            receipt,
            body: String::new(),
            attempt: job.previous_attempts.saturating_add(1),
            received_at: now,
            renew_at: now + self.lease / 3,
            class: None,
            group: None,
            dedupe_key: None,
        };
        if meta.len() > MAX_BODY {
            let reason = format!(
                "body of {} bytes is larger than the 64 MiB limit",
                meta.len()
            );
            return Ok(Some(Claimed::Unreadable(delivery, reason)));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)?;
        drop(file);
        match String::from_utf8(bytes) {
            Ok(body) => Ok(Some(Claimed::Body(Delivery { body, ..delivery }))),
            Err(_) => Ok(Some(Claimed::Unreadable(
                delivery,
                "body is not UTF-8 text (a message body must be JSON)".into(),
            ))),
        }
    }

    fn inprogress(&self, d: &Delivery) -> PathBuf {
        self.inprogress_dir.join(&d.receipt)
    }

    /// Rename the claimed file, reporting a vanished claim clearly: it means another
    /// consumer recovered it (the lease ran out), so the message may run twice.
    fn move_claim(&self, d: &Delivery, to: &Path, what: &str) -> io::Result<()> {
        match fs::rename(self.inprogress(d), to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message was {what} (recovered by another consumer after its lease ran out)");
                Ok(())
            }
            other => other,
        }
    }
}

impl Queue for FilesystemQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn consumer(&self) -> io::Result<Box<dyn Consume>> {
        Ok(Box::new(FilesystemConsumer::new(self)?))
    }

    fn complete(&self, d: &Delivery) -> io::Result<()> {
        match fs::remove_file(self.inprogress(d)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message completed (recovered by another consumer after its lease ran out; it may run again)");
                Ok(())
            }
            other => other,
        }
    }

    fn retry(&self, d: &Delivery, delay: Duration) -> io::Result<()> {
        if delay.is_zero() {
            let job = JobName::parse(&d.receipt);
            let to = self.new_dir.join(format!(
                "{}.{}.job",
                job.base,
                job.previous_attempts.saturating_add(1)
            ));
            return self.move_claim(d, &to, "retried");
        }
        // A claim that expires after the delay: any consumer's recovery (chore's or Ruby
        // Chore's) then returns it to new/ with one more attempt.
        let job = JobName::parse(&d.receipt);
        let to = self.inprogress_dir.join(format!(
            "{}.{}.{}.job",
            job.base,
            job.previous_attempts,
            self.claim_epoch(delay)
        ));
        self.move_claim(d, &to, "retried")
    }

    fn dead_letter(&self, d: &Delivery, reason: &str) -> io::Result<()> {
        let name = format!("{}.{}.job", d.id, d.attempt);
        let to = self.dead_dir.join(&name);
        let note = format!(
            "queue: {}\nid: {}\nattempts: {}\nat: {}\nreason: {}\n",
            self.name,
            d.id,
            d.attempt,
            epoch_now(),
            reason.replace('\n', " ")
        );
        // The reason goes first, so whoever sees the dead letter can read why.
        let reason_path = self.dead_dir.join(format!("{name}.reason"));
        fs::write(&reason_path, note)?;
        match fs::rename(self.inprogress(d), &to) {
            Ok(()) => Ok(()),
            Err(e) => {
                // No dead letter after all: no reason beside nothing.
                let _ = fs::remove_file(&reason_path);
                if e.kind() == io::ErrorKind::NotFound {
                    tracing::warn!(queue = %self.name, id = %d.id, "claim was gone when the message was dead-lettered (recovered by another consumer after its lease ran out)");
                    return Ok(());
                }
                Err(e)
            }
        }
    }

    fn give_back(&self, d: &Delivery) -> io::Result<()> {
        let job = JobName::parse(&d.receipt);
        let to = self
            .new_dir
            .join(format!("{}.{}.job", job.base, job.previous_attempts));
        self.move_claim(d, &to, "given back")
    }

    fn renew(&self, d: &mut Delivery, now: Instant) -> io::Result<()> {
        let job = JobName::parse(&d.receipt);
        let receipt = format!(
            "{}.{}.{}.job",
            job.base,
            job.previous_attempts,
            self.claim_epoch(self.lease)
        );
        if receipt != d.receipt {
            fs::rename(self.inprogress(d), self.inprogress_dir.join(&receipt))?;
            d.receipt = receipt;
        }
        d.renew_at = now + self.lease / 3;
        Ok(())
    }
}

/// One consumer thread's view: a cached listing of `new/`, an inotify watch to wake on
/// new files, and its own recovery clock.
struct FilesystemConsumer {
    queue: FilesystemQueue,
    listing: Vec<OsString>,
    watch: Option<nix::sys::inotify::Inotify>,
    last_recovery: Option<Instant>,
}

impl FilesystemConsumer {
    fn new(q: &FilesystemQueue) -> io::Result<FilesystemConsumer> {
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
            watch,
            last_recovery: None,
        })
    }

    fn refill(&mut self) -> io::Result<()> {
        let q = &self.queue;
        let entries = fs::read_dir(&q.new_dir).map_err(|e| annotate(e, &q.new_dir))?;
        self.listing.clear();
        for entry in entries.take(LISTING_BATCH) {
            let name = entry?.file_name();
            if !name.as_encoded_bytes().starts_with(b".") {
                self.listing.push(name);
            }
        }
        // Take from the end of the Vec, so reverse to keep directory order.
        self.listing.reverse();
        Ok(())
    }

    /// One pass: look at up to `max` names and claim what can be claimed.
    fn pass(&mut self, max: usize, out: &mut Received) -> io::Result<()> {
        let now = Instant::now();
        if self
            .last_recovery
            .is_none_or(|t| now.duration_since(t) >= RECOVERY_INTERVAL)
        {
            self.last_recovery = Some(now);
            self.queue.recover_expired();
        }
        if self.listing.is_empty() {
            self.refill()?;
        }
        let mut looked = 0;
        while looked < max {
            let Some(name) = self.listing.pop() else {
                break;
            };
            looked += 1;
            let Some(name) = name.to_str() else { continue };
            match self.queue.claim(name, now) {
                Ok(Some(Claimed::Body(d))) => out.deliveries.push(d),
                Ok(Some(Claimed::Unreadable(d, why))) => out.unreadable.push((d, why)),
                Ok(None) => {}
                // What was claimed before the error is kept (it is renewed and run).
                Err(e) if !out.deliveries.is_empty() || !out.unreadable.is_empty() => {
                    tracing::error!(queue = %self.queue.name, error = %e, "claim failed; keeping what this pass claimed");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
        if out.deliveries.is_empty() && self.listing.is_empty() && !stop.fired() {
            self.wait(stop);
            if !stop.fired() {
                self.refill()?;
                self.pass(max, &mut out)?;
            }
        }
        out.short = out.deliveries.len() < max && self.listing.is_empty();
        Ok(out)
    }
}

fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own; no memory is involved.
    unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) == 0 }
}

/// Ruby Chore puts the job class in the file name; keep it from breaking the name's parts.
fn sanitize_class(class: &str) -> String {
    let s: String = class
        .chars()
        .map(|c| {
            if c == '.' || c == '/' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() { "Job".into() } else { s }
}

/// `YYYYmmdd-HHMMSS-micro6` in local time, as Ruby's `%Y%m%d-%H%M%S-%6N`.
fn local_timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as nix::libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass; both pointers are valid.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !nix::libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return format!("{}-{:06}", now.as_secs(), now.subsec_micros());
    }
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
    )
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(timeout: u64, lease: u64) -> (tempdir::Dir, FilesystemQueue) {
        let dir = tempdir::Dir::new();
        let q = FilesystemQueue::open(
            dir.path(),
            "jobs",
            None,
            Duration::from_secs(timeout),
            Duration::from_secs(lease),
            Duration::from_millis(10),
        )
        .unwrap();
        (dir, q)
    }

    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "chore-fs-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn parses_names_like_ruby_chore() {
        assert_eq!(
            JobName::parse("q-Foo::Bar-1-20240510-120000-123456.0.job"),
            JobName {
                base: "q-Foo::Bar-1-20240510-120000-123456",
                previous_attempts: 0,
                claimed_at: None
            }
        );
        assert_eq!(
            JobName::parse("foo.2.1700000000.job").claimed_at,
            Some(1_700_000_000)
        );
        assert_eq!(JobName::parse("foo.2.1700000000.job").previous_attempts, 2);
    }

    #[test]
    fn publish_writes_ruby_chore_names() {
        let (_d, q) = queue(60, 60);
        let name = q
            .publish(Some("Foo::BarJob"), r#"{"class":"Foo::BarJob","args":[1]}"#)
            .unwrap();
        let pid = std::process::id().to_string();
        assert!(
            name.starts_with(&format!("jobs-Foo::BarJob-{pid}-")),
            "{name}"
        );
        assert!(name.ends_with(".0.job"));
        let stamp = name
            .trim_end_matches(".0.job")
            .rsplit('-')
            .take(3)
            .collect::<Vec<_>>();
        assert_eq!(stamp[0].len(), 6, "{name}"); // micro6
        assert_eq!(stamp[1].len(), 6, "{name}"); // HHMMSS
        assert_eq!(stamp[2].len(), 8, "{name}"); // YYYYmmdd
        assert_eq!(
            fs::read_to_string(q.new_dir.join(&name)).unwrap(),
            r#"{"class":"Foo::BarJob","args":[1]}"#
        );
    }

    #[test]
    fn claim_complete_and_recovery() {
        let (_d, q) = queue(60, 60);
        q.publish(None, "{}").unwrap();
        let stop = Stop::new().unwrap();
        let mut c = q.consumer().unwrap();
        let got = c.receive(10, &stop).unwrap();
        assert_eq!(got.deliveries.len(), 1);
        assert!(got.short);
        let d = &got.deliveries[0];
        assert_eq!(d.attempt, 1);
        assert_eq!(names(&q.new_dir).len(), 0);
        let claimed = names(&q.inprogress_dir);
        assert_eq!(claimed, vec![d.receipt.clone()]);
        // The claim epoch is "now" when the lease equals the timeout, as in Ruby Chore.
        let epoch = JobName::parse(&claimed[0]).claimed_at.unwrap();
        assert!((epoch - epoch_now()).abs() <= 1);
        q.complete(d).unwrap();
        assert!(names(&q.inprogress_dir).is_empty());
    }

    #[test]
    fn empty_files_are_not_claimed() {
        let (_d, q) = queue(60, 60);
        File::create(q.new_dir.join("jobs-X-1-20240101-000000-000000.0.job")).unwrap();
        let stop = Stop::new().unwrap();
        let got = q.consumer().unwrap().receive(10, &stop).unwrap();
        assert!(got.deliveries.is_empty());
        assert_eq!(names(&q.new_dir).len(), 1);
    }

    #[test]
    fn locked_files_are_skipped() {
        let (_d, q) = queue(60, 60);
        let path = q.new_dir.join("jobs-X-1-20240101-000000-000000.0.job");
        fs::write(&path, "{}").unwrap();
        let held = File::open(&path).unwrap();
        assert!(try_lock(&held));
        let stop = Stop::new().unwrap();
        assert!(
            q.consumer()
                .unwrap()
                .receive(10, &stop)
                .unwrap()
                .deliveries
                .is_empty()
        );
        drop(held);
        assert_eq!(
            q.consumer()
                .unwrap()
                .receive(10, &stop)
                .unwrap()
                .deliveries
                .len(),
            1
        );
    }

    #[test]
    fn expired_claims_come_back_with_one_more_attempt() {
        let (_d, q) = queue(60, 60);
        let old = epoch_now() - 61;
        fs::write(q.inprogress_dir.join(format!("foo.1.{old}.job")), "{}").unwrap();
        fs::write(q.inprogress_dir.join("bar.0.job"), "{}").unwrap(); // no epoch: always expired
        fs::write(
            q.inprogress_dir.join(format!("baz.0.{}.job", epoch_now())),
            "{}",
        )
        .unwrap();
        q.recover_expired();
        assert_eq!(names(&q.new_dir), vec!["bar.1.job", "foo.2.job"]);
        assert_eq!(names(&q.inprogress_dir).len(), 1);
    }

    #[test]
    fn retry_sets_the_claim_to_expire_after_the_delay() {
        let (_d, q) = queue(3600, 60);
        q.publish(None, "{}").unwrap();
        let stop = Stop::new().unwrap();
        let d = q
            .consumer()
            .unwrap()
            .receive(1, &stop)
            .unwrap()
            .deliveries
            .remove(0);
        // A lease shorter than the timeout: the claim epoch lies in the past.
        let epoch = JobName::parse(&d.receipt).claimed_at.unwrap();
        assert!((epoch - (epoch_now() - 3600 + 60)).abs() <= 1);
        q.retry(&d, Duration::from_secs(30)).unwrap();
        let name = names(&q.inprogress_dir).remove(0);
        let epoch = JobName::parse(&name).claimed_at.unwrap();
        assert!((epoch - (epoch_now() - 3600 + 30)).abs() <= 1, "{name}");
        // A zero delay goes straight back with one more attempt.
        let d = Delivery { receipt: name, ..d };
        q.retry(&d, Duration::ZERO).unwrap();
        assert!(names(&q.new_dir)[0].ends_with(".1.job"));
    }

    #[test]
    fn dead_letter_and_give_back() {
        let (_d, q) = queue(60, 60);
        q.publish(None, "{}").unwrap();
        q.publish(None, "[]").unwrap();
        let stop = Stop::new().unwrap();
        let mut got = q.consumer().unwrap().receive(10, &stop).unwrap().deliveries;
        assert_eq!(got.len(), 2);
        let b = got.pop().unwrap();
        let a = got.pop().unwrap();
        q.dead_letter(&a, "handler said no").unwrap();
        let dead = names(&q.dead_dir);
        assert_eq!(dead.len(), 2);
        assert!(
            fs::read_to_string(q.dead_dir.join(&dead[1]))
                .unwrap()
                .contains("handler said no")
        );
        q.give_back(&b).unwrap();
        assert!(names(&q.new_dir)[0].ends_with(".0.job"));
    }

    #[test]
    fn renew_moves_the_claim_forward() {
        let (_d, q) = queue(3600, 10);
        q.publish(None, "{}").unwrap();
        let stop = Stop::new().unwrap();
        let mut d = q
            .consumer()
            .unwrap()
            .receive(1, &stop)
            .unwrap()
            .deliveries
            .remove(0);
        let old = d.receipt.clone();
        let renamed = old.replace(
            &format!(".{}.", JobName::parse(&old).claimed_at.unwrap()),
            ".5.",
        );
        fs::rename(q.inprogress_dir.join(&old), q.inprogress_dir.join(&renamed)).unwrap();
        d.receipt = renamed;
        q.renew(&mut d, Instant::now()).unwrap();
        assert_eq!(names(&q.inprogress_dir), vec![d.receipt.clone()]);
        assert!(JobName::parse(&d.receipt).claimed_at.unwrap() > 5);
    }

    #[test]
    fn config_timeout_file_is_honoured() {
        let dir = tempdir::Dir::new();
        fs::create_dir_all(dir.path().join("jobs/config")).unwrap();
        fs::write(dir.path().join("jobs/config/timeout"), " 30\n").unwrap();
        let q = FilesystemQueue::open(
            dir.path(),
            "jobs",
            None,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(q.timeout(), Duration::from_secs(30));
        let q = FilesystemQueue::open(
            dir.path(),
            "jobs",
            Some(Duration::from_secs(5)),
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(q.timeout(), Duration::from_secs(5));
    }
}
