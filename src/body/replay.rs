//! A request body that can be sent more than once: to another server of a pool when the first
//! one failed before answering, or to the route's fallback. It is still streamed, not read
//! first: each frame read from the client is kept (a reference to the same bytes, no copy) as
//! it goes out, up to `server.max_replay_body`, and an attempt that follows a failed one reads
//! the kept frames from the start before it reads on from the client.
//!
//! Past the limit nothing more is kept and what was kept is let go: the attempt under way goes
//! on, and no other one can follow ([`Replay::attempt`] says `None`). A body the first server
//! never read (a refused connection) can always go to the next, whatever its size. Once an
//! answer has been taken ([`Replay::settle`]), nothing more is kept either.
//!
//! Only the latest attempt may read: one given up (its connection may still be trying to send)
//! gets an error instead, so two attempts never share out the client's frames.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::{splice, BodyError, RequestBody};

/// The client's body, shared by the attempts that send it.
pub(crate) struct Replay {
    shared: Arc<Mutex<Kept>>,
}

struct Kept {
    /// The client's body (its peeked frames already moved to `log`).
    body: RequestBody,
    /// The data read from `body` so far, while it is kept.
    log: Vec<Bytes>,
    /// Bytes read from `body` so far.
    read: u64,
    limit: u64,
    /// More than `limit` was read (or a trailer frame came): no other attempt can follow.
    overflow: bool,
    /// An answer was taken: nothing more is kept.
    settled: bool,
    /// The attempt that may read.
    current: u64,
    /// The next frame of `log` for the current attempt.
    pos: usize,
}

impl Kept {
    fn keeps(&self) -> bool {
        !self.overflow && !self.settled
    }

    fn drop_log(&mut self) {
        self.log = Vec::new();
        self.pos = 0;
    }

