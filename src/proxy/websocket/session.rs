//! WebSocket pass-through (OpenAI's Realtime API, local servers' live transcription): a
//! request to upgrade to a WebSocket goes to its route's backend with its upgrade headers, on
//! a connection of its own that speaks HTTP/1.1 (an HTTP/2 connection cannot upgrade); when
//! the backend answers `101 Switching Protocols`, the client's connection and the backend's
//! are joined and bytes are copied both ways, unparsed, until either side closes.
//!
//! - Keys: the auth policy applies as to any request. Browsers cannot set headers on a
//!   WebSocket, so OpenAI's browser clients send the key as a subprotocol,
//!   `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.sk-...`: that entry is a
//!   secret, removed (the others kept) for backends that do not take the client's key, and
//!   its header value is marked sensitive (redacted wherever headers are printed). With
//!   client tokens, a browser may present its token the same way.
//! - Time: a session ends after `websocket_idle_timeout` without a byte either way; when one
//!   side closes, the other is told at once (its write side shut) and the session ends when
//!   it closes too, or [`CLOSE_GRACE`] later. A graceful stop lets sessions run for
//!   `server.shutdown_timeout`, then closes them.
//! - The access line of a session is written when it ends: status 101, duration, and the
//!   bytes each way.
//! - A backend that refuses the upgrade has its answer passed back unchanged; one that cannot
//!   be reached gets the usual 502 JSON.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower_service::Service;

use super::protocols::mark_sensitive;
use super::revoke::Revocation;
use crate::body::{RequestBody, ResponseBody};
use crate::config::{BackendConfig, ServerUrl};
use crate::observe::access::AccessRecord;
use crate::upstream;
use crate::upstream::swap::Turn;

/// How long the other side may take to close after one side closed.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Bytes copied at a time, each way.
const COPY_BUF: usize = 16 << 10;

/// Whether a request asks to become a WebSocket: `GET`, HTTP/1.1, `Upgrade: websocket` and
/// `Connection: upgrade`. Other upgrades (`h2c`, ...) are not passed on.
pub(crate) fn is_websocket(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    method == Method::GET
        && version == Version::HTTP_11
        && has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether a comma-separated header lists `token` (in any case).
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Readies the headers of an upgrade request already rewritten for its backend (which took
/// away the hop-by-hop `Upgrade` and `Connection`, and the key subprotocols unless the
/// backend takes the client's key): puts the upgrade back, keeps `Sec-WebSocket-Protocol`
/// marked sensitive, and sets `Host` to the server's (the request goes on a connection of its
/// own, which adds none).
pub(crate) fn prepare(headers: &mut HeaderMap, server: &ServerUrl) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    mark_sensitive(headers);
    if let Some(host) = host(server) {
        headers.insert(header::HOST, host);
    }
}

/// `Host` for a server: its host, and its port unless the scheme's default.
fn host(server: &ServerUrl) -> Option<HeaderValue> {
    let a = &server.authority;
    let default = if server.scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    match a.port_u16() {
        Some(p) if p != default => HeaderValue::from_str(&format!("{}:{p}", a.host())).ok(),
        _ => HeaderValue::from_str(a.host()).ok(),
    }
}

/// Why an upgrade request did not reach its backend.
#[derive(Debug)]
pub(crate) struct SendError {
    pub error: Box<dyn std::error::Error + Send + Sync>,
    /// Nothing was sent (connecting or the TLS handshake failed).
    pub connect: bool,
}

/// Sends an upgrade request to its backend on a new HTTP/1.1 connection (TLS for `https://`
/// backends, with the backend's own settings and ALPN `http/1.1` only).
pub(crate) async fn send(
    bc: &BackendConfig,
    mut req: Request<RequestBody>,
) -> Result<Response<Incoming>, SendError> {
    let connect = |error| SendError {
        error,
        connect: true,
    };
    let mut connector = upstream::http1_connector(bc).map_err(|e| connect(e.into()))?;
    let uri = req.uri().clone();
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(connect)?;
    let io = connector.call(uri).await.map_err(connect)?;
    // Origin form on the request line, as for any HTTP/1 request to an origin server.
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = http::Uri::from(pq);
    }
    let failed = |e: hyper::Error| SendError {
        error: e.into(),
        connect: false,
    };
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(failed)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("WebSocket backend connection ended with an error: {e}");
        }
    });
    tx.send_request(req).await.map_err(failed)
}

