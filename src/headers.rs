//! Header rewriting between client and backend: hop-by-hop stripping (both ways), the auth
//! policy, `X-Forwarded-*`, and request ids. Header values are never logged.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::AuthPolicy;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_BACKEND: HeaderName = HeaderName::from_static("x-backend");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones proxies also treat that way.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers that carry a client's OpenAI (or Azure OpenAI) credentials or account identity.
pub static SECRET_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
];

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Collect first: the names borrow from the map we are about to change.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Applies a backend's auth policy to the request headers going to it.
pub fn apply_auth(headers: &mut HeaderMap, policy: &AuthPolicy) {
    match policy {
        AuthPolicy::Forward => {}
        AuthPolicy::Strip => remove_secrets(headers),
        AuthPolicy::Inject { key, .. } => {
            remove_secrets(headers);
            headers.insert(header::AUTHORIZATION, key.bearer().clone());
        }
    }
}

fn remove_secrets(headers: &mut HeaderMap) {
    for name in &SECRET_HEADERS {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Forwarded-Proto` and `X-Forwarded-Host`
/// (the Host the client asked for).
pub fn set_forwarded(headers: &mut HeaderMap, peer: Option<IpAddr>, host: Option<HeaderValue>) {
    if let Some(ip) = peer {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// A client-supplied request id is kept when it is short and plain; otherwise a new one is made.
pub fn is_sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=' | b'@')
        })
}

/// The request's id: the client's `X-Request-ID` if sane, else a new unique one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_sane_request_id(v) => v.clone(),
        _ => new_request_id(),
    }
}

/// 32 hex digits: a random per-process prefix and a counter, unique without a random number
/// generator on the hot path.
pub fn new_request_id() -> HeaderValue {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    let value = (u128::from(seed) << 64) | u128::from(n);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((value >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-foo"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    fn secrets() -> HeaderMap {
        let mut h = HeaderMap::new();
        for n in &SECRET_HEADERS {
            h.insert(n.clone(), HeaderValue::from_static("client-secret"));
        }
        h
    }

    #[test]
    fn auth_policies() {
        let mut h = secrets();
        apply_auth(&mut h, &AuthPolicy::Forward);
        assert_eq!(h.len(), 5);
        apply_auth(&mut h, &AuthPolicy::Strip);
        assert!(h.is_empty());

        std::env::set_var("OPENAI_PROXY_TEST_HEADERS_KEY", "sk-injected");
        let cfg = Config::from_toml(
            "[backends.o]\nurl = \"https://x.example\"\napi_key_env = \"OPENAI_PROXY_TEST_HEADERS_KEY\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"o\"\n",
        )
        .unwrap();
        let mut h = secrets();
        apply_auth(&mut h, &cfg.backends[0].auth);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-injected");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(!format!("{:?}", cfg.backends[0].auth).contains("sk-injected"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, Some([10, 0, 0, 1].into()), None);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        set_forwarded(
            &mut h,
            Some([127, 0, 0, 1].into()),
            Some(HeaderValue::from_static("localhost:2020")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "localhost:2020");
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        let long = "a".repeat(129);
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }
}
