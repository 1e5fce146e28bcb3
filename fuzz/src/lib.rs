//! The properties the fuzz targets check. The same functions run on every saved input in
//! `fuzz/regressions/` as part of the normal test suite (`tests/it/proxy/fuzz_regressions.rs`
//! includes this file), so what the fuzzer once found stays fixed.
//!
//! Each function takes raw bytes, must never panic except through a failed assertion, and
//! asserts what the proxy promises about its input.

#[path = "reference.rs"]
pub mod reference;

use std::net::IpAddr;
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use openai_proxy::hot_path::{
    self as headers, normalize_path, parse_duration, parse_size, Found, Router, Scanner, HOP_BY_HOP,
};
use openai_proxy::{AuthPolicy, ClientTokens, Config, MIN_CLIENT_TOKEN_LEN};

/// Config text: parsing and validation never panic; every problem is reported with a
/// position inside the text; a valid config has only normalized routes that name existing
/// backends, a path repeated only after routes on it that list models.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match Config::from_toml(text) {
        Ok(c) => {
            let mut takes_all = std::collections::HashSet::new();
            for r in &c.routes {
                assert!(
                    !takes_all.contains(&r.path),
                    "unreachable route {:?}",
                    r.path
                );
                if r.models.is_none() {
                    takes_all.insert(r.path.clone());
                }
                assert_eq!(normalize_path(&r.path).as_deref(), Ok(r.path.as_str()));
                assert!(c.backend(&r.backend).is_some(), "route to unknown backend");
            }
            assert!(!c.routes.is_empty());
            assert!(c.server.max_header_size >= 1024);
        }
        Err(e) => {
            assert!(!e.issues.is_empty());
            for issue in &e.issues {
                if let Some((line, col)) = issue.position {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    assert!(col >= 1);
                }
                assert!(!issue.message.is_empty());
            }
            let _ = e.to_string();
        }
    }
    let _ = parse_duration(text);
    let _ = parse_size(text);
    if let Ok(t) = ClientTokens::parse(text) {
        assert!(!t.is_empty());
    }
}

/// The routing table of the default config, plus a rewrite to `/` and one to another path.
fn table() -> &'static Router<&'static str> {
    static T: OnceLock<Router<&'static str>> = OnceLock::new();
    T.get_or_init(|| {
        Router::new([
            (
                "/v1/audio/transcriptions".to_string(),
                Some("/inference".to_string()),
                "whisper",
            ),
            ("/v1/chat/completions".to_string(), None, "ollama"),
            ("/v1/audio/speech".to_string(), None, "kokoro"),
            ("/v1/audio/voices".to_string(), None, "kokoro"),
            ("/v1".to_string(), None, "openai"),
            ("/strip".to_string(), Some("/".to_string()), "strip"),
        ])
    })
}

fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// A request path: a normalized path has no dot segments, no `//`, no encoded `/`, `\`,
/// `.` or NUL; normalizing it again changes nothing; it is routed on whole segments to the
/// longest matching prefix; and the path forwarded to the backend is itself normalized, so a
/// backend cannot read it as anything else.
pub fn route(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = normalize_path(path) else {
        return;
    };
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains("//"), "{n:?}");
    assert!(!n.contains('\\'), "{n:?}");
    assert!(!n.contains('\0'), "{n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "{n:?}");
    }
    let upper = n.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%2E", "%00"] {
        assert!(!upper.contains(bad), "{n:?} contains {bad}");
    }
    assert_eq!(normalize_path(&n).as_deref(), Ok(&*n), "not idempotent");

    let router = table();
    let Some(m) = router.find(&n) else {
        assert!(router.routes().iter().all(|r| !under(&n, &r.prefix)));
        return;
    };
    let prefix = m.route.prefix.as_str();
    assert!(under(&n, prefix), "{n:?} routed to {prefix:?}");
    for r in router.routes() {
        if r.prefix.len() > prefix.len() {
            assert!(!under(&n, &r.prefix), "{n:?}: {:?} is longer", r.prefix);
        }
    }
    for base in ["", "/base"] {
        let fwd = m.forward_path(base);
        assert_eq!(normalize_path(&fwd).as_deref(), Ok(&*fwd), "{n:?}");
        assert!(fwd.starts_with(base));
    }
}

