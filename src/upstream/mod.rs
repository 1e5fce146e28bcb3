//! Connections to backends, with each backend's own time-outs. A backend has one server or a
//! pool of them; each server is reached through its own connections: a plain-HTTP server
//! through a small pool of HTTP/1 connections per worker ([`crate::upstream::pool`]), an HTTPS one
//! through hyper-util's pooled client with TLS ([`tls`]), built when it is first used.
//!
//! Each request goes to the server of its backend with the fewest requests in flight (ties:
//! round robin), among those that are not out ([`health`]); what is out, and why, every worker
//! sees alike. The active checks of a backend's servers are in [`checks`].

pub(crate) mod affinity;
pub(crate) mod checks;
pub(crate) mod control;
pub(crate) mod failure;
pub(crate) mod health;
pub(crate) mod lasting;
pub(crate) mod pool;
pub(crate) mod queue;
pub(crate) mod swap;
mod tls;
pub(crate) mod units;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;

use self::health::{Avail, Health, LazyNow, Load, ServerState};
use self::pool::{Lease, Pool, UpstreamError};
use self::queue::{Place, Queue};
use self::swap::{SwapGroup, Turn};
pub(crate) use self::tls::http1_connector;
use self::tls::HttpClient;
use crate::body::{Hold, RequestBody};
use crate::config::{BackendConfig, ServerUrl};
use crate::sync::PerWorker;
use crate::upstream::lasting::Lasting;

/// How requests reach a server: a plain-HTTP server through its own pool; an HTTPS one
/// through its backend's TLS client.
enum Upstream {
    Plain(Pool<RequestBody>),
    Tls,
}

/// One server of a backend.
pub struct Server {
    pub url: ServerUrl,
    client: Upstream,
    /// The `Host` request header for a plain-HTTP server, made once (what hyper's client
    /// would otherwise format for every request). `None` for HTTPS, where HTTP/2 may be
    /// negotiated and the client sets `:authority` itself.
    pub host: Option<HeaderValue>,
    /// Its health, shared by every worker and kept across reloads.
    pub state: Arc<ServerState>,
}

/// A backend: its settings and its servers.
pub struct Backend {
    pub config: BackendConfig,
    pub servers: Box<[Server]>,
    /// The `X-Backend` response header value, made once.
    pub header: HeaderValue,
    /// Its name, shared (the access record and the ledger keep it).
    pub name: Arc<str>,
    /// Where each worker's next pick starts (pools): ties go round robin.
    round_robin: PerWorker<AtomicUsize>,
    /// The client of its HTTPS servers, made on first use.
    tls: OnceLock<Result<HttpClient, String>>,
    /// Its swap group: requests take turns with the other members'.
    pub swap: Option<Arc<SwapGroup>>,
    /// Its queue (`max_concurrent`).
    pub queue: Option<Arc<Queue>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.config.name)
            .field("url", &self.config.url())
            .finish()
    }
}

impl Backend {
    /// `workers`: how many worker threads will use it (one pool shard each); `lasting`: where
    /// its servers' health is kept across reloads.
    pub fn new(
        config: BackendConfig,
        workers: usize,
        lasting: &Lasting,
    ) -> anyhow::Result<Backend> {
        let header = HeaderValue::from_str(&config.name)
            .with_context(|| format!("backend name '{}' is not a header value", config.name))?;
        if config.is_https() {
            // What could fail later, found now (at start or reload).
            tls::ca_roots(&config)?;
        }
        let servers = config
            .servers
            .iter()
            .map(|url| Server {
                client: if url.is_https() {
                    Upstream::Tls
                } else {
                    let a = &url.authority;
                    Upstream::Plain(Pool::new(
                        a.host(),
                        a.port_u16().unwrap_or(80),
                        config.connect_timeout,
                        if config.on_demand {
                            pool::ON_DEMAND_IDLE
                        } else {
                            pool::IDLE_TIMEOUT
                        },
                        workers,
                    ))
                },
                host: host_header(url),
                state: lasting.server(&config.name, &url.url),
                url: url.clone(),
            })
            .collect();
        let round_robin = PerWorker::new(if config.is_pool() { workers } else { 1 });
        Ok(Backend {
            swap: config.swap_group.as_deref().map(|g| lasting.swap_group(g)),
            queue: config
                .max_concurrent
                .map(|n| lasting.queue(&config.name, n)),
            name: Arc::from(config.name.as_str()),
            config,
            servers,
            header,
            round_robin,
            tls: OnceLock::new(),
        })
    }

    /// The server for the next request, among those not `tried` yet (a bit per server): the
    /// one with the fewest requests in flight, ties in turn, skipping those that are out. A
    /// backend's only server is skipped only while its active check fails: with nowhere
    /// else to go, a request tries it whatever requests before it found.
    pub fn pick(&self, tried: u64) -> Option<usize> {
        let n = self.servers.len();
        if n == 1 {
            let only = tried == 0 && !matches!(self.servers[0].state.report(), Health::Down { .. });
            return only.then_some(0);
        }
        let start = self.round_robin.mine().fetch_add(1, Ordering::Relaxed);
        let mut now = LazyNow::default();
        let mut best: Option<(usize, u32)> = None;
        let mut trial = None;
        for k in 0..n {
            let i = (start + k) % n;
            if tried & (1 << i) != 0 {
                continue;
            }
            let s = &self.servers[i].state;
            match s.avail(&mut now) {
                Avail::Out => {}
                Avail::Trial(until) => trial = trial.or(Some((i, until))),
                Avail::In => {
                    let load = s.in_flight();
                    if best.map_or(true, |(_, l)| load < l) {
                        best = Some((i, load));
                    }
                }
            }
        }
        // A server whose back-off is over is tried by one request at once (it has nothing in
        // flight, so it would win anyway).
        if let Some((i, until)) = trial {
            if self.servers[i]
                .state
                .claim_trial(until, &self.config.health, &mut now)
            {
                return Some(i);
            }
        }
        best.map(|(i, _)| i)
    }

