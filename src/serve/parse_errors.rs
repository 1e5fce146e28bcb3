//! Requests hyper cannot parse get OpenAI-shaped JSON too.
//!
//! hyper's HTTP/1 server answers a request head it cannot parse (a header folded onto a
//! continuation line, a NUL or other control character, an invalid or conflicting
//! `Content-Length`, an invalid `Transfer-Encoding`, a head over `server.max_header_size`)
//! itself, before any service sees the request, with a fixed response and an empty body, then
//! closes the connection. hyper 1.x has no setting or hook for that answer, so [`JsonErrors`]
//! wraps each client connection's IO and rewrites exactly those answers.
//!
//! hyper writes one as `HTTP/1.1 {400|414|431} REASON` (`HTTP/1.0` after an HTTP/1.0
//! request), `connection: close` (unless HTTP/1.0), `content-length: 0` and its `date`,
//! nothing else (every response of the proxy's own carries `x-request-id`), as the last bytes
//! before it shuts the connection down. A write that ends with such bytes is held back:
//!
//! - when hyper shuts the connection down within the same poll of the connection (what it
//!   does after such an answer: write, flush, shut down), a JSON response with the same status
//!   and date, and `connection: close`, goes out instead;
//! - when anything else comes first (another write, or the connection polled again: a
//!   backend's body just happened to end with those bytes and the connection goes on), the
//!   held bytes go out unchanged.
//!
//! The connection's future counts its polls ([`Polls::count`]) for the wrapper to tell.
//!
//! Only a backend whose body ends with exactly such an answer, on the last response of a
//! connection, would see its last bytes replaced; no error is ever lost.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::json_error;

/// The answers hyper makes itself (`proto/h1/role.rs`, `Server::on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HyperAnswer {
    BadRequest,
    UriTooLong,
    HeadersTooLarge,
}

const ANSWERS: [HyperAnswer; 3] = [
    HyperAnswer::BadRequest,
    HyperAnswer::UriTooLong,
    HyperAnswer::HeadersTooLarge,
];

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const DATE_LEN: usize = 29;
const END: &[u8] = b" GMT\r\n\r\n";

impl HyperAnswer {
    /// hyper's status line, after the version.
    fn status_line(self) -> &'static [u8] {
        match self {
            HyperAnswer::BadRequest => b"400 Bad Request\r\n",
            HyperAnswer::UriTooLong => b"414 URI Too Long\r\n",
            HyperAnswer::HeadersTooLarge => b"431 Request Header Fields Too Large\r\n",
        }
    }

    /// The JSON response in its place, with hyper's version (`HTTP/1.1 ` or `HTTP/1.0 `) and
    /// `date`.
    fn json_response(self, version: &[u8], date: &[u8]) -> Vec<u8> {
        let (status, message, code) = match self {
            HyperAnswer::BadRequest => (
                "400 Bad Request",
                "the request could not be parsed: its request line or a header is malformed \
                 (for example a header folded onto a continuation line, a control character \
                 such as NUL, an invalid or conflicting Content-Length, or an invalid \
                 Transfer-Encoding)",
                "invalid_request",
            ),
            HyperAnswer::UriTooLong => (
                "414 URI Too Long",
                "the request target is too long",
                "uri_too_long",
            ),
            HyperAnswer::HeadersTooLarge => (
                "431 Request Header Fields Too Large",
                "the request line and headers are too large: over server.max_header_size, or \
                 more than 100 header lines",
                "headers_too_large",
            ),
        };
        let body = json_error(message, "invalid_request_error", code);
        let mut out = version.to_vec();
        out.extend_from_slice(
            format!(
                "{status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\ndate: ",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }
}

/// One of hyper's own answers at the end of a write.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    /// Where it starts in the write.
    at: usize,
    answer: HyperAnswer,
    /// `HTTP/1.1 ` or `HTTP/1.0 `, and the date, as hyper wrote them.
    version: &'static [u8],
    date: [u8; DATE_LEN],
}

/// Whether `buf` ends with one of hyper's own answers (read from its end backwards).
fn recognise(buf: &[u8]) -> Option<Found> {
    if !buf.ends_with(END) {
        return None;
    }
    let rest = buf.strip_suffix(b"\r\n\r\n")?;
    let (rest, date) = rest.split_at(rest.len().checked_sub(DATE_LEN)?);
    let rest = rest.strip_suffix(b"content-length: 0\r\ndate: ")?;
    let rest = rest.strip_suffix(b"connection: close\r\n").unwrap_or(rest);
    ANSWERS.into_iter().find_map(|answer| {
        let rest = rest.strip_suffix(answer.status_line())?;
        let version: &'static [u8] = [&b"HTTP/1.1 "[..], &b"HTTP/1.0 "[..]]
            .into_iter()
            .find(|v| rest.ends_with(v))?;
        Some(Found {
            at: rest.len() - version.len(),
            answer,
            version,
            date: date.try_into().ok()?,
        })
    })
}

/// How many times the connection's future was polled: what tells "hyper shuts down right
/// after its answer" from "the connection goes on"; and whether that future has ended (after
/// which the IO, if hyper handed it over to a WebSocket, passes everything unchanged).
#[derive(Clone, Default)]
pub(super) struct Polls(Arc<(AtomicU32, AtomicBool)>);

