//! The access log: one line per request, written when the response is done (finished,
//! failed, or abandoned by the client), whatever `[log] level` says (`[log] access_log`).
//!
//! What is never logged: header values (so no key, token or cookie), request and response
//! bodies, and query strings (some clients put keys there).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};
use tokio::time::Instant;

/// The `tracing` target of access lines.
pub const ACCESS_TARGET: &str = "openai_proxy::access";

/// What one access line says. Filled in as the request goes; written when dropped, which is
/// when the response body is finished, failed, or abandoned by the client.
#[derive(Debug)]
pub struct AccessRecord {
    pub request_id: HeaderValue,
    pub method: Method,
    /// Normalized path, without the query string.
    pub path: String,
    pub route: Option<Arc<str>>,
    pub backend: Option<HeaderValue>,
    pub status: u16,
    /// Request body bytes, counted as they stream (shared with the body).
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: u64,
    pub start: Instant,
    /// Time until the response headers were ready.
    pub headers_after: Duration,
    /// The body reached its end.
    pub completed: bool,
    /// What went wrong, if anything (never contains a secret).
    pub error: Option<String>,
}

impl AccessRecord {
    pub fn new(request_id: HeaderValue, method: Method, start: Instant) -> Self {
        AccessRecord {
            request_id,
            method,
            path: String::new(),
            route: None,
            backend: None,
            status: 0,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            start,
            headers_after: Duration::ZERO,
            completed: false,
            error: None,
        }
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let outcome = match (&self.error, self.completed) {
            (Some(e), _) => e.as_str(),
            (None, true) => "ok",
            (None, false) => "client went away before the response was complete",
        };
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            route = self.route.as_deref().unwrap_or("-"),
            backend = self.backend.as_ref().and_then(|b| b.to_str().ok()).unwrap_or("-"),
            status = self.status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            headers_ms = %format_args!("{:.3}", self.headers_after.as_secs_f64() * 1000.0),
            total_ms = %format_args!("{:.3}", self.start.elapsed().as_secs_f64() * 1000.0),
            outcome,
            "{} {} {}",
            self.method,
            self.path,
            self.status,
        );
    }
}
