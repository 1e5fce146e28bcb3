//! The counters of one route and backend: requests by status class, bytes, requests and streams
//! in flight, time to response headers and duration, fallbacks taken. A request adds to them
//! on the worker that serves it, in that worker's own cache line (no lock, no line shared
//! between cores); a scrape adds the workers' parts up.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::sync::PerWorker;

/// Upper bounds of the histograms' buckets, in seconds (and `+Inf` after them): from a local
/// model's first token to a long transcription.
pub(super) const BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The same bounds in microseconds, as requests compare them.
const BOUNDS_US: [u64; 15] = {
    let mut b = [0u64; 15];
    let mut i = 0;
    while i < BUCKETS.len() {
        b[i] = (BUCKETS[i] * 1e6) as u64;
        i += 1;
    }
    b
};

/// Status classes counted: 1xx to 5xx.
pub(super) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a fallback was taken (the `reason` label): a fixed set of words.
pub(super) const REASONS: [&str; 9] = [
    "refused",
    "unreachable",
    "connect_timeout",
    "tls",
    "reset",
    "response_timeout",
    "no_server",
    "status_5xx",
    "failed",
];

/// A histogram's part on one worker: counts per bucket (not cumulative) and the sum.
#[derive(Default)]
struct Hist {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Hist {
    fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// One worker's counters.
#[derive(Default)]
struct Shard {
    requests: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicI64,
    streams: AtomicI64,
    fallbacks: [AtomicU64; REASONS.len()],
    headers: Hist,
    duration: Hist,
}

/// The counters of one (route, backend) pair; `("", "")` for requests the proxy answers
/// itself without a route.
pub struct Tally {
    pub route: Arc<str>,
    pub backend: Arc<str>,
    shards: PerWorker<Shard>,
}

/// A histogram summed over the workers: bucket counts (not cumulative), total count, sum in
/// seconds.
pub struct HistTotal {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// What one request adds when it is done.
pub struct Done {
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Until the response headers, when a backend answered.
    pub headers: Option<Duration>,
    pub total: Duration,
    /// It was counted in flight (routed), and as a stream.
    pub in_flight: bool,
    pub stream: bool,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tally({} -> {})", self.route, self.backend)
    }
}

impl Tally {
    pub fn new(route: &str, backend: &str, workers: usize) -> Tally {
        Tally {
            route: Arc::from(route),
            backend: Arc::from(backend),
            shards: PerWorker::new(workers),
        }
    }

    fn shard(&self) -> &Shard {
        self.shards.mine()
    }

    /// A request is in flight on this route and backend (until [`Tally::done`] or
    /// [`Tally::leave`]).
    pub fn enter(&self) {
        self.shard().in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request counted by [`Tally::enter`] went to another backend (its fallback).
    pub fn leave(&self) {
        self.shard().in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Its response is a stream of events.
    pub fn stream(&self) {
        self.shard().streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fallback(&self, reason: &str) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.shard().fallbacks[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn done(&self, d: &Done) {
        let s = self.shard();
        if let Some(c) = (d.status / 100).checked_sub(1).filter(|c| *c < 5) {
            s.requests[usize::from(c)].fetch_add(1, Ordering::Relaxed);
        }
        if d.bytes_in > 0 {
            s.bytes_in.fetch_add(d.bytes_in, Ordering::Relaxed);
        }
        s.bytes_out.fetch_add(d.bytes_out, Ordering::Relaxed);
        if d.in_flight {
            s.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if d.stream {
            s.streams.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(h) = d.headers {
            s.headers.observe(h);
            s.duration.observe(d.total);
        }
    }

    fn sum(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    pub fn requests(&self, class: usize) -> u64 {
        self.sum(|s| s.requests[class].load(Ordering::Relaxed))
    }

    pub fn bytes_in(&self) -> u64 {
        self.sum(|s| s.bytes_in.load(Ordering::Relaxed))
    }

    pub fn bytes_out(&self) -> u64 {
        self.sum(|s| s.bytes_out.load(Ordering::Relaxed))
    }

    pub fn fallbacks(&self, reason: usize) -> u64 {
        self.sum(|s| s.fallbacks[reason].load(Ordering::Relaxed))
    }

    pub fn in_flight(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    pub fn streams(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.streams.load(Ordering::Relaxed))
            .sum()
    }

    pub fn headers(&self) -> HistTotal {
        self.hist(|s| &s.headers)
    }

    pub fn duration(&self) -> HistTotal {
        self.hist(|s| &s.duration)
    }

    fn hist(&self, which: impl Fn(&Shard) -> &Hist) -> HistTotal {
        let mut counts = [0u64; BUCKETS.len() + 1];
        let mut sum_us = 0u64;
        for s in self.shards.iter() {
            let h = which(s);
            for (c, b) in counts.iter_mut().zip(&h.buckets) {
                *c += b.load(Ordering::Relaxed);
            }
            sum_us = sum_us.saturating_add(h.sum_us.load(Ordering::Relaxed));
        }
        let mut buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(counts).collect();
        buckets.push((f64::INFINITY, counts[BUCKETS.len()]));
        HistTotal {
            count: counts.iter().sum(),
            buckets,
            sum: sum_us as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_class_and_bucket() {
        let t = Tally::new("/v1", "b", 2);
        t.enter();
        assert_eq!(t.in_flight(), 1);
        t.done(&Done {
            status: 503,
            bytes_in: 10,
            bytes_out: 20,
            headers: Some(Duration::from_millis(7)),
            total: Duration::from_millis(400),
            in_flight: true,
            stream: false,
        });
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.requests(4), 1);
        assert_eq!((t.bytes_in(), t.bytes_out()), (10, 20));
        let h = t.headers();
        assert_eq!(h.count, 1);
        // 7 ms: in the 10 ms bucket (the second).
        assert_eq!(h.buckets[1], (0.01, 1));
        assert!((h.sum - 0.007).abs() < 1e-9);
        let d = t.duration();
        assert_eq!(d.buckets[6], (0.5, 1));
        // Exactly on a bound: in that bucket (le).
        t.done(&Done {
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            headers: Some(Duration::from_millis(5)),
            total: Duration::from_secs(1000),
            in_flight: false,
            stream: false,
        });
        assert_eq!(t.headers().buckets[0], (0.005, 1));
        assert_eq!(t.duration().buckets[15], (f64::INFINITY, 1));
    }
}