impl Polls {
    fn now(&self) -> u32 {
        self.0 .0.load(Ordering::Relaxed)
    }

    fn ended(&self) -> bool {
        self.0 .1.load(Ordering::Relaxed)
    }

    /// Polls `conn` to its end, counting each poll.
    pub(super) fn count<F: Future + Unpin>(self, mut conn: F) -> impl Future<Output = F::Output> {
        std::future::poll_fn(move |cx| {
            self.0 .0.fetch_add(1, Ordering::Relaxed);
            let r = Pin::new(&mut conn).poll(cx);
            if r.is_ready() {
                self.0 .1.store(true, Ordering::Relaxed);
            }
            r
        })
    }
}

/// An answer of hyper's, held back until it is clear whether it ends the connection.
struct HeldBack {
    bytes: Vec<u8>,
    found: Found,
    /// The poll of the connection it was written in.
    poll: u32,
    /// How much of `bytes` went out as it was (once it started, it goes out unchanged).
    sent: usize,
}

/// A client connection whose parse-error answers come out as JSON (see the module).
pub(super) struct JsonErrors<T> {
    io: T,
    polls: Polls,
    held: Option<HeldBack>,
    /// The JSON answer while it is written during shutdown, and how much is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> JsonErrors<T> {
    /// The wrapped IO, and the poll count its connection's future must keep
    /// ([`Polls::count`]).
    pub(super) fn new(io: T) -> (Self, Polls) {
        let polls = Polls::default();
        let io = JsonErrors {
            io,
            polls: polls.clone(),
            held: None,
            replacement: None,
        };
        (io, polls)
    }
}

/// Writes all of `bytes[*sent..]`.
fn poll_write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    bytes: &[u8],
    sent: &mut usize,
) -> Poll<io::Result<()>> {
    while *sent < bytes.len() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*sent..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *sent += n;
    }
    Poll::Ready(Ok(()))
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Sends held bytes unchanged: they were not hyper's last word.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(h) = &mut self.held {
            ready!(poll_write_all(&mut self.io, cx, &h.bytes, &mut h.sent))?;
            self.held = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        if this.polls.ended() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        let Some(found) = recognise(buf) else {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        };
        let at = found.at;
        if at > 0 {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &buf[..at]))?;
            if n < at {
                // hyper comes back with the rest, which still ends with the answer.
                return Poll::Ready(Ok(n));
            }
        }
        this.held = Some(HeldBack {
            bytes: buf[at..].to_vec(),
            found,
            poll: this.polls.now(),
            sent: 0,
        });
        // Be polled again: unless hyper shuts down in this poll, the next one releases the
        // bytes.
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's own answer is alone in its head buffer (nothing is queued behind it).
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        let this = self.get_mut();
        ready!(this.poll_release(cx))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this
            .held
            .as_ref()
            .is_some_and(|h| h.poll != this.polls.now())
        {
            ready!(this.poll_release(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.held.take() {
            Some(h) if h.sent > 0 || h.poll != this.polls.now() => {
                this.held = Some(h);
                ready!(this.poll_release(cx))?;
            }
            Some(HeldBack { found: f, .. }) => {
                this.replacement = Some((f.answer.json_response(f.version, &f.date), 0));
            }
            None => {}
        }
        if let Some((bytes, sent)) = &mut this.replacement {
            ready!(poll_write_all(&mut this.io, cx, bytes, sent))?;
            ready!(Pin::new(&mut this.io).poll_flush(cx))?;
            this.replacement = None;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sat, 28 Nov 2026 10:00:00 GMT";

    fn hyper_answer(version: &str, a: HyperAnswer, close: bool) -> Vec<u8> {
        let mut v = version.as_bytes().to_vec();
        v.extend_from_slice(a.status_line());
        if close {
            v.extend_from_slice(b"connection: close\r\n");
        }
        v.extend_from_slice(format!("content-length: 0\r\ndate: {DATE}\r\n\r\n").as_bytes());
        v
    }

    #[test]
    fn recognises_only_hypers_own_answers() {
        for a in ANSWERS {
            for (version, close) in [("HTTP/1.1 ", true), ("HTTP/1.0 ", false)] {
                let bytes = hyper_answer(version, a, close);
                let found = recognise(&bytes).expect("recognised");
                assert_eq!((found.at, found.answer), (0, a));
                assert_eq!(found.version, version.as_bytes());
                assert_eq!(&found.date, DATE.as_bytes());
                let mut after = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_vec();
                let at = after.len();
                after.extend_from_slice(&bytes);
                assert_eq!(recognise(&after).map(|f| f.at), Some(at));
            }
        }
        let own = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\ndate: {DATE}\r\n\r\n"
        );
        assert_eq!(recognise(own.as_bytes()), None);
        let other = format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
        assert_eq!(recognise(other.as_bytes()), None);
        assert_eq!(recognise(b"0\r\n\r\n"), None);
        assert_eq!(recognise(b""), None);
    }

    #[test]
    fn the_json_answer_keeps_status_and_date_and_closes() {
        let bytes = HyperAnswer::HeadersTooLarge.json_response(b"HTTP/1.1 ", DATE.as_bytes());
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(head.contains(&format!("\r\ndate: {DATE}")));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
    }
}
