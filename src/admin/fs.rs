//! A filesystem queue as the operator's verbs see it, read without claiming anything: the
//! entries of `new/`, `inprogress/` and `dead/` with what their names carry (Ruby Chore's
//! `<base>.<previous attempts>[.<claim epoch>].job`, through `queue::filesystem::JobName`),
//! their bodies read with no lock (a running master is never disturbed), and the lock a
//! consumer takes, for the verbs that remove or move a file.

use super::place::FsPlace;
use super::record::Record;
use crate::queue::filesystem::JobName;
pub use crate::queue::filesystem::files::try_lock;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting in `new/`.
    New,
    /// Claimed in `inprogress/`; the claim lapses (and the message returns) at `until`.
    /// Held by a master when that is within a lease; a retry's delay otherwise.
    Claimed { until: i64, held: bool },
    /// In `dead/`.
    Dead,
}

impl State {
    pub fn word(&self) -> &'static str {
        match self {
            State::New => "new",
            State::Claimed { held: true, .. } => "in-progress",
            State::Claimed { held: false, .. } => "delayed",
            State::Dead => "dead",
        }
    }
}

/// One message file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub name: String,
    pub id: String,
    /// Attempts made or started: none yet for a fresh `new/` file, the running one
    /// included for a claim, the last one for a dead letter.
    pub attempts: u32,
    pub state: State,
    /// When it was published (renames keep a file's mtime), Unix seconds.
    pub sent_at: i64,
    /// The nanoseconds of that time, to order messages sent within one second.
    sent_nanos: i64,
}

/// The entries of `sub` (`new`, `inprogress` or `dead`), oldest first. Dot names (a
/// producer's temporary files), `.reason` notes and what is not a regular file are left out.
pub fn list(p: &FsPlace, sub: &str, now: i64) -> io::Result<Vec<Entry>> {
    let dir = p.dir.join(sub);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || name.ends_with(".reason") {
            continue;
        }
        // lstat: a link is never followed.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        // An empty file in new/ is still being written (or its publisher died): no message yet.
        if sub == "new" && meta.len() == 0 {
            continue;
        }
        let job = JobName::parse(&name);
        let (state, attempts) = classify(sub, &job, now, p.timeout, p.lease);
        out.push(Entry {
            path: entry.path(),
            id: job.base.to_string(),
            attempts,
            state,
            sent_at: meta.mtime(),
            sent_nanos: meta.mtime_nsec(),
            name,
        });
    }
    out.sort_by(|a, b| (a.sent_at, a.sent_nanos, &a.name).cmp(&(b.sent_at, b.sent_nanos, &b.name)));
    Ok(out)
}

/// Where a file of `sub` is, and the attempts made, from its name alone, at `now` (Unix
/// seconds). A claim lapses one queue `timeout` after its epoch; one that lapses within a
/// lease (and two seconds of rounding) is held by a master that renews it, a later one is
/// a retry's delay.
fn classify(
    sub: &str,
    job: &JobName,
    now: i64,
    timeout: Duration,
    lease: Duration,
) -> (State, u32) {
    match sub {
        "new" => (State::New, job.previous_attempts),
        // A dead letter's name counts every attempt.
        "dead" => (State::Dead, job.previous_attempts),
        _ => {
            let until = job.claimed_at.map_or(now, |t| t + timeout.as_secs() as i64);
            let held = until - now <= lease.as_secs() as i64 + 2;
            // A claim's name counts the attempts before the running one.
            (
                State::Claimed { until, held },
                job.previous_attempts.saturating_add(1),
            )
        }
    }
}

/// Open a message file the way a consumer does: never following a link, never blocking.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
}

/// The body, read with no lock and no rename: the file stays exactly as it was.
pub fn body(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: the body is not UTF-8 text", path.display()),
        )
    })
}

/// The `reason:` line of a dead letter's `.reason` note, when there is one.
pub fn reason(entry: &Entry) -> Option<String> {
    let mut note = entry.path.clone().into_os_string();
    note.push(".reason");
    let text = std::fs::read_to_string(note).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .map(str::to_string)
}

/// The JSON Lines record of an entry (its body read without a lock).
pub fn record(p: &FsPlace, e: &Entry) -> io::Result<Record> {
    let body = body(&e.path)?;
    let mut attributes = BTreeMap::new();
    attributes.insert("queue".into(), p.name.clone());
    attributes.insert("state".into(), e.state.word().into());
    attributes.insert("file".into(), e.name.clone());
    attributes.insert("attempts".into(), e.attempts.to_string());
    attributes.insert("sent_at".into(), e.sent_at.to_string());
    if let Some(class) = crate::consumer::classify(&body).ok().flatten() {
        attributes.insert("class".into(), class);
    }
    if e.state == State::Dead
        && let Some(r) = reason(e)
    {
        attributes.insert("reason".into(), r);
    }
    Ok(Record {
        id: e.id.clone(),
        attributes,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_says_where_a_message_is_and_its_attempts() {
        let (t, lease) = (Duration::from_secs(300), Duration::from_secs(60));
        let now = 10_000;
        let c = |sub, name| classify(sub, &JobName::parse(name), now, t, lease);
        assert_eq!(c("new", "q-J-1-2.0.job"), (State::New, 0));
        assert_eq!(c("new", "q-J-1-2.3.job"), (State::New, 3));
        assert_eq!(c("dead", "q-J-1-2.5.job"), (State::Dead, 5));
        // Claimed now with a 60 s lease: epoch = now - 300 + 60.
        assert_eq!(
            c("inprogress", "q-J-1-2.0.9760.job"),
            (
                State::Claimed {
                    until: 10_060,
                    held: true
                },
                1
            )
        );
        // A retry in an hour, after two attempts.
        assert_eq!(
            c("inprogress", "q-J-1-2.1.13300.job"),
            (
                State::Claimed {
                    until: 13_600,
                    held: false
                },
                2
            )
        );
        // A lapsed claim (its master is gone) is held by nobody, and returns at once.
        assert_eq!(
            c("inprogress", "q-J-1-2.0.100.job"),
            (
                State::Claimed {
                    until: 400,
                    held: true
                },
                1
            )
        );
    }
}
