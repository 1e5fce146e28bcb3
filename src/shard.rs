//! Which worker thread this is: its number picks the thread's shard of sharded state
//! (request counters, backend connection pools), so a worker touches only its own.
//!
//! A room of its own at the bottom of the house: the workers set the number, and the state
//! they run (server counters, pools) reads it without importing the workers.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number (0 on the main thread and on threads that are no worker).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Makes this thread worker `i`.
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}
