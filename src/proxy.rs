//! One request: route it (by path, and by model where routes list `models`), rewrite it for
//! its backend, forward it with the body streamed, and stream the backend's response back, or
//! answer with an OpenAI-shaped error.
//!
//! Routing by model reads no more of the body than it needs: the `model` found in its first
//! bytes ([`crate::model`]) picks the route, an alias is spliced in, and the bytes read go to
//! the backend first, followed by the rest of the stream ([`RequestBody`]).
//!
//! A [`Proxy`] is an immutable snapshot built from one [`Config`]: routes, backends with their
//! connection pools, limits. Reloading builds a new one; requests already running keep theirs.

mod by_model;

use std::error::Error as StdError;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, Entry, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access::AccessRecord;
use crate::backend_units::Watch;
use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::config::{BackendConfig, Config};
use crate::error::ProxyError;
use crate::guard::{Admission, Guard};
use crate::headers::{self, X_BACKEND, X_REQUEST_ID};
use crate::models::Catalog;
use crate::pool::UpstreamError;
use crate::router::{normalize_path, Router};
use crate::tokens::ClientTokens;
use crate::upstream::Backend;

/// What a route points at.
#[derive(Debug, Clone)]
pub struct Target {
    pub backend: Arc<Backend>,
    /// The route's prefix, for the access log.
    pub route: Arc<str>,
}

/// Everything a request needs, built from one config.
pub struct Proxy {
    pub config: Arc<Config>,
    router: Router<Target>,
    /// `GET /v1/models` answered by the proxy.
    catalog: Arc<Catalog>,
    /// Host and Origin checks, CORS.
    guard: Guard,
    /// `server.secret_headers` beyond the built-in ones.
    extra_secrets: Box<[HeaderName]>,
    /// The `/` page, made once.
    status_page: Bytes,
    /// Its part that says which backends systemd starts on demand, and whether they run.
    on_demand: Watch,
}

