//! Publishing into `new/`, atomically: the body is written whole under `tmp/` (which no
//! consumer looks at), then renamed into `new/` under a fresh Ruby Chore name that nothing
//! else has. A full disk, a file size limit or a kill leaves no empty or truncated file
//! under a name a consumer would take; what a kill leaves in `tmp/` is removed by the
//! consumers' recovery once it is older than the queue timeout.

use super::files::{self, rename_noreplace};
use super::names::{local_timestamp, sanitize_class};
use super::{FilesystemQueue, annotate};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

impl FilesystemQueue {
    /// Publish one body under a fresh `<queue>-<Class>-<pid>-<timestamp>.0.job`. Returns
    /// the file name. On any failure nothing is left behind.
    pub fn publish(&self, class: Option<&str>, body: &str) -> io::Result<String> {
        let class = sanitize_class(class.unwrap_or("Job"));
        let pid = std::process::id();
        let mut name = format!("{}-{class}-{pid}-{}.0.job", self.name, local_timestamp());
        let tmp = loop {
            let tmp = self.tmp_dir.join(&name);
            let mut created = files::create_new(&tmp);
            if matches!(&created, Err(e) if e.kind() == io::ErrorKind::NotFound) {
                files::create_dirs(&self.tmp_dir).map_err(|e| annotate(e, &self.tmp_dir))?;
                created = files::create_new(&tmp);
            }
            match created {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(body.as_bytes()) {
                        let _ = fs::remove_file(&tmp);
                        return Err(annotate(e, &tmp));
                    }
                    break tmp;
                }
                // Another publisher of this pid has this microsecond: take the next.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    name = format!("{}-{class}-{pid}-{}.0.job", self.name, local_timestamp());
                }
                Err(e) => return Err(annotate(e, &tmp)),
            }
        };
        loop {
            match rename_noreplace(&tmp, &self.new_dir.join(&name)) {
                Ok(()) => return Ok(name),
                // Taken in new/ (a Ruby Chore publisher's file of the same microsecond):
                // the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    name = format!("{}-{class}-{pid}-{}.0.job", self.name, local_timestamp());
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(annotate(e, &self.new_dir.join(&name)));
                }
            }
        }
    }

    /// Remove what publishers killed mid-write left in `tmp/`: files older than the queue
    /// timeout (a live publisher's file is younger than that).
    pub(super) fn prune_tmp(&self, now: SystemTime) {
        let Ok(entries) = fs::read_dir(&self.tmp_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| is_stale(t, now, self.timeout));
            if stale && fs::remove_file(entry.path()).is_ok() {
                tracing::warn!(queue = %self.name, file = %Path::new(&entry.file_name()).display(), "removed a publisher's unfinished file from tmp/");
            }
        }
    }
}

/// Is a file last written at `modified` left over, at `now`?
fn is_stale(modified: SystemTime, now: SystemTime, timeout: Duration) -> bool {
    now.duration_since(modified).is_ok_and(|age| age >= timeout)
}

#[cfg(test)]
mod tests {
    use super::is_stale;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn only_files_older_than_the_timeout_are_stale() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let timeout = Duration::from_secs(60);
        assert!(!is_stale(t, t + Duration::from_secs(59), timeout));
        assert!(is_stale(t, t + Duration::from_secs(60), timeout));
        // A file from the future (a clock stepped back) is not stale.
        assert!(!is_stale(t, t - Duration::from_secs(5), timeout));
    }
}
