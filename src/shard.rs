//! Which worker thread this is: the number that picks a thread's shard of state shared by
//! every worker (counters, backend connection pools, the turn of a pool's servers). A leaf:
//! it imports nothing of the crate, so whatever is sharded can use it without importing the
//! workers (which import the server).

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number (0 on the main thread and on threads that are no worker).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Numbers this thread: worker `i` (set once, when its thread starts).
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}
