//! The control socket: how `chore status` asks a running master what it is doing.
//!
//! `server` listens on a Unix socket (mode 0600) in a thread of its own; each question
//! goes to the master loop over a channel as an `Ask`, and the master, which owns the
//! state, answers with a `status::Snapshot`, so no lock is shared. `client` is
//! `chore status`. The wire is one JSON line each way.

pub mod client;
pub mod server;
pub mod status;

/// What the master is asked: it answers on `reply`.
pub struct Ask {
    pub reply: crossbeam_channel::Sender<status::Snapshot>,
}
