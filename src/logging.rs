//! Logging through `tracing`: one line per event, text by default or JSON, to standard
//! error or to a log file that SIGUSR1 reopens (for logrotate).
//!
//! A log that cannot be written (a closed pipe, a full disk) never ends the process: the
//! line is dropped. Nothing here panics on a write error, and tracing's own fallback (an
//! `eprintln!` of the failure, which panics when standard error is the broken thing) is off.

use crate::config::LogFormat;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Keeps what is needed to reopen the log file.
#[derive(Clone, Default)]
pub struct LogHandle {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
}

impl LogHandle {
    /// Reopen the log file at its path (after logrotate moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        if let Some((path, file)) = &self.file {
            let fresh = open_append(path)?;
            *file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("log file {}: {e}", path.display())))
}

struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One line, one write: lines from several threads never interleave. A line that
        // cannot be written is dropped.
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Standard error, for log lines: a line that cannot be written (EPIPE, ENOSPC) is dropped.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let _ = io::stderr().lock().write_all(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write `line` and a newline to standard error, dropping it if it cannot be written:
/// the `eprintln!` of run-time paths, which must not panic on a closed pipe or a full disk.
pub fn stderr_line(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let _ = Stderr.write_all(&buf);
}

/// Install the global subscriber.
pub fn init(
    level: tracing::Level,
    format: LogFormat,
    file: Option<&Path>,
) -> io::Result<LogHandle> {
    use tracing_subscriber::fmt;
    let mut handle = LogHandle::default();
    let builder = fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .log_internal_errors(false);
    let result = match (file, format) {
        (Some(path), format) => {
            let shared = Arc::new(Mutex::new(open_append(path)?));
            handle.file = Some((path.to_path_buf(), shared.clone()));
            let writer = move || SharedFile(shared.clone());
            match format {
                LogFormat::Text => builder.with_writer(writer).try_init(),
                LogFormat::Json => builder
                    .json()
                    .flatten_event(true)
                    .with_writer(writer)
                    .try_init(),
            }
        }
        (None, LogFormat::Text) => builder.with_writer(|| Stderr).try_init(),
        (None, LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_writer(|| Stderr)
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; nothing to report.
    let _ = result;
    Ok(handle)
}
