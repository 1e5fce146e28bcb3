//! CORS for the web pages `server.cors_origins` allows (`guard` decides which): the answer
//! to their preflights, and the headers that let them read responses (streams included: the
//! headers go out before the first event).
//!
//! The proxy answers preflights itself, so no backend needs CORS of its own, and a backend's
//! own CORS headers never widen what the config allows. Requests are not credentialed
//! (cookies stay out of CORS): `Access-Control-Allow-Credentials` is never sent.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Methods a page may use.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";
/// How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
const MAX_AGE: &str = "600";
/// The most request headers a preflight answer names (SDKs ask for about a dozen).
const MAX_HEADERS: usize = 64;

static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// The CORS side of a request from an allowed origin.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    origin: HeaderValue,
}

impl Cors {
    /// For a request whose `Origin` is allowed.
    pub(crate) fn new(origin: HeaderValue) -> Cors {
        Cors { origin }
    }

    /// The headers of the answer (204) to a preflight: the origin, the methods, the request
    /// headers it asked for (`Authorization`, the secret headers and the SDKs' `x-stainless-*`
    /// included; all but connection-level ones), and, for Chromium's Private Network Access
    /// (a public page asking for a loopback address), the permission it asks for.
    pub(crate) fn preflight(&self, request: &HeaderMap) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        let asked: Vec<HeaderName> = request
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !connection_level(name))
            .take(MAX_HEADERS)
            .collect();
        if !asked.is_empty() {
            let list: Vec<&str> = asked.iter().map(HeaderName::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        if request
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        {
            h.insert(&ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers, \
                 access-control-request-private-network",
            ),
        );
        h
    }

    /// Lets the page read a response: its origin allowed, every response header exposed
    /// (`X-Request-ID`, `X-Backend`, OpenAI's rate-limit headers), and a backend's own
    /// `Access-Control-Allow-*` replaced.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("*"),
        );
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// Headers about the connection, which the proxy removes anyway: never offered to a page.
fn connection_level(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    ) || name.as_str().starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_echoes_the_headers_asked_for() {
        let cors = Cors::new(HeaderValue::from_static("http://localhost:3000"));
        let mut req = HeaderMap::new();
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static(
                "Authorization, content-type,x-stainless-os, X-Stainless-Retry-Count, \
                 api-key, cookie, proxy-authorization, connection, bad name",
            ),
        );
        req.insert(&REQUEST_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        let h = cors.preflight(&req);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type, x-stainless-os, x-stainless-retry-count, api-key, cookie"
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
        assert_eq!(h[&ALLOW_PRIVATE_NETWORK], "true");
        assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn responses_get_the_origin_and_lose_the_backends_cors() {
        let cors = Cors::new(HeaderValue::from_static("moz-extension://abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        cors.apply(&mut h);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "moz-extension://abc"
        );
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "origin"]);
    }
}
