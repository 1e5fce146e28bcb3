//! What worker threads share, and how: which worker this is, [`PerWorker`] (state with one
//! part per worker, each in a cache line of its own: counters, backend connection pools, the
//! turn of a pool's servers, so that workers do not contend for it), and locks that a panic
//! elsewhere does not poison ([`lock`], [`read`], [`write`]). A leaf:
//! it imports nothing of the crate, so whatever is sharded can use it without importing the
//! workers (which import the server).

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number (0 on the main thread and on threads that are no worker).
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Numbers this thread: worker `i` (set once, when its thread starts).
pub(crate) fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// One `T` per worker, each in a cache line of its own, so that a worker writing its part does
/// not slow the others down (no false sharing).
pub(crate) struct PerWorker<T> {
    parts: Box<[Padded<T>]>,
}

#[repr(align(64))]
#[derive(Default)]
struct Padded<T>(T);

impl<T: Default> PerWorker<T> {
    /// A part for each of `workers` workers (at least one).
    pub(crate) fn new(workers: usize) -> PerWorker<T> {
        PerWorker {
            parts: (0..workers.max(1)).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> PerWorker<T> {
    /// This worker's part.
    pub(crate) fn mine(&self) -> &T {
        &self.parts[index() % self.parts.len()].0
    }

    /// Every part, worker 0 first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().map(|p| &p.0)
    }
}

/// Locks `m`. A thread that panicked while holding it left its data as it was; what is kept
/// under the crate's locks is valid after any single update, so it is used as is rather than
/// turning one panic into a panic of every later caller.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `l`, as [`lock`] does.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `l`, as [`lock`] does.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
