//! Header rewriting between client and backend: hop-by-hop stripping (both ways), the auth
//! policy over the secret headers (and `Set-Cookie` back), key-bearing query parameters,
//! `X-Forwarded-*`, and request ids. Header values are never logged.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use crate::config::AuthPolicy;
use crate::proxy::websocket::protocols;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_BACKEND: HeaderName = HeaderName::from_static("x-backend");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones proxies also treat that way. Their order is the bit order of
/// [`header_bit`].
pub static HOP_BY_HOP: [HeaderName; 9] = [
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

/// The built-in secret headers: a client's credentials for OpenAI, Azure OpenAI, Anthropic,
/// Google and Azure API Management (also in the underscore spellings some servers accept),
/// its OpenAI account identity, and its browser session (`Cookie`: browsers send every cookie
/// of `localhost` to every port of it). `server.secret_headers` adds more. Their order is the
/// bit order of [`header_bit`].
pub static SECRET_HEADERS: [HeaderName; 10] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("openai-organization"),
    HeaderName::from_static("openai-project"),
    header::COOKIE,
    HeaderName::from_static("x-goog-api-key"),
    HeaderName::from_static("ocp-apim-subscription-key"),
    HeaderName::from_static("api_key"),
    HeaderName::from_static("x_api_key"),
];

/// Bits of [`header_bit`]: hop-by-hop headers first, then `Expect`, the secrets, and
/// `Set-Cookie`.
const HOP_MASK: u32 = (1 << HOP_BY_HOP.len()) - 1;
const EXPECT_BIT: u32 = 1 << HOP_BY_HOP.len();
const SECRET_SHIFT: usize = HOP_BY_HOP.len() + 1;
const SECRET_MASK: u32 = ((1 << SECRET_HEADERS.len()) - 1) << SECRET_SHIFT;
const SET_COOKIE_BIT: u32 = 1 << (SECRET_SHIFT + SECRET_HEADERS.len());
/// `Sec-WebSocket-Protocol`, which may carry a browser's key: filtered, never removed by bit.
const PROTOCOL_BIT: u32 = SET_COOKIE_BIT << 1;

/// The bit of a header the rewrite may remove, or 0. Comparing names once beats hashing each
/// candidate name for a lookup: a request has a handful of headers and usually none of these.
fn header_bit(name: &HeaderName) -> u32 {
    let i = match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        "expect" => 9,
        "authorization" => 10,
        "api-key" => 11,
        "x-api-key" => 12,
        "openai-organization" => 13,
        "openai-project" => 14,
        "cookie" => 15,
        "x-goog-api-key" => 16,
        "ocp-apim-subscription-key" => 17,
        "api_key" => 18,
        "x_api_key" => 19,
        "set-cookie" => 20,
        "sec-websocket-protocol" => 21,
        _ => return 0,
    };
    1 << i
}

/// Which of the headers of [`header_bit`] are present: one pass over the names.
fn present(headers: &HeaderMap) -> u32 {
    headers.keys().fold(0, |bits, name| bits | header_bit(name))
}

