//! HTTP/2 connections (TLS with ALPN `h2`), with the limits hyper's HTTP/1.1 server has of its
//! own and its HTTP/2 server lacks:
//!
//! - the first request's headers must be complete within `server.header_read_timeout`, and a
//!   connection with no stream open is closed after the same time (as an HTTP/1.1 connection
//!   waiting for its next request is): GOAWAY first, dropped [`CLOSE_GRACE`] later if the
//!   client never completed its preface or never lets the GOAWAY finish;
//! - at most [`MAX_CONCURRENT_STREAMS`] streams at once (announced in SETTINGS);
//! - at most [`MAX_HEADER_FIELDS`] header fields in a request, else 431 (JSON), as HTTP/1.1's
//!   100 header lines.
//!
//! No keep-alive pings are sent.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

use super::{service, stopped, ConnGuard, Shared};
use crate::body::ResponseBody;
use crate::error::json_error;
use crate::proxy::Peer;

/// Streams a client may have open at once on one connection (hyper's default is 200).
pub(super) const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Header fields one request may have, as HTTP/1.1's limit of 100 header lines (hyper's).
pub(super) const MAX_HEADER_FIELDS: usize = 100;

/// How long a connection closed for idleness has, after its GOAWAY, before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An HTTP/2 connection, until it ends, stays idle too long, or the server stops.
pub(super) async fn serve_h2<I>(
    io: I,
    peer: Peer,
    state: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ConnGuard::new(&state);
    let (idle, max_header_size) = {
        let server = &state.current().config.server;
        (server.header_read_timeout, server.max_header_size)
    };
    let streams = Arc::new(Streams::default());
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
    let service = counted(service(&state, peer, &stop), streams.clone());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = streams.idle_for(idle) => {
            tracing::debug!(
                "closing an HTTP/2 connection from {:?}: no stream open for {idle:?} \
                 (server.header_read_timeout)",
                peer.ip
            );
            conn.as_mut().graceful_shutdown();
            close_soon(conn.as_mut(), &streams).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP/2 connection ended with an error: {e}");
    }
}

/// Waits for a connection told to shut down gracefully; drops it after [`CLOSE_GRACE`] if it
/// has not ended by then and still has no stream open (a stream that came in meanwhile is
/// served to its end).
async fn close_soon<F>(mut conn: Pin<&mut F>, streams: &Streams) -> hyper::Result<()>
where
    F: Future<Output = hyper::Result<()>>,
{
    loop {
        match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
            Ok(r) => return r,
            Err(_) if streams.open.load(Ordering::SeqCst) == 0 => return Ok(()),
            Err(_) => {}
        }
    }
}

/// The streams of one connection being answered: from the complete request headers until the
/// response body is done (or dropped).
#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    /// Notified when the count leaves or reaches zero.
    changed: Notify,
}

impl Streams {
    fn open(self: &Arc<Self>) -> StreamGuard {
        if self.open.fetch_add(1, Ordering::SeqCst) == 0 {
            self.changed.notify_waiters();
        }
        StreamGuard(self.clone())
    }

    /// Resolves once no stream has been open for `limit` (from the start, or since the last
    /// one ended).
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.open.load(Ordering::SeqCst) != 0 {
                changed.await;
            } else if tokio::time::timeout(limit, changed).await.is_err() {
                return;
            }
        }
    }
}

/// One open stream.
struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// `inner`, each request counted in `streams` until its response is done, and refused with
/// 431 when it has more than [`MAX_HEADER_FIELDS`] header fields.
fn counted<S>(
    inner: S,
    streams: Arc<Streams>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Counted<ResponseBody>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Counted<ResponseBody>>, Infallible>> + Send,
>
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    service_fn(move |req: Request<Incoming>| {
        let open = streams.open();
        let call = if req.headers().len() > MAX_HEADER_FIELDS {
            Err(too_many_fields())
        } else {
            Ok(inner.call(req))
        };
        async move {
            let res = match call {
                Ok(f) => match f.await {
                    Ok(r) => r,
                    Err(e) => match e {},
                },
                Err(r) => r,
            };
            Ok(res.map(|body| Counted { body, _open: open }))
        }
    })
}

/// 431 with the JSON body HTTP/1.1's answer has (`headers_too_large`).
fn too_many_fields() -> Response<ResponseBody> {
    let body: Bytes = json_error(
        &format!("the request has more than {MAX_HEADER_FIELDS} header fields"),
        "invalid_request_error",
        "headers_too_large",
    );
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pin_project! {
    /// A response body that keeps its stream counted as open until it is dropped.
    struct Counted<B> {
        #[pin]
        body: B,
        _open: StreamGuard,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
