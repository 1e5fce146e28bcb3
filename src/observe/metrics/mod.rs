//! Prometheus metrics: what the proxy counts, and `/metrics` on a listener of its own
//! (`[metrics] listen`, or an inherited socket named `metrics`).
//!
//! Requests add to the counters of their route and backend ([`Tally`]) on their own worker,
//! with atomics in that worker's cache line: no lock, nothing shared between cores per
//! request. A scrape adds up the workers' parts and writes them out with `prometheus-client`'s
//! encoders ([`expose`]), Prometheus text or OpenMetrics as the scraper asks. Labels come from
//! the config only (route paths, backend names, server URLs, status classes, a fixed set of
//! fallback reasons), never from what a client sends: their number is bounded by the config.
//! The ledger's series ([`usage`]: tokens by model and client, stream speeds) are bounded as
//! the ledger bounds its labels; those of clients and queues ([`limits`]) by the config's
//! names.
//!
//! The counters of a route and backend live as long as some configuration uses them: a reload
//! that keeps a route keeps counting on the same counters; the series of a route, backend or
//! server a reload removed disappear from the output.

mod expose;
mod limits;
mod tally;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub(crate) use expose::{render, Exposition, Format, RouteSeries, ServerSeries};
pub(crate) use limits::{ClientSeries, QueueSeries};
pub(crate) use tally::{Done, Tally};

/// The counters of every (route, backend) pair any live configuration uses, and those of the
/// process (reloads).
pub struct Metrics {
    tallies: Mutex<HashMap<(String, String), Weak<Tally>>>,
    /// Workers adding to the counters (one part each).
    workers: usize,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_ok: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            tallies: Mutex::new(HashMap::new()),
            workers,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok: AtomicBool::new(true),
        }
    }

    /// The counters of `route` and `backend`: the same ones as long as a configuration uses
    /// them, new ones otherwise.
    pub fn tally(&self, route: &str, backend: &str) -> Arc<Tally> {
        let mut map = crate::sync::lock(&self.tallies);
        map.retain(|_, t| t.strong_count() > 0);
        let key = (route.to_string(), backend.to_string());
        if let Some(t) = map.get(&key).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(Tally::new(route, backend, self.workers));
        map.insert(key, Arc::downgrade(&t));
        t
    }

    /// A reload ended, well or not.
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_reload_ok.store(ok, Ordering::Relaxed);
    }

    fn reloads(&self) -> (u64, u64, bool) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
            self.last_reload_ok.load(Ordering::Relaxed),
        )
    }
}
