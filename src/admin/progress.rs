//! Long verbs' progress: an `indicatif` bar when standard error is a terminal, nothing when
//! it is piped; and Ctrl-C (SIGINT, or SIGTERM), which sets a flag the verbs check between
//! messages, so they stop cleanly and say how far they got.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// From now on, SIGINT and SIGTERM only set the flag `interrupted` reads.
pub fn catch_interrupts() {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
}

/// Ctrl-C was pressed: stop before the next message.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// A bar of `len` steps (a spinner when the length is unknown), drawn only on a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(len: Option<u64>, what: &str) -> Progress {
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
        };
        if std::io::stderr().is_terminal() {
            let template = if len.is_some() {
                "{msg} [{bar:30}] {pos}/{len} ({elapsed}, {eta} left)"
            } else {
                "{msg} {spinner} {pos} ({elapsed})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Progress { bar }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Clear the bar, leaving the terminal for the summary line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
