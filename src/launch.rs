//! Starting a user's program: the one recipe shared by handlers (run by a worker),
//! `on-permanent-failure` hooks (run by the master) and the workers themselves.
//!
//! No shell stands between chore and a program: a handler's `command` is its argv. A
//! relative program path with a slash is taken from the handler's directory; a bare name is
//! looked up on `PATH`. Programs never inherit AWS credentials unless a queue passes them
//! on (docs/decisions/0005-the-master-settles-every-message.md).

use crate::config::Handler;
use nix::sys::signal::Signal;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};

/// A handler's command: its program, arguments, directory and environment, and
/// `CHORE_QUEUE`.
pub fn command(h: &Handler, queue: &str) -> Command {
    let dir = h.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let argv0 = &h.command[0];
    let program = PathBuf::from(argv0);
    let mut cmd = if program.is_relative() && argv0.contains('/') {
        // Relative to the handler's directory, whatever the platform would otherwise choose.
        Command::new(dir.join(program))
    } else if !argv0.contains('/') && h.env.contains_key("PATH") {
        // A bare name under the handler's own PATH is looked up here, as check-config
        // looks. Left to it, the standard library would fork the worker and `execvp`,
        // which runs a script without `#!` under /bin/sh where every other start refuses
        // it (docs/handlers.md: a script needs its `#!` line).
        match crate::config::find_program(h, None) {
            Ok(found) => {
                let mut cmd = Command::new(found);
                cmd.arg0(argv0);
                cmd
            }
            Err(_) => Command::new(program),
        }
    } else {
        Command::new(program)
    };
    cmd.args(&h.command[1..])
        .current_dir(dir)
        .envs(&h.env)
        .env("CHORE_QUEUE", queue);
    cmd
}

/// The names of the AWS credential variables in this process's environment, or in the
/// one it started with.
pub fn credential_vars() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k)
        .chain(
            crate::secrets::started_with()
                .iter()
                .map(|(k, _)| k.clone()),
        )
        .filter_map(|k| k.into_string().ok())
        .filter(|k| crate::secrets::is_credential(k))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Give `cmd` the AWS credential variables this process started with (for a queue with
/// `pass-aws-credentials`: the master's own environment no longer holds the secrets).
pub fn pass_credentials(cmd: &mut Command) {
    cmd.envs(crate::secrets::started_with().iter().map(|(k, v)| (k, v)));
}

/// Remove from `cmd`'s environment every AWS credential this process has.
pub fn strip_credentials(cmd: &mut Command) {
    for k in credential_vars() {
        cmd.env_remove(k);
    }
}

/// How a process's exit reads in a log line.
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "died of signal {}",
            Signal::try_from(s)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| s.to_string())
        ),
        _ => "ended".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_well() {
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(7 << 8)),
            "exited with status 7"
        );
        assert_eq!(
            describe_exit(&ExitStatus::from_raw(9)),
            "died of signal SIGKILL"
        );
    }
}
