//! Hooks: the commands chore starts about a message rather than to run it. Today one: a
//! queue's `on-permanent-failure` command, told about each message that is dead-lettered,
//! wherever that happens (a verdict, the last attempt, or a body that cannot run).
//!
//! A hook runs like a handler (same program lookup, directory and environment, no AWS
//! credentials), its stderr goes to the log, and its outcome changes nothing: a thread
//! feeds it the body and reaps it.

use crate::config::Handler;
use crate::launch;
use crate::queue::Delivery;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What every hook needs besides the message.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Where a hook's stderr goes (the master's log file), else inherited.
    pub log_file: Option<PathBuf>,
}

impl Hooks {
    /// Tell `hook` that message `d` of `queue` was dead-lettered for `reason`: body on stdin,
    /// `CHORE_QUEUE`, `CHORE_MESSAGE_ID`, `CHORE_ATTEMPT`, `CHORE_JOB_CLASS`, `CHORE_REASON`.
    pub fn permanent_failure(&self, hook: &Handler, queue: &str, d: &Delivery, reason: &str) {
        let mut cmd = launch::command(hook, queue);
        cmd.env("CHORE_MESSAGE_ID", &d.id)
            .env("CHORE_ATTEMPT", d.attempt.to_string())
            .env("CHORE_JOB_CLASS", d.class.as_deref().unwrap_or(""))
            .env("CHORE_REASON", reason)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(to_log(self.log_file.as_deref()));
        launch::strip_credentials(&mut cmd);
        let (queue, id, body) = (queue.to_string(), d.id.clone(), d.body.clone());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(queue, id, error = %e, "cannot start the on-permanent-failure command");
                return;
            }
        };
        let _ = std::thread::Builder::new().name("hook".into()).spawn(move || {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(body.as_bytes());
            }
            match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::warn!(
                    queue,
                    id,
                    "on-permanent-failure command {}",
                    launch::describe_exit(&s)
                ),
                Err(e) => {
                    tracing::warn!(queue, id, error = %e, "on-permanent-failure command could not be waited for")
                }
            }
        });
    }
}

/// The log file opened for appending, else the master's own stderr.
pub fn to_log(log_file: Option<&Path>) -> Stdio {
    log_file
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .map(Stdio::from)
        .unwrap_or_else(Stdio::inherit)
}
