//! The access log: one line per request, written when the response is done (finished,
//! failed, or abandoned by the client), whatever `[log] level` says (`[log] access_log`).
//! The same record, when it is done, adds the request to the metrics of its route and backend
//! (when metrics are on).
//!
//! What is never logged: header values (so no key, token or cookie), request and response
//! bodies, and query strings (some clients put keys there).
//!
//! A line is formatted here by hand, into a buffer the caller reuses: as text, exactly as
//! `tracing`'s formatter wrote it before (`MESSAGE key=value ...`), or as a journald entry
//! with one field per value. Where it goes, and when, is [`crate::observe::logging`]'s business.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Uri};
use tokio::time::Instant;

use crate::body::{BodyError, Progress};
use crate::observe::metrics::{Done, Tally};
use crate::observe::usage::{Usage, UsageScanner};

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
        self.bytes_out += data.len() as u64;
        if let Some(u) = &mut self.usage {
            u.feed(data);
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
        }
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

    /// The answer's usage, once it is over; a stream whose last event passed counts as
    /// complete even if its client went away before the connection's end (SDKs do).
    fn take_usage(&mut self) -> Usage {
        let Some(scanner) = &mut self.usage else {
            return Usage::default();
        };
        let usage = scanner.finish();
        self.completed |= scanner.ended();
        usage
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
    fn line(&self, total: Duration, usage: Usage) -> Line<'_> {
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
            usage,
            outcome: self.outcome(),
        }
    }
}

impl AccessRecord {
    /// Appends the line as text (`GET /path 200 request_id="..." ...`, without time and
    /// level) to `buf`.
    pub fn text(&self, buf: &mut Vec<u8>) {
        self.line(self.start.elapsed(), Usage::default()).text(buf);
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        let usage = self.take_usage();
        if self.log {
            crate::observe::logging::access(|out| match out {
                crate::observe::logging::Format::Text(buf) => self.line(total, usage).text(buf),
                crate::observe::logging::Format::Journal(buf) => {
                    self.line(total, usage).journal(buf)
                }
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
                usage,
            });
        }
    }
}

/// The path an access line shows.
#[derive(Debug)]
enum LoggedPath {
    /// The path of the request's own URI.
    Uri(PathAndQuery),
    Owned(String),
}

/// One access line's values. The request id (kept only when it is plain ASCII, else made
/// anew) and the backend name (validated) need no escaping.
struct Line<'a> {
    request_id: &'a [u8],
    method: &'a str,
    path: &'a str,
    route: &'a str,
    backend: &'a [u8],
    server: Option<&'a str>,
    fallback: Option<(&'a [u8], &'a str)>,
    waited: Option<Duration>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    headers: Duration,
    total: Duration,
    usage: Usage,
    outcome: &'a str,
}

