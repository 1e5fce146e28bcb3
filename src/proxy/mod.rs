//! One request: route it (by path, and by model where routes list `models`), rewrite it for
//! its backend, forward it with the body streamed, and stream the backend's response back, or
//! answer with an OpenAI-shaped error.
//!
//! Routing by model reads no more of the body than it needs: the `model` found in its first
//! bytes ([`crate::routing::model`]) picks the route, an alias is spliced in, and the bytes read go to
//! the backend first, followed by the rest of the stream ([`RequestBody`]).
//!
//! A request goes to a server of its route's backend; when that fails before any byte of an
//! answer went to the client, it may go to another server of a pool, or to the route's
//! fallback ([`send`]).
//!
//! A [`Proxy`] is an immutable snapshot built from one [`Config`]: routes, backends with their
//! connection pools, limits. Reloading builds a new one; requests already running keep theirs.
//! What a reload keeps (the servers' health, the metrics' counters) is in [`Lasting`].

pub(crate) mod admit;
mod by_model;
pub(crate) mod headers;
pub(crate) mod own;
mod send;
mod start;
pub(crate) mod websocket;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, Entry, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use self::headers::{X_BACKEND, X_REQUEST_ID};
use crate::body::{RequestBody, ResponseBody};
use crate::config::tokens::ClientTokens;
use crate::config::{BackendConfig, Config};
use crate::error::ProxyError;
use crate::observe::access::AccessRecord;
use crate::observe::metrics::Tally;
use crate::proxy::admit::guard::{Admission, Guard};
use crate::proxy::own::catalog::Catalog;
use crate::proxy::websocket::session;
use crate::routing::routes::{normalize_path, Router};
use crate::upstream::lasting::Lasting;
use crate::upstream::units::Watch;
use crate::upstream::{Backend, Server};

/// Who sent a request: the client's address (`None` over a Unix socket), and whether its
/// connection is TLS (`X-Forwarded-Proto: https`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: Option<IpAddr>,
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
    /// The counters of this route with its backend, and with its fallback (metrics on).
    pub tally: Option<Arc<Tally>>,
    pub fallback_tally: Option<Arc<Tally>>,
}

/// Everything a request needs, built from one config.
pub struct Proxy {
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
}

