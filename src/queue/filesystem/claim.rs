//! Claiming a file of `new/`: opened without following a link or blocking, set aside
//! when it can never be a message, skipped while empty or locked (a Ruby Chore publisher
//! writing it), renamed into `inprogress/` without replacing anything, then read.

use super::files::{rename_noreplace, try_lock};
use super::names::{self, JobName, epoch_now, secs_ceil};
use super::{FilesystemQueue, annotate};
use crate::queue::{Delivery, Meta};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Instant;

/// Bodies larger than this are dead-lettered unread (SQS's own limit is 1 MiB): a stray
/// huge file must not exhaust the master's memory.
pub(super) const MAX_BODY: u64 = 64 * 1024 * 1024;

/// What a claim took: a message to run, or one whose body can never be read as text; or
/// nothing, from a file this process may not open, which stays where it is.
#[derive(Debug)]
pub(super) enum Claimed {
    Body(Delivery),
    Unreadable(Delivery, String),
    Forbidden(io::Error),
}

impl FilesystemQueue {
    /// Try to claim `name` from `new/`. `Ok(None)`: not claimable now (being written, taken
    /// by someone else, or gone).
    ///
    /// A body that cannot be read as text comes back `Unreadable`, claimed, for the consumer
    /// to dead-letter like any other message that can never run.
    pub(super) fn claim(&self, name: &str, now: Instant) -> io::Result<Option<Claimed>> {
        let path = self.new_dir.join(name);
        // Never follow a link, never block on a FIFO: what is not a regular file is set
        // aside, once, and never opened again.
        let opened = open_unfollowed(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                self.set_aside(std::ffi::OsStr::new(name), "a symbolic link");
                return Ok(None);
            }
            // What `open` says of a socket, or of a device with nothing behind it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
                self.set_aside(
                    std::ffi::OsStr::new(name),
                    "not a regular file (a socket or device)",
                );
                return Ok(None);
            }
            // Another user's file, not readable by ours: the file's matter, not the queue's.
            // It stays in new/ for whoever may read it (or until its modes are mended).
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(Some(Claimed::Forbidden(e)));
            }
            Err(e) => return Err(annotate(e, &path)),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            self.set_aside(
                std::ffi::OsStr::new(name),
                "not a regular file (a FIFO, socket, device or directory)",
            );
            return Ok(None);
        }
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
        // Locked from the choice of the base until the claim is held, so that two consumer
        // threads claiming `x.0.job` and `x.1.job` at once cannot both choose `x`.
        let mut own = self.own();
        // A name put there by hand (`x`, `x.job`) may share its base with other files: it
        // gets a base of its own, its inode added, so that each file is its own message.
        // So does a canonical name whose base we hold a live claim on (`x.1.job` beside
        // our claim on `x.0.job`): that is another message, not a copy of ours.
        let base = if JobName::is_canonical(name) && !self.holds_live_claim(&own, job.base) {
            job.base.to_string()
        } else {
            names::unique_base(job.base, meta.ino(), 0)
        };
        let rest = format!(
            ".{}.{}.job",
            job.previous_attempts,
            self.claim_epoch(self.lease)
        );
        let mut moved = self.move_unique(&path, &self.inprogress_dir, &base, &rest);
        if matches!(&moved, Err(e) if e.kind() == io::ErrorKind::NotFound) && self.recreate_dirs() {
            moved = self.move_unique(&path, &self.inprogress_dir, &base, &rest);
        }
        let receipt = match moved {
            Ok(receipt) => receipt,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENAMETOOLONG) => {
                self.set_aside(std::ffi::OsStr::new(name), "named too long to be claimed");
                return Ok(None);
            }
            Err(e) => return Err(annotate(e, &path)),
        };
        own.insert(receipt.clone());
        drop(own);
        let delivery = Delivery {
            id: JobName::parse(&receipt).base.to_string(),
            receipt,
            body: String::new(),
            attempt: job.previous_attempts.saturating_add(1),
            received_at: now,
            renew_at: now + self.lease / 3,
            class: None,
            group: None,
            dedupe_key: None,
            // The file was written when the message was sent (renames keep the time); the
            // first receive is not recorded anywhere.
            meta: Some(Box::new(Meta {
                sent_at: meta.modified().ok(),
                ..Meta::default()
            })),
            post_to: None,
        };
        if meta.len() > MAX_BODY {
            let reason = format!(
                "body of {} bytes is larger than the 64 MiB limit",
                meta.len()
            );
            return Ok(Some(Claimed::Unreadable(
                unread(delivery, meta.len()),
                reason,
            )));
        }
        let bytes = match read_body(&mut file, meta.len() as usize) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Not held after all: the claim lapses, and our own recovery takes it back.
                self.release(&delivery.receipt);
                return Err(annotate(e, &self.inprogress(&delivery)));
            }
        };
        drop(file);
        match String::from_utf8(bytes) {
            Ok(body) => Ok(Some(Claimed::Body(Delivery { body, ..delivery }))),
            Err(e) => Ok(Some(Claimed::Unreadable(
                unread(delivery, e.as_bytes().len() as u64),
                "body is not UTF-8 text (a message body must be text: JSON, or anything for an HTTP handler)".into(),
            ))),
        }
    }

    /// Move an entry of `new/` that can never be a message (not a regular file, a name that
    /// is not UTF-8) into `dead/` under its own name, with one error line: it is never
    /// opened, followed or looked at again.
    pub(super) fn set_aside(&self, name: &std::ffi::OsStr, what: &str) {
        let from = self.new_dir.join(name);
        let mut moved = rename_noreplace(&from, &self.dead_dir.join(name));
        for n in 1..100 {
            if !matches!(&moved, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
                break;
            }
            // A name already in dead/: keep both, this one with a number after it.
            let mut other = name.to_os_string();
            other.push(format!(".{n}"));
            moved = rename_noreplace(&from, &self.dead_dir.join(other));
        }
        match moved {
            Ok(()) => {
                tracing::error!(queue = %self.name, entry = ?name, "an entry of new/ is {what}; moved to dead/ unread")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(queue = %self.name, entry = ?name, error = %e, "an entry of new/ is {what} and cannot be moved to dead/")
            }
        }
    }
}

