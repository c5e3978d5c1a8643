//! Where the benchmark's queues live, and the filesystem under them.
//!
//! On a journalled disk, the file protocol's rename and unlink cost the journal's work,
//! and more when two CPUs work in one directory at once; on tmpfs they cost the least the
//! kernel can do. A run on each, side by side, tells the filesystem's share of a job from
//! chore's own.

use std::path::{Path, PathBuf};

/// A directory the benchmark's scratch queues go under.
pub struct Place {
    pub dir: PathBuf,
    /// Its filesystem's name, for the printout.
    pub fs: String,
}

impl Place {
    /// The temporary directory (`TMPDIR`, else /tmp), where every figure is taken.
    pub fn temporary() -> Place {
        let dir = std::env::temp_dir();
        let fs = fs_name(&dir);
        Place { dir, fs }
    }

    /// /dev/shm, when the temporary directory is not on tmpfs and /dev/shm is, and has
    /// room for `files` small files (a container's is often 64 MB, and each file takes a
    /// page): the place for a second run of the filesystem figures.
    pub fn tmpfs_beside(&self, files: usize) -> Option<Place> {
        let shm = Path::new("/dev/shm");
        let writable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
        let roomy = nix::sys::statvfs::statvfs(shm).is_ok_and(|s| {
            let bytes = s.blocks_available() as u128 * s.fragment_size() as u128;
            // Twice over: the queue's files and the directories' own pages, with margin.
            bytes >= files as u128 * 2 * 4096 && s.files_available() as u128 >= files as u128 * 2
        });
        (self.fs != "tmpfs" && fs_name(shm) == "tmpfs" && writable && roomy).then(|| Place {
            dir: shm.to_path_buf(),
            fs: "tmpfs".into(),
        })
    }

    /// `/tmp (ext4)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.dir.display(), self.fs)
    }
}

fn fs_name(dir: &Path) -> String {
    use nix::sys::statfs::{
        BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, NFS_SUPER_MAGIC,
        OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, statfs,
    };
    let Ok(s) = statfs(dir) else {
        return "unknown".into();
    };
    let known = [
        // ext2's and ext3's too.
        (EXT4_SUPER_MAGIC, "ext4"),
        (XFS_SUPER_MAGIC, "xfs"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (TMPFS_MAGIC, "tmpfs"),
        (OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (F2FS_SUPER_MAGIC, "f2fs"),
        (NFS_SUPER_MAGIC, "nfs"),
    ];
    match known
        .iter()
        .find(|(magic, _)| *magic == s.filesystem_type())
    {
        Some((_, name)) => name.to_string(),
        None => format!("filesystem {:#x}", s.filesystem_type().0),
    }
}
