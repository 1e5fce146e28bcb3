//! The access log: one line per request, written when the response is done (finished,
//! failed, or abandoned by the client), whatever `[log] level` says (`[log] access_log`).
//! The same record, when it is done, adds the request to the metrics of its route and backend
//! (when metrics are on).
//!
//! What is never logged: header values (so no key, token or cookie), request and response
//! bodies, and query strings (some clients put keys there).
//!
//! A routed request's record also adds it to the ledger ([`crate::observe::ledger`]): who,
//! which model, how many tokens, how fast.
//!
//! A line is formatted by hand ([`line`]), into a buffer the caller reuses. Where it goes, and
//! when, is [`crate::observe::logging`]'s business.

mod line;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Uri};
use tokio::time::Instant;

use self::line::Line;
use crate::body::{BodyError, Progress};
use crate::clients::Admitted;
use crate::observe::ledger::{Ledger, Served};
use crate::observe::metrics::{Done, Tally};
use crate::observe::usage::{IdTap, Usage, UsageScanner};

/// The `tracing` target access lines had, still their journald `TARGET`.
pub(crate) const ACCESS_TARGET: &str = "openai_proxy::access";

/// What one access line says. Filled in as the request goes; written when dropped, which is
/// when the response body is finished, failed, or abandoned by the client.
pub struct AccessRecord {
    /// Write the line (`log.access_log`); else the record only feeds the metrics.
    pub log: bool,
    /// The request id (`X-Request-ID`).
    pub request_id: HeaderValue,
    /// The request's method.
    pub method: Method,
    /// Normalized path, without the query string.
    path: LoggedPath,
    /// The route's prefix, once routed.
    pub route: Option<Arc<str>>,
    /// The backend that answered (its `X-Backend` value).
    pub backend: Option<HeaderValue>,
    /// Its name.
    pub backend_name: Option<Arc<str>>,
    /// The name of the client token it came with.
    pub client: Option<Arc<str>>,
    /// The model its body (or path) asked for.
    pub model: Option<Box<str>>,
    /// The server of a pool that answered.
    pub server: Option<Arc<str>>,
    /// The backend that failed before `backend` (the route's fallback) answered, and why.
    pub fallback: Option<(HeaderValue, &'static str)>,
    /// How long it waited for an on-demand backend: its turn in a swap group, its server to
    /// come up (`None`: not at all).
    pub waited: Option<Duration>,
    /// The response status.
    pub status: u16,
    /// Request body bytes, counted as they stream (shared with the body).
    pub bytes_in: Arc<AtomicU64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// When the request arrived.
    pub start: Instant,
    /// Time until the response headers were ready.
    pub headers_after: Duration,
    /// The body reached its end.
    pub completed: bool,
    /// What went wrong, if anything (never contains a secret).
    pub error: Option<String>,
    /// The counters it adds to when done (metrics on): its route and backend's once routed.
    tally: Option<Arc<Tally>>,
    /// Counted in flight on `tally`, and as a stream.
    in_flight: bool,
    stream: bool,
    /// A backend answered (its time to headers counts).
    pub answered: bool,
    /// Reads the token usage in the answer as it passes (answers that can carry one).
    pub(crate) usage: Option<UsageScanner>,
    /// Hands on the answer's id (a response of the Responses API, remembered for follow-ups).
    pub(crate) id_tap: Option<Box<IdTap>>,
    /// When the answer's first body byte passed.
    first_byte: Option<Instant>,
    /// Where a routed request is added when done.
    ledger: Option<Arc<Ledger>>,
    /// A limited client's request: in flight until done, its tokens counted then.
    pub(crate) admitted: Option<Admitted>,
}

impl std::fmt::Debug for AccessRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecord")
            .field("request_id", &self.request_id)
            .field("route", &self.route)
            .field("backend", &self.backend)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The response body tells the record what it passed.
impl Progress for AccessRecord {
    fn data(&mut self, data: &[u8]) {
        if self.first_byte.is_none() && !data.is_empty() {
            self.first_byte = Some(Instant::now());
        }
        self.bytes_out += data.len() as u64;
        if let Some(u) = &mut self.usage {
            u.feed(data);
        }
        if let Some(t) = &mut self.id_tap {
            t.feed(data);
        }
    }