impl Proxy {
    /// Builds the routes and a client per backend, with health and counters of its own (as
    /// at start; metrics on when `[metrics] listen` is set). Fails only on TLS set-up problems
    /// that the config validation could not see.
    pub fn new(config: Config) -> anyhow::Result<Proxy> {
        let workers = config.server.workers.resolve();
        let lasting = Lasting::new(config.metrics.listen.map(|_| workers));
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
                tally: metrics.map(|m| m.tally(&r.path, &r.backend)),
                fallback_tally: metrics
                    .and_then(|m| Some(m.tally(&r.path, r.fallback.as_deref()?))),
                fallback,
            })
        })?;
        let catalog = Catalog::new(
            by_model::members(&config, &router),
            config.routes_by_model(),
            headers::extra_secrets(&config.server.secret_headers),
        );
        let status_page = own::status::page(&router, &catalog, config.server.tls.is_some());
        Ok(Proxy {
            on_demand: Watch::new(&config),
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

    /// Every backend, in name order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The routes.
    pub fn routes(&self) -> &[crate::routing::routes::Route<Target>] {
        self.router.routes()
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(&self, mut req: Request<Incoming>, peer: Peer) -> Response<ResponseBody> {
        let rid = headers::request_id(req.headers());
        let log = self.config.log.access_log;
        let mut access = (log || self.unrouted.is_some()).then(|| {
            let mut a = Box::new(AccessRecord::new(
                rid.clone(),
                req.method().clone(),
                Instant::now(),
            ));
            a.log = log;
            a.count_on(self.unrouted.as_ref());
            a
        });
        let (result, cors) = match self.admit(&mut req, peer) {
            // Boxed: the connection keeps room for this future as long as it lives (hyper
            // holds a service future in place), so a small one costs an idle connection or a
            // long stream little; the forwarding state lives only while the request does.
            Admission::Forward(cors) => (
                Box::pin(self.forward(req, peer, &rid, access.as_deref_mut())).await,
                cors,
            ),
            Admission::Preflight(headers) => {
                let mut res = Response::new(ResponseBody::full(Bytes::new()));
                *res.status_mut() = StatusCode::NO_CONTENT;
                *res.headers_mut() = headers;
                (Ok(res), None)
            }
            Admission::Refuse(e) => {
                if let Some(a) = access.as_deref_mut() {
                    a.set_path(req.uri(), None);
                }
                (Err(e), None)
            }
        };
        let mut res = match result {
            Ok(res) => res,
            Err(e) => {
                if let Some(a) = access.as_deref_mut() {
                    a.error = Some(e.to_string());
                }
                let mut res: Response<ResponseBody> = e.response();
                // Which backend failed (names are validated to be header-safe).
                if let Some(v) = e.backend().and_then(|b| HeaderValue::from_str(b).ok()) {
                    res.headers_mut().insert(X_BACKEND.clone(), v);
                }
                res
            }
        };
        if let Entry::Vacant(e) = res.headers_mut().entry(&X_REQUEST_ID) {
            e.insert(rid);
        }
        if let Some(cors) = cors {
            cors.apply(res.headers_mut());
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
            res.body_mut().set_watch(a);
        }
        res
    }

    /// Before anything else looks at a request: its head (length, framing), and who sent it
    /// (`guard`: Host, Origin, CORS preflights). Requests over a Unix socket have no peer. An
    /// HTTP/2 request names its host in `:authority`: that becomes its `Host`.
    fn admit(&self, req: &mut Request<Incoming>, peer: Peer) -> Admission {
        if let Err(e) = check_head(req.uri(), req.headers()) {
            return Admission::Refuse(e);
        }
        if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().map(|a| a.as_str().to_owned());
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        self.guard.admit(
            req.method(),
            req.version(),
            req.headers(),
            peer.ip.is_none(),
        )
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        rid: &HeaderValue,
        mut access: Option<&mut AccessRecord>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(parts.method));
        }
        let normalized = normalize_path(parts.uri.path());
        if let Some(a) = access.as_deref_mut() {
            a.set_path(&parts.uri, normalized.as_deref().ok());
        }
        let path = normalized.map_err(|e| ProxyError::BadPath(e.0))?;
        let websocket = session::is_websocket(&parts.method, parts.version, &parts.headers);
        if &*path != "/health" {
            check_client_token(
                &self.config.server.client_tokens,
                &mut parts.headers,
                websocket,
            )?;
        }
        match &*path {
            "/health" => {
                return Ok(own_response(
                    "application/json",
                    Bytes::from_static(b"{\"status\":\"ok\"}\n"),
                ))
            }
            "/" => return Ok(self.status(&parts.headers).await),
            _ => {}
        }
        if parts.method == Method::GET && &*path == "/v1/models" {
            if let Some(res) = self.catalog.answer(&parts, peer.ip, rid).await? {
                if let Some(a) = access.as_deref_mut() {
                    a.backend = res.headers().get(&X_BACKEND).cloned();
                }
                return Ok(res);
            }
        }
        let Some(first) = self.router.find(&path) else {
            return Err(if path == "/v1" || path.starts_with("/v1/") {
                ProxyError::NoRoute(path.into_owned())
            } else {
                ProxyError::NotFound(path.into_owned())
            });
        };

        let limit = self.config.server.max_body_size;
        // hyper's size hint is exactly the Content-Length, when there is one.
        if body.size_hint().lower() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let counter = access.as_deref().map(|a| a.bytes_in.clone());
        let idle = first.route.target.backend.config.idle_timeout;
        let mut body = RequestBody::new(body, limit, idle, counter);

        let (m, model_path, model) = match self.by_path_model(&path) {
            Some((m, p)) => (m, p, None),
            None if first.route.models.is_none() => (first, None, None),
            // Boxed: its state stays out of this future, which every request moves.
            None => {
                let (m, model) =
                    Box::pin(self.by_body_model(&path, &parts.headers, &mut body)).await?;
                (m, None, model)
            }
        };
        let route = m.route;
        let target = &route.target;
        let backend = &target.backend;
        let bc = &backend.config;
        body.set_idle_timeout(bc.idle_timeout);
        let forward_path = match model_path {
            Some(p) => std::borrow::Cow::Owned(format!("{}{p}", bc.base_path)),
            None => m.forward_path(&bc.base_path),
        };
        if let Some(a) = access.as_deref_mut() {
            a.route = Some(target.route.clone());
            a.backend = Some(backend.header.clone());
            a.route_to(target.tally.as_ref());
        }
        parts.version = Version::HTTP_11;
        if websocket {
            // A session of a swap group's member holds the group's turn while it lasts, so a
            // swap never cuts it.
            let turn = self.wait_turn(backend).await?.and_then(|w| w.turn);
            // A session is joined to one server: the least busy one that is in.
            let Some(i) = backend.pick(0) else {
                return Err(send::no_server(backend));
            };
            let server = &backend.servers[i];
            parts.uri = server_uri(&parts.uri, &forward_path, bc, server)?;
            self.rewrite_request(&mut parts.headers, bc, peer, rid, server.host.as_ref());
            return Box::pin(self.forward_websocket(parts, body, backend, server, turn)).await;
        }
        if target.fallback.is_none() && !bc.is_pool() && !bc.waits() {
            // One server and nowhere else to go: the request is sent once, as it is.
            if let Some((span, with)) = model.as_ref().and_then(|f| f.alias_for(bc)) {
                by_model::fix_length(&mut parts.headers, &span, with.len());
                body.splice(span, &with);
            }
            let server = &backend.servers[0];
            let uri = server_uri(&parts.uri, &forward_path, bc, server)?;
            drop(forward_path);
            drop(path);
            parts.uri = uri;
            return self.send_once(parts, body, target, peer, rid, access).await;
        }
        let fallback_path = target
            .fallback
            .as_ref()
            .map(|fb| send::fallback_path(&path, &fb.config));
        let paths = [forward_path.into_owned(), fallback_path.unwrap_or_default()];
        drop(path);
        let outgoing = send::Outgoing {
            parts,
            body,
            model,
            paths,
            peer,
            rid,
        };
        Box::pin(self.send_retrying(outgoing, target, access)).await
    }
}