    fn poll_frame(
        &mut self,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if id != self.current {
            return Poll::Ready(Some(Err(BodyError::Superseded)));
        }
        if let Some(data) = self.log.get(self.pos).cloned() {
            self.pos += 1;
            if !self.keeps() && self.pos == self.log.len() {
                self.drop_log();
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let r = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let (Some(Ok(frame)), true) = (&r, self.keeps()) {
            match frame.data_ref() {
                Some(data) => {
                    self.read += data.len() as u64;
                    if self.read > self.limit {
                        self.overflow = true;
                        self.drop_log();
                    } else {
                        self.log.push(data.clone());
                        self.pos = self.log.len();
                    }
                }
                None => {
                    self.overflow = true;
                    self.drop_log();
                }
            }
        }
        Poll::Ready(r)
    }
}

impl Replay {
    /// Keeps `body` (and the frames already peeked from it) for up to `limit` bytes.
    pub(crate) fn new(mut body: RequestBody, limit: u64) -> Replay {
        let log: Vec<Bytes> = body
            .replay
            .drain(..)
            .filter_map(|f| f.into_data().ok())
            .collect();
        let read: u64 = log.iter().map(|d| d.len() as u64).sum();
        Replay {
            shared: Arc::new(Mutex::new(Kept {
                body,
                log,
                read,
                limit,
                // Peeked past the limit: the first attempt gets it all the same, no other one.
                overflow: read > limit,
                settled: false,
                current: 0,
                pos: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        lock(&self.shared)
    }

    /// The body for the next attempt, from the start, with `alias` (a span of the body and its
    /// replacement) spliced in and the backend's idle time-out; `None` when it cannot be sent
    /// again (more than the limit was read). The attempt before it can no longer read.
    pub(crate) fn attempt(
        &self,
        alias: Option<(Range<usize>, &[u8])>,
        idle_timeout: Duration,
    ) -> Option<RequestBody> {
        let mut k = self.lock();
        if k.current > 0 && k.overflow {
            return None;
        }
        k.current += 1;
        k.pos = 0;
        k.body.set_idle_timeout(idle_timeout);
        let mut head = VecDeque::new();
        if let Some((span, with)) = alias {
            // The frames that hold the span (it lies in what was peeked, so it is kept).
            let (mut end, mut n) = (0, 0);
            while n < k.log.len() && end < span.end {
                end += k.log[n].len();
                n += 1;
            }
            if end >= span.end {
                let frames = k.log[..n].iter().cloned().map(Frame::data).collect();
                head = splice(frames, span, with);
                k.pos = n;
            }
        }
        let id = k.current;
        drop(k);
        Some(RequestBody::attempt(
            Tap {
                shared: self.shared.clone(),
                id,
            },
            head,
        ))
    }

    /// An answer was taken: keep nothing more (what the attempt has yet to send is sent).
    pub(crate) fn settle(&self) {
        let mut k = self.lock();
        k.settled = true;
        if k.pos >= k.log.len() {
            k.drop_log();
        }
    }
}

fn lock(m: &Mutex<Kept>) -> MutexGuard<'_, Kept> {
    crate::sync::lock(m)
}

/// One attempt's hold on a [`Replay`].
pub(super) struct Tap {
    shared: Arc<Mutex<Kept>>,
    id: u64,
}

impl Tap {
    pub(super) fn poll_frame(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        lock(&self.shared).poll_frame(self.id, cx)
    }

    pub(super) fn is_end_stream(&self) -> bool {
        let k = lock(&self.shared);
        k.id_is(self.id) && k.pos >= k.log.len() && k.body.is_end_stream()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        let k = lock(&self.shared);
        let kept: u64 = k.log[k.pos.min(k.log.len())..]
            .iter()
            .map(|d| d.len() as u64)
            .sum();
        let rest = k.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + kept);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + kept);
        }
        hint
    }
}

impl Kept {
    fn id_is(&self, id: u64) -> bool {
        self.current == id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn peeked(pieces: &[&'static [u8]]) -> RequestBody {
        let mut b = RequestBody::empty();
        b.unread(
            pieces
                .iter()
                .map(|p| Frame::data(Bytes::from_static(p)))
                .collect(),
        );
        b
    }

    async fn all(b: RequestBody) -> Vec<u8> {
        b.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn every_attempt_reads_the_body_from_the_start_with_its_own_alias() {
        let r = Replay::new(peeked(&[b"{\"model\":", b"\"gpt\"", b",\"x\":1}"]), 1 << 20);
        let first = r
            .attempt(Some((9..14, b"\"llama\"")), Duration::MAX)
            .unwrap();
        assert_eq!(all(first).await, b"{\"model\":\"llama\",\"x\":1}");
        let second = r.attempt(None, Duration::MAX).unwrap();
        assert_eq!(all(second).await, b"{\"model\":\"gpt\",\"x\":1}");
    }

    #[tokio::test]
    async fn an_attempt_given_up_cannot_read() {
        let r = Replay::new(peeked(&[b"abc"]), 1 << 20);
        let mut first = r.attempt(None, Duration::MAX).unwrap();
        let second = r.attempt(None, Duration::MAX).unwrap();
        assert!(matches!(
            first.frame().await,
            Some(Err(BodyError::Superseded))
        ));
        assert_eq!(all(second).await, b"abc");
    }

    #[tokio::test]
    async fn past_the_limit_no_other_attempt_follows() {
        let r = Replay::new(peeked(&[b"0123456789"]), 4);
        // The first attempt gets all of it.
        assert_eq!(
            all(r.attempt(None, Duration::MAX).unwrap()).await,
            b"0123456789"
        );
        assert!(r.attempt(None, Duration::MAX).is_none());
        // Within the limit, a settled replay lets its kept frames go once they are sent.
        let r = Replay::new(peeked(&[b"ab"]), 4);
        let a = r.attempt(None, Duration::MAX).unwrap();
        r.settle();
        assert_eq!(all(a).await, b"ab");
        assert!(lock(&r.shared).log.is_empty());
    }
}