/// Removes the headers whose bits are set, and, when `Connection` is among them, every header
/// it names.
fn remove_present(headers: &mut HeaderMap, bits: u32) {
    if bits & 1 != 0 {
        // Clone the values (reference-counted, no copy): the names borrow from the map we are
        // about to change. Usually there is one `Connection` header; `more` then stays empty
        // and allocates nothing.
        let mut values = headers.get_all(header::CONNECTION).iter();
        let first = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        for v in first.iter().chain(&more) {
            for name in v.to_str().unwrap_or_default().split(',') {
                let name = name.trim();
                if !name.is_empty() {
                    // A &str key is looked up without allocating; an invalid name matches none.
                    headers.remove(name);
                }
            }
        }
    }
    let names = HOP_BY_HOP
        .iter()
        .chain(std::iter::once(&header::EXPECT))
        .chain(&SECRET_HEADERS)
        .chain(std::iter::once(&header::SET_COOKIE));
    for (i, name) in names.enumerate() {
        if bits & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Removes the headers of `mask` that are present (when `Connection` is among them, also the
/// headers it names).
fn strip(headers: &mut HeaderMap, mask: u32) {
    let bits = present(headers) & mask;
    if bits != 0 {
        remove_present(headers, bits);
    }
}

/// The secret headers of `server.secret_headers` that are not built in: removed one by one
/// (a lookup each) where the built-in ones go with the single pass. Usually none.
pub fn extra_secrets(configured: &[HeaderName]) -> Box<[HeaderName]> {
    configured
        .iter()
        .filter(|n| !SECRET_HEADERS.contains(n))
        .cloned()
        .collect()
}

/// Rewrites a client's request headers for a backend, in one pass over the names: hop-by-hop
/// headers (and those named in `Connection`) and `Expect` removed (hyper already answered
/// `100-continue`), the auth policy applied to the secret headers (the built-in ones and
/// `extra_secrets`) and to the key subprotocols of `Sec-WebSocket-Protocol`, `X-Forwarded-*` set, the request id set, and `Host` replaced by `host`
/// (or removed, for the client to set from the URI).
pub fn rewrite_request(
    headers: &mut HeaderMap,
    policy: &AuthPolicy,
    extra_secrets: &[HeaderName],
    peer: Option<IpAddr>,
    request_id: &HeaderValue,
    host: Option<&HeaderValue>,
) {
    let client_host = match host {
        Some(h) => headers.insert(header::HOST, h.clone()),
        None => headers.remove(header::HOST),
    };
    let mut remove = HOP_MASK | EXPECT_BIT;
    let present = present(headers);
    if !matches!(policy, AuthPolicy::Forward) {
        remove |= SECRET_MASK;
        for name in extra_secrets {
            headers.remove(name);
        }
        if present & PROTOCOL_BIT != 0 {
            // On every request, an upgrade or not: a backend may read it on any.
            protocols::remove_keys(headers);
        }
    }
    let bits = present & remove;
    if bits != 0 {
        remove_present(headers, bits);
        if let (Some(h), true) = (host, bits & 1 != 0) {
            // `Connection: host` must not take the backend's Host away.
            headers.insert(header::HOST, h.clone());
        }
    }
    if let AuthPolicy::Inject { key, header, .. } = policy {
        headers.insert(header.clone(), key.value().clone());
    }
    set_forwarded(headers, peer, client_host);
    headers.insert(&X_REQUEST_ID, request_id.clone());
}

/// Rewrites a backend's response headers for the client: hop-by-hop headers removed,
/// `Set-Cookie` too unless `keep_cookies` (the backend takes the client's credentials, and so
/// its cookies: a cookie set by any other would be sent by browsers to every port of the
/// host, and never back to its backend, which does not get `Cookie`), `X-Backend` added.
pub fn rewrite_response(headers: &mut HeaderMap, backend: &HeaderValue, keep_cookies: bool) {
    strip(
        headers,
        if keep_cookies {
            HOP_MASK
        } else {
            HOP_MASK | SET_COOKIE_BIT
        },
    );
    headers.insert(&X_BACKEND, backend.clone());
    if is_event_stream(headers) {
        unbuffered(headers);
    }
}

static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Whether a response is a stream of events: server-sent events (`text/event-stream`:
/// OpenAI's, Anthropic's) or JSON lines (`application/x-ndjson`: Ollama's).
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        [&b"text/event-stream"[..], b"application/x-ndjson"]
            .iter()
            .any(|t| v.get(..t.len()).is_some_and(|p| p.eq_ignore_ascii_case(t)))
    })
}

/// Tells a proxy in front of this one (nginx, Caddy, a CDN) to pass a stream on as it comes
/// rather than buffer or cache it: `X-Accel-Buffering: no` and `Cache-Control: no-cache`,
/// unless the backend said otherwise.
fn unbuffered(headers: &mut HeaderMap) {
    if let Entry::Vacant(e) = headers.entry(&X_ACCEL_BUFFERING) {
        e.insert(HeaderValue::from_static("no"));
    }
    if let Entry::Vacant(e) = headers.entry(header::CACHE_CONTROL) {
        e.insert(HeaderValue::from_static("no-cache"));
    }
}

/// `X-Forwarded-Proto: https`, for a request that came over TLS ([`rewrite_request`] and
/// [`set_forwarded`] say `http`).
pub(crate) fn forwarded_https(headers: &mut HeaderMap) {
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
}

/// The `X-Forwarded-For` value for a peer alone. Requests on one connection (and usually all
/// connections: clients on loopback) come from the same address, so the last value is kept
/// per thread instead of being formatted and allocated for every request.
fn peer_value(ip: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, v)) = &*last {
            if *cached == ip {
                return Some(v.clone());
            }
        }
        let v = HeaderValue::from_maybe_shared(Bytes::from(ip.to_string())).ok()?;
        *last = Some((ip, v.clone()));
        Some(v)
    })
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Forwarded-Proto` and `X-Forwarded-Host`
/// (the Host the client asked for).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    peer: Option<IpAddr>,
    host: Option<HeaderValue>,
) {
    if let Some(ip) = peer {
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Occupied(mut e) => {
                let value = match e.get().to_str() {
                    Ok(prev) if !prev.trim().is_empty() => {
                        HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
                    }
                    _ => peer_value(ip),
                };
                if let Some(v) = value {
                    e.insert(v);
                }
            }
            Entry::Vacant(e) => {
                if let Some(v) = peer_value(ip) {
                    e.insert(v);
                }
            }
        }
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match host {
        Some(h) => {
            headers.insert(&X_FORWARDED_HOST, h);
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
    // Hex digits are always a valid header value. `from_owner` keeps the digits in one
    // reference-counted allocation, so the clones for the backend and the log copy nothing.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
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
        strip(&mut h, HOP_MASK);
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
        use std::os::unix::fs::OpenOptionsExt as _;

        // Besides the secrets, a rewritten request carries X-Forwarded-Proto and X-Request-ID.
        let rid = HeaderValue::from_static("rid");
        let rewrite = |h: &mut HeaderMap, policy: &AuthPolicy| {
            rewrite_request(h, policy, &[], None, &rid, None);
            h.remove(&X_REQUEST_ID);
            h.remove(&X_FORWARDED_PROTO);
        };
        let mut h = secrets();
        rewrite(&mut h, &AuthPolicy::Forward);
        assert_eq!(h.len(), SECRET_HEADERS.len());
        rewrite(&mut h, &AuthPolicy::Strip);
        assert!(h.is_empty());

        // The key from a file (not the environment, which tests running in parallel share).
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .unwrap();
        std::io::Write::write_all(&mut file, b"sk-injected\n").unwrap();
        let cfg = Config::from_toml(&format!(
            "[backends.o]\nurl = \"https://x.example\"\napi_key_file = \"{}\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"o\"\n",
            key.display()
        ))
        .unwrap();
        let mut h = secrets();
        rewrite(&mut h, &cfg.backends[0].auth);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer sk-injected");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(!format!("{:?}", cfg.backends[0].auth).contains("sk-injected"));
    }

    #[test]
    fn request_rewrite() {
        let mut h = secrets();
        h.insert(header::HOST, HeaderValue::from_static("proxy:2020"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-foo, host"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        let rid = HeaderValue::from_static("rid-1");
        let backend_host = HeaderValue::from_static("127.0.0.1:11434");
        let mut stripped = h.clone();
        rewrite_request(
            &mut stripped,
            &AuthPolicy::Strip,
            &[],
            Some([127, 0, 0, 1].into()),
            &rid,
            Some(&backend_host),
        );
        let mut names: Vec<&str> = stripped.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-type",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(stripped[header::HOST], "127.0.0.1:11434");
        assert_eq!(stripped[&X_FORWARDED_HOST], "proxy:2020");
        assert_eq!(stripped[&X_REQUEST_ID], "rid-1");

        // Forwarding keeps the credentials; without a backend Host the client's is removed.
        rewrite_request(&mut h, &AuthPolicy::Forward, &[], None, &rid, None);
        assert!(!h.contains_key(header::HOST));
        assert_eq!(h[&X_FORWARDED_HOST], "proxy:2020");
        for n in &SECRET_HEADERS {
            assert!(h.contains_key(n), "{n}");
        }
    }

    #[test]
    fn response_rewrite() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let mut kept = h.clone();
        rewrite_response(&mut h, &HeaderValue::from_static("ollama"), false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[&X_BACKEND], "ollama");
        rewrite_response(&mut kept, &HeaderValue::from_static("openai"), true);
        assert_eq!(
            kept.get_all(header::SET_COOKIE).iter().count(),
            2,
            "{kept:?}"
        );
        assert!(!kept.contains_key("keep-alive"));
    }

    #[test]
    fn extra_secret_headers() {
        let extra = extra_secrets(&[HeaderName::from_static("x-vendor-key"), header::COOKIE]);
        assert_eq!(&extra[..], [HeaderName::from_static("x-vendor-key")]);
        let rid = HeaderValue::from_static("rid");
        let mut h = secrets();
        h.insert("x-vendor-key", HeaderValue::from_static("v"));
        let mut forwarded = h.clone();
        rewrite_request(&mut h, &AuthPolicy::Strip, &extra, None, &rid, None);
        assert!(!h.contains_key("x-vendor-key") && !h.contains_key(header::COOKIE));
        rewrite_request(
            &mut forwarded,
            &AuthPolicy::Forward,
            &extra,
            None,
            &rid,
            None,
        );
        assert!(forwarded.contains_key("x-vendor-key"));
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