/// Held by a joined session for as long as it runs: the server's count of open connections
/// (idle exit waits for it) and its stop signal (a graceful stop waits for it, up to
/// `server.shutdown_timeout`). The server puts one in the extensions of every upgrade
/// request.
#[derive(Clone)]
pub(crate) struct Session {
    _open: Arc<dyn Send + Sync>,
    stop: watch::Receiver<bool>,
}

impl Session {
    pub(crate) fn new(open: Arc<dyn Send + Sync>, stop: watch::Receiver<bool>) -> Session {
        Session { _open: open, stop }
    }
}

/// An upgrade the backend accepted, in the extensions of the `101` response until the proxy
/// takes it out ([`Pending::join`]) to join the two connections.
pub(crate) struct Pending {
    client: OnUpgrade,
    backend: OnUpgrade,
    session: Option<Session>,
    idle: Duration,
    shutdown_timeout: Duration,
    /// Its backend's turn in a swap group, held while the session lasts.
    turn: Option<Turn>,
    /// Says when the client token it was opened with is no longer accepted.
    revocation: Option<Revocation>,
}

/// Where a [`Pending`] waits in the response's extensions (which hold only `Clone` values).
#[derive(Clone)]
struct Slot(Arc<std::sync::Mutex<Option<Pending>>>);

/// The `101` for the client from the backend's: its headers (without hop-by-hop ones, already
/// removed) plus the upgrade, an empty body, and the [`Pending`] join in its extensions.
/// `client` is the client request's upgrade (`None`: it cannot upgrade, 502 instead); `turn`,
/// the backend's turn in its swap group, is held until the session ends, and `revocation`
/// ends it when its client token is no longer accepted.
pub(crate) fn switching(
    mut res: Response<Incoming>,
    client: Option<OnUpgrade>,
    session: Option<Session>,
    bc: &BackendConfig,
    shutdown_timeout: Duration,
    (turn, revocation): (Option<Turn>, Option<Revocation>),
) -> Option<Response<ResponseBody>> {
    let client = client?;
    let backend = hyper::upgrade::on(&mut res);
    let (mut parts, _) = res.into_parts();
    parts.version = Version::HTTP_11;
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    mark_sensitive(&mut parts.headers);
    parts.extensions = http::Extensions::new();
    let pending = Pending {
        client,
        backend,
        session,
        idle: bc.websocket_idle_timeout,
        shutdown_timeout,
        turn,
        revocation,
    };
    parts
        .extensions
        .insert(Slot(Arc::new(std::sync::Mutex::new(Some(pending)))));
    Some(Response::from_parts(
        parts,
        ResponseBody::full(Bytes::new()),
    ))
}

/// Whether a backend answered an upgrade request by switching.
pub(crate) fn switched(res: &Response<Incoming>) -> bool {
    res.status() == StatusCode::SWITCHING_PROTOCOLS
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// Both sides closed.
    Closed,
    /// One side closed and the other did not within [`CLOSE_GRACE`].
    HalfClosed,
    Idle,
    Shutdown,
    /// A reload no longer accepts the client token it was opened with.
    Revoked,
    Failed(io::Error),
}

impl Pending {
    /// Takes the pending join out of a response, if it is a `101` made by [`switching`].
    pub(crate) fn take(res: &mut Response<ResponseBody>) -> Option<Pending> {
        let Slot(slot) = res.extensions_mut().remove::<Slot>()?;
        let pending = crate::sync::lock(&slot).take();
        pending
    }

    /// Joins the two connections in a task of their own, once hyper has handed them over
    /// (the client's after the `101` was written); `access` is written when the session ends.
    pub(crate) fn join(self, access: Option<Box<AccessRecord>>) {
        tokio::spawn(self.run(access));
    }

    async fn run(self, mut access: Option<Box<AccessRecord>>) {
        let Pending {
            client,
            backend,
            session,
            idle,
            shutdown_timeout,
            turn,
            revocation,
        } = self;
        // Given back when the session is over, however it ends.
        let _turn = turn;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                if let Some(a) = access.as_deref_mut() {
                    a.error = Some(format!("WebSocket not joined: {e}"));
                }
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut client = Metered::new(TokioIo::new(client), activity.clone(), Side::Client);
        let mut backend = Metered::new(TokioIo::new(backend), activity.clone(), Side::Backend);
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, COPY_BUF, COPY_BUF);
        let stop = session.as_ref().map(|s| s.stop.clone());
        let ends = Ends {
            stop,
            shutdown_timeout,
            revocation,
        };
        let end = watch(copy, &activity, idle, ends).await;
        if let Some(a) = access.as_deref_mut() {
            a.bytes_in
                .store(activity.up.load(Ordering::Relaxed), Ordering::Relaxed);
            a.bytes_out = activity.down.load(Ordering::Relaxed);
            a.completed = matches!(end, End::Closed);
            a.error = match end {
                End::Closed => None,
                End::HalfClosed => Some(format!(
                    "WebSocket: one side closed, the other not within {CLOSE_GRACE:?}"
                )),
                End::Idle => Some(format!(
                    "WebSocket idle for {} (websocket_idle_timeout)",
                    crate::config::format_duration(idle)
                )),
                End::Shutdown => Some("WebSocket closed: shutdown_timeout reached".into()),
                End::Revoked => {
                    Some("WebSocket closed: a reload no longer accepts its client token".into())
                }
                End::Failed(e) => Some(format!("WebSocket connection failed: {e}")),
            };
        }
        drop(session);
    }
}

