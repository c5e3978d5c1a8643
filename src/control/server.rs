//! The master's end of the control socket: bound at start-up (owner-only, a stale socket
//! replaced, a live one left to its master), then served by a thread named `control` that
//! hands each connection to a short-lived thread of its own (a few at once), which passes
//! the question to the master loop and writes its answer back. A client that says nothing
//! holds its thread for `PATIENCE` at most, and never the others.

use super::Ask;
use crate::observe::slots::Slots;
use crossbeam_channel::Sender;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client may take to ask, and the master to answer.
const PATIENCE: Duration = Duration::from_secs(5);

/// Connections answered at once; one more is closed unanswered.
const MAX_CLIENTS: usize = 8;

/// A bound control socket; dropping it removes the socket file if it is still this one.
pub struct Bound {
    path: PathBuf,
    /// Device and inode of the socket bound, so that a successor's is never removed.
    id: (u64, u64),
    listener: Option<UnixListener>,
}

/// Bind `path` with mode 0600. Call it before any thread that creates files starts: the
/// umask is changed for the moment of the bind. A socket a live master answers on is left
/// alone (`Ok(None)`), and so is one we may not connect to (another user's master, which
/// may well be alive); one nobody answers on is stale and replaced; anything else in the
/// way is an error.
pub fn bind(path: &Path) -> std::io::Result<Option<Bound>> {
    use crate::config::Occupant;
    let occupant = crate::config::occupant(path)
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::AlreadyExists, m))?;
    match occupant {
        Occupant::Live => return Ok(None),
        Occupant::Stale => std::fs::remove_file(path)?,
        Occupant::Nothing => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    let meta = std::fs::metadata(path)?;
    Ok(Some(Bound {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        listener: Some(listener),
    }))
}

impl Bound {
    /// Serve from a thread: each question becomes `wrap(Ask)` on `to_master`.
    pub fn serve<T: Send + 'static>(
        &mut self,
        to_master: Sender<T>,
        wrap: fn(Ask) -> T,
    ) -> std::io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let slots = Slots::new(MAX_CLIENTS);
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    // Past the bound, the stream is dropped here: closed unanswered.
                    let Some(slot) = slots.take() else { continue };
                    let to_master = to_master.clone();
                    // A thread that cannot start drops its closure, slot and stream with it.
                    let _ = std::thread::Builder::new()
                        .name("control-answer".into())
                        .spawn(move || {
                            let _slot = slot;
                            if let Err(e) = answer(stream, &to_master, wrap) {
                                tracing::debug!(error = %e, "control socket: a question went unanswered");
                            }
                        });
                }
            })?;
        Ok(())
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The question's line (1 KiB at most), asked before `deadline`, however it trickles in.
fn question(stream: &UnixStream, deadline: std::time::Instant) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 256];
    while !line.contains(&b'\n') && line.len() < 1024 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match (&*stream).read(&mut byte)? {
            0 => break,
            n => line.extend_from_slice(&byte[..n]),
        }
    }
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    Ok(String::from_utf8_lossy(&line[..end.min(1024)]).into_owned())
}

/// One question, one answer (one JSON line), then the connection closes.
fn answer<T>(stream: UnixStream, to_master: &Sender<T>, wrap: fn(Ask) -> T) -> std::io::Result<()> {
    stream.set_write_timeout(Some(PATIENCE))?;
    let line = question(&stream, std::time::Instant::now() + PATIENCE)?;
    let mut out = &stream;
    let reply = match line.trim() {
        "status" => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let asked = to_master.send(wrap(Ask { reply: tx })).is_ok();
            match asked.then(|| rx.recv_timeout(PATIENCE).ok()).flatten() {
                Some(snapshot) => {
                    serde_json::to_string(&snapshot).map_err(std::io::Error::other)?
                }
                None => r#"{"error":"the master did not answer"}"#.to_string(),
            }
        }
        _ => r#"{"error":"unknown question (ask: status)"}"#.to_string(),
    };
    out.write_all(reply.as_bytes())?;
    out.write_all(b"\n")
}
