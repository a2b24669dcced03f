//! Which worker thread the current code runs on, for per-worker state (connection pools).

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `i`.
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// The current worker's index (0 outside workers).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}
