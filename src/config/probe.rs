//! Looking at the filesystem the way the master and its workers will, without changing it.
//!
//! `check-config` uses these to fail where the master would fail at start (a queue directory
//! or log file this user cannot write, an unreadable `config/timeout`) and where every
//! message would fail (a handler program that cannot be started), and where the master
//! could not listen. Nothing here creates, opens for writing or runs anything: `access(2)`
//! answers for the current user; a control socket is only connected to, a TCP address
//! bound and closed at once, and a metrics page in the way asked for once.

use super::Handler;
use nix::unistd::{AccessFlags, access};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where execvp(3) looks when `PATH` is not set at all (glibc's default).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The current user, as access(2) judges: by uid, read from the owner of /proc/self.
fn who() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self") {
        Ok(m) => format!("this user (uid {})", m.uid()),
        Err(_) => "this user".into(),
    }
}

fn can(path: &Path, how: AccessFlags) -> bool {
    access(path, how).is_ok()
}

/// The program a handler starts, found as its worker finds it (`launch::command` uses this
/// for a bare name under the handler's own PATH; otherwise the standard library's
/// `posix_spawnp` searches the same way): a relative path with a `/` is taken from the
/// handler's directory, an absolute path as is, and a bare name is looked up in `PATH` —
/// the handler's own `env` PATH if it sets one, else `path_var` (the master's, which
/// workers inherit), with empty and relative entries taken from the handler's directory,
/// where the program starts.
pub fn program(h: &Handler, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    let dir = h.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        return Err(format!(
            "its working directory {} does not exist",
            dir.display()
        ));
    }
    let argv0 = h.command.first().map(String::as_str).unwrap_or_default();
    if argv0.contains('/') {
        // (Collecting the components drops the `.` of `./job`, for a readable path.)
        let path: PathBuf = dir.join(argv0).components().collect();
        let relative = if Path::new(argv0).is_relative() {
            format!(" (relative to the handler's directory {})", dir.display())
        } else {
            String::new()
        };
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(format!("program {}{relative} {why}", path.display())),
        };
    }
    let search = match h.env.get("PATH") {
        Some(p) => (p.clone(), "the handler's env PATH"),
        None => match path_var {
            Some(p) => (p.to_string_lossy().into_owned(), "PATH"),
            None => (
                DEFAULT_PATH.to_string(),
                "the default PATH (PATH is not set)",
            ),
        },
    };
    let mut refused = None;
    for entry in search.0.split(':') {
        let candidate = dir.join(entry).join(argv0);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            // execvp goes on past a file it may not run, and reports it if nothing else runs.
            Err(why) if candidate.exists() => {
                refused.get_or_insert(format!("program {} {why}", candidate.display()));
            }
            Err(_) => {}
        }
    }
    Err(refused.unwrap_or_else(|| {
        format!(
            "program `{argv0}` not found: looked in {} ({})",
            search.1, search.0
        )
    }))
}

/// Can this user execute `path` as a program?
fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be looked at: {e}")),
        Ok(m) if m.is_dir() => Err("is a directory".into()),
        Ok(_) if !can(path, AccessFlags::X_OK) => Err(format!("is not executable by {}", who())),
        Ok(_) => Ok(()),
    }
}

/// Is `dir` there, or can it be created, and can this user create files in it?
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    let flags = AccessFlags::W_OK | AccessFlags::X_OK;
    if dir.exists() {
        return match dir.is_dir() {
            false => Err(format!("{} is not a directory", dir.display())),
            true if !can(dir, flags) => {
                Err(format!("{} is not writable by {}", dir.display(), who()))
            }
            true => Ok(()),
        };
    }
    // create_dir_all will need the nearest existing ancestor to be a writable directory.
    let ancestor = dir
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let cannot = format!("cannot create {}: {}", dir.display(), ancestor.display());
    match ancestor.is_dir() {
        false => Err(format!("{cannot} is not a directory")),
        true if !can(ancestor, flags) => Err(format!("{cannot} is not writable by {}", who())),
        true => Ok(()),
    }
}

/// Can the master open `file` to append its log (creating it, but not its directory)?
pub fn writable_file(file: &Path) -> Result<(), String> {
    if file.exists() {
        return match file.is_dir() {
            true => Err(format!("{} is a directory", file.display())),
            false if !can(file, AccessFlags::W_OK) => {
                Err(format!("{} is not writable by {}", file.display(), who()))
            }
            false => Ok(()),
        };
    }
    creatable(file)
}

/// Can this user create `file` in its directory (which must be there)?
fn creatable(file: &Path) -> Result<(), String> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match parent.is_dir() {
        false if !parent.exists() => Err(format!(
            "cannot create {}: {} does not exist",
            file.display(),
            parent.display()
        )),
        false => Err(format!(
            "cannot create {}: {} is not a directory",
            file.display(),
            parent.display()
        )),
        true if !can(parent, AccessFlags::W_OK | AccessFlags::X_OK) => Err(format!(
            "cannot create {}: {} is not writable by {}",
            file.display(),
            parent.display(),
            who()
        )),
        true => Ok(()),
    }
}

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes, its NUL included).
const SOCKET_PATH_MAX: usize = 107;

/// What the master will find where its control socket goes.
#[derive(Debug, PartialEq)]
pub enum Socket {
    /// It can bind the socket there (replacing a stale one).
    Free,
    /// A master answers there (or another user's socket is there, which may be one's): a
    /// second master would not bind it.
    Answered,
}

/// What is at a control socket's path now, told apart by connecting (and closing at once).
#[derive(Debug, PartialEq)]
pub enum Occupant {
    Nothing,
    /// A socket nobody answers on, left by a master that has gone: to be replaced.
    Stale,
    /// A master answers (or another user's socket is there, which may be one's).
    Live,
}

