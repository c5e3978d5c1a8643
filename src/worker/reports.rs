//! The worker's reports to the master: one JSON line per message on stdout, sent the
//! moment the message has its result.
//!
//! A batch handler's results mostly arrive many to a read; while `Held`, reports gather
//! and go out in one write when the worker is about to wait again (`flush`), so the master
//! reads them in one go instead of being woken once per message. The worker is
//! single-threaded and has one stdout, so the buffer is per thread.

use crate::protocol::Report;
use std::cell::{Cell, RefCell};
use std::io::Write;

thread_local! {
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Send `r`: now, or at the next `flush` while `Held`.
pub fn send(r: &Report) {
    PENDING.with_borrow_mut(|p| {
        serde_json::to_writer(&mut *p, r).expect("a report serialises");
        p.push(b'\n');
    });
    if !HELD.get() {
        flush();
    }
}

/// Write whatever is pending, in one write. If the master is gone this fails, and the
/// parent-death signal ends us anyway.
pub fn flush() {
    PENDING.with_borrow_mut(|p| {
        if !p.is_empty() {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(p).and_then(|_| out.flush());
            p.clear();
        }
    });
}

/// While one lives, reports wait for `flush` (or for its end).
pub struct Held(());

impl Held {
    pub fn new() -> Held {
        HELD.set(true);
        Held(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.set(false);
        flush();
    }
}
