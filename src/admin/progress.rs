//! Long verbs' progress: an `indicatif` bar when standard error is a terminal, nothing when
//! it is piped; and Ctrl-C (SIGINT, or SIGTERM), which sets a flag the verbs check between
//! messages, so they stop cleanly and say how far they got (and exit 1), or, blocked on
//! input or output, are ended two seconds later.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// From now on, SIGINT and SIGTERM set the flag `interrupted` reads, and end the process
/// `STOP_GRACE` later if the verb has not stopped by then.
pub fn catch_interrupts() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        for sig in [SIGINT, SIGTERM] {
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        return;
    };
    // A verb blocked in a read or write (a FIFO, a terminal, a pipe nobody writes) never
    // reaches its next message to see the flag: it is ended from here, a moment later.
    // Every message is whole in one place at any instant (a requeue's journal, one rename
    // or send per message), so this loses none; a dump may end in a partial line, which
    // `load` refuses naming it.
    let flag = flag.clone();
    let _ = std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            if signals.forever().next().is_none() {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(STOP_GRACE);
            crate::logging::stderr_line(
                "chore queue: interrupted while waiting for input or output; stopped",
            );
            std::process::exit(1);
        });
}

/// How long a verb has, once interrupted, to stop at its next message by itself.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
