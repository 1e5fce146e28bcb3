//! One request, in phases that share one per-request context ([`context`]: its id, who sent
//! it, its access record), as pingora's proxy phases do:
//!
//! 1. **admit** ([`admit`]): the head (length, framing), `Host` and `Origin`, CORS
//!    preflights, the client token; what is refused here reaches no backend;
//! 2. **route** ([`route`]): the proxy's own answers ([`own`]: `/`, `/health`, the merged
//!    `/v1/models`), the route by path, or by the `model` its body names ([`by_model`], reading
//!    no more of the body than it needs; the bytes read go to the backend first);
//! 3. **rewrite** ([`rewrite`], [`headers`], [`query`]): the URL and headers for one server of
//!    the route's backend, its credentials policy applied;
//! 4. **send** ([`send`]): once, or, for pools, fallbacks and on-demand backends ([`start`]),
//!    to another server or the fallback while no byte of an answer has gone out; a WebSocket
//!    goes to [`websocket`];
//! 5. **finish** (here): the error's OpenAI-shaped answer, the request id, CORS headers, and
//!    the access record handed to the response body, which writes it when done.
//!
//! A [`Proxy`] is an immutable snapshot built from one [`Config`]: routes, backends with their
//! connection pools, limits. Reloading builds a new one; requests already running keep theirs.
//! What a reload keeps (the servers' health, the metrics' counters) is in [`Lasting`].

pub(crate) mod admit;
mod by_model;
mod context;
pub(crate) mod headers;
pub(crate) mod own;
pub(crate) mod query;
mod responses;
mod rewrite;
mod route;
mod send;
mod start;
pub(crate) mod websocket;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{Entry, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use self::context::Ctx;
use self::headers::{X_BACKEND, X_REQUEST_ID};
pub use self::rewrite::backend_uri;
use rustc_hash::FxHashMap;

use crate::body::ResponseBody;
use crate::clients::Client;
use crate::config::Config;
use crate::error::ProxyError;
use crate::observe::metrics::Tally;
use crate::proxy::admit::guard::{Admission, Guard};
use crate::proxy::own::catalog::Catalog;
use crate::proxy::websocket::revoke::Sessions;
use crate::proxy::websocket::session;
use crate::routing::routes::Router;
use crate::upstream::lasting::Lasting;
use crate::upstream::units::Watch;
use crate::upstream::Backend;

/// Who sent a request: the client's address (`None` over a Unix socket), and whether its
/// connection is TLS (`X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address; `None` over a Unix socket.
    pub ip: Option<IpAddr>,
    /// The connection is TLS.
    pub https: bool,
}

/// What a route points at.
#[derive(Debug, Clone)]
pub struct Target {
    pub backend: Arc<Backend>,
    /// The route's prefix, for the access log and the metrics.
    pub route: Arc<str>,
    /// The backend that answers when `backend` fails before a byte of its answer went out.
    pub fallback: Option<Arc<Backend>>,
    /// A 5xx answer of `backend` counts as a failure too.
    pub fallback_on_5xx: bool,
    /// WebSocket upgrades that name no model on a path routed by model come here.
    pub websockets_without_model: bool,
    /// The counters of this route with its backend, and with its fallback (metrics on).
    pub tally: Option<Arc<Tally>>,
    pub fallback_tally: Option<Arc<Tally>>,
}

/// Everything a request needs, built from one config.
pub struct Proxy {
    /// The config it was built from.
    pub config: Arc<Config>,
    router: Router<Target>,
    /// Every backend, in name order.
    backends: Vec<Arc<Backend>>,
    /// What outlives a reload of this config (health, metrics).
    pub lasting: Arc<Lasting>,
    /// The counters of requests the proxy answers itself (metrics on).
    unrouted: Option<Arc<Tally>>,
    /// `GET /v1/models` answered by the proxy.
    catalog: Arc<Catalog>,
    /// Host and Origin checks, CORS.
    guard: Guard,
    /// `server.secret_headers` beyond the built-in ones.
    extra_secrets: Box<[HeaderName]>,
    /// The `/` page's routes, made once (the servers' health is added when it is asked for).
    status_page: Bytes,
    /// Its part that says which backends systemd starts on demand, and whether they run.
    on_demand: Watch,
    /// The WebSocket sessions opened with a client token (taken over by the next config).
    sessions: Arc<Sessions>,
    /// The named clients, with their counters.
    pub(crate) clients: FxHashMap<Arc<str>, Arc<Client>>,
    /// The client of each client token, by its place ([`crate::ClientTokens::name_at`]).
    by_token: Box<[Option<Arc<Client>>]>,
}

impl Proxy {
    /// Builds the routes and a client per backend, with health and counters of its own (as
    /// at start; metrics on when `[metrics] listen` is set). Fails only on TLS set-up problems
    /// that the config validation could not see.
    pub fn new(config: Config) -> anyhow::Result<Proxy> {
        let workers = config.server.workers.resolve();
        let lasting = Lasting::new(config.metrics.listen.map(|_| workers));
        lasting.configure(&config, true);
        Proxy::with(config, &lasting)
    }