    /// [`Backend::pick`], but server `first` when it is not `tried` yet and not out (a
    /// follow-up goes to the server that holds what it follows).
    pub fn pick_first(&self, first: Option<usize>, tried: u64) -> Option<usize> {
        let usable = |i: usize| {
            tried & (1 << i) == 0
                && self
                    .servers
                    .get(i)
                    .is_some_and(|s| !matches!(s.state.avail(&mut LazyNow::default()), Avail::Out))
        };
        match first {
            Some(i) if usable(i) => Some(i),
            _ => self.pick(tried),
        }
    }

    /// Closes the idle pooled connections to its plain-HTTP servers (swapped out of its swap
    /// group: nothing may keep its server's forwarder busy).
    pub fn close_idle(&self) {
        for s in self.servers.iter() {
            if let Upstream::Plain(pool) = &s.client {
                pool.close_idle();
            }
        }
    }

    /// Whether requests count their server's load (a pool chooses by it).
    pub fn counts_load(&self) -> bool {
        self.servers.len() > 1
    }

    /// Whether requests are counted in flight on their server: a pool's (to choose by), and an
    /// on-demand backend's (unloading its model waits for them).
    pub fn counts_in_flight(&self) -> bool {
        self.counts_load() || self.config.on_demand
    }

    /// Its requests in flight, bodies included (counted where [`Self::counts_in_flight`]).
    pub fn in_flight(&self) -> u32 {
        self.servers.iter().map(|s| s.state.in_flight()).sum()
    }

    /// Why no server can take a request: each server and its state.
    pub fn why_none(&self) -> String {
        let mut s = String::new();
        for (i, server) in self.servers.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            s.push_str(&server.url.url);
            s.push_str(": ");
            s.push_str(&server.state.report().describe());
        }
        s
    }

    /// Sends a request without a body (the model list) to a server of the backend, trying the
    /// next when one cannot be connected to. `path` is the path and query; `Host` is set per
    /// server.
    pub async fn get(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<(Response<Incoming>, Held), UpstreamError> {
        let mut tried = 0u64;
        let mut last = None;
        while let Some(i) = self.pick(tried) {
            tried |= 1 << i;
            let server = &self.servers[i];
            let mut req = Request::new(RequestBody::empty());
            *req.uri_mut() = server.uri(path).map_err(UpstreamError::Connect)?;
            *req.headers_mut() = headers.clone();
            if let Some(h) = &server.host {
                req.headers_mut().insert(http::header::HOST, h.clone());
            }
            let load = self.counts_in_flight().then(|| server.state.start());
            match self.send(server, req).await {
                Ok((res, lease)) => {
                    server.state.answered(&self.config.name);
                    return Ok((
                        res,
                        Held {
                            lease,
                            load,
                            turn: None,
                            place: None,
                        },
                    ));
                }
                Err(e) if e.is_connect() => {
                    server
                        .state
                        .failed(&self.config.name, &e.to_string(), &self.config.health);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            UpstreamError::Connect(io::Error::other(format!(
                "no server can take it: {}",
                self.why_none()
            )))
        }))
    }
}

impl Server {
    /// The URL of `path_and_query` on this server (under the backend's base path already).
    pub fn uri(&self, path_and_query: &str) -> io::Result<Uri> {
        Uri::builder()
            .scheme(self.url.scheme.clone())
            .authority(self.url.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| io::Error::other(format!("cannot build the URL: {e}")))
    }
}

impl Backend {
    /// Sends a request to one of its servers; a response from a pooled connection comes with
    /// its lease, to be released when the response body has been read to its end.
    pub async fn send(
        &self,
        server: &Server,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Lease<RequestBody>>), UpstreamError> {
        match &server.client {
            Upstream::Plain(pool) => pool.send(req).await.map(|(r, l)| (r, Some(l))),
            Upstream::Tls => {
                let client = self
                    .tls
                    .get_or_init(|| tls::build_client(&self.config).map_err(|e| format!("{e:#}")))
                    .as_ref()
                    .map_err(|e| UpstreamError::Connect(io::Error::other(e.clone())))?;
                client
                    .request(req)
                    .await
                    .map(|r| (r, None))
                    .map_err(UpstreamError::Client)
            }
        }
    }
}

/// `Host` as hyper's client writes it for HTTP/1: the host, and the port unless it is 80.
fn host_header(url: &ServerUrl) -> Option<HeaderValue> {
    if url.is_https() {
        return None;
    }
    let a = &url.authority;
    let value = match a.port_u16() {
        None | Some(80) => a.host().to_string(),
        Some(port) => format!("{}:{port}", a.host()),
    };
    HeaderValue::from_str(&value).ok()
}

/// What keeps a response's server busy until its body is done: the pooled connection (back to
/// its pool when the body was read to its end), the request's count on its server, and its
/// turn in a swap group and its place on its backend (given up after the connection is
/// back).
#[derive(Default)]
pub struct Held {
    pub lease: Option<Lease<RequestBody>>,
    pub load: Option<Load>,
    pub turn: Option<Turn>,
    pub place: Option<Place>,
}

impl Held {
    /// The response was read to its end: the connection can serve another request.
    pub fn release(self) {
        if let Some(l) = self.lease {
            l.release();
        }
    }
}

impl Hold for Held {
    fn release(self: Box<Self>) {
        Held::release(*self);
    }
}
