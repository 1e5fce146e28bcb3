//! The health of one backend server, as every worker sees it: requests in flight, whether it
//! is out (and why, and until when), written by the requests that find it failing (passive
//! health) and by the active checker (`checks`). Plain atomics, one set per server, shared by
//! all workers; the reason a server is out is behind a lock that only failures and reports
//! take.
//!
//! Passive health: a server that refuses a connection, resets or closes it before answering,
//! or does not accept it within `connect_timeout`, is out for `health_backoff`, doubled with
//! each failure in a row up to `health_backoff_max`. Once that has passed, one request is let
//! through to try it (the others still skip it for another back-off); an answer brings it
//! back. Active health: while its last check failed, it is out until a check passes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{format_duration, HealthConfig};
use crate::sync;

/// Milliseconds since the process's first look at the clock (never 0 after that).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// The clock, read at most once per pick, and only when a server is out.
#[derive(Default)]
pub struct LazyNow(Option<u64>);

impl LazyNow {
    fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(now_ms)
    }
}

/// Longest reason kept (an error chain can be long; messages list every server).
const MAX_WHY: usize = 160;

/// One server's health, shared by every worker, and kept across reloads for as long as the
/// server is in the config (found again by backend name and URL).
pub struct ServerState {
    /// Its URL: the `server` label and its name in messages.
    pub url: Arc<str>,
    /// Requests sent to it whose responses are not done (pools only).
    in_flight: AtomicU32,
    /// Until when it is out after a failure (`now_ms`); 0: not out.
    out_until: AtomicU64,
    /// Failures in a row, for the back-off.
    failures: AtomicU32,
    /// Its last active check failed: out until one passes.
    check_failed: AtomicBool,
    /// Times it was taken out (a metric).
    pub taken_out: AtomicU64,
    /// Why it is (or was last) out.
    why: Mutex<Option<String>>,
}

/// What [`ServerState::report`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Out after failed requests; tried again in `retry_in` (zero: at the next request).
    Out {
        why: String,
        retry_in: Duration,
    },
    /// Its last active check failed.
    Down {
        why: String,
    },
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }

    /// In a few words, for the status page and messages.
    pub fn describe(&self) -> String {
        match self {
            Health::Up => "up".into(),
            Health::Out { why, retry_in } if retry_in.is_zero() => {
                format!("out ({why}); tried again at the next request")
            }
            Health::Out { why, retry_in } => {
                format!("out ({why}); tried again in {}", format_duration(*retry_in))
            }
            Health::Down { why } => format!("down (health check: {why})"),
        }
    }
}

/// Whether a pick may send to a server.
pub enum Avail {
    In,
    Out,
    /// Its back-off is over: one request may try it.
    Trial(u64),
}