/// `d`, noting the size of the body it does not carry.
fn unread(mut d: Delivery, bytes: u64) -> Delivery {
    d.meta.get_or_insert_default().unread_bytes = Some(bytes);
    d
}

/// Open a file of `new/` for reading, without following a link or blocking on a FIFO.
///
/// Without updating its access time either, when the kernel allows it (the file is ours,
/// or we are root): a claimed file is read once and deleted, and writing its access time
/// back cost about 1 µs a file on ext4 here. A file another user owns is opened plainly.
fn open_unfollowed(path: &std::path::Path) -> io::Result<File> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | flags)
            .open(path)
    };
    match open(nix::libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => open(0),
        opened => opened,
    }
}

/// Read a claimed file to its end, `len` being its size as `fstat` saw it.
///
/// `read_to_end` would ask the size again (a second `statx`, an `lseek`) and then probe
/// for the end with one more `read`. A read that comes up short past the size already
/// seen is the end of a regular file, so a body is usually one `read`; a file that grew
/// since (a publisher finishing between the `fstat` and the lock) is read on to its end.
fn read_body(file: &mut File, len: usize) -> io::Result<Vec<u8>> {
    // One byte of slack, so that a read of exactly `len` bytes comes up short.
    let mut bytes = vec![0u8; len + 1];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            bytes.resize(filled + filled.max(4096), 0);
        }
        let n = match file.read(&mut bytes[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        if n == 0 || (filled >= len && filled < bytes.len()) {
            break;
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}
