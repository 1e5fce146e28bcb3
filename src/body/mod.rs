//! Streaming bodies. Nothing here buffers: each frame is passed on as it arrives.
//!
//! - [`RequestBody`]: the client's upload on its way to a backend, cut off with an error when it
//!   passes `server.max_body_size` or stalls longer than the backend's `idle_timeout`. Its
//!   first frames can be read before it is sent (to find the request's `model`) and are then
//!   sent first, as they came or with a span replaced (an alias). A body that may have to be
//!   sent again (to another server, or to a fallback) is kept while in flight, up to a limit
//!   ([`Replay`]); each attempt then reads it from the start.
//! - [`ResponseBody`]: either a backend's response on its way back (ended with an error, never
//!   a clean end, when the backend fails or stalls mid-stream) or a small body of our own. It
//!   tells a [`Progress`] (the access-log record) what passed, and holds a [`Hold`] (the backend
//!   connection and the server's count) until it is done.
//!
//! A floor below the rest: this module knows neither the access log nor the connection pool,
//! health or swap groups; they plug in through those two traits.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

mod replay;

pub(crate) use replay::Replay;
use replay::Tap;

/// Why a streamed body was cut off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// An attempt given up (another server or the fallback got the request): it must not read
    /// the client's body any more.
    #[error("the request went to another server")]
    Superseded,
}

impl BodyError {
    /// What went wrong, for the access log, when a backend's response stream was cut off.
    pub fn in_response(&self) -> String {
        match self {
            BodyError::Idle(d) => format!("backend stream idle for {d:?}"),
            BodyError::Hyper(h) => format!("backend stream failed: {h}"),
            BodyError::TooLarge { .. } | BodyError::Superseded => self.to_string(),
        }
    }
}

/// Stands in for "forever" where a deadline would overflow.
const MAX_WAIT: Duration = Duration::from_secs(365 * 86_400);

/// Fires when a body has been silent (Pending) for longer than `timeout`. A body whose frames
/// are always ready never touches it; the timer is allocated the first time a body waits and
/// then reused.
pub(crate) struct IdleTimer {
    timeout: Duration,
    /// When the current silence began; `None` while the body makes progress.
    silent_since: Option<Instant>,
    /// Its deadline may be earlier than the current silence needs (it was set for an earlier
    /// one); it is moved only when it fires early. So a stream with a pause between every
    /// event (SSE) touches the timer wheel about once per `timeout`, not once per event.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub(crate) fn new(timeout: Duration) -> Self {
        IdleTimer {
            timeout,
            silent_since: None,
            sleep: None,
        }
    }

    /// Call after the inner body made progress.
    fn disarm(&mut self) {
        self.silent_since = None;
    }

    /// Call after the inner body returned Pending; `Ready` means the silence lasted too long.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Duration> {
        let since = *self.silent_since.get_or_insert_with(Instant::now);
        let deadline = since.checked_add(self.timeout).unwrap_or(since + MAX_WAIT);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(self.timeout);
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

/// Polls `inner` for a frame, turning a silence longer than the idle time-out into an error.
fn poll_with_idle<B>(
    inner: Pin<&mut B>,
    idle: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    match inner.poll_frame(cx) {
        Poll::Ready(r) => {
            idle.disarm();
            Poll::Ready(r.map(|r| r.map_err(BodyError::Hyper)))
        }
        Poll::Pending => {
            let after = ready!(idle.poll_expired(cx));
            Poll::Ready(Some(Err(BodyError::Idle(after))))
        }
    }
}

fn data_len(frame: &Frame<Bytes>) -> u64 {
    frame.data_ref().map_or(0, |d| d.len() as u64)
}

pin_project! {
    /// A client's request body on its way to a backend.
    pub struct RequestBody {
        // None: an empty body (a request sent again without the client's body).
        #[pin]
        inner: Option<Incoming>,
        // Frames already read from `inner` (and counted), sent before the rest of it.
        replay: VecDeque<Frame<Bytes>>,
        // One attempt at a body kept for replay: read from there, after `replay`.
        tap: Option<Tap>,
        idle: IdleTimer,
        seen: u64,
        limit: u64,
        // Shared with the access-log record, which outlives this body.
        counter: Option<Arc<AtomicU64>>,
    }
}

impl RequestBody {
    pub fn new(
        inner: Incoming,
        limit: u64,
        idle_timeout: Duration,
        counter: Option<Arc<AtomicU64>>,
    ) -> Self {
        RequestBody {
            inner: Some(inner),
            replay: VecDeque::new(),
            tap: None,
            idle: IdleTimer::new(idle_timeout),
            seen: 0,
            limit,
            counter,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            replay: VecDeque::new(),
            tap: None,
            idle: IdleTimer::new(Duration::MAX),
            seen: 0,
            limit: 0,
            counter: None,
        }
    }

    /// One attempt at a kept body: `head` first (the kept frames an alias rewrites), then the
    /// rest from `tap`.
    fn attempt(tap: Tap, head: VecDeque<Frame<Bytes>>) -> Self {
        let mut b = RequestBody::empty();
        b.replay = head;
        b.tap = Some(tap);
        b
    }