impl ServerState {
    pub fn new(url: &str) -> ServerState {
        ServerState {
            url: Arc::from(url),
            in_flight: AtomicU32::new(0),
            out_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            check_failed: AtomicBool::new(false),
            taken_out: AtomicU64::new(0),
            why: Mutex::new(None),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a request may go to it now. No clock is read while it is in.
    pub fn avail(&self, now: &mut LazyNow) -> Avail {
        if self.check_failed.load(Ordering::Relaxed) {
            return Avail::Out;
        }
        match self.out_until.load(Ordering::Relaxed) {
            0 => Avail::In,
            until if now.get() >= until => Avail::Trial(until),
            _ => Avail::Out,
        }
    }

    /// Claims the one trial after a back-off (`until`: what [`ServerState::avail`] saw); the
    /// others skip the server for another back-off meanwhile. False: another request has it.
    pub fn claim_trial(&self, until: u64, health: &HealthConfig, now: &mut LazyNow) -> bool {
        let next = now.get().saturating_add(millis(self.backoff(health)));
        self.out_until
            .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The back-off after the failures so far.
    fn backoff(&self, health: &HealthConfig) -> Duration {
        let n = self
            .failures
            .load(Ordering::Relaxed)
            .saturating_sub(1)
            .min(30);
        health
            .backoff
            .checked_mul(1 << n)
            .unwrap_or(health.backoff_max)
            .min(health.backoff_max)
    }

    /// A request found it failing (refused, reset, no connection in time): out for the next
    /// back-off. `backend` names it in the log.
    pub fn failed(&self, backend: &str, why: &str, health: &HealthConfig) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let backoff = self.backoff(health);
        self.out_until
            .store(now_ms().saturating_add(millis(backoff)), Ordering::Relaxed);
        self.taken_out.fetch_add(1, Ordering::Relaxed);
        self.set_why(why);
        tracing::warn!(
            "backend '{backend}': server {} is out for {}: {why}",
            self.url,
            format_duration(backoff)
        );
    }

    /// It answered: back in (when it was out), its failures forgotten.
    pub fn answered(&self, backend: &str) {
        if self.failures.load(Ordering::Relaxed) == 0 && self.out_until.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.out_until.store(0, Ordering::Relaxed);
        tracing::info!("backend '{backend}': server {} answers again", self.url);
    }

    /// An active check passed: in, whatever requests found before.
    pub fn check_passed(&self, backend: &str) {
        let was_down = self.check_failed.swap(false, Ordering::Relaxed);
        if was_down {
            tracing::info!(
                "backend '{backend}': server {} passes its health check again",
                self.url
            );
        }
        self.answered(backend);
    }

    /// An active check failed: out until one passes.
    pub fn check_failed(&self, backend: &str, why: &str) {
        self.set_why(why);
        if !self.check_failed.swap(true, Ordering::Relaxed) {
            self.taken_out.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "backend '{backend}': server {} fails its health check: {why}",
                self.url
            );
        }
    }

    fn set_why(&self, why: &str) {
        let why = match why.char_indices().nth(MAX_WHY) {
            None => why.to_string(),
            Some((at, _)) => format!("{}…", &why[..at]),
        };
        *sync::lock(&self.why) = Some(why);
    }

    fn why(&self) -> String {
        sync::lock(&self.why)
            .clone()
            .unwrap_or_else(|| "failed".into())
    }

    /// Its health now.
    pub fn report(&self) -> Health {
        if self.check_failed.load(Ordering::Relaxed) {
            return Health::Down { why: self.why() };
        }
        match self.out_until.load(Ordering::Relaxed) {
            0 => Health::Up,
            until => Health::Out {
                why: self.why(),
                retry_in: Duration::from_millis(until.saturating_sub(now_ms())),
            },
        }
    }

    /// Counts a request to it in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> Load {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Load(self.clone())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request in flight on a server of a pool; dropped when its response is done.
pub struct Load(Arc<ServerState>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(backoff_ms: u64, max_ms: u64) -> HealthConfig {
        HealthConfig {
            backoff: Duration::from_millis(backoff_ms),
            backoff_max: Duration::from_millis(max_ms),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_an_answer_resets_it() {
        let h = health(100, 350);
        let s = ServerState::new("http://a");
        let mut now = LazyNow::default();
        assert!(matches!(s.avail(&mut now), Avail::In));
        let mut seen = Vec::new();
        for _ in 0..4 {
            s.failures.fetch_add(1, Ordering::Relaxed);
            seen.push(s.backoff(&h).as_millis());
        }
        assert_eq!(seen, [100, 200, 350, 350]);
        s.failed("b", "refused", &h);
        assert!(matches!(s.avail(&mut LazyNow::default()), Avail::Out));
        assert!(matches!(s.report(), Health::Out { .. }));
        s.answered("b");
        assert!(matches!(s.avail(&mut LazyNow::default()), Avail::In));
        assert_eq!(s.report(), Health::Up);
        assert_eq!(s.backoff(&h).as_millis(), 100);
    }

    #[test]
    fn after_the_backoff_one_request_gets_the_trial() {
        let h = health(1, 1000);
        let s = ServerState::new("http://a");
        s.failed("b", "refused", &h);
        std::thread::sleep(Duration::from_millis(5));
        let mut now = LazyNow::default();
        let Avail::Trial(until) = s.avail(&mut now) else {
            panic!("the back-off is over")
        };
        assert!(s.claim_trial(until, &h, &mut now));
        // The next one sees it out (for another back-off) and cannot claim it.
        assert!(!s.claim_trial(until, &h, &mut LazyNow::default()));
    }

    #[test]
    fn a_failed_check_holds_it_out_until_one_passes() {
        let s = ServerState::new("http://a");
        s.check_failed("b", "HTTP 503");
        assert!(matches!(s.avail(&mut LazyNow::default()), Avail::Out));
        assert_eq!(
            s.report().describe(),
            "down (health check: HTTP 503)".to_string()
        );
        s.check_passed("b");
        assert!(s.report().is_up());
    }
}
