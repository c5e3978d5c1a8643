//! A bound on the connections a listener serves at once (the `/metrics` page, the control
//! socket): each served connection holds a `Slot` while it lives; past the bound, the
//! next is closed unserved, so idle clients cannot take the master's descriptors or its
//! answering threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The connections a listener may serve at once.
pub struct Slots {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One served connection, counted until it is dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot for one more connection; None when `max` are served already.
    pub fn take(&self) -> Option<Slot> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(self.open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_comes_back_when_its_connection_ends() {
        let slots = Slots::new(2);
        let (a, b) = (slots.take(), slots.take());
        assert!(a.is_some() && b.is_some());
        assert!(slots.take().is_none(), "the third is refused");
        drop(a);
        assert!(slots.take().is_some());
    }
}
