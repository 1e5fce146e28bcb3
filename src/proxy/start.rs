//! Waiting for an on-demand backend before sending to it: for its turn in its swap group
//! ([`crate::upstream::swap`]), and, with `start_timeout`, for its server to come up: an
//! attempt whose connection is refused or reset before any answer is made again after a short
//! back-off (50 ms, doubling up to 500 ms), its body replayed, until `start_timeout` has
//! passed since the request was routed; then the answer is 504, naming the backend. The
//! response time-out of each attempt starts with that attempt, so it counts from when the
//! server accepted. The access line shows the wait (`wait_ms`).

use std::time::Duration;

use tokio::time::Instant;

use super::Proxy;
use crate::error::ProxyError;
use crate::upstream::swap::Turn;
use crate::upstream::Backend;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A request's wait for an on-demand backend.
pub(super) struct Waiting {
    since: Instant,
    until: Instant,
    /// Attempts refused or reset are made again (`start_timeout` is set).
    retries: bool,
    backoff: Duration,
    /// Its turn in the swap group, held until its response body ends.
    pub turn: Option<Turn>,
}

impl Proxy {
    /// For a backend that waits ([`crate::config::BackendConfig::waits`]): its turn in its
    /// swap group, when it has one; the idle connections to the member it replaces are
    /// closed before it goes on. `None` for other backends.
    pub(super) async fn wait_turn(&self, backend: &Backend) -> Result<Option<Waiting>, ProxyError> {
        let bc = &backend.config;
        if !bc.waits() {
            return Ok(None);
        }
        let since = Instant::now();
        let limit = bc.start_wait();
        let mut w = Waiting {
            since,
            until: since + limit,
            retries: bc.start_timeout.is_some(),
            backoff: FIRST_BACKOFF,
            turn: None,
        };
        let Some(group) = &backend.swap else {
            return Ok(Some(w));
        };
        match group.enter(&bc.name, limit).await {
            Ok(entered) => {
                if let Some(out) = &entered.swapped_out {
                    if let Some(b) = self.backends.iter().find(|b| *b.config.name == **out) {
                        tracing::debug!(
                            "swap group '{}': '{out}' swapped out for '{}'",
                            group.name,
                            bc.name
                        );
                        b.close_idle();
                    }
                }
                w.turn = Some(entered.turn);
                Ok(Some(w))
            }
            Err(busy) => Err(ProxyError::SwapTimeout {
                backend: bc.name.clone(),
                group: group.name.to_string(),
                after: limit,
                detail: match busy.current {
                    Some(m) => format!("'{m}' still had {} request(s) in flight", busy.in_flight),
                    None => "the requests before it were still waiting".to_string(),
                },
            }),
        }
    }
}

impl Waiting {
    /// After an attempt refused or reset before any answer: waits the back-off and says
    /// `true` (make it again), or `false` without a `start_timeout` or once it has passed.
    pub(super) async fn again(&mut self) -> bool {
        if !self.retries {
            return false;
        }
        let now = Instant::now();
        if now >= self.until {
            return false;
        }
        tokio::time::sleep_until((now + self.backoff).min(self.until)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }

    /// How long the request has waited so far.
    pub(super) fn waited(&self) -> Duration {
        self.since.elapsed()
    }

    /// The 504 of a server that did not come up: `detail` is why the last attempt failed.
    pub(super) fn timed_out(&self, backend: &Backend, url: &str, detail: String) -> ProxyError {
        ProxyError::StartTimeout {
            backend: backend.config.name.clone(),
            url: url.to_string(),
            after: self.until - self.since,
            detail,
        }
    }
}