/// What else may end a session: a graceful stop (after `shutdown_timeout`), and its client
/// token's revocation.
struct Ends {
    stop: Option<watch::Receiver<bool>>,
    shutdown_timeout: Duration,
    revocation: Option<Revocation>,
}

/// Runs the copy until both sides closed, or it fails, idles, outlasts a stop, or its token
/// is revoked.
async fn watch(
    copy: impl std::future::Future<Output = io::Result<(u64, u64)>>,
    activity: &Activity,
    idle: Duration,
    ends: Ends,
) -> End {
    tokio::pin!(copy);
    let Ends {
        mut stop,
        shutdown_timeout,
        mut revocation,
    } = ends;
    let mut stop_at: Option<Instant> = None;
    let mut close_at: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        let idle_at = activity.last() + idle;
        let wake = [Some(idle_at), stop_at, close_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(far);
        let half_closed = activity.closed.notified();
        tokio::select! {
            r = &mut copy => return r.map_or_else(End::Failed, |_| End::Closed),
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if stop_at.is_some_and(|t| t <= now) {
                    return End::Shutdown;
                }
                if close_at.is_some_and(|t| t <= now) {
                    return End::HalfClosed;
                }
                if activity.last() + idle <= now {
                    return End::Idle;
                }
            }
            () = half_closed, if close_at.is_none() => {
                close_at = Some(Instant::now() + CLOSE_GRACE);
            }
            () = stopping(&mut stop), if stop_at.is_none() => {
                stop_at = Some(Instant::now() + shutdown_timeout);
            }
            () = revoked(&mut revocation) => return End::Revoked,
        }
    }
}

/// Resolves when a graceful stop begins; never without a stop signal.
async fn stopping(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            if rx.wait_for(|s| *s).await.is_err() {
                // The server is gone: a stop all the same.
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the session's client token is no longer accepted; never without one.
async fn revoked(revocation: &mut Option<Revocation>) {
    match revocation {
        Some(r) => r.revoked().await,
        None => std::future::pending().await,
    }
}

/// What both directions of a session share: bytes each way, the time of the last byte, and
/// whether a side has closed.
struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read.
    last_ms: AtomicU64,
    /// Client to backend.
    up: AtomicU64,
    /// Backend to client.
    down: AtomicU64,
    /// A side has closed (its read ended).
    half: AtomicBool,
    closed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            half: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn read(&self, side: Side, n: usize) {
        if n == 0 {
            if !self.half.swap(true, Ordering::Relaxed) {
                self.closed.notify_one();
            }
            return;
        }
        let counter = match side {
            Side::Client => &self.up,
            Side::Backend => &self.down,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// One side of a session, its reads counted in the shared [`Activity`].
struct Metered<T> {
    io: T,
    activity: Arc<Activity>,
    side: Side,
}

impl<T> Metered<T> {
    fn new(io: T, activity: Arc<Activity>, side: Side) -> Self {
        Metered { io, activity, side }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match Pin::new(&mut this.io).poll_read(cx, buf) {
            // A TLS peer that closes without `close_notify`: closed all the same (a WebSocket
            // has its own close handshake inside).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            r => r,
        };
        if let Poll::Ready(Ok(())) = r {
            this.activity.read(this.side, buf.filled().len() - before);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_requests_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_websocket(&Method::GET, Version::HTTP_11, &h));
        assert!(!is_websocket(&Method::POST, Version::HTTP_11, &h));
        assert!(!is_websocket(&Method::GET, Version::HTTP_10, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_websocket(&Method::GET, Version::HTTP_11, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_websocket(&Method::GET, Version::HTTP_11, &h));
    }
}
