//! Everything that can go wrong with one request, as the client sees it: a status code and an
//! OpenAI-shaped JSON body (`{"error":{"message","type","code"}}`), so SDKs show the message.
//!
//! Messages name the backend and its URL, never a key or a header value.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::BodyError;
use crate::config::format_duration;

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
    #[error("cannot read one model from the body for {path}: {why}; the request is refused, as a backend could read another model than the proxy routes by (send \"model\" once)")]
    AmbiguousModel { path: String, why: &'static str },
    #[error("no backend listed its models: {0}")]
    NoModelList(String),
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
            | ProxyError::CrossSite(_) => StatusCode::FORBIDDEN,
            ProxyError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::NoRoute(_)
            | ProxyError::NotFound(_)
            | ProxyError::ModelNotFound { .. }
            | ProxyError::UnknownModel(_)
            | ProxyError::UnknownListBackend(_)
            | ProxyError::NoMetrics => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientStalled(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Refused { .. }
            | ProxyError::Unreachable { .. }
            | ProxyError::Tls { .. }
            | ProxyError::BackendFailed { .. }
            | ProxyError::NoServer { .. }
            | ProxyError::UnitControl { .. }
            | ProxyError::NoModelList(_) => StatusCode::BAD_GATEWAY,
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
            ProxyError::BackendFailed { .. } | ProxyError::NoModelList(_) => "backend_error",
        }
    }

    /// `error.type`: the client's fault or the proxy's (OpenAI uses the same split).
    pub fn kind(&self) -> &'static str {
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
            | ProxyError::UnknownModel(_)
            | ProxyError::NotOnDemand { .. } => Some("model"),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        json_body(&self.to_string(), self.kind(), self.code(), self.param())
    }

    /// A complete response for this error.
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = Response::new(B::from(self.body()));
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
            _ => {}
        }
        res
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

/// `{"error":{"message":...,"type":...,"code":...}}`
pub(crate) fn json_error(message: &str, kind: &str, code: &str) -> Bytes {
    json_body(message, kind, code, None)
}

/// `{"error":{"message":...,"type":...,"code":...}}`, and `"param"` when there is one.
fn json_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        param: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let body = Outer {
        error: Inner {
            message,
            kind,
            code,
            param,
        },
    };
    // Serializing three strings cannot fail; fall back to a fixed body all the same.
    serde_json::to_vec(&body).map_or_else(
        |_| {
            Bytes::from_static(
                b"{\"error\":{\"message\":\"error\",\"type\":\"proxy_error\",\"code\":null}}",
            )
        },
        Bytes::from,
    )
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
