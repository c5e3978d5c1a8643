//! How a queue directory looks (its inode and change times), to tell with one `stat`
//! whether reading it again could find anything a complete reading did not: the idle
//! consumer's `new/` and the expiry recovery's `inprogress/` are read again only then.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// A reading taken less than this after the directory last changed is not trusted to be
/// the last word: a change right after it may carry the same (coarse) timestamp.
const SETTLED: Duration = Duration::from_secs(2);

/// However unchanged a directory looks, it is read again this often (a filesystem whose
/// timestamps lag, such as NFS's cached attributes).
const RELIST_AT_LEAST_EVERY: Duration = Duration::from_secs(30);

/// What a directory looked like: reading it again finds nothing new while it still looks so.
///
/// Reading a directory costs its size, which on ext4 never shrinks: after a backlog of
/// 80,000 files an empty `new/` is 7 MB, and reading it at every idle interval kept an
/// idle master busy. A `stat` tells whether anything was added or removed since.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Look {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Look {
    pub(super) fn of(dir: &Path) -> Option<Look> {
        let m = fs::metadata(dir).ok()?;
        Some(Look {
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Whether `dir` is on a local filesystem whose directory times a `stat` sees at once.
/// Elsewhere (NFS caches attributes for up to a minute, while opening a directory to read
/// it revalidates them; FUSE and network filesystems vary) a directory is read every time.
pub(super) fn looks_can_be_trusted(dir: &Path) -> bool {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC,
        XFS_SUPER_MAGIC, statfs,
    };
    // EXT4_SUPER_MAGIC is ext2's and ext3's too.
    let local = [
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        TMPFS_MAGIC,
        OVERLAYFS_SUPER_MAGIC,
        F2FS_SUPER_MAGIC,
    ];
    statfs(dir).is_ok_and(|s| local.contains(&s.filesystem_type()))
}

/// A complete reading of a directory: how it looked just before, and when.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    look: Look,
    at: SystemTime,
    pub(super) started: Instant,
}

impl Seen {
    /// Look at `dir` just before reading it; None if it cannot be looked at.
    pub(super) fn before_reading(dir: &Path) -> Option<Seen> {
        Some(Seen {
            look: Look::of(dir)?,
            at: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// Pure: may reading the directory now find names this reading did not, given how it
    /// looks now?
    pub(super) fn outdated(&self, now_look: Option<Look>, now: Instant) -> bool {
        let changed_at = SystemTime::UNIX_EPOCH
            + Duration::new(self.look.mtime.0.max(0) as u64, self.look.mtime.1 as u32);
        let settled = self
            .at
            .duration_since(changed_at)
            .is_ok_and(|quiet| quiet >= SETTLED);
        now_look != Some(self.look)
            || !settled
            || now.duration_since(self.started) >= RELIST_AT_LEAST_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look() -> Look {
        Look {
            ino: 7,
            mtime: (1_000, 0),
            ctime: (1_000, 0),
        }
    }

    #[test]
    fn only_local_filesystems_are_trusted_to_show_a_change() {
        assert!(!looks_can_be_trusted(Path::new("/proc")));
        assert!(!looks_can_be_trusted(Path::new("/no/such/directory")));
    }

    #[test]
    fn a_listing_is_outdated_once_the_directory_changed_or_had_just_changed() {
        let changed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t0 = Instant::now();
        let listed = |secs_after_change| Seen {
            look: look(),
            at: changed + Duration::from_secs(secs_after_change),
            started: t0,
        };
        let later = t0 + Duration::from_secs(5);
        assert!(!listed(60).outdated(Some(look()), later), "nothing changed");
        let touched = Look {
            mtime: (1_001, 5),
            ..look()
        };
        assert!(
            listed(60).outdated(Some(touched), later),
            "a name came or went"
        );
        assert!(listed(60).outdated(None, later), "new/ is gone");
        assert!(
            listed(1).outdated(Some(look()), later),
            "listed within a tick of a change: a later one may share its timestamp"
        );
        assert!(
            listed(60).outdated(Some(look()), t0 + RELIST_AT_LEAST_EVERY),
            "listed again at least this often"
        );
    }
}