impl Line<'_> {
    /// `GET /path 200 request_id="..." method=GET ... outcome="ok"`: the message, then every
    /// field (strings quoted as `{:?}` quotes them, the rest as they are).
    fn text(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.method.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(self.path.as_bytes());
        buf.push(b' ');
        put_u64(buf, u64::from(self.status));
        buf.extend_from_slice(b" request_id=");
        put_plain_quoted(buf, self.request_id);
        buf.extend_from_slice(b" method=");
        buf.extend_from_slice(self.method.as_bytes());
        buf.extend_from_slice(b" path=");
        buf.extend_from_slice(self.path.as_bytes());
        buf.extend_from_slice(b" route=");
        put_quoted(buf, self.route);
        buf.extend_from_slice(b" backend=");
        put_plain_quoted(buf, self.backend);
        if let Some(server) = self.server {
            buf.extend_from_slice(b" server=");
            put_quoted(buf, server);
        }
        if let Some((from, why)) = self.fallback {
            buf.extend_from_slice(b" fallback_from=");
            put_plain_quoted(buf, from);
            buf.extend_from_slice(b" fallback_reason=");
            put_plain_quoted(buf, why.as_bytes());
        }
        if let Some(w) = self.waited {
            buf.extend_from_slice(b" wait_ms=");
            put_ms(buf, w);
        }
        buf.extend_from_slice(b" status=");
        put_u64(buf, u64::from(self.status));
        buf.extend_from_slice(b" bytes_in=");
        put_u64(buf, self.bytes_in);
        buf.extend_from_slice(b" bytes_out=");
        put_u64(buf, self.bytes_out);
        if let Some(n) = self.usage.prompt {
            buf.extend_from_slice(b" prompt_tokens=");
            put_u64(buf, n);
        }
        if let Some(n) = self.usage.completion {
            buf.extend_from_slice(b" completion_tokens=");
            put_u64(buf, n);
        }
        buf.extend_from_slice(b" headers_ms=");
        put_ms(buf, self.headers);
        buf.extend_from_slice(b" total_ms=");
        put_ms(buf, self.total);
        buf.extend_from_slice(b" outcome=");
        put_quoted(buf, self.outcome);
    }

    /// A journald entry (native protocol, every value length-prefixed): the fields
    /// `tracing-journald` sent, upper-cased, and `MESSAGE`.
    fn journal(&self, buf: &mut Vec<u8>) {
        field(buf, "PRIORITY", |b| b.push(b'5'));
        field(buf, "TARGET", |b| {
            b.extend_from_slice(ACCESS_TARGET.as_bytes())
        });
        field(buf, "SYSLOG_IDENTIFIER", |b| {
            b.extend_from_slice(crate::observe::logging::IDENTIFIER.as_bytes())
        });
        field(buf, "MESSAGE", |b| {
            b.extend_from_slice(self.method.as_bytes());
            b.push(b' ');
            b.extend_from_slice(self.path.as_bytes());
            b.push(b' ');
            put_u64(b, u64::from(self.status));
        });
        let strings: [(&str, &[u8]); 5] = [
            ("REQUEST_ID", self.request_id),
            ("METHOD", self.method.as_bytes()),
            ("PATH", self.path.as_bytes()),
            ("ROUTE", self.route.as_bytes()),
            ("BACKEND", self.backend),
        ];
        for (name, value) in strings {
            field(buf, name, |b| b.extend_from_slice(value));
        }
        if let Some(server) = self.server {
            field(buf, "SERVER", |b| b.extend_from_slice(server.as_bytes()));
        }
        if let Some((from, why)) = self.fallback {
            field(buf, "FALLBACK_FROM", |b| b.extend_from_slice(from));
            field(buf, "FALLBACK_REASON", |b| {
                b.extend_from_slice(why.as_bytes())
            });
        }
        if let Some(w) = self.waited {
            field(buf, "WAIT_MS", |b| put_ms(b, w));
        }
        let numbers = [
            ("STATUS", u64::from(self.status)),
            ("BYTES_IN", self.bytes_in),
            ("BYTES_OUT", self.bytes_out),
        ];
        for (name, value) in numbers {
            field(buf, name, |b| put_u64(b, value));
        }
        let tokens = [
            ("PROMPT_TOKENS", self.usage.prompt),
            ("COMPLETION_TOKENS", self.usage.completion),
        ];
        for (name, value) in tokens {
            if let Some(n) = value {
                field(buf, name, |b| put_u64(b, n));
            }
        }
        field(buf, "HEADERS_MS", |b| put_ms(b, self.headers));
        field(buf, "TOTAL_MS", |b| put_ms(b, self.total));
        field(buf, "OUTCOME", |b| {
            b.extend_from_slice(self.outcome.as_bytes())
        });
    }
}

/// `NAME\n`, the value's length (64-bit little endian), the value, `\n`.
fn field(buf: &mut Vec<u8>, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    let at = buf.len();
    buf.extend_from_slice(&[0; 8]);
    value(buf);
    let len = (buf.len() - at - 8) as u64;
    buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
    buf.push(b'\n');
}

/// A number in decimal.
pub(crate) fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (`{:.3}`), rounded to the nearest microsecond.
fn put_ms(buf: &mut Vec<u8>, d: Duration) {
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((d.subsec_nanos() + 500) / 1000));
    put_u64(buf, micros / 1000);
    buf.push(b'.');
    // The three decimals with their leading zeros: `1xyz` without its `1`.
    let mut digits = itoa::Buffer::new();
    buf.extend_from_slice(&digits.format(1000 + micros % 1000).as_bytes()[1..]);
}

/// Bytes known to need no escaping, in double quotes.
fn put_plain_quoted(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    buf.extend_from_slice(s);
    buf.push(b'"');
}

