//! Everything that can go wrong with one request, as the client sees it: a status code and a
//! JSON body in the shape of the client's API ([`shape`]: OpenAI's
//! `{"error":{"message","type","code"}}` unless the request is Anthropic's or Ollama's), so
//! that each client shows the message.
//!
//! Messages name the backend and its URL, never a key or a header value.

mod shape;

use shape::json_body;
pub(crate) use shape::json_error;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::BodyError;
use crate::clients::rate::format_reset;
use crate::clients::{Limit, Refused};
use crate::config::format_duration;
use crate::routing::api::Api;

/// A request that could not be (fully) proxied.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid request path: {0}")]
    BadPath(&'static str),
    #[error("the request target is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("ambiguous request framing: {0}")]
    BadFraming(&'static str),
    #[error("invalid Host header: {0}")]
    BadHost(&'static str),
    #[error("Host {0} is not a name of this proxy: it answers only requests addressed to localhost, an IP address, this machine's name or a name in server.allowed_hosts (a guard against DNS rebinding)")]
    HostNotAllowed(String),
    #[error("requests from web pages are refused unless their origin is in server.cors_origins, and Origin {0} is not")]
    OriginNotAllowed(String),
    #[error("requests from web pages are refused unless their origin is in server.cors_origins; this one came from a page of another site (Sec-Fetch-Site: {0}) without an Origin")]
    CrossSite(&'static str),
    #[error("missing or invalid client token: send \"Authorization: Bearer TOKEN\" with a token from server.client_tokens_file")]
    Unauthorized,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("not found: {0} (the API is under /v1; see / for the routes)")]
    NotFound(String),
    #[error("method {0} is not supported by this proxy")]
    MethodNotAllowed(http::Method),
    #[error(
        "the model {model} is not served here: no route for {path} takes it (see / for the routes)"
    )]
    ModelNotFound {
        /// Quoted, and cut short when long.
        model: String,
        path: String,
    },
    #[error("cannot choose a backend for {path}, whose routes go by model: {why}")]
    NoModel {
        path: String,
        why: String,
        code: &'static str,
    },
    #[error("WebSocket upgrades on {0} are routed by model and this one names none: name it in the query (?model=NAME), or send the request over HTTP")]
    WebSocketModelRequired(String),
    #[error("cannot read one model from the body for {path}: {why}; the request is refused, as a backend could read another model than the proxy routes by (send \"model\" once)")]
    AmbiguousModel { path: String, why: &'static str },
    #[error("no backend listed its models: {0}")]
    NoModelList(String),
    #[error("no backend told its version: {0}")]
    NoVersion(String),
    #[error("no backend named {0} takes part in the model list (its list_models is false, or it does not exist)")]
    UnknownListBackend(String),
    #[error("request body is larger than the limit of {limit} bytes (server.max_body_size)")]
    BodyTooLarge { limit: u64 },
    #[error("the client stopped sending the request body for {}", format_duration(*.0))]
    ClientStalled(Duration),
    #[error("the request body could not be read from the client: {0}")]
    ClientBody(String),
    #[error("backend '{backend}' ({url}) refused the connection")]
    Refused { backend: String, url: String },
    #[error("backend '{backend}' ({url}) is unreachable: {detail}")]
    Unreachable {
        backend: String,
        url: String,
        detail: String,
    },
    #[error("backend '{backend}' ({url}) did not accept the connection within {}", format_duration(*after))]
    ConnectTimeout {
        backend: String,
        url: String,
        after: Duration,
    },
    #[error("TLS handshake with backend '{backend}' ({url}) failed: {detail}")]
    Tls {
        backend: String,
        url: String,
        detail: String,
    },
    #[error("backend '{backend}' ({url}) sent no response headers within {} (response_timeout)", format_duration(*after))]
    ResponseTimeout {
        backend: String,
        url: String,
        after: Duration,
    },
    #[error("backend '{backend}' ({url}) did not come up within {} (start_timeout): {detail}", format_duration(*after))]
    StartTimeout {
        backend: String,
        url: String,
        after: Duration,
        detail: String,
    },
    #[error("backend '{backend}' did not get its turn in swap group '{group}' within {}: {detail}", format_duration(*after))]
    SwapTimeout {
        backend: String,
        group: String,
        after: Duration,
        detail: String,
    },
    #[error("backend '{backend}' ({url}) failed before responding: {detail}")]
    BackendFailed {
        backend: String,
        url: String,
        detail: String,
    },
    #[error("metrics are off")]
    NoMetrics,
    #[error("the model {0} is not served here: no route, alias or backend's model list has it (see /models)")]
    UnknownModel(String),
    #[error("the model {model} cannot be loaded or unloaded: backend '{backend}' {why}")]
    NotOnDemand {
        /// Quoted, and cut short when long.
        model: String,
        backend: String,
        why: &'static str,
    },
    #[error("invalid request body: {0}")]
    BadControlBody(String),
    #[error("loading and unloading models is refused to web pages of other origins ({0})")]
    NotSameOrigin(String),
    #[error("backend '{backend}': systemctl {action} {unit} failed: {detail}")]
    UnitControl {
        backend: String,
        action: &'static str,
        unit: String,
        detail: String,
    },
    #[error("client '{client}' may not use the model {model} (see models in [clients.{client}])")]
    ModelNotAllowed {
        client: Arc<str>,
        /// Quoted, and cut short when long.
        model: String,
    },
    #[error("client '{client}' may not use {path} (see routes in [clients.{client}])")]
    RouteNotAllowed { client: Arc<str>, path: String },
    #[error("client '{client}' may not use the proxy's key for backend '{backend}' (see backends_with_server_key in [clients.{client}])")]
    ServerKeyNotAllowed { client: Arc<str>, backend: String },
    #[error("{}", rate_limited(.0))]
    RateLimited(Box<Refused>),
    #[error("backend '{backend}' is busy: {limit} request(s) running (max_concurrent) and none finished within {} (queue_timeout)", format_duration(*after))]
    BackendBusy {
        backend: String,
        limit: usize,
        after: Duration,
    },
    #[error("backend '{backend}' has no server to take the request: {detail}")]
    NoServer {
        backend: String,
        /// Each server and why it is out, cut short when long.
        detail: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadPath(_)
            | ProxyError::ClientBody(_)
            | ProxyError::BadFraming(_)
            | ProxyError::BadHost(_)
            | ProxyError::NoModel { .. }
            | ProxyError::NotOnDemand { .. }
            | ProxyError::BadControlBody(_)
            | ProxyError::AmbiguousModel { .. } => StatusCode::BAD_REQUEST,
            ProxyError::HostNotAllowed(_)
            | ProxyError::OriginNotAllowed(_)
            | ProxyError::NotSameOrigin(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::RouteNotAllowed { .. }
            | ProxyError::ServerKeyNotAllowed { .. }
            | ProxyError::CrossSite(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BackendBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::NoRoute(_)
            | ProxyError::NotFound(_)
            | ProxyError::ModelNotFound { .. }
            | ProxyError::UnknownModel(_)
            | ProxyError::UnknownListBackend(_)
            | ProxyError::NoMetrics => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::WebSocketModelRequired(_) => StatusCode::UPGRADE_REQUIRED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientStalled(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Refused { .. }
            | ProxyError::Unreachable { .. }
            | ProxyError::Tls { .. }
            | ProxyError::BackendFailed { .. }
            | ProxyError::NoServer { .. }
            | ProxyError::UnitControl { .. }
            | ProxyError::NoModelList(_)
            | ProxyError::NoVersion(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::StartTimeout { .. }
            | ProxyError::SwapTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The backend an error is about, if any: it goes in the response's `X-Backend`.
    pub fn backend(&self) -> Option<&str> {
        match self {
            ProxyError::Refused { backend, .. }
            | ProxyError::Unreachable { backend, .. }
            | ProxyError::ConnectTimeout { backend, .. }
            | ProxyError::Tls { backend, .. }
            | ProxyError::ResponseTimeout { backend, .. }
            | ProxyError::StartTimeout { backend, .. }
            | ProxyError::SwapTimeout { backend, .. }
            | ProxyError::BackendFailed { backend, .. }
            | ProxyError::NotOnDemand { backend, .. }
            | ProxyError::UnitControl { backend, .. }
            | ProxyError::BackendBusy { backend, .. }
            | ProxyError::NoServer { backend, .. } => Some(backend),
            _ => None,
        }
    }

    /// Machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadPath(_) => "invalid_path",
            ProxyError::UriTooLong(_) => "uri_too_long",
            ProxyError::BadFraming(_) => "invalid_framing",
            ProxyError::BadHost(_) => "invalid_host",
            ProxyError::HostNotAllowed(_) => "host_not_allowed",
            ProxyError::OriginNotAllowed(_)
            | ProxyError::CrossSite(_)
            | ProxyError::NotSameOrigin(_) => "origin_not_allowed",
            ProxyError::Unauthorized => "invalid_api_key",
            ProxyError::NoRoute(_) => "no_route",
            ProxyError::NotFound(_) | ProxyError::UnknownListBackend(_) | ProxyError::NoMetrics => {
                "not_found"
            }
            ProxyError::ModelNotFound { .. } | ProxyError::UnknownModel(_) => "model_not_found",
            ProxyError::NotOnDemand { .. } => "model_not_on_demand",
            ProxyError::BadControlBody(_) => "invalid_request_body",
            ProxyError::UnitControl { .. } => "unit_control_failed",
            ProxyError::NoModel { code, .. } => code,
            ProxyError::AmbiguousModel { .. } => "ambiguous_model",
            ProxyError::WebSocketModelRequired(_) => "websocket_model_required",
            ProxyError::MethodNotAllowed(_) => "method_not_allowed",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
            ProxyError::ClientStalled(_) => "client_timeout",
            ProxyError::ClientBody(_) => "client_body_error",
            ProxyError::Refused { .. }
            | ProxyError::Unreachable { .. }
            | ProxyError::NoServer { .. } => "backend_unreachable",
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                "backend_timeout"
            }
            ProxyError::StartTimeout { .. } => "backend_start_timeout",
            ProxyError::SwapTimeout { .. } => "backend_swap_timeout",
            ProxyError::Tls { .. } => "backend_tls_error",
            ProxyError::BackendFailed { .. }
            | ProxyError::NoModelList(_)
            | ProxyError::NoVersion(_) => "backend_error",
            ProxyError::ModelNotAllowed { .. } => "model_not_allowed",
            ProxyError::RouteNotAllowed { .. } => "route_not_allowed",
            ProxyError::ServerKeyNotAllowed { .. } => "server_key_not_allowed",
            ProxyError::RateLimited(_) => "rate_limit_exceeded",
            ProxyError::BackendBusy { .. } => "backend_busy",
        }
    }

    /// `error.type`: the client's fault or the proxy's (OpenAI uses the same split).
    pub fn kind(&self) -> &'static str {
        if let ProxyError::RateLimited(r) = self {
            // As OpenAI's 429s say which limit it was.
            return match r.limit {
                Limit::Concurrent | Limit::RequestsPerMinute => "requests",
                Limit::TokensPerMinute | Limit::TokensPerDay => "tokens",
            };
        }
        if self.status().is_client_error() {
            "invalid_request_error"
        } else {
            "proxy_error"
        }
    }

    /// `error.param`: the request parameter an error is about, if any.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            ProxyError::AmbiguousModel { .. }
            | ProxyError::WebSocketModelRequired(_)
            | ProxyError::UnknownModel(_)
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::NotOnDemand { .. } => Some("model"),
            _ => None,
        }
    }

    /// The JSON body, OpenAI's shape.
    pub fn body(&self) -> Bytes {
        json_body(&self.to_string(), self.kind(), self.code(), self.param())
    }

    /// The JSON body in the shape of `api`.
    pub fn body_in(&self, api: Api) -> Bytes {
        match api {
            Api::OpenAi => self.body(),
            Api::Anthropic => shape::anthropic(&self.to_string(), self.status()),
            Api::Ollama => shape::ollama(&self.to_string()),
        }
    }

    /// A complete response for this error, OpenAI's shape.
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        self.response_in(Api::OpenAi)
    }

    /// A complete response for this error, its body in the shape of `api`.
    pub fn response_in<B: From<Bytes>>(&self, api: Api) -> Response<B> {
        let mut res = Response::new(B::from(self.body_in(api)));
        *res.status_mut() = self.status();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            ProxyError::MethodNotAllowed(_) => {
                res.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            // Bytes after an ambiguously framed request must never be read as a request.
            ProxyError::BadFraming(_) => {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::Unauthorized => {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"openai-proxy\""),
                );
            }
            ProxyError::RateLimited(r) => limit_headers(res.headers_mut(), r),
            ProxyError::BackendBusy { .. } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// The message of a request over a client's limit.
fn rate_limited(r: &Refused) -> String {
    let why = match r.limit {
        Limit::Concurrent => format!("{} requests in flight at once", r.value),
        Limit::RequestsPerMinute => format!("{} requests a minute", r.value),
        Limit::TokensPerMinute => format!("{} tokens a minute", r.value),
        Limit::TokensPerDay => format!("{} tokens a day (the day ends at midnight UTC)", r.value),
    };
    format!(
        "rate limit reached for client '{}': {why} ({} in [clients.{}]); try again in {}",
        r.client,
        r.limit.key(),
        r.client,
        format_reset(r.retry_after)
    )
}

/// `Retry-After` (whole seconds, rounded up), `retry-after-ms`, and OpenAI's
/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits the client has.
fn limit_headers(h: &mut HeaderMap, r: &Refused) {
    let secs = r.retry_after.as_secs() + u64::from(r.retry_after.subsec_nanos() > 0);
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    let ms = u64::try_from(r.retry_after.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    h.insert("retry-after-ms", HeaderValue::from(ms));
    for (kind, standing) in [("requests", r.requests), ("tokens", r.tokens)] {
        let Some(s) = standing else { continue };
        let name = |what: &str| {
            HeaderName::try_from(format!("x-ratelimit-{what}-{kind}"))
                .unwrap_or(HeaderName::from_static("x-ratelimit"))
        };
        h.insert(name("limit"), HeaderValue::from(s.limit));
        h.insert(name("remaining"), HeaderValue::from(s.remaining));
        if let Ok(v) = HeaderValue::from_str(&format_reset(s.reset)) {
            h.insert(name("reset"), v);
        }
    }
}

/// A client's body that could not be read.
impl From<&BodyError> for ProxyError {
    fn from(b: &BodyError) -> Self {
        match b {
            BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit: *limit },
            BodyError::Idle(d) => ProxyError::ClientStalled(*d),
            BodyError::Hyper(h) => ProxyError::ClientBody(h.to_string()),
            BodyError::Superseded => ProxyError::ClientBody(b.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let e = ProxyError::Refused {
            backend: "ollama".into(),
            url: "http://127.0.0.1:11434".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "backend 'ollama' (http://127.0.0.1:11434) refused the connection"
        );
        assert_eq!(v["error"]["type"], "proxy_error");
        assert_eq!(v["error"]["code"], "backend_unreachable");
        assert!(v["error"].get("param").is_none());
        let e = ProxyError::BadPath("x");
        assert_eq!(e.kind(), "invalid_request_error");
    }

    #[test]
    fn an_ambiguous_model_is_a_client_error_about_the_model() {
        let e = ProxyError::AmbiguousModel {
            path: "/v1/chat/completions".into(),
            why: "two",
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "ambiguous_model");
        assert_eq!(v["error"]["param"], "model");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("/v1/chat/completions: two;"), "{message}");
    }
}