    /// The longest silence allowed from now on (the backend's, once it is chosen).
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle.timeout = timeout;
    }

    /// Reads frames until `look` has seen enough of the data (`Some`) or the body ends
    /// (`None`), then puts them back to be sent first. Limits and the idle time-out apply as
    /// when the body is sent.
    pub async fn peek<R>(
        &mut self,
        mut look: impl FnMut(&[u8]) -> Option<R>,
    ) -> Result<Option<R>, BodyError> {
        use http_body_util::BodyExt as _;
        let mut read = Vec::new();
        let result = loop {
            match self.frame().await {
                None => break Ok(None),
                Some(Err(e)) => break Err(e),
                Some(Ok(frame)) => {
                    let seen = frame.data_ref().and_then(|d| look(d));
                    read.push(frame);
                    if seen.is_some() {
                        break Ok(seen);
                    }
                }
            }
        };
        self.unread(read);
        result
    }

    /// Puts frames back, in order: they are sent first (and not counted again).
    fn unread(&mut self, frames: Vec<Frame<Bytes>>) {
        if self.replay.is_empty() {
            // Takes the vector's buffer as it is.
            self.replay = frames.into();
            return;
        }
        for f in frames.into_iter().rev() {
            self.replay.push_front(f);
        }
    }

    /// Replaces `span` of the data read by [`RequestBody::peek`] (offsets from the
    /// start of the body) by `with`: the frames that hold the span become one. `span` must lie
    /// within that data.
    pub fn splice(&mut self, span: Range<usize>, with: &[u8]) {
        self.replay = splice(std::mem::take(&mut self.replay), span, with);
    }
}

/// `frames` with `span` of their data (offsets from the start of the first) replaced by
/// `with`: the frames that hold the span become one.
fn splice(
    frames: VecDeque<Frame<Bytes>>,
    span: Range<usize>,
    with: &[u8],
) -> VecDeque<Frame<Bytes>> {
    let mut joined = BytesMut::new();
    let mut pos = 0;
    let mut kept = VecDeque::with_capacity(frames.len());
    for frame in frames {
        let Some(data) = frame.data_ref() else {
            kept.push_back(frame);
            continue;
        };
        let (start, end) = (pos, pos + data.len());
        pos = end;
        if end <= span.start || start >= span.end {
            kept.push_back(frame);
            continue;
        }
        if span.start >= start {
            joined.extend_from_slice(&data[..span.start - start]);
            joined.extend_from_slice(with);
        }
        if span.end <= end {
            joined.extend_from_slice(&data[span.end - start..]);
            kept.push_back(Frame::data(std::mem::take(&mut joined).freeze()));
        }
    }
    kept
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        if let Some(frame) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(tap) = this.tap {
            return tap.poll_frame(cx);
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let r = ready!(poll_with_idle(inner, this.idle, cx));
        if let Some(Ok(frame)) = &r {
            let n = data_len(frame);
            *this.seen += n;
            if let Some(c) = this.counter {
                c.fetch_add(n, Ordering::Relaxed);
            }
            if *this.seen > *this.limit {
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *this.limit })));
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty()
            && match &self.tap {
                Some(tap) => tap.is_end_stream(),
                None => self.inner.as_ref().map_or(true, Incoming::is_end_stream),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let rest = match (&self.tap, &self.inner) {
            (Some(tap), _) => tap.size_hint(),
            (None, Some(inner)) => inner.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        };
        if self.replay.is_empty() {
            return rest;
        }
        let replay: u64 = self
            .replay
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + replay);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + replay);
        }
        hint
    }
}

pin_project! {
    /// The body of a response to a client.
    pub struct ResponseBody {
        #[pin]
        upstream: Option<Incoming>,
        idle: IdleTimer,
        full: Option<Bytes>,
        // Told what passed; the access-log record, written when the response is dropped:
        // finished, failed or abandoned.
        progress: Option<Box<dyn Progress>>,
        // The backend connection, back to its pool once the body has been read to its end,
        // and the request's count on its server.
        held: Option<Box<dyn Hold>>,
        // The upstream body returned its end (a chunked body ends so, without ever saying so
        // in `is_end_stream`).
        ended: bool,
        // Nothing was returned yet: the response headers may still be in hyper's buffer.
        first: bool,
        // A cut found at the first poll, returned at the next (see `poll_frame`).
        deferred: Option<BodyError>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            // hyper stops polling once `is_end_stream` says so, so a body can be complete
            // without ever having returned its end.
            let done = this.is_end_stream();
            let this = this.project();
            if let (true, Some(progress)) = (done, this.progress) {
                progress.end();
            }
            if let (true, Some(held)) = (done || *this.ended, this.held.take()) {
                held.release();
            }
        }
    }
}

