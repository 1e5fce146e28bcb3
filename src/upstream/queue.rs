//! A backend's queue (`max_concurrent`): at most that many requests run on it at once (a
//! stream until its body ends); the others wait in the proxy, first come first served within
//! one client, and in turns between clients, so that one client's burst does not starve
//! another's single request. A request that waits longer than `queue_timeout` is refused;
//! one whose client goes away (its future dropped) leaves the queue.
//!
//! A freed place goes straight to the next waiter (it never drops to free and back), so a
//! request arriving at that moment cannot take it first. One queue serves every worker thread
//! (a [`Mutex`] around a few counters) and outlives a reload; a reload's new limit applies at
//! once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::sync;

/// One backend's queue.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    /// Requests that waited and got a place, and their waits together in microseconds;
    /// requests that waited too long (for the metrics).
    pub waits: AtomicU64,
    pub waited_us: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Waiting requests per client, in the order the clients take turns.
    lanes: VecDeque<Lane>,
    waiting: usize,
    next_ticket: u64,
}

#[derive(Debug)]
struct Lane {
    /// The client's name; `None` for requests without a named client (one lane together).
    client: Option<Arc<str>>,
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A place on the backend, held until dropped (with the response body).
#[derive(Debug)]
pub struct Place {
    queue: Arc<Queue>,
}

/// No place within `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub limit: usize,
    pub waiting: usize,
}

impl Queue {
    pub fn new(limit: usize) -> Arc<Queue> {
        Arc::new(Queue {
            state: Mutex::new(State {
                limit,
                ..State::default()
            }),
            waits: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Sets the limit (a reload's); a higher one lets waiting requests through at once.
    pub fn set_limit(&self, limit: usize) {
        let mut s = self.lock();
        s.limit = limit;
        while s.in_flight < s.limit && s.hand_over() {
            s.in_flight += 1;
        }
    }

    /// Requests running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.in_flight, s.waiting)
    }

    /// Waits for a place for a request of `client`, at most `timeout`; says how long it
    /// waited.
    pub async fn enter(
        self: &Arc<Self>,
        client: Option<&Arc<str>>,
        timeout: Duration,
    ) -> Result<(Place, Duration), Full> {
        let start = Instant::now();
        let (ticket, rx) = {
            let mut s = self.lock();
            if s.waiting == 0 && s.in_flight < s.limit {
                s.in_flight += 1;
                return Ok((self.place(), Duration::ZERO));
            }
            let (tx, rx) = oneshot::channel();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiting += 1;
            match s.lanes.iter_mut().find(|l| l.client.as_ref() == client) {
                Some(lane) => lane.waiters.push_back((ticket, tx)),
                None => s.lanes.push_back(Lane {
                    client: client.cloned(),
                    waiters: VecDeque::from([(ticket, tx)]),
                }),
            }
            (ticket, rx)
        };
        let mut waiting = Waiting {
            queue: self,
            ticket,
            rx,
            placed: false,
        };
        let got = tokio::time::timeout(timeout, &mut waiting.rx).await;
        let waited = start.elapsed();
        if let Ok(Ok(())) = got {
            // The place was handed over: it is this request's now.
            waiting.placed = true;
            drop(waiting);
            let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.waited_us.fetch_add(us, Ordering::Relaxed);
            return Ok((self.place(), waited));
        }
        drop(waiting);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let s = self.lock();
        Err(Full {
            limit: s.limit,
            waiting: s.waiting,
        })
    }

    fn place(self: &Arc<Self>) -> Place {
        Place {
            queue: self.clone(),
        }
    }

    /// A place was freed: to the next waiter, or back.
    fn release(&self) {
        let mut s = self.lock();
        if s.in_flight > s.limit || !s.hand_over() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

impl State {
    /// Gives a place to the next waiter in turn (clients round robin, each first come first
    /// served); `false` when nobody waits.
    fn hand_over(&mut self) -> bool {
        while let Some(mut lane) = self.lanes.pop_front() {
            let next = lane.waiters.pop_front();
            if !lane.waiters.is_empty() {
                self.lanes.push_back(lane);
            }
            if let Some((_, tx)) = next {
                self.waiting -= 1;
                if tx.send(()).is_ok() {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.queue.release();
    }
}

/// A request in the queue: leaves it when dropped (timed out, or its client went away); a
/// place handed over just then is passed on.
struct Waiting<'a> {
    queue: &'a Arc<Queue>,
    ticket: u64,
    rx: oneshot::Receiver<()>,
    /// It got its place.
    placed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        self.rx.close();
        if let Ok(()) = self.rx.try_recv() {
            // Handed over after all: pass it on.
            self.queue.release();
            return;
        }
        let mut s = self.queue.lock();
        let ticket = self.ticket;
        for lane in &mut s.lanes {
            lane.waiters.retain(|(t, _)| *t != ticket);
        }
        s.lanes.retain(|l| !l.waiters.is_empty());
        s.waiting = s.lanes.iter().map(|l| l.waiters.len()).sum();
    }
}

#[cfg(test)]
mod tests;
