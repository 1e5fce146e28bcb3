//! One access line, formatted by hand into a reused buffer: as text (`MESSAGE key=value ...`,
//! as `tracing`'s formatter wrote it) or as a journald entry with one field per value.

use std::fmt::Write as _;
use std::time::Duration;

use crate::observe::usage::Usage;

use super::ACCESS_TARGET;

/// One access line's values. The request id (kept only when it is plain ASCII, else made
/// anew) and the backend name (validated) need no escaping.
pub(super) struct Line<'a> {
    pub request_id: &'a [u8],
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub backend: &'a [u8],
    pub server: Option<&'a str>,
    pub fallback: Option<(&'a [u8], &'a str)>,
    pub waited: Option<Duration>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub headers: Duration,
    pub total: Duration,
    pub usage: Usage,
    /// The client token's name.
    pub client: Option<&'a str>,
    /// The model asked for, and the one the answer named when it differs.
    pub model: Option<&'a str>,
    pub backend_model: Option<&'a str>,
    /// Until the answer's first body byte.
    pub first_byte: Option<Duration>,
    /// Tokens generated per second.
    pub tokens_per_second: Option<f64>,
    pub outcome: &'a str,
}

impl Line<'_> {
    /// `GET /path 200 request_id="..." method=GET ... outcome="ok"`: the message, then every
    /// field (strings quoted as `{:?}` quotes them, the rest as they are).
    pub(super) fn text(&self, buf: &mut Vec<u8>) {
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
        let names = [
            (&b" client="[..], self.client),
            (b" model=", self.model),
            (b" backend_model=", self.backend_model),
        ];
        for (name, value) in names {
            if let Some(v) = value {
                buf.extend_from_slice(name);
                put_quoted(buf, v);
            }
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
        if let Some(t) = self.tokens_per_second {
            buf.extend_from_slice(b" tokens_per_s=");
            put_tenths(buf, t);
        }
        buf.extend_from_slice(b" headers_ms=");
        put_ms(buf, self.headers);
        if let Some(d) = self.first_byte {
            buf.extend_from_slice(b" ttfb_ms=");
            put_ms(buf, d);
        }
        buf.extend_from_slice(b" total_ms=");
        put_ms(buf, self.total);
        buf.extend_from_slice(b" outcome=");
        put_quoted(buf, self.outcome);
    }

    /// A journald entry (native protocol, every value length-prefixed): the fields
    /// `tracing-journald` sent, upper-cased, and `MESSAGE`.
    pub(super) fn journal(&self, buf: &mut Vec<u8>) {
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
        let names = [
            ("CLIENT", self.client),
            ("MODEL", self.model),
            ("BACKEND_MODEL", self.backend_model),
        ];
        for (name, value) in names {
            if let Some(v) = value {
                field(buf, name, |b| b.extend_from_slice(v.as_bytes()));
            }
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
        if let Some(t) = self.tokens_per_second {
            field(buf, "TOKENS_PER_S", |b| put_tenths(b, t));
        }
        field(buf, "HEADERS_MS", |b| put_ms(b, self.headers));
        if let Some(d) = self.first_byte {
            field(buf, "TTFB_MS", |b| put_ms(b, d));
        }
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

/// A non-negative number with one decimal (`38.2`).
fn put_tenths(buf: &mut Vec<u8>, n: f64) {
    let tenths = (n * 10.0).round().clamp(0.0, 1e18) as u64;
    put_u64(buf, tenths / 10);
    buf.push(b'.');
    put_u64(buf, tenths % 10);
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
            client: None,
            model: None,
            backend_model: None,
            first_byte: None,
            tokens_per_second: None,
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
            ..Usage::default()
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
    fn who_which_model_and_how_fast_are_in_the_text_and_the_journal() {
        let mut with = line("ok");
        with.client = Some("alice");
        with.model = Some("fast \"one\"");
        with.backend_model = Some("llama3:8b");
        with.first_byte = Some(Duration::from_micros(20_500));
        with.tokens_per_second = Some(38.25);
        let mut text = Vec::new();
        with.text(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#" backend="ollama" client="alice" model="fast \"one\"" backend_model="llama3:8b" status=200"#),
            "{text}"
        );
        assert!(
            text.contains(" tokens_per_s=38.3 headers_ms=1.234 ttfb_ms=20.500 total_ms="),
            "{text}"
        );
        let mut journal = Vec::new();
        with.journal(&mut journal);
        let journal = String::from_utf8_lossy(&journal).into_owned();
        for field in [
            "CLIENT",
            "MODEL",
            "BACKEND_MODEL",
            "TTFB_MS",
            "TOKENS_PER_S",
        ] {
            assert!(journal.contains(&format!("\n{field}\n")), "{field}");
        }
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
