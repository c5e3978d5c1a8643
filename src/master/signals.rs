//! Signals, turned into events of the master loop
//! (docs/decisions/0012-signals-are-events.md).
//!
//! One thread waits on the signals chore handles and forwards each as a number; the master
//! loop decides what it means. Nothing runs in signal context but signal-hook's own
//! self-pipe write.

use crossbeam_channel::Sender;
use signal_hook::consts::{
    SIGCONT, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGUSR1, SIGUSR2,
};
use signal_hook::iterator::Signals;

/// The signals the master handles.
pub const HANDLED: [i32; 9] = [
    SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2, SIGTSTP, SIGCONT, SIGTTIN, SIGHUP,
];

/// Start the signal thread.
pub fn spawn(to_master: Sender<i32>) -> std::io::Result<()> {
    let mut signals = Signals::new(HANDLED)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if to_master.send(sig).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

pub fn name(sig: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("signal")
}