    /// [`Proxy::new`], keeping the health and counters of `lasting` (a reload's).
    pub fn with(config: Config, lasting: &Arc<Lasting>) -> anyhow::Result<Proxy> {
        let workers = config.server.workers.resolve();
        let mut backends = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            backends.push(Arc::new(Backend::new(b.clone(), workers, lasting)?));
        }
        let find = |name: &str| {
            backends
                .iter()
                .find(|b| b.config.name == name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("a route names unknown backend {name}"))
        };
        let metrics = lasting.metrics.as_deref();
        let router = config.router(|r| {
            let fallback = r.fallback.as_deref().map(find).transpose()?;
            Ok(Target {
                backend: find(&r.backend)?,
                route: Arc::from(r.path.as_str()),
                fallback_on_5xx: r.fallback_on_5xx,
                websockets_without_model: r.websockets_without_model,
                tally: metrics.map(|m| m.tally(&r.path, &r.backend)),
                fallback_tally: metrics
                    .and_then(|m| Some(m.tally(&r.path, r.fallback.as_deref()?))),
                fallback,
            })
        })?;
        let catalog = Catalog::new(
            |kind| by_model::members(&config, &router, kind),
            config.routes_by_model(),
            headers::extra_secrets(&config.server.secret_headers),
            &lasting.ledger,
        );
        let status_page = own::status::page(&router, &catalog, config.server.tls.is_some());
        lasting.configure(&config, false);
        let clients = lasting.clients.roster(&config.clients);
        let by_token = (config.server.client_tokens.by_place().iter())
            .map(|name| clients.get(name.as_ref()?).cloned())
            .collect();
        Ok(Proxy {
            clients,
            by_token,
            on_demand: Watch::new(&config),
            sessions: Sessions::new(config.server.client_tokens.clone()),
            guard: Guard::new(&config.server),
            extra_secrets: headers::extra_secrets(&config.server.secret_headers),
            config: Arc::new(config),
            router,
            unrouted: metrics.map(|m| m.tally("", "")),
            lasting: lasting.clone(),
            backends,
            catalog,
            status_page,
        })
    }

    /// Takes over the WebSocket sessions of `old`, the configuration this one replaces:
    /// those opened with a client token this one does not accept are ended.
    pub(crate) fn take_over_sessions(&mut self, old: &Proxy) {
        self.sessions = self.sessions.take_over(&old.sessions);
    }

    /// Every backend, in name order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The routes.
    pub fn routes(&self) -> &[crate::routing::routes::Route<Target>] {
        self.router.routes()
    }

    /// Handles one request; never fails (errors become responses). The phases: admit (the
    /// head, Host and Origin, CORS preflights), then route and send ([`Proxy::forward`]),
    /// then finish (the error's answer, the request id, CORS headers, the access record
    /// handed to the response body).
    pub async fn handle(&self, mut req: Request<Incoming>, peer: Peer) -> Response<ResponseBody> {
        let mut ctx = Ctx::new(
            &req,
            peer,
            self.config.log.access_log,
            self.unrouted.as_ref(),
            &self.lasting.ledger,
        );
        let (result, cors) = match self.admit(&mut req, peer) {
            // Boxed: the connection keeps room for this future as long as it lives (hyper
            // holds a service future in place), so a small one costs an idle connection or a
            // long stream little; the forwarding state lives only while the request does.
            Admission::Forward(cors) => (Box::pin(self.forward(req, &mut ctx)).await, cors),
            Admission::Preflight(headers) => {
                let mut res = Response::new(ResponseBody::full(Bytes::new()));
                *res.status_mut() = StatusCode::NO_CONTENT;
                *res.headers_mut() = headers;
                (Ok(res), None)
            }
            Admission::Refuse(e) => {
                ctx.path(req.uri(), None);
                (Err(e), None)
            }
        };
        let mut res = result.unwrap_or_else(|e| error_response(&e, &mut ctx));
        if let Some(cors) = cors {
            cors.apply(res.headers_mut());
        }
        finish(res, ctx)
    }
}

/// The answer to a request that failed: JSON in the shape of the client's API, and which
/// backend failed.
fn error_response(e: &ProxyError, ctx: &mut Ctx) -> Response<ResponseBody> {
    if let Some(who) = &ctx.who {
        who.usage.count_refusal(match e {
            ProxyError::RateLimited(r) => r.limit.key(),
            other => other.code(),
        });
    }
    if let Some(a) = ctx.access() {
        a.error = Some(e.to_string());
    }
    let mut res: Response<ResponseBody> = e.response_in(ctx.api);
    // Which backend failed (names are validated to be header-safe).
    if let Some(v) = e.backend().and_then(|b| HeaderValue::from_str(b).ok()) {
        res.headers_mut().insert(X_BACKEND.clone(), v);
    }
    res
}

/// The last phase: the request id on the answer, and the access record handed to what ends
/// the exchange (the response body, or a WebSocket session), which writes it when done.
fn finish(mut res: Response<ResponseBody>, ctx: Ctx) -> Response<ResponseBody> {
    let Ctx {
        rid, mut access, ..
    } = ctx;
    if let Entry::Vacant(e) = res.headers_mut().entry(&X_REQUEST_ID) {
        e.insert(rid);
    }
    if let Some(a) = access.as_deref_mut() {
        a.status = res.status().as_u16();
        a.headers_after = a.start.elapsed();
    }
    // A WebSocket: its access line is written when the session ends.
    if let Some(session) = session::Pending::take(&mut res) {
        session.join(access.take());
    }
    if let Some(a) = access {
        res.body_mut().set_progress(a);
    }
    res
}
