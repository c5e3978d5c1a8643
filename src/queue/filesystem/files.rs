//! How chore creates and moves anything under a queue root: a rename never replaces what
//! is already there, a file is created exclusively and never through a symbolic link, and
//! modes are set explicitly, whatever the umask
//! (docs/decisions/0020-claims-never-replace.md).
//!
//! Message bodies are not for everyone to read: files are 0640 and directories 0750, so
//! the owner and its group (a Ruby Chore publisher or consumer running as another user of
//! the same group) can use them. Directories that already exist keep their mode.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of every file chore creates under a queue root (and of cron markers).
pub const FILE_MODE: u32 = 0o640;
/// The mode of every directory chore creates there.
pub const DIR_MODE: u32 = 0o750;

/// The exclusive non-blocking lock a consumer, a publisher (Ruby Chore's, while it
/// writes) and the operators' verbs take on a file: false when someone else holds it.
pub fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own; no memory is involved.
    unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) == 0 }
}

/// Rename `from` to `to` unless `to` exists (`AlreadyExists` then, and nothing moved).
///
/// `renameat2(RENAME_NOREPLACE)`; where the filesystem does not support it, a hard link
/// (which also refuses an existing name) and an unlink.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
    };
    let (old, new) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths; the call touches no memory of ours after.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_renameat2,
            nix::libc::AT_FDCWD,
            old.as_ptr(),
            nix::libc::AT_FDCWD,
            new.as_ptr(),
            nix::libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(nix::libc::EINVAL | nix::libc::ENOSYS | nix::libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            match fs::remove_file(from) {
                // Someone else took the old name meanwhile: the file lives on under `to`.
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        _ => Err(e),
    }
}

/// Create `path`, which must not exist (not even as a dangling symbolic link), for
/// writing, with `FILE_MODE` exactly.
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    // The umask may have taken bits away (or left more than asked, with a default ACL).
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Write `bytes` to `path` whole or not at all: into a fresh hidden name beside it, then
/// renamed over it. Whatever `path` was (a stale file, a symbolic link someone planted) is
/// replaced, never written through.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = create_new(&tmp).and_then(|mut f| f.write_all(bytes));
    let moved = written.and_then(|()| fs::rename(&tmp, path));
    if moved.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    moved
}

/// `mkdir -p` with `DIR_MODE` exactly for each directory it creates.
pub fn create_dirs(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    match fs::create_dir(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("chore-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_rename_never_replaces_and_moves_nothing_when_refused() {
        let d = dir("noreplace");
        fs::write(d.join("a"), "A").unwrap();
        fs::write(d.join("b"), "B").unwrap();
        let e = rename_noreplace(&d.join("a"), &d.join("b")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(d.join("a")).unwrap(), "A");
        assert_eq!(fs::read_to_string(d.join("b")).unwrap(), "B");
        rename_noreplace(&d.join("a"), &d.join("c")).unwrap();
        assert_eq!(fs::read_to_string(d.join("c")).unwrap(), "A");
        assert!(!d.join("a").exists());
    }

    #[test]
    fn creation_refuses_links_and_sets_the_mode_whatever_the_umask() {
        let d = dir("create");
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        assert!(create_new(&d.join("link")).is_err());
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let made = create_new(&d.join("fresh"));
        nix::sys::stat::umask(old);
        made.unwrap();
        assert_eq!(
            fs::metadata(d.join("fresh")).unwrap().mode() & 0o777,
            FILE_MODE
        );
        write_replacing(&d.join("link"), b"note").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(d.join("link")).unwrap(), "note");
        assert!(!fs::symlink_metadata(d.join("link")).unwrap().is_symlink());
    }

    #[test]
    fn directories_are_created_with_their_mode() {
        let d = dir("dirs");
        create_dirs(&d.join("a").join("b")).unwrap();
        for p in [d.join("a"), d.join("a").join("b")] {
            assert_eq!(fs::metadata(p).unwrap().mode() & 0o777, DIR_MODE);
        }
        create_dirs(&d.join("a").join("b")).unwrap();
    }
}