/// Who holds `path`: the one rule the master's bind and `check-config` share. Anything but
/// a socket there is an error.
pub fn occupant(path: &Path) -> Result<Occupant, String> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(Occupant::Nothing);
    };
    if !meta.file_type().is_socket() {
        return Err(format!("{} exists and is not a socket", path.display()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(Occupant::Live),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(Occupant::Live),
        Err(_) => Ok(Occupant::Stale),
    }
}

/// Can the master bind its control socket at `path`? `make_dir`: the master creates the
/// directory when it is missing (it does for the default path only). A socket is only
/// connected to, and closed at once.
pub fn control_socket(path: &Path, make_dir: bool) -> Result<Socket, String> {
    let len = path.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        return Err(format!(
            "{} is {len} bytes long; a Unix socket's path has at most {SOCKET_PATH_MAX}",
            path.display()
        ));
    }
    if occupant(path)? == Occupant::Live {
        return Ok(Socket::Answered);
    }
    // Nothing there, or a stale socket the master removes before it binds anew, in the
    // same directory.
    let parent = path.parent().unwrap_or(Path::new("/"));
    match make_dir {
        true => writable_dir(parent),
        false => creatable(path),
    }
    .map(|()| Socket::Free)
}

/// Could the master listen on `addr` (for its metrics page)? Bound as the master binds it,
/// and closed at once.
pub fn listenable(addr: std::net::SocketAddr) -> std::io::Result<()> {
    std::net::TcpListener::bind(addr).map(drop)
}

/// Does a chore master serve its metrics at `addr` (an unspecified address is asked on
/// loopback)? One `GET /metrics`, given a second or two; chore's page names `chore_`
/// metrics once its master has run a second.
pub fn serves_chore_metrics(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let wait = std::time::Duration::from_secs(2);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&target, wait) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(wait));
    if stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: chore\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut page = Vec::new();
    let _ = stream.take(4 << 20).read_to_end(&mut page);
    page.starts_with(b"HTTP/1.") && page.windows(6).any(|w| w == b"chore_")
}

/// A filesystem queue's `config/timeout` (Ruby Chore's per-queue timeout file), read as the
/// master reads it at start: a whole number of seconds, when the file is there.
pub fn config_timeout(queue_dir: &Path) -> Result<Option<u64>, String> {
    let path = queue_dir.join("config").join("timeout");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{}: not a whole number of seconds", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chore-probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn handler(argv0: &str, dir: &Path) -> Handler {
        Handler {
            command: vec![argv0.into()],
            mode: super::super::HandlerMode::Message,
            env: BTreeMap::new(),
            dir: Some(dir.to_path_buf()),
            preload: None,
        }
    }

    fn script(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn programs_are_found_where_the_worker_looks() {
        let d = scratch("program");
        std::fs::create_dir_all(d.join("bin")).unwrap();
        script(&d.join("bin/job"), 0o755);
        script(&d.join("plain"), 0o644);
        let path = Some(OsStr::new("/nonexistent:bin"));
        assert_eq!(
            program(&handler("./bin/job", &d), None),
            Ok(d.join("bin/job"))
        );
        assert_eq!(program(&handler("job", &d), path), Ok(d.join("bin/job")));
        let e = program(&handler("nope", &d), path).unwrap_err();
        assert_eq!(
            e,
            "program `nope` not found: looked in PATH (/nonexistent:bin)"
        );
        let e = program(&handler("./missing", &d), path).unwrap_err();
        assert!(
            e.contains("relative to the handler's directory") && e.ends_with("does not exist"),
            "{e}"
        );
        // Not even root may run a file without an execute bit.
        let e = program(&handler("./plain", &d), path).unwrap_err();
        assert!(e.contains("is not executable"), "{e}");
        let mut h = handler("job", &d);
        h.env.insert("PATH".into(), "/usr/bin".into());
        assert!(
            program(&h, path)
                .unwrap_err()
                .contains("the handler's env PATH (/usr/bin)")
        );
        let e = program(&handler("job", &d.join("gone")), path).unwrap_err();
        assert!(
            e.ends_with("does not exist") && e.contains("working directory"),
            "{e}"
        );
    }

    #[test]
    fn directories_and_files_are_judged_without_being_made() {
        let d = scratch("writable");
        assert_eq!(writable_dir(&d.join("a/b/c")), Ok(()));
        assert!(!d.join("a").exists(), "probing created a directory");
        std::fs::write(d.join("f"), "").unwrap();
        let e = writable_dir(&d.join("f/q/new")).unwrap_err();
        assert!(e.ends_with("is not a directory"), "{e}");
        assert_eq!(writable_file(&d.join("chore.log")), Ok(()));
        assert!(
            writable_file(&d.join("no/chore.log"))
                .unwrap_err()
                .ends_with("no does not exist")
        );
        assert!(
            writable_file(&d.join("f/chore.log"))
                .unwrap_err()
                .ends_with("is not a directory")
        );
        assert!(writable_file(&d).unwrap_err().ends_with("is a directory"));
    }

    #[test]
    fn config_timeout_is_read_like_the_master_reads_it() {
        let d = scratch("timeout");
        assert_eq!(config_timeout(&d), Ok(None));
        std::fs::create_dir_all(d.join("config")).unwrap();
        std::fs::write(d.join("config/timeout"), "30\n").unwrap();
        assert_eq!(config_timeout(&d), Ok(Some(30)));
        std::fs::write(d.join("config/timeout"), "soon").unwrap();
        assert!(
            config_timeout(&d)
                .unwrap_err()
                .ends_with("not a whole number of seconds")
        );
    }
}
