//! The accept loop: serves HTTP/1.1 (and, over TLS, HTTP/2 when ALPN agrees on it) on
//! already-open listeners until `shutdown` resolves, then stops accepting and drains.
//!
//! [`run`] takes its listeners and its shutdown future from the caller, so `serve`, socket
//! activation and the tests all use the same entry point.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::listeners::StdListener;
use crate::parse_errors::JsonErrors;
use crate::proxy::{Peer, Proxy};
use crate::tls;
use crate::upgrade::{self, Session};

/// What the server shares between connections: the live [`Proxy`] (swapped on reload) and
/// counters for status reports and idle exit.
pub struct State {
    proxy: RwLock<Arc<Proxy>>,
    /// Requests received since start.
    pub requests: AtomicU64,
    /// Connections accepted since start (idle exit watches it).
    pub accepted: AtomicU64,
    /// Connections open right now.
    pub open_connections: AtomicUsize,
    /// Notified whenever the last open connection closes.
    pub all_closed: Notify,
}

impl State {
    pub fn new(proxy: Proxy) -> Arc<State> {
        Arc::new(State {
            proxy: RwLock::new(Arc::new(proxy)),
            requests: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
        })
    }

    /// The proxy new requests use.
    pub fn proxy(&self) -> Arc<Proxy> {
        match self.proxy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `proxy` the one new requests use; requests already running keep the old one.
    pub fn replace(&self, proxy: Proxy) {
        let proxy = Arc::new(proxy);
        match self.proxy.write() {
            Ok(mut p) => *p = proxy,
            Err(poisoned) => *poisoned.into_inner() = proxy,
        }
    }
}

/// Counts a connection as open for as long as it lives.
struct ConnGuard(Arc<State>);

impl ConnGuard {
    fn new(state: &Arc<State>) -> Self {
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state.open_connections.fetch_add(1, Ordering::SeqCst);
        ConnGuard(state.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.open_connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

fn to_tokio(l: StdListener) -> anyhow::Result<(Listener, Option<std::path::PathBuf>)> {
    Ok(match l {
        StdListener::Tcp(l) => {
            l.set_nonblocking(true)?;
            (Listener::Tcp(TcpListener::from_std(l)?), None)
        }
        StdListener::Unix { listener, cleanup } => {
            listener.set_nonblocking(true)?;
            (Listener::Unix(UnixListener::from_std(listener)?), cleanup)
        }
    })
}

/// Listeners registered with the runtime, ready to serve.
pub struct Server {
    listeners: Vec<Listener>,
    /// Unix socket files we created, removed when we stop.
    socket_files: Vec<std::path::PathBuf>,
    state: Arc<State>,
}

impl Server {
    /// Registers the listeners with tokio (inside a runtime). After this the server is ready:
    /// connections queue in the listen backlog until [`Server::run`] accepts them.
    pub fn new(listeners: Vec<StdListener>, state: Arc<State>) -> anyhow::Result<Server> {
        let mut registered = Vec::new();
        let mut socket_files = Vec::new();
        for l in listeners {
            let (listener, cleanup) = to_tokio(l).context("cannot register a listening socket")?;
            socket_files.extend(cleanup);
            registered.push(listener);
        }
        Ok(Server {
            listeners: registered,
            socket_files,
            state,
        })
    }

    /// Serves until `shutdown` resolves; then closes the listeners (new connections are
    /// refused), lets open requests finish for up to `server.shutdown_timeout`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server {
            listeners,
            socket_files,
            state,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accepting = JoinSet::new();
        for listener in listeners {
            accepting.spawn(accept_loop(listener, state.clone(), stop_rx.clone()));
        }
        drop(stop_rx);
        shutdown.await;

        let _ = stop_tx.send(true);
        while accepting.join_next().await.is_some() {}
        for f in socket_files {
            let _ = std::fs::remove_file(f);
        }
        let limit = state.proxy().config.server.shutdown_timeout;
        let open = state.open_connections.load(Ordering::SeqCst);
        if open > 0 {
            tracing::info!(
                open,
                "waiting up to {limit:?} for open connections to finish"
            );
        }
        if tokio::time::timeout(limit, stop_tx.closed()).await.is_err() {
            tracing::warn!(
                open = state.open_connections.load(Ordering::SeqCst),
                "shutdown_timeout reached; closing the remaining connections"
            );
        }
        Ok(())
    }
}

/// [`Server::new`] then [`Server::run`].
pub async fn run(
    listeners: Vec<StdListener>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Server::new(listeners, state)?.run(shutdown).await
}

async fn accept_loop(listener: Listener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let ip = Some(peer.ip());
                match state.proxy().config.server.tls.as_ref() {
                    Some(tls) => {
                        let tls = tls.server.clone();
                        tokio::spawn(serve_tls(stream, ip, tls, state.clone(), stop.clone()));
                    }
                    None => {
                        let peer = Peer { ip, https: false };
                        tokio::spawn(serve_connection(stream, peer, state.clone(), stop.clone()));
                    }
                }
            }
            Ok(Accepted::Unix(stream)) => {
                let peer = Peer {
                    ip: None,
                    https: false,
                };
                tokio::spawn(serve_connection(stream, peer, state.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Resolves once shutdown has begun (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

enum Accepted {
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// A TLS connection: the handshake (within `server.header_read_timeout`), then HTTP/2 or
/// HTTP/1.1 as ALPN agreed.
async fn serve_tls(
    stream: tokio::net::TcpStream,
    ip: Option<IpAddr>,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    stop: watch::Receiver<bool>,
) {
    let limit = state.proxy().config.server.header_read_timeout;
    let stream = match tls::accept(stream, tls, limit).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("TLS handshake with {ip:?} failed: {e}");
            return;
        }
    };
    let peer = Peer { ip, https: true };
    if tls::is_h2(&stream) {
        serve_h2(stream, peer, state, stop).await;
    } else {
        serve_connection(stream, peer, state, stop).await;
    }
}

/// The service of one connection: each request counted and handed to the live proxy. A
/// WebSocket request also gets the [`Session`] its joined connections will hold.
fn service(
    state: &Arc<State>,
    peer: Peer,
    stop: &watch::Receiver<bool>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::body::ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<crate::body::ResponseBody>, Infallible>> + Send,
> + Clone {
    let state = state.clone();
    let stop = stop.clone();
    service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let state = state.clone();
        if upgrade::is_websocket(req.method(), req.version(), req.headers()) {
            let open = Arc::new(ConnGuard::new(&state));
            req.extensions_mut()
                .insert(Session::new(open, stop.clone()));
        }
        async move {
            state.requests.fetch_add(1, Ordering::Relaxed);
            let proxy = state.proxy();
            Ok::<_, Infallible>(proxy.handle(req, peer).await)
        }
    })
}

/// An HTTP/2 connection (TLS with ALPN `h2`), until it ends or the server stops.
async fn serve_h2<I>(io: I, peer: Peer, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ConnGuard::new(&state);
    let max_header_size = state.proxy().config.server.max_header_size;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), service(&state, peer, &stop));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP/2 connection ended with an error: {e}");
    }
}

async fn serve_connection<I>(io: I, peer: Peer, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ConnGuard::new(&state);
    let (header_read_timeout, max_header_size) = {
        let server = &state.proxy().config.server;
        (server.header_read_timeout, server.max_header_size)
    };
    let service = service(&state, peer, &stop);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // Request line and headers together; above it hyper answers 431 and closes. The
        // number of header lines is capped by hyper's default of 100 (also 431).
        .max_header_size(max_header_size)
        .keep_alive(true);
    // hyper answers requests it cannot parse itself; `JsonErrors` makes those answers JSON
    // (it needs the connection's polls counted). With upgrades: a WebSocket's connection is
    // handed over once its `101` is out (`upgrade`).
    let (io, polls) = JsonErrors::new(io);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = polls.clone().count(conn.as_mut()) => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            polls.count(conn).await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
