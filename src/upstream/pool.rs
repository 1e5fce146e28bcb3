//! Connections to a plain-HTTP backend: a small pool of hyper HTTP/1 client connections
//! (`hyper::client::conn::http1`), one shard per worker, so a worker reuses the connections
//! its own event loop drives and no lock or reference count is shared between cores.
//!
//! A connection goes back to its shard when the response body has been read to its end (the
//! [`Lease`] travels with the body); one whose response was cut short is closed. A request
//! that finds its pooled connection closed before anything was written goes out again on
//! another one, as hyper-util's client did (`retry_canceled_requests`); the proxy itself sends
//! an idempotent request without a body again when the connection closed after it was written
//! (`proxy::is_stale`). Idle connections are closed after one to two [`IDLE_TIMEOUT`]s (for a
//! server started on demand, [`ON_DEMAND_IDLE`]s, so that systemd-socket-proxyd sees it idle)
//! by a task that runs only while some are idle, so an idle proxy wakes up for nothing, and a
//! request reads no clock for it. [`Pool::close_idle`] closes them at once (a model swap).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::sync;

/// How long an idle pooled connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an idle pooled connection to an on-demand server is kept: it is closed after one
/// to two of these, well before any `--exit-idle-time` of systemd-socket-proxyd that makes
/// sense (a model takes seconds to load).
pub(crate) const ON_DEMAND_IDLE: Duration = Duration::from_secs(1);
/// Bytes read from a backend at a time. hyper's default (8 KiB, growing for large bodies)
/// keeps 8 KiB per connection touched for as long as it lives; a stream of small events (SSE)
/// needs a fraction, and a large body costs a few more reads.
const READ_BUF: usize = 4 << 10;
/// At most this many idle connections are kept per backend and worker.
const MAX_IDLE: usize = 256;

/// Why a request to a backend failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, name unknown, time-out).
    Connect(io::Error),
    /// The connection failed while sending or waiting for the response.
    Request(hyper::Error),
    /// From hyper-util's client (HTTPS backends).
    Client(hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// Whether the failure happened while connecting (nothing was sent).
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect(_) => true,
            UpstreamError::Request(_) => false,
            UpstreamError::Client(e) => e.is_connect(),
        }
    }
}

/// Says only what failed; the error it wraps (its `source`) says why, so an error chain
/// reads `cannot connect: Connection refused (os error 111)`.
impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamError::Connect(_) => "cannot connect",
            UpstreamError::Request(_) | UpstreamError::Client(_) => "request failed",
        })
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            UpstreamError::Connect(e) => Some(e),
            UpstreamError::Request(e) => Some(e),
            UpstreamError::Client(e) => Some(e),
        }
    }
}

/// The pool of one plain-HTTP backend, whose requests carry bodies of type `B`.
pub(crate) struct Pool<B> {
    host: String,
    port: u16,
    connect_timeout: Duration,
    builder: http1::Builder,
    shards: Box<[Arc<Shard<B>>]>,
}

/// One worker's idle connections.
pub(crate) struct Shard<B> {
    idle: Mutex<Vec<Idle<B>>>,
    /// How long one is kept: one to two of these.
    keep: Duration,
    /// A task is closing expired connections of this shard.
    reaping: AtomicBool,
    /// Counts the reaper's rounds: a connection idle since an earlier round has been idle for
    /// at least `keep`.
    round: AtomicU64,
}

struct Idle<B> {
    tx: SendRequest<B>,
    /// The reaper's round when it became idle.
    round: u64,
}

