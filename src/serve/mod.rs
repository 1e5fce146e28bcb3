//! The accept loop: serves HTTP/1.1 (and, over TLS, HTTP/2 when ALPN agrees on it) on
//! already-open listeners until `shutdown` resolves, then stops accepting and drains.
//!
//! [`run`] takes its listeners and its shutdown future from the caller, so `serve`, socket
//! activation and the tests all use the same entry point.

mod h2;
mod metrics_listener;
mod parse_errors;
mod per_ip;
mod socket;

pub use socket::StdListener;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::config::tls;
use crate::proxy::websocket::session::{self, Session};
use crate::proxy::{Peer, Proxy};
use crate::sync::{self, PerWorker};
use crate::upstream::checks;
use crate::upstream::lasting::Lasting;
use h2::serve_h2;
use parse_errors::JsonErrors;
use per_ip::PerIp;

/// What every worker shares: the live [`Proxy`] (swapped on reload) and counters for status
/// reports and idle exit. Counters written per request are sharded by worker, so workers on
/// different cores never write the same cache line.
pub struct Shared {
    proxy: RwLock<Arc<Proxy>>,
    /// Bumped by every [`Shared::replace`]; workers drop their cached proxy when it changes.
    generation: AtomicU64,
    /// Tells the workers about a new generation.
    replaced: watch::Sender<()>,
    /// Tells this state apart from others in the workers' caches.
    id: u64,
    /// Requests received since start.
    pub requests: Counter,
    /// Connections accepted since start (idle exit watches it).
    pub accepted: AtomicU64,
    /// Connections open right now.
    pub open_connections: AtomicUsize,
    /// Notified whenever the last open connection closes.
    pub all_closed: Notify,
    /// Open connections per client address (`server.max_connections_per_ip`).
    per_ip: Arc<PerIp>,
}

impl Shared {
    /// The state of `proxy`, its checks started.
    pub fn new(proxy: Proxy) -> Arc<Shared> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let shards = proxy.config.server.workers.resolve();
        let proxy = Arc::new(proxy);
        let state = Arc::new(Shared {
            proxy: RwLock::new(proxy.clone()),
            generation: AtomicU64::new(0),
            replaced: watch::channel(()).0,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            requests: Counter::new(shards),
            accepted: AtomicU64::new(0),
            open_connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            per_ip: Arc::default(),
        });
        state.start_checks(&proxy);
        state
    }

    /// Starts the active health checks of `proxy`'s backends, until a reload replaces it
    /// (one checker for every worker). Needs a runtime; without one (a tool), none run.
    fn start_checks(&self, proxy: &Proxy) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut replaced = self.replaced.subscribe();
        checks::spawn(proxy.backends(), async move {
            let _ = replaced.changed().await;
        });
    }

    /// Connections closed right after they were accepted because their client address had
    /// `server.max_connections_per_ip` open already, since start.
    pub fn refused_connections(&self) -> u64 {
        self.per_ip.refused()
    }

    /// What the live configuration keeps across reloads (health, metrics).
    pub fn lasting(&self) -> Arc<Lasting> {
        self.proxy().lasting.clone()
    }

    /// The proxy new requests use.
    pub fn proxy(&self) -> Arc<Proxy> {
        sync::read(&self.proxy).clone()
    }

    /// Makes `proxy` the one new requests use; requests already running keep the old one.
    pub fn replace(&self, proxy: Proxy) {
        let proxy = Arc::new(proxy);
        *sync::write(&self.proxy) = proxy.clone();
        self.generation.fetch_add(1, Ordering::Release);
        self.replaced.send_replace(());
        self.start_checks(&proxy);
    }

    /// The proxy for a request on this thread. A worker keeps one handle per configuration,
    /// so the reference count a request takes is the worker's own, not one that every core
    /// writes; elsewhere (tests) each request takes the shared one.
    fn current(&self) -> Current {
        let generation = self.generation.load(Ordering::Acquire);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let Some(cache) = cache.as_mut() else {
                return Current::Shared(self.proxy());
            };
            match cache {
                Some(c) if c.state == self.id && c.generation == generation => {
                    Current::Local(c.clone())
                }
                _ => {
                    let c = Arc::new(Cached {
                        state: self.id,
                        generation,
                        proxy: self.proxy(),
                    });
                    *cache = Some(c.clone());
                    Current::Local(c)
                }
            }
        })
    }

    /// Makes this thread (a worker) cache its proxy handle, and drop it as soon as a reload
    /// replaces the proxy, so the old configuration is released when its last request ends.
    /// Call inside the worker's runtime.
    pub fn cache_on_this_worker(self: &Arc<Self>) {
        CACHE.with(|c| *c.borrow_mut() = Some(None));
        let mut changed = self.replaced.subscribe();
        tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                CACHE.with(|c| {
                    if let Some(slot) = c.borrow_mut().as_mut() {
                        *slot = None;
                    }
                });
            }
        });
    }
}

thread_local! {
    /// `None`: no caching on this thread; `Some(None)`: a worker with nothing cached yet.
    static CACHE: RefCell<Option<Option<Arc<Cached>>>> = const { RefCell::new(None) };
}

/// A worker's handle on the proxy of one configuration.
struct Cached {
    state: u64,
    generation: u64,
    proxy: Arc<Proxy>,
}