impl Proxy {
    /// Builds the routes and a client per backend. Fails only on TLS set-up problems that the
    /// config validation could not see.
    pub fn new(config: Config) -> anyhow::Result<Proxy> {
        let workers = config.server.workers.resolve();
        let mut backends = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            backends.push(Arc::new(Backend::new(b.clone(), workers)?));
        }
        let router = config.router(|r| {
            let backend = backends
                .iter()
                .find(|b| b.config.name == r.backend)
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!("route {} names unknown backend {}", r.path, r.backend)
                })?;
            Ok(Target {
                backend,
                route: Arc::from(r.path.as_str()),
            })
        })?;
        let catalog = Catalog::new(
            by_model::members(&config, &router),
            config.routes_by_model(),
            headers::extra_secrets(&config.server.secret_headers),
        );
        let status_page = status_page(&router, &catalog);
        Ok(Proxy {
            on_demand: Watch::new(&config),
            guard: Guard::new(&config.server),
            extra_secrets: headers::extra_secrets(&config.server.secret_headers),
            config: Arc::new(config),
            router,
            catalog,
            status_page,
        })
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
    ) -> Response<ResponseBody> {
        let rid = headers::request_id(req.headers());
        let mut access = self.config.log.access_log.then(|| {
            Box::new(AccessRecord::new(
                rid.clone(),
                req.method().clone(),
                Instant::now(),
            ))
        });
        let (result, cors) = match self.admit(&req, peer) {
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
        if let Some(mut a) = access {
            a.status = res.status().as_u16();
            a.headers_after = a.start.elapsed();
            res.body_mut().set_access(a);
        }
        res
    }

    /// Before anything else looks at a request: its head (length, framing), and who sent it
    /// (`guard`: Host, Origin, CORS preflights). Requests over a Unix socket have no peer.
    fn admit(&self, req: &Request<Incoming>, peer: Option<IpAddr>) -> Admission {
        if let Err(e) = check_head(req.uri(), req.headers()) {
            return Admission::Refuse(e);
        }
        self.guard
            .admit(req.method(), req.version(), req.headers(), peer.is_none())
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: Option<IpAddr>,
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
        if &*path != "/health" {
            check_client_token(&self.config.server.client_tokens, &mut parts.headers)?;
        }
        match &*path {
            "/health" => {
                return Ok(own_response(
                    "application/json",
                    Bytes::from_static(b"{\"status\":\"ok\"}\n"),
                ))
            }
            "/" => {
                let on_demand = self.on_demand.describe().await;
                let page = if on_demand.is_empty() {
                    self.status_page.clone()
                } else {
                    Bytes::from([&self.status_page[..], b"\n", on_demand.as_bytes()].concat())
                };
                return Ok(own_response("text/plain; charset=utf-8", page));
            }
            _ => {}
        }
        if parts.method == Method::GET && &*path == "/v1/models" {
            if let Some(res) = self.catalog.answer(&parts, peer, rid).await? {
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

        let (m, model_path) = match self.by_path_model(&path) {
            Some(found) => found,
            None if first.route.models.is_none() => (first, None),
            // Boxed: its state stays out of this future, which every request moves.
            None => (
                Box::pin(self.by_body_model(&path, &mut parts.headers, &mut body)).await?,
                None,
            ),
        };
        let target = m.route.target.clone();
        let backend = &target.backend;
        let bc = &backend.config;
        body.set_idle_timeout(bc.idle_timeout);
        let forward_path = match model_path {
            Some(p) => std::borrow::Cow::Owned(format!("{}{p}", bc.base_path)),
            None => m.forward_path(&bc.base_path),
        };
        if let Some(a) = access {
            a.route = Some(target.route.clone());
            a.backend = Some(backend.header.clone());
        }

        let uri = backend_uri(
            &parts.uri,
            &forward_path,
            bc.strips_query_keys(),
            &bc.scheme,
            &bc.authority,
        )?;
        drop(forward_path);
        drop(path);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        headers::rewrite_request(
            &mut parts.headers,
            &bc.auth,
            &self.extra_secrets,
            peer,
            rid,
            backend.host.as_ref(),
        );

        // Without a body, an idempotent request can be sent again when the pooled connection
        // it went out on turns out to have been closed by the backend (see `is_stale`).
        let replay = (parts.method.is_idempotent() && http_body::Body::is_end_stream(&body))
            .then(|| parts.clone());
        let deadline = Instant::now() + bc.response_timeout;
        let upstream = backend.send(Request::from_parts(parts, body));
        let mut result = tokio::time::timeout_at(deadline, upstream).await;
        if let (Some(parts), Ok(Err(e))) = (replay, &result) {
            if is_stale(e) {
                tracing::debug!(
                    "backend '{}': connection closed before any response; sending again",
                    bc.name
                );
                let again = Request::from_parts(parts, RequestBody::empty());
                result = tokio::time::timeout_at(deadline, backend.send(again)).await;
            }
        }
        let res = match result {
            Err(_) => {
                return Err(ProxyError::ResponseTimeout {
                    backend: bc.name.clone(),
                    url: bc.url.clone(),
                    after: bc.response_timeout,
                })
            }
            Ok(Err(e)) => return Err(classify(&e, bc)),
            Ok(Ok(res)) => res,
        };
        let (res, lease) = res;
        let (mut rparts, rbody) = res.into_parts();
        rparts.version = Version::HTTP_11;
        headers::rewrite_response(
            &mut rparts.headers,
            &backend.header,
            bc.takes_client_credentials(),
        );
        let mut body = ResponseBody::upstream(rbody, bc.idle_timeout);
        body.set_lease(lease);
        Ok(Response::from_parts(rparts, body))
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
/// its tokens; the header is then removed, so the token never reaches a backend.
fn check_client_token(
    tokens: &ClientTokens,
    headers: &mut http::HeaderMap,
) -> Result<(), ProxyError> {
    if tokens.enabled() {
        if !tokens.allows(headers) {
            return Err(ProxyError::Unauthorized);
        }
        headers.remove(header::AUTHORIZATION);
    }
    Ok(())
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

/// Whether a request failed because its connection was closed under it before any response:
/// what a pooled keep-alive connection does when the backend closed it just as it was reused
/// (the pool itself resends only when it notices before writing anything).
fn is_stale(err: &UpstreamError) -> bool {
    if err.is_connect() {
        return false;
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        cur = e.source();
    }
    false
}

/// Turns a client error into what the user needs to know: whose fault, which backend.
fn classify(err: &UpstreamError, bc: &BackendConfig) -> ProxyError {
    let backend = bc.name.clone();
    let url = bc.url.clone();
    let mut io_kind = None;
    let mut tls = None;
    let mut innermost = err.to_string();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit: *limit },
                BodyError::Idle(d) => ProxyError::ClientStalled(*d),
                BodyError::Hyper(h) => ProxyError::ClientBody(h.to_string()),
            };
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            tls = Some(t.to_string());
        }
        innermost = e.to_string();
        // An io::Error's `source()` skips the error it wraps (hyper-rustls wraps twice), so
        // descend through `get_ref()` instead.
        cur = match e.downcast_ref::<io::Error>() {
            Some(io) => {
                if io.kind() != io::ErrorKind::Other {
                    io_kind.get_or_insert(io.kind());
                }
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn StdError + 'static)),
                    None => e.source(),
                }
            }
            None => e.source(),
        };
    }
    if let Some(detail) = tls {
        let hint = if detail.contains("UnknownIssuer") {
            " (for a private CA, set ca_file)"
        } else {
            ""
        };
        return ProxyError::Tls {
            backend,
            url,
            detail: format!("{detail}{hint}"),
        };
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => ProxyError::Refused { backend, url },
        Some(io::ErrorKind::TimedOut) if err.is_connect() => ProxyError::ConnectTimeout {
            backend,
            url,
            after: bc.connect_timeout,
        },
        _ if err.is_connect() => ProxyError::Unreachable {
            backend,
            url,
            detail: innermost,
        },
        _ => ProxyError::BackendFailed {
            backend,
            url,
            detail: innermost,
        },
    }
}