const FUZZ_KEY: &str = "sk-fuzz-injected-key-0123456789";
const FUZZ_TOKEN: &str = "fuzz-client-token-0123456789";

fn inject_policy() -> &'static AuthPolicy {
    static P: OnceLock<AuthPolicy> = OnceLock::new();
    P.get_or_init(|| {
        // Only this variable, only ever set to this value.
        std::env::set_var("OPENAI_PROXY_FUZZ_KEY", FUZZ_KEY);
        let c = Config::from_toml(
            "[backends.o]\nurl = \"http://127.0.0.1:9\"\napi_key_env = \"OPENAI_PROXY_FUZZ_KEY\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"o\"\n",
        )
        .expect("fuzz config");
        c.backends[0].auth.clone()
    })
}

fn tokens() -> &'static ClientTokens {
    static T: OnceLock<ClientTokens> = OnceLock::new();
    T.get_or_init(|| ClientTokens::parse(FUZZ_TOKEN).expect("token"))
}

/// Reads `name: value` lines (split on `\n`, the first `:`) into a header map, skipping lines
/// that are not a valid header.
pub fn header_map(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h
}

/// Headers the request rewrite sets on its own, after removing what `Connection` names
/// (and `Authorization` too, when it injects a key).
const SET_BY_PROXY: [&str; 4] = [
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Header rewriting: after stripping, no hop-by-hop header and no header named in
/// `Connection` is left; the auth policies leave exactly the credentials they promise; the
/// forwarded headers and the request id are always well formed; the client-token check
/// accepts exactly `Bearer TOKEN`.
pub fn headers(data: &[u8]) {
    let original = header_map(data);
    let named: Vec<String> = original
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| HeaderName::from_bytes(n.as_bytes()).is_ok())
        .collect();
    let peer: IpAddr = [192, 0, 2, 1].into();
    for policy in [
        AuthPolicy::Strip,
        AuthPolicy::Forward,
        inject_policy().clone(),
    ] {
        let mut h = original.clone();
        let rid = headers::request_id(&original);
        // What the proxy runs on every request: one pass for hop-by-hop headers, the auth
        // policy, X-Forwarded-* and the request id.
        headers::rewrite_request(&mut h, &policy, &[], Some(peer), &rid, None);
        let injects = matches!(policy, AuthPolicy::Inject { .. });
        for name in HOP_BY_HOP
            .iter()
            .map(|n| n.as_str().to_string())
            .chain(named.clone())
        {
            let set_again = SET_BY_PROXY.contains(&name.as_str())
                || (injects && name == header::AUTHORIZATION.as_str());
            if !set_again {
                assert!(!h.contains_key(name.as_str()), "{name} survived stripping");
            }
        }
        assert!(!h.contains_key(header::HOST) && !h.contains_key(header::EXPECT));
        match &policy {
            AuthPolicy::Strip => {
                for n in &headers::SECRET_HEADERS {
                    assert!(!h.contains_key(n), "{n} survived strip");
                }
            }
            AuthPolicy::Forward => {
                for n in &headers::SECRET_HEADERS {
                    if !named.iter().any(|c| c == n.as_str()) {
                        let before: Vec<_> = original.get_all(n).iter().collect();
                        let after: Vec<_> = h.get_all(n).iter().collect();
                        assert_eq!(before, after, "{n} changed under forward");
                    }
                }
            }
            AuthPolicy::Inject { .. } => {
                let auth: Vec<_> = h.get_all(header::AUTHORIZATION).iter().collect();
                assert_eq!(auth.len(), 1);
                assert_eq!(auth[0].as_bytes(), format!("Bearer {FUZZ_KEY}").as_bytes());
                assert!(auth[0].is_sensitive());
                for n in headers::SECRET_HEADERS.iter().skip(1) {
                    assert!(!h.contains_key(n), "{n} survived inject");
                }
            }
        }
        assert_eq!(h.get("x-request-id"), Some(&rid));
        let xff = h.get("x-forwarded-for").expect("x-forwarded-for");
        assert!(xff.to_str().is_ok_and(|v| v.ends_with("192.0.2.1")));
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"http"[..])
        );
        assert!(headers::is_sane_request_id(&headers::request_id(&h)));
    }
    // The client-token check: exactly "Bearer TOKEN" (scheme case-insensitive, spaces around
    // the token ignored) in the first Authorization header.
    let expected = original.get(header::AUTHORIZATION).is_some_and(|v| {
        let b = v.as_bytes();
        b.len() >= 7
            && b[..7].eq_ignore_ascii_case(b"bearer ")
            && b[7..].trim_ascii() == FUZZ_TOKEN.as_bytes()
    });
    assert_eq!(tokens().allows(&original), expected);
    assert!(FUZZ_TOKEN.len() >= MIN_CLIENT_TOKEN_LEN);
}

