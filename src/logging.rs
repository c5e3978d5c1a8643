//! Logging through `tracing`: one line per event, text by default, JSON, or Ruby Chore's
//! line (`ruby`), to standard error or to a log file that SIGUSR1 reopens (for logrotate).
//!
//! A log that cannot be written (a closed pipe, a full disk) never ends the process: the
//! line is dropped. Nothing here panics on a write error, and tracing's own fallback (an
//! `eprintln!` of the failure, which panics when standard error is the broken thing) is off.

pub mod capture;
mod ruby;

use crate::config::LogFormat;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, Layered};
use tracing_subscriber::{Registry, reload};

/// Keeps what is needed to reopen the log file and to change what is logged (SIGHUP).
#[derive(Clone, Default)]
pub struct LogHandle {
    file: Option<(PathBuf, Arc<Mutex<File>>)>,
    filter: Option<reload::Handle<Targets, Registry>>,
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

    /// Log at `level` from now on, settlement lines on or off.
    pub fn set_filter(&self, level: tracing::Level, settlements: bool) {
        if let Some(h) = &self.filter {
            let _ = h.reload(filter(level, settlements));
        }
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

/// Where settlement lines go (`settle`): a target of their own, so that
/// `log-settlements = false` can drop the info-level ones without touching the rest.
pub const FATE: &str = "chore::fate";
/// Where children's output lines go (`capture`).
pub const HANDLER: &str = "chore::handler";

/// What is logged: everything at `level` and above, except info-level settlement lines
/// when `settlements` is false; what children print always (it went to the log unfiltered
/// before it became events, and a stack trace must not vanish at `log-level = "warn"`).
fn filter(level: tracing::Level, settlements: bool) -> Targets {
    let fate = if settlements {
        level
    } else {
        level.min(tracing::Level::WARN)
    };
    Targets::new()
        .with_default(level)
        .with_target(FATE, fate)
        .with_target(HANDLER, level.max(tracing::Level::INFO))
}

type Filter = reload::Layer<Targets, Registry>;

/// Install the global subscriber.
pub fn init(
    level: tracing::Level,
    format: LogFormat,
    file: Option<&Path>,
) -> io::Result<LogHandle> {
    init_with(level, true, format, file)
}

/// Install the global subscriber, settlement lines on or off.
pub fn init_with(
    level: tracing::Level,
    settlements: bool,
    format: LogFormat,
    file: Option<&Path>,
) -> io::Result<LogHandle> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let mut handle = LogHandle::default();
    let (filter_layer, reloader) = reload::Layer::new(filter(level, settlements));
    handle.filter = Some(reloader);
    let layer = match file {
        Some(path) => {
            let shared = Arc::new(Mutex::new(open_append(path)?));
            handle.file = Some((path.to_path_buf(), shared.clone()));
            lines(format, move || SharedFile(shared.clone()))
        }
        None => lines(format, || Stderr),
    };
    // A second init (tests) keeps the first subscriber; nothing to report.
    if tracing_subscriber::registry()
        .with(filter_layer)
        .with(layer)
        .try_init()
        .is_ok()
    {
        log_panics();
    }
    Ok(handle)
}

/// The layer that writes each event as a `format` line through `writer`.
fn lines<W>(format: LogFormat, writer: W) -> Box<dyn Layer<Layered<Filter, Registry>> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .log_internal_errors(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => base.boxed(),
        LogFormat::Json => base.json().flatten_event(true).boxed(),
        LogFormat::Ruby => base.event_format(ruby::RubyLine::new()).boxed(),
    }
}

/// A panic (a consumer thread's, which is then restarted) is a log event like any other,
/// not raw lines that would break a JSON log.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            at = %info.location().map(|l| l.to_string()).unwrap_or_default(),
            panic = %message.replace('\n', " "),
            "panicked"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn enabled(f: &Targets, target: &str, level: Level) -> bool {
        f.would_enable(target, &level)
    }

    #[test]
    fn settlement_lines_follow_their_switch() {
        let on = filter(Level::INFO, true);
        assert!(enabled(&on, FATE, Level::INFO));
        assert!(!enabled(&on, FATE, Level::DEBUG));
        let off = filter(Level::INFO, false);
        assert!(!enabled(&off, FATE, Level::INFO));
        assert!(enabled(&off, FATE, Level::WARN));
        assert!(enabled(&off, "chore::master", Level::INFO));
        // A stricter level stays stricter for settlements too.
        let quiet = filter(Level::ERROR, true);
        assert!(!enabled(&quiet, FATE, Level::WARN));
        assert!(enabled(&quiet, FATE, Level::ERROR));
        // What children print is logged at any level.
        assert!(enabled(&quiet, HANDLER, Level::INFO));
        assert!(!enabled(&quiet, "chore::master", Level::INFO));
    }
}