impl ResponseBody {
    /// Streams a backend's response body.
    pub fn upstream(inner: Incoming, idle_timeout: Duration) -> Self {
        ResponseBody {
            upstream: Some(inner),
            idle: IdleTimer::new(idle_timeout),
            full: None,
            progress: None,
            held: None,
            ended: false,
            first: true,
            deferred: None,
        }
    }

    /// Keeps `held` until this body is dropped, and releases it first when the body was read
    /// to its end.
    pub fn set_held(&mut self, held: Box<dyn Hold>) {
        self.held = Some(held);
    }

    /// A complete body of our own.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody {
            upstream: None,
            idle: IdleTimer::new(Duration::MAX),
            full: (!data.is_empty()).then_some(data),
            progress: None,
            held: None,
            ended: false,
            first: true,
            deferred: None,
        }
    }

    /// Tells `progress` (the access-log record) what this body passes.
    pub fn set_progress(&mut self, progress: Box<dyn Progress>) {
        self.progress = Some(progress);
    }
}

impl From<Bytes> for ResponseBody {
    fn from(b: Bytes) -> Self {
        ResponseBody::full(b)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        let r = match (this.deferred.take(), this.upstream.as_pin_mut()) {
            (Some(e), _) => Some(Err(e)),
            (None, None) => this.full.take().map(|d| Ok(Frame::data(d))),
            (None, Some(inner)) => ready!(poll_with_idle(inner, this.idle, cx)),
        };
        // A backend that died right after its headers: hyper writes the response headers and
        // polls the body before sending them, and an error then closes the connection with
        // the headers unsent, so the client sees no answer at all. Waiting one turn lets the
        // headers out first; the client sees the cut, as for any stream cut later.
        if std::mem::take(this.first) {
            if let Some(Err(e)) = r {
                *this.deferred = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        *this.ended |= r.is_none();
        if let Some(progress) = this.progress {
            match &r {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        progress.data(data);
                    }
                }
                Some(Err(e)) => progress.failed(e),
                None => progress.end(),
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        match &self.upstream {
            Some(inner) => inner.is_end_stream(),
            None => self.full.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.upstream {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(self.full.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Told what a response body passes (the access-log record counts the bytes and notes how
/// it ended). Dropped with the body.
pub trait Progress: Send {
    /// These data bytes went to the client.
    fn data(&mut self, data: &[u8]);
    /// The stream was cut off.
    fn failed(&mut self, error: &BodyError);
    /// The body reached its end (called again, harmlessly, when it is dropped complete).
    fn end(&mut self);
}

/// What keeps a response's server busy until its body is done (a pooled connection, the
/// request's count on its server, a swap group's turn): dropped with the body, and
/// [`Hold::release`]d first when the body was read to its end.
pub trait Hold: Send {
    /// The response was read to its end: the connection can serve another request.
    fn release(self: Box<Self>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_timer_counts_each_silence_on_its_own() {
        let timeout = Duration::from_millis(100);
        let mut t = IdleTimer::new(timeout);
        // Silences of 60 ms with progress in between: never 100 ms in a row, although the
        // timer set during the first one is due during the second.
        for _ in 0..4 {
            let silence = tokio::time::timeout(
                Duration::from_millis(60),
                std::future::poll_fn(|cx| t.poll_expired(cx)),
            )
            .await;
            assert!(silence.is_err(), "fired after 60 ms of silence");
            t.disarm();
        }
        let start = Instant::now();
        let after = std::future::poll_fn(|cx| t.poll_expired(cx)).await;
        assert_eq!(after, timeout);
        assert!(start.elapsed() >= timeout);
    }

    fn replayed(pieces: &[&[u8]], span: Range<usize>, with: &[u8]) -> Vec<Vec<u8>> {
        let mut b = RequestBody::empty();
        b.unread(
            pieces
                .iter()
                .map(|p| Frame::data(Bytes::copy_from_slice(p)))
                .collect(),
        );
        b.splice(span, with);
        b.replay
            .into_iter()
            .map(|f| f.into_data().map(|d| d.to_vec()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_splice_joins_only_the_frames_it_touches() {
        // Within one frame.
        assert_eq!(
            replayed(&[b"ab", b"c\"x\"d", b"ef"], 3..6, b"\"yy\""),
            [b"ab".to_vec(), b"c\"yy\"d".to_vec(), b"ef".to_vec()]
        );
        // Across three frames, at their edges.
        assert_eq!(
            replayed(
                &[b"{\"m\":\"", b"gpt", b"\"}", b"rest"],
                5..10,
                b"\"llama\""
            ),
            [b"{\"m\":\"llama\"}".to_vec(), b"rest".to_vec()]
        );
        // At the very start and end.
        assert_eq!(replayed(&[b"abc"], 0..3, b"x"), [b"x".to_vec()]);
    }

    #[tokio::test]
    async fn what_was_peeked_is_sent_first_and_counted_once() {
        use http_body_util::BodyExt as _;
        let mut b = RequestBody::empty();
        b.unread(vec![Frame::data(Bytes::from_static(b"head"))]);
        assert!(!b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(4));
        let all = b.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"head");
    }
}
