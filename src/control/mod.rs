//! The control socket: how `chore status` asks a running master what it is doing.
//!
//! `server` listens on a Unix socket (mode 0600) in a thread of its own; each question
//! goes to the master loop over a channel as an `Ask`, and the master, which owns the
//! state, answers with a `status::Snapshot`, so no lock is shared. `client` is
//! `chore status`. The wire is one JSON line each way.

pub mod client;
pub mod server;
pub mod status;

use std::path::PathBuf;

/// What the master is asked: it answers on `reply`.
pub struct Ask {
    pub reply: crossbeam_channel::Sender<status::Snapshot>,
}

/// The socket's path: the option when given, else `$RUNTIME_DIRECTORY/chore.sock` when
/// systemd sets it (the first, when it names several), else `chore.sock` in the queue
/// root.
pub fn path(option: Option<&PathBuf>, fs_queue_root: &std::path::Path) -> PathBuf {
    if let Some(p) = option {
        return p.clone();
    }
    let runtime = std::env::var_os("RUNTIME_DIRECTORY");
    match runtime
        .as_ref()
        .and_then(|r| std::env::split_paths(r).next())
    {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("chore.sock"),
        _ => fs_queue_root.join("chore.sock"),
    }
}