    fn failed(&mut self, error: &BodyError) {
        self.error = Some(error.in_response());
    }

    fn end(&mut self) {
        self.completed = true;
    }
}

impl AccessRecord {
    /// The record of a request with id `request_id` that arrived at `start`.
    pub fn new(request_id: HeaderValue, method: Method, start: Instant) -> Self {
        AccessRecord {
            log: true,
            request_id,
            method,
            path: LoggedPath::Owned(String::new()),
            route: None,
            backend: None,
            backend_name: None,
            client: None,
            model: None,
            server: None,
            fallback: None,
            waited: None,
            status: 0,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            start,
            headers_after: Duration::ZERO,
            completed: false,
            error: None,
            tally: None,
            in_flight: false,
            stream: false,
            answered: false,
            usage: None,
            id_tap: None,
            first_byte: None,
            ledger: None,
            admitted: None,
        }
    }

    /// Adds the request to `ledger` when it is done (if it was routed).
    pub fn record_in(&mut self, ledger: &Arc<Ledger>) {
        self.ledger = Some(ledger.clone());
    }

    /// Counts the request on `tally` (the proxy's own answers', until it is routed).
    pub fn count_on(&mut self, tally: Option<&Arc<Tally>>) {
        self.tally = tally.cloned();
    }

    /// The request goes to a backend: counted in flight on `tally` (that route and backend's)
    /// from now on, instead of where it was.
    pub fn route_to(&mut self, tally: Option<&Arc<Tally>>) {
        let Some(tally) = tally else {
            return;
        };
        if let (true, Some(old)) = (self.in_flight, &self.tally) {
            old.leave();
        }
        tally.enter();
        self.tally = Some(tally.clone());
        self.in_flight = true;
    }

    /// Whether it adds to metrics.
    pub fn counts(&self) -> bool {
        self.tally.is_some()
    }

    /// Its response is a stream of events (counted as one while it lasts).
    pub fn streaming(&mut self) {
        if let (Some(t), false) = (&self.tally, self.stream) {
            t.stream();
            self.stream = true;
        }
    }

    /// Sets the path: `normalized`, or the client's when it could not be normalized. A path
    /// that normalizing left as it was is kept as a reference to the request's URI (no copy).
    pub fn set_path(&mut self, uri: &Uri, normalized: Option<&str>) {
        self.path = match (uri.path_and_query(), normalized) {
            (Some(pq), Some(n)) if pq.path() == n => LoggedPath::Uri(pq.clone()),
            (Some(pq), None) => LoggedPath::Uri(pq.clone()),
            (_, n) => LoggedPath::Owned(n.unwrap_or_else(|| uri.path()).to_string()),
        };
    }

    /// What the answer said, once it is over; a stream whose last event passed counts as
    /// complete even if its client went away before the connection's end (SDKs do).
    fn ended(&mut self, total: Duration) -> Ended {
        let (usage, answered) = match &mut self.usage {
            Some(scanner) => {
                let usage = scanner.finish();
                self.completed |= scanner.ended();
                (usage, scanner.take_model())
            }
            None => (Usage::default(), None),
        };
        // Of a backend's answer (the proxy's own have no time to wait for).
        let first_byte = (self.first_byte)
            .filter(|_| self.answered)
            .map(|t| t.saturating_duration_since(self.start));
        // Tokens generated per second: the backend's own measure (llama.cpp's), else, for a
        // stream, the tokens over the time from its first byte to its end.
        let tokens_per_second = usage.generated_per_second.or_else(|| {
            let generating = total.checked_sub(first_byte?)?.as_secs_f64();
            let tokens = usage.completion.filter(|&n| n > 1)?;
            (self.streamed() && generating >= 0.001).then(|| tokens as f64 / generating)
        });
        Ended {
            usage,
            answered,
            first_byte,
            tokens_per_second,
        }
    }