/// A pooled connection lent to one request; [`Lease::release`] gives it back.
pub struct Lease<B> {
    tx: SendRequest<B>,
    shard: Arc<Shard<B>>,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A pool for `host:port` with one shard per worker, keeping idle connections for one to
    /// two `keep`s.
    pub(crate) fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        keep: Duration,
        workers: usize,
    ) -> Pool<B> {
        Pool {
            // IPv6 literals come bracketed in URLs.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            connect_timeout,
            builder: {
                let mut b = http1::Builder::new();
                b.read_buf_exact_size(Some(READ_BUF));
                b
            },
            shards: (0..workers.max(1))
                .map(|_| {
                    Arc::new(Shard {
                        idle: Mutex::default(),
                        keep,
                        reaping: AtomicBool::new(false),
                        round: AtomicU64::new(0),
                    })
                })
                .collect(),
        }
    }

    /// Closes every idle connection, of every worker (those lent to requests go on).
    pub(crate) fn close_idle(&self) {
        for shard in self.shards.iter() {
            let closed = std::mem::take(&mut *sync::lock(&shard.idle));
            // Dropped outside the lock: each ends its connection.
            drop(closed);
        }
    }

    /// Sends `req` on a pooled connection (or a new one); the response comes with the lease
    /// of its connection, to be released when the body has been read.
    pub(crate) async fn send(
        &self,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Lease<B>), UpstreamError> {
        // HTTP/1 to an origin server: the request line carries the path and query only
        // (RFC 9112 §3.2.1), never the absolute form hyper would write from a full URI.
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(pq);
        }
        let shard = &self.shards[sync::index() % self.shards.len()];
        while let Some(mut tx) = shard.checkout() {
            match tx.try_send_request(req).await {
                Ok(res) => {
                    let shard = shard.clone();
                    return Ok((res, Lease { tx, shard }));
                }
                // Closed before the request was written: try the next connection.
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(UpstreamError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect().await?;
        match tx.try_send_request(req).await {
            Ok(res) => Ok((
                res,
                Lease {
                    tx,
                    shard: shard.clone(),
                },
            )),
            Err(e) => Err(UpstreamError::Request(e.into_error())),
        }
    }

    async fn connect(&self) -> Result<SendRequest<B>, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, self.tcp())
            .await
            .map_err(|_| {
                UpstreamError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))
            })?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (tx, conn) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("backend connection ended with an error: {e}");
            }
        });
        Ok(tx)
    }

    /// Connects to the first address of the host that accepts.
    async fn tcp(&self) -> io::Result<TcpStream> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return TcpStream::connect(SocketAddr::new(ip, self.port)).await;
        }
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address")))
    }
}

impl<B> Shard<B> {
    /// The most recently used idle connection that is still open and ready.
    fn checkout(&self) -> Option<SendRequest<B>> {
        let mut idle = sync::lock(&self.idle);
        while let Some(c) = idle.pop() {
            if c.tx.is_ready() {
                return Some(c.tx);
            }
            // Closed by the backend, or (never seen) still busy: let it go.
        }
        None
    }
}

impl<B: Send + 'static> Lease<B> {
    /// Gives the connection back to its worker's pool (its response was read to the end).
    pub fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let Lease { tx, shard } = self;
        let mut idle = sync::lock(&shard.idle);
        if idle.len() >= MAX_IDLE {
            return;
        }
        idle.push(Idle {
            tx,
            round: shard.round.load(Ordering::Relaxed),
        });
        drop(idle);
        if !shard.reaping.swap(true, Ordering::Relaxed) {
            reap(Arc::downgrade(&shard));
        }
    }
}

/// Every `keep` of the shard, closes its connections that were already idle at the
/// previous round; ends when none is left, or when the pool is gone (a reload replaced its
/// backend: dropping the pool closes its idle connections at once).
fn reap<B: Send + 'static>(shard: Weak<Shard<B>>) {
    tokio::spawn(async move {
        loop {
            let Some(keep) = shard.upgrade().map(|s| s.keep) else {
                return;
            };
            tokio::time::sleep(keep).await;
            let Some(shard) = shard.upgrade() else {
                return;
            };
            let mut idle = sync::lock(&shard.idle);
            let round = shard.round.fetch_add(1, Ordering::Relaxed);
            idle.retain(|c| c.round == round && !c.tx.is_closed());
            if idle.is_empty() {
                shard.reaping.store(false, Ordering::Relaxed);
                return;
            }
        }
    });
}