/// A string in double quotes, escaped as `{:?}` escapes it. Plain printable ASCII (every
/// request id, route and backend name, most outcomes) is copied as it is.
fn put_quoted(buf: &mut Vec<u8>, s: &str) {
    /// Bytes `{:?}` leaves alone: printable ASCII but `"` and `\`.
    static PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = b' ';
        while b <= b'~' {
            t[b as usize] = b != b'"' && b != b'\\';
            b += 1;
        }
        t
    };
    if s.bytes().all(|b| PLAIN[b as usize]) {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        let mut quoted = String::with_capacity(s.len() + 8);
        let _ = write!(quoted, "{s:?}");
        buf.extend_from_slice(quoted.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(outcome: &str) -> Line<'_> {
        Line {
            request_id: b"rid-1",
            method: "POST",
            path: "/v1/chat/completions",
            route: "/v1/chat/completions",
            backend: b"ollama",
            server: None,
            fallback: None,
            waited: None,
            status: 200,
            bytes_in: 28,
            bytes_out: 0,
            headers: Duration::from_micros(1234),
            total: Duration::from_nanos(98_765_432),
            usage: Usage::default(),
            outcome,
        }
    }

    #[test]
    fn text_is_what_the_tracing_formatter_wrote() {
        let mut buf = Vec::new();
        line("ok").text(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "POST /v1/chat/completions 200 request_id=\"rid-1\" method=POST \
             path=/v1/chat/completions route=\"/v1/chat/completions\" backend=\"ollama\" \
             status=200 bytes_in=28 bytes_out=0 headers_ms=1.234 total_ms=98.765 outcome=\"ok\""
        );
        let mut buf = Vec::new();
        line("said \"no\"\n").text(&mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.ends_with(r#" outcome="said \"no\"\n""#),
            "escaped as {{:?}} does: {text}"
        );
    }

    #[test]
    fn token_counts_are_in_the_text_and_the_journal_when_found() {
        let mut with = line("ok");
        with.usage = Usage {
            prompt: Some(12),
            completion: Some(3),
        };
        let mut text = Vec::new();
        with.text(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(" bytes_out=0 prompt_tokens=12 completion_tokens=3 headers_ms="),
            "{text}"
        );
        let mut journal = Vec::new();
        with.journal(&mut journal);
        let journal = String::from_utf8_lossy(&journal).into_owned();
        for field in ["PROMPT_TOKENS", "COMPLETION_TOKENS"] {
            assert!(journal.contains(&format!("\n{field}\n")), "{field}");
        }
        let mut text = Vec::new();
        line("ok").text(&mut text);
        assert!(!String::from_utf8(text).unwrap().contains("_tokens="));
    }

    #[test]
    fn numbers() {
        for (n, s) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut buf = Vec::new();
            put_u64(&mut buf, n);
            assert_eq!(buf, s.as_bytes());
        }
        for (d, s) in [
            (Duration::ZERO, "0.000"),
            (Duration::from_nanos(499), "0.000"),
            (Duration::from_nanos(500), "0.001"),
            (Duration::from_micros(12_345_678), "12345.678"),
        ] {
            let mut buf = Vec::new();
            put_ms(&mut buf, d);
            assert_eq!(buf, s.as_bytes());
            assert_eq!(format!("{:.3}", d.as_secs_f64() * 1000.0).len(), s.len());
        }
    }

    #[test]
    fn journal_entries_have_one_field_per_value() {
        let mut buf = Vec::new();
        line("ok").journal(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        for name in [
            "PRIORITY",
            "TARGET",
            "SYSLOG_IDENTIFIER",
            "MESSAGE",
            "REQUEST_ID",
            "METHOD",
            "PATH",
            "ROUTE",
            "BACKEND",
            "STATUS",
            "BYTES_IN",
            "BYTES_OUT",
            "HEADERS_MS",
            "TOTAL_MS",
            "OUTCOME",
        ] {
            assert!(
                text.contains(&format!("\n{name}\n")) || text.starts_with(name),
                "{name}"
            );
        }
        // MESSAGE: its length, then the value.
        let at = buf.windows(8).position(|w| w == b"MESSAGE\n").unwrap() + 8;
        let len = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap()) as usize;
        assert_eq!(&buf[at + 8..at + 8 + len], b"POST /v1/chat/completions 200");
    }
}