fn own_response(content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(body));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    *res.status_mut() = StatusCode::OK;
    res
}

/// Longest request target (path and query) accepted; longer ones get 414. A request line
/// longer than `server.max_header_size` never gets here: hyper answers 431.
pub const MAX_URI_LEN: usize = 8 << 10;

/// Refuses a request head that is too long or whose body framing another parser could read
/// differently. hyper already refuses differing `Content-Length`s and a `Transfer-Encoding`
/// that does not end in `chunked`; it accepts `gzip, chunked` and repeated `chunked`, which
/// only a confused client or a smuggling attempt sends, so anything but one plain `chunked` is
/// refused here (and the connection closed).
fn check_head(uri: &Uri, headers: &http::HeaderMap) -> Result<(), ProxyError> {
    if uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URI_LEN {
        return Err(ProxyError::UriTooLong(MAX_URI_LEN));
    }
    if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
        let repeated = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .nth(1)
            .is_some();
        if repeated || !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadFraming(
                "Transfer-Encoding must be exactly \"chunked\"",
            ));
        }
    }
    Ok(())
}

/// With `server.client_tokens_file`, a request needs `Authorization: Bearer TOKEN` with one of
/// its tokens; the header is then removed, so the token never reaches a backend. A WebSocket
/// request may present its token as a subprotocol instead (`openai-insecure-api-key.TOKEN`:
/// browsers cannot set headers on a WebSocket), which is removed likewise.
fn check_client_token(
    tokens: &ClientTokens,
    headers: &mut http::HeaderMap,
    websocket: bool,
) -> Result<(), ProxyError> {
    if tokens.enabled() {
        if tokens.allows(headers) {
            headers.remove(header::AUTHORIZATION);
        } else if !(websocket && session::take_token(headers, |t| tokens.allows_token(t))) {
            return Err(ProxyError::Unauthorized);
        }
    }
    Ok(())
}

/// The URL of a request on one server of its backend ([`backend_uri`] with the server's
/// scheme and authority and the backend's query-key policy).
fn server_uri(
    client: &Uri,
    forward_path: &str,
    bc: &BackendConfig,
    server: &Server,
) -> Result<Uri, ProxyError> {
    backend_uri(
        client,
        forward_path,
        bc.strips_query_keys(),
        &server.url.scheme,
        &server.url.authority,
    )
}

/// The URL a request goes to: the backend's scheme and authority, `forward_path`, and the
/// client's query string, without its key parameters when `strip_keys`
/// ([`headers::without_key_params`]). When the path and query are forwarded as the client
/// sent them (the usual case: already normal, no rewrite, no base path, no key in the query),
/// the client's path-and-query is reused as is, which copies nothing.
pub fn backend_uri(
    client: &Uri,
    forward_path: &str,
    strip_keys: bool,
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Uri, ProxyError> {
    let stripped = match client.query() {
        Some(q) if strip_keys => headers::without_key_params(q),
        _ => None,
    };
    let pq = match (client.path_and_query(), &stripped) {
        (Some(pq), None) if pq.path() == forward_path => pq.clone(),
        _ => {
            let query = match &stripped {
                Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
                None => client.query(),
            };
            let pq = match query {
                Some(q) => format!("{forward_path}?{q}"),
                None => forward_path.to_string(),
            };
            PathAndQuery::from_maybe_shared(Bytes::from(pq))
                .map_err(|_| ProxyError::BadPath("the query string is not valid"))?
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme.clone());
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(pq);
    Uri::from_parts(uri).map_err(|_| ProxyError::BadPath("cannot build the backend URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_uris() {
        let scheme = Scheme::HTTP;
        let authority = Authority::from_static("127.0.0.1:11434");
        let uri = |client: &'static str, fwd: &str| {
            backend_uri(&Uri::from_static(client), fwd, true, &scheme, &authority)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            uri("/v1/models?limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("//v1/./models?limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("/v1/audio/transcriptions", "/inference"),
            "http://127.0.0.1:11434/inference"
        );
        // Key parameters are removed (the query too when nothing else is left), unless the
        // backend keeps them.
        assert_eq!(
            uri("/v1/models?key=sk-x&limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("/v1/models?api-key=sk-x", "/v1/models"),
            "http://127.0.0.1:11434/v1/models"
        );
        let kept = backend_uri(
            &Uri::from_static("/v1/models?key=k"),
            "/v1/models",
            false,
            &scheme,
            &authority,
        )
        .unwrap();
        assert_eq!(kept.to_string(), "http://127.0.0.1:11434/v1/models?key=k");
    }
}