    /// Its answer is a stream (of events, or Ollama's lines).
    fn streamed(&self) -> bool {
        self.stream || self.usage.as_ref().is_some_and(UsageScanner::is_stream)
    }

    fn outcome(&self) -> &str {
        match (&self.error, self.completed) {
            (Some(e), _) => e.as_str(),
            (None, true) => "ok",
            (None, false) => "client went away before the response was complete",
        }
    }

    /// The values of one line, as they are when the request is done (`total`: since it
    /// came).
    fn line<'a>(&'a self, total: Duration, end: &'a Ended) -> Line<'a> {
        let model = self.model.as_deref();
        let answered = end.answered.as_deref();
        Line {
            request_id: self.request_id.as_bytes(),
            method: self.method.as_str(),
            path: match &self.path {
                LoggedPath::Uri(pq) => pq.path(),
                LoggedPath::Owned(p) => p,
            },
            route: self.route.as_deref().unwrap_or("-"),
            backend: self.backend.as_ref().map_or(b"-", |b| b.as_bytes()),
            server: self.server.as_deref(),
            fallback: self.fallback.as_ref().map(|(b, why)| (b.as_bytes(), *why)),
            waited: self.waited,
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
            headers: self.headers_after,
            total,
            usage: end.usage,
            client: self.client.as_deref(),
            model: model.or(answered),
            backend_model: answered.filter(|a| model.is_some_and(|m| m != *a)),
            first_byte: end.first_byte,
            tokens_per_second: end.tokens_per_second,
            outcome: self.outcome(),
        }
    }
}

impl AccessRecord {
    /// Appends the line as text (`GET /path 200 request_id="..." ...`, without time and
    /// level) to `buf`.
    pub fn text(&self, buf: &mut Vec<u8>) {
        let end = Ended::default();
        self.line(self.start.elapsed(), &end).text(buf);
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        let end = self.ended(total);
        if self.log {
            crate::observe::logging::access(|out| match out {
                crate::observe::logging::Format::Text(buf) => self.line(total, &end).text(buf),
                crate::observe::logging::Format::Journal(buf) => {
                    self.line(total, &end).journal(buf)
                }
            });
        }
        // Before the ledger's record: a save of the usage file after it sees this day's count.
        if let Some(admitted) = self.admitted.take() {
            admitted.done(end.usage.tokens(), self.start + total);
        }
        if let (Some(ledger), Some(route), Some(backend)) =
            (&self.ledger, &self.route, &self.backend_name)
        {
            ledger.record(Served {
                route,
                backend,
                client: self.client.as_ref(),
                asked: self.model.take(),
                answered: end.answered,
                status: self.status,
                usage: end.usage,
                total,
                first_byte: end.first_byte,
                stream: self.stream || self.usage.as_ref().is_some_and(UsageScanner::is_stream),
                tokens_per_second: end.tokens_per_second,
            });
        }
        if let Some(t) = &self.tally {
            t.done(&Done {
                status: self.status,
                bytes_in: self.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.bytes_out,
                headers: self.answered.then_some(self.headers_after),
                total,
                in_flight: self.in_flight,
                stream: self.stream,
            });
        }
    }
}

/// What an answer said, read once it is over.
#[derive(Debug, Default)]
struct Ended {
    usage: Usage,
    /// The model it named.
    answered: Option<Box<str>>,
    /// Its first body byte came this long after the request.
    first_byte: Option<Duration>,
    /// Tokens generated per second.
    tokens_per_second: Option<f64>,
}

/// The path an access line shows.
#[derive(Debug)]
enum LoggedPath {
    /// The path of the request's own URI.
    Uri(PathAndQuery),
    Owned(String),
}
