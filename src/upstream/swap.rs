//! Swap groups: backends whose servers never run at once (models sharing one GPU, whose units
//! `Conflicts=` each other). Starting one member's server stops the other's at once, streams
//! and all, so the proxy, their only client, takes turns: a request for another member than
//! the one in use waits (first come, first served, up to its backend's
//! [`start_wait`](crate::config::BackendConfig::start_wait)) until the requests in flight on
//! that member have finished, bodies included; then the proxy closes its idle connections to
//! it and the request goes to the next member.
//!
//! Requests for the member in use are let through at once, even while a swap waits, as long
//! as the oldest waiting request has waited less than half of its own wait; after that they
//! queue behind it, so that the requests in flight can drain and the swap happens in time
//! (with steady traffic for one model, nothing else would ever get the GPU).
//!
//! One group is shared by every worker thread (a [`Mutex`] around a few counters; a
//! [`Notify`] wakes the waiting requests when the group changes) and kept across reloads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync;

/// One swap group.
pub struct SwapGroup {
    pub name: Arc<str>,
    state: Mutex<GroupState>,
    changed: Notify,
}

#[derive(Default)]
struct GroupState {
    /// The member whose requests run now (the last one let through).
    current: Option<Arc<str>>,
    /// Requests of `current` in flight, until their response bodies end.
    in_flight: usize,
    /// Requests waiting for their turn, oldest first.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    member: Arc<str>,
    /// Until then, requests for the member in use pass it.
    yields_until: Instant,
}

/// A request's turn: its member stays in use until this is dropped (with its response body).
pub struct Turn {
    group: Arc<SwapGroup>,
}

/// A request let through.
pub struct Entered {
    pub turn: Turn,
    /// The member that was in use before, when this request swapped it out: the caller closes
    /// its idle connections before connecting to the new one.
    pub swapped_out: Option<Arc<str>>,
    /// How long it waited.
    pub waited: Duration,
}

/// No turn within the time: the member in use and its requests in flight then.
#[derive(Debug)]
pub struct Busy {
    pub current: Option<Arc<str>>,
    pub in_flight: usize,
}