/// A request body scanned for its model: the first byte says JSON or multipart (boundary
/// `b`), the second where it is split in two frames. Scanning never panics, reads no further
/// than its limit, gives the same answer however the body is split, and a model it finds
/// stands in the body where it says: as a JSON string that decodes to it, or as the
/// multipart field's bytes. And it is the model a real parser reads ([`reference`]): when
/// serde_json parses the body's object within the limit, its top level has exactly that one
/// `"model"` (and no key that is `model` ignoring case); when the whole body was within the limit and RFC 2046 splits it,
/// there is exactly one field named `model` and its value is the span. A body the scanner
/// calls ambiguous really is, for JSON: two `model` keys, or one in another case.
pub fn model(data: &[u8]) {
    let [kind, cut, body @ ..] = data else {
        return;
    };
    let multipart = kind & 1 == 1;
    let ct: &[u8] = if multipart {
        b"multipart/form-data; boundary=b"
    } else {
        b"application/json"
    };
    let limit = 64 + usize::from(*kind);
    let scan = |pieces: &[&[u8]]| {
        let mut s = Scanner::new(Some(ct), limit).expect("a boundary is given");
        for p in pieces {
            if let Some(f) = s.feed(p) {
                return f;
            }
        }
        s.finish()
    };
    let whole = scan(&[body]);
    let at = usize::from(*cut).min(body.len());
    assert_eq!(scan(&[&body[..at], &body[at..]]), whole, "split at {at}");
    if let Found::Model { name, span } = &whole {
        let span = span.clone();
        assert!(
            span.end <= body.len().min(limit),
            "{span:?} beyond the limit"
        );
        let raw = &body[span];
        if multipart {
            assert_eq!(raw, name.as_bytes());
        } else {
            let decoded: String = serde_json::from_slice(raw).expect("a JSON string");
            assert_eq!(&decoded, name);
        }
    }
    differential(multipart, body, limit, &whole);
}

/// The scanner's answer against the reference readers (see [`model`]).
fn differential(multipart: bool, body: &[u8], limit: usize, found: &Found) {
    if multipart {
        let Found::Model { name, span } = found else {
            return;
        };
        if body.len() > limit {
            return;
        }
        let fields = reference::multipart_fields(b"b", body).expect("RFC 2046 splits the body");
        let models: Vec<_> = fields
            .iter()
            .filter(|f| f.name.as_deref() == Some(b"model"))
            .collect();
        assert_eq!(models.len(), 1, "{fields:?}");
        assert_eq!(&models[0].value, span);
        assert_eq!(&body[span.clone()], name.as_bytes());
        return;
    }
    // Past the limit the scanner does not look (a second `model` there is not seen, by
    // design: docs/security.md).
    let Some((top, _)) = reference::json_top_level(body).filter(|(_, end)| *end <= limit) else {
        return;
    };
    match found {
        Found::Model { name, .. } => {
            assert_eq!(
                top.models,
                [Some(name.clone())],
                "serde_json reads another model"
            );
            assert_eq!(top.other_case, 0, "a key that is model ignoring case");
        }
        Found::Ambiguous(why) => {
            assert!(
                top.models.len() > 1 || top.other_case > 0,
                "not ambiguous: {why}"
            );
        }
        _ => {}
    }
}