/// The proxy a request runs with.
enum Current {
    Local(Arc<Cached>),
    Shared(Arc<Proxy>),
}

impl std::ops::Deref for Current {
    type Target = Proxy;
    fn deref(&self) -> &Proxy {
        match self {
            Current::Local(c) => &c.proxy,
            Current::Shared(p) => p,
        }
    }
}

/// A counter every worker adds to without contention: one cache line per worker, summed when
/// read.
pub struct Counter {
    parts: PerWorker<AtomicU64>,
}

impl Counter {
    /// A counter with a part for each of `workers` workers.
    pub fn new(workers: usize) -> Counter {
        Counter {
            parts: PerWorker::new(workers),
        }
    }

    /// Adds `n` on this worker's part.
    pub fn add(&self, n: u64) {
        self.parts.mine().fetch_add(n, Ordering::Relaxed);
    }

    /// The total over all workers.
    pub fn get(&self) -> u64 {
        self.parts.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    /// Each worker's part, worker 0 first.
    pub fn per_worker(&self) -> Vec<u64> {
        self.parts
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }
}

/// Counts a connection as open for as long as it lives.
struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    fn new(state: &Arc<Shared>) -> Self {
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
pub struct Acceptor {
    listeners: Vec<Listener>,
    /// Unix socket files we created, removed when we stop.
    socket_files: Vec<std::path::PathBuf>,
    state: Arc<Shared>,
}

impl Acceptor {
    /// Registers the listeners with tokio (inside a runtime). After this the server is ready:
    /// connections queue in the listen backlog until [`Acceptor::run`] accepts them.
    pub fn new(listeners: Vec<StdListener>, state: Arc<Shared>) -> anyhow::Result<Acceptor> {
        let mut registered = Vec::new();
        let mut socket_files = Vec::new();
        for l in listeners {
            let (listener, cleanup) = to_tokio(l).context("cannot register a listening socket")?;
            socket_files.extend(cleanup);
            registered.push(listener);
        }
        Ok(Acceptor {
            listeners: registered,
            socket_files,
            state,
        })
    }

    /// Serves until `shutdown` resolves; then closes the listeners (new connections are
    /// refused), lets open requests finish for up to `server.shutdown_timeout`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Acceptor {
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

/// Serves `/metrics` of the live configuration on `listener` (TCP) until `shutdown`.
pub async fn serve_metrics(
    listener: std::net::TcpListener,
    state: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener).context("cannot register the metrics socket")?;
    let answer: metrics_listener::Scrape = Arc::new(move |req| state.proxy().scrape(req));
    metrics_listener::serve(listener, answer, shutdown).await;
    Ok(())
}

/// [`Acceptor::new`] then [`Acceptor::run`].
pub async fn run(
    listeners: Vec<StdListener>,
    state: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Acceptor::new(listeners, state)?.run(shutdown).await
}

async fn accept_loop(listener: Listener, state: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stop) => return,
            r = accept(&listener) => r,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let current = state.current();
                let server = &current.config.server;
                // Over the cap: closed at once (dropped), before any TLS or HTTP work.
                let Ok(slot) = state.per_ip.admit(peer.ip(), server.max_connections_per_ip) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ip = Some(peer.ip());
                let (state, stop) = (state.clone(), stop.clone());
                match server.tls.as_ref() {
                    Some(tls) => {
                        let tls = tls.server.clone();
                        tokio::spawn(async move {
                            let _slot = slot;
                            serve_tls(stream, ip, tls, state, stop).await;
                        });
                    }
                    None => {
                        let peer = Peer { ip, https: false };
                        tokio::spawn(async move {
                            let _slot = slot;
                            serve_connection(stream, peer, state, stop).await;
                        });
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
    state: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let limit = state.current().config.server.header_read_timeout;
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
    state: &Arc<Shared>,
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
    // Count and pick the proxy here, not in the future: no per-request clone of the state
    // every worker shares.
    service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if session::is_websocket(req.method(), req.version(), req.headers()) {
            let open = Arc::new(ConnGuard::new(&state));
            req.extensions_mut()
                .insert(Session::new(open, stop.clone()));
        }
        state.requests.add(1);
        let proxy = state.current();
        async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
    })
}

async fn serve_connection<I>(io: I, peer: Peer, state: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = ConnGuard::new(&state);
    let (header_read_timeout, max_header_size) = {
        let server = &state.current().config.server;
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
    // The connection, switched to a graceful shutdown when the server stops. The stop future
    // is polled once to register the task's waker, and again only when the channel changed
    // (one atomic load per wake-up, instead of polling it each time).
    let probe = stop.clone();
    let mut stop_signal = std::pin::pin!(stopped(&mut stop));
    let (mut registered, mut draining) = (false, false);
    let serving = std::future::poll_fn(|cx| {
        if !draining && (!registered || probe.has_changed().unwrap_or(true)) {
            registered = true;
            if stop_signal.as_mut().poll(cx).is_ready() {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
        conn.as_mut().poll(cx)
    });
    let result = polls.count(std::pin::pin!(serving)).await;
    if let Err(e) = result {
        tracing::debug!("connection ended with an error: {e}");
    }
}