impl SwapGroup {
    pub fn new(name: &str) -> SwapGroup {
        SwapGroup {
            name: Arc::from(name),
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        sync::lock(&self.state)
    }

    /// Waits for `member`'s turn, at most `limit`.
    pub async fn enter(self: &Arc<Self>, member: &str, limit: Duration) -> Result<Entered, Busy> {
        let start = Instant::now();
        let ticket = {
            let mut s = self.lock();
            // With nobody waiting, or for the member in use while no swap has waited long.
            let passes = s.queue.is_empty()
                || (s.current.as_deref() == Some(member)
                    && s.queue.iter().all(|w| start < w.yields_until));
            if passes {
                if let Some(swapped_out) = s.admit(member) {
                    return Ok(self.entered(swapped_out, start));
                }
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.queue.push_back(Waiter {
                ticket,
                member: Arc::from(member),
                yields_until: start + limit / 2,
            });
            ticket
        };
        // Leaves the queue however the wait ends: let through, timed out, or given up (the
        // client went away and the request was dropped).
        let _queued = Queued {
            group: self,
            ticket,
        };
        let deadline = start + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut s = self.lock();
                let at = s.queue.iter().position(|w| w.ticket == ticket);
                // Its turn: every request before it is for the same member.
                let first =
                    at.is_some_and(|at| s.queue.iter().take(at).all(|w| *w.member == *member));
                if first {
                    if let Some(swapped_out) = s.admit(member) {
                        return Ok(self.entered(swapped_out, start));
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let s = self.lock();
                return Err(Busy {
                    current: s.current.clone(),
                    in_flight: s.in_flight,
                });
            }
        }
    }

    fn entered(self: &Arc<Self>, swapped_out: Option<Arc<str>>, start: Instant) -> Entered {
        Entered {
            turn: Turn {
                group: self.clone(),
            },
            swapped_out,
            waited: start.elapsed(),
        }
    }

    /// The member in use and its requests in flight.
    pub fn current(&self) -> (Option<Arc<str>>, usize) {
        let s = self.lock();
        (s.current.clone(), s.in_flight)
    }
}

impl GroupState {
    /// Lets a request for `member` through if it is in use, or if nothing is in flight (it is
    /// then in use). `Some(swapped out)` when let through: the member it replaced, if any.
    fn admit(&mut self, member: &str) -> Option<Option<Arc<str>>> {
        let same = self.current.as_deref() == Some(member);
        if !same && self.in_flight > 0 {
            return None;
        }
        self.in_flight += 1;
        if same {
            return Some(None);
        }
        Some(self.current.replace(Arc::from(member)))
    }
}

/// A request's place in the queue, left when dropped; those behind it may go then.
struct Queued<'a> {
    group: &'a SwapGroup,
    ticket: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.group.lock().queue.retain(|w| w.ticket != self.ticket);
        self.group.changed.notify_waiters();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut s = self.group.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let wake = s.in_flight == 0 && !s.queue.is_empty();
        drop(s);
        if wake {
            self.group.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn the_member_in_use_goes_at_once_and_a_swap_waits_for_it() {
        rt().block_on(async {
            let g = Arc::new(SwapGroup::new("gpu"));
            let limit = Duration::from_secs(10);
            let a1 = g.enter("a", limit).await.unwrap();
            assert!(a1.swapped_out.is_none());
            let b = tokio::spawn({
                let g = g.clone();
                async move { g.enter("b", limit).await }
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!b.is_finished());
            // Within half of b's wait, a's requests still go at once.
            let a2 = g.enter("a", limit).await.unwrap();
            assert_eq!(g.current(), (Some(Arc::from("a")), 2));
            drop(a1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!b.is_finished());
            drop(a2.turn);
            let b = b.await.unwrap().unwrap();
            assert_eq!(b.swapped_out.as_deref(), Some("a"));
            assert_eq!(b.waited, Duration::from_secs(2));
            assert_eq!(g.current(), (Some(Arc::from("b")), 1));
        });
    }

    #[test]
    fn after_half_its_wait_a_swap_is_not_passed_and_waiters_go_in_order() {
        rt().block_on(async {
            let g = Arc::new(SwapGroup::new("gpu"));
            let limit = Duration::from_secs(10);
            let a1 = g.enter("a", limit).await.unwrap();
            let spawn = |m: &'static str| {
                let g = g.clone();
                tokio::spawn(async move { g.enter(m, limit).await.map(|e| (m, e)) })
            };
            let b = spawn("b");
            tokio::time::sleep(Duration::from_secs(6)).await;
            // b has waited more than half of its 10 s: a new request for a queues behind it.
            let a2 = spawn("a");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!a2.is_finished());
            drop(a1);
            let (_, b) = b.await.unwrap().unwrap();
            assert_eq!(b.swapped_out.as_deref(), Some("a"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!a2.is_finished());
            drop(b.turn);
            let (_, a2) = a2.await.unwrap().unwrap();
            assert_eq!(a2.swapped_out.as_deref(), Some("b"));
        });
    }

    #[test]
    fn a_waiting_request_given_up_leaves_the_queue() {
        rt().block_on(async {
            let g = Arc::new(SwapGroup::new("gpu"));
            let limit = Duration::from_secs(10);
            let a = g.enter("a", limit).await.unwrap();
            let b = tokio::spawn({
                let g = g.clone();
                async move { g.enter("b", limit).await.map(|_| ()) }
            });
            tokio::time::sleep(Duration::from_secs(6)).await;
            // The client of the request for b went away.
            b.abort();
            assert!(b.await.unwrap_err().is_cancelled());
            // Nobody waits any more: a request for a goes at once, one for c once a is done.
            let a2 = g.enter("a", limit).await.unwrap();
            drop((a, a2));
            let c = g.enter("c", limit).await.unwrap();
            assert_eq!(c.swapped_out.as_deref(), Some("a"));
            assert_eq!(c.waited, Duration::ZERO);
        });
    }

    #[test]
    fn a_swap_that_does_not_come_in_time_says_who_is_busy() {
        rt().block_on(async {
            let g = Arc::new(SwapGroup::new("gpu"));
            let _a = g.enter("a", Duration::from_secs(10)).await.unwrap();
            let busy = g.enter("b", Duration::from_secs(3)).await.err().unwrap();
            assert_eq!(busy.current.as_deref(), Some("a"));
            assert_eq!(busy.in_flight, 1);
            // It left the queue: requests for a go at once again.
            assert_eq!(g.current(), (Some(Arc::from("a")), 1));
            let _a2 = g.enter("a", Duration::from_secs(10)).await.unwrap();
        });
    }
}