fn status_page(router: &Router<Target>, catalog: &Catalog) -> Bytes {
    use std::fmt::Write;
    let mut s = format!(
        "openai-proxy {}\n\nPoint OpenAI clients here: OPENAI_BASE_URL=http://<this address>/v1\n\n\
         Routes (longest matching prefix first, then in file order; the first that takes the \
         request's model wins):\n",
        env!("CARGO_PKG_VERSION")
    );
    let width = router
        .routes()
        .iter()
        .map(|r| r.prefix.len())
        .max()
        .unwrap_or(0);
    for r in router.routes() {
        let b = &r.target.backend.config;
        let _ = write!(s, "  {:width$}  -> {} ({})", r.prefix, b.name, b.url);
        if let Some(rw) = &r.rewrite {
            let _ = write!(s, ", rewritten to {rw}");
        }
        let _ = write!(s, ", auth: {}", b.auth.describe());
        match &r.models {
            Some(set) => {
                let _ = writeln!(s, ", models: {}", set.patterns().join(", "));
            }
            None => s.push('\n'),
        }
    }
    let mut aliases = String::new();
    let mut shown: Vec<&str> = Vec::new();
    for r in router.routes() {
        let b = &r.target.backend.config;
        if shown.contains(&b.name.as_str()) {
            continue;
        }
        shown.push(&b.name);
        for (from, to) in &b.aliases {
            let _ = writeln!(aliases, "  {from} -> {to} on {}", b.name);
        }
    }
    if !aliases.is_empty() {
        s.push_str("\nAliases (the model a client names -> what its backend gets):\n");
        s.push_str(&aliases);
    }
    let names: Vec<&str> = catalog
        .members()
        .map(|m| m.backend.config.name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "\nModel list: GET /v1/models{}; GET /v1/models?backend=NAME for one of: {}",
        if catalog.is_merged() {
            " merges the lists of these backends"
        } else {
            " goes by path like any request"
        },
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    s.push_str("Health check: /health\n");
    Bytes::from(s)
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
