//! Who may use the proxy, checked before anything else looks at a request.
//!
//! A web page can make the browser send requests to `127.0.0.1:2020` in two ways: directly (a
//! "simple" cross-site POST needs no CORS permission to be *sent*), or by rebinding its own DNS
//! name to 127.0.0.1, after which the browser even lets it read the answers. Either way the
//! proxy would add the key it injects. So:
//!
//! - **Host** must be there (HTTP/1.1), once, well formed (400 otherwise), and name this
//!   machine: an IP address (a page at an IP address reached the proxy at that address, no
//!   rebinding needed, and its Origin is checked below), `localhost` and `*.localhost`, the
//!   machine's name (also with `.local`), or a name in `server.allowed_hosts`; any port.
//!   A rebinding page sends its own name: 403. Requests over a Unix socket skip the name
//!   check: no browser reaches a socket file by a name.
//! - **Origin**: a request from a web page carries one (and `Sec-Fetch-Site: cross-site` or
//!   `same-site` when the browser sends no Origin). The proxy's one page is its own `/`
//!   ([`crate::proxy::own::page`]): its requests name the origin the `Host` names
//!   (`http://HOST` or `https://HOST`, a Host already found to be this machine's), and go on
//!   without CORS. Any other origin is another site's page: 403 unless it is in
//!   `server.cors_origins`. Pages of allowed origins get CORS: preflights answered here and
//!   `Access-Control-Allow-Origin` on every response ([`Cors`]).
//!
//! 403 rather than 421 (Misdirected Request): 421 asks a client to retry on another
//! connection, and the OpenAI SDKs show 403 as the permission error it is.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::header::{self, HeaderMap};
use http::{Method, Version};

use crate::config::{quote, HostRule, OriginRule, ServerConfig};
use crate::error::ProxyError;
use crate::proxy::admit::cors::Cors;

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Go on; for a request from an allowed web page, the CORS headers its response gets.
    Forward(Option<Cors>),
    /// A CORS preflight from an allowed origin: answer 204 with these headers.
    Preflight(HeaderMap),
    /// Refuse with this error, before routing.
    Refuse(ProxyError),
}

/// The checks of one config.
#[derive(Debug)]
pub(crate) struct Guard {
    /// `server.allowed_hosts`.
    hosts: Vec<HostRule>,
    /// This machine's name, lowercase, as `gethostname` said when the config was loaded.
    hostname: Option<String>,
    /// `server.cors_origins`.
    origins: Vec<OriginRule>,
}

static SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");

impl Guard {
    pub(crate) fn new(server: &ServerConfig) -> Guard {
        Guard {
            hosts: server.allowed_hosts.clone(),
            hostname: machine_hostname(),
            origins: server.cors_origins.clone(),
        }
    }

    /// Checks a request head. `unix`: it came over a Unix socket, so its Host names no
    /// machine (its syntax is still checked, and its Origin).
    pub(crate) fn admit(
        &self,
        method: &Method,
        version: Version,
        headers: &HeaderMap,
        unix: bool,
    ) -> Admission {
        if let Err(e) = self.check_host(version, headers, unix) {
            return Admission::Refuse(e);
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let origin = match (origins.next(), origins.next()) {
            (Some(origin), None) => origin,
            // Which would a backend or a relay read? Neither is let through.
            (Some(_), Some(_)) => {
                return Admission::Refuse(ProxyError::OriginNotAllowed(
                    "(more than one Origin header)".into(),
                ))
            }
            (None, _) => return cross_site(headers),
        };
        if same_origin(origin.as_bytes(), headers) {
            // The proxy's own page; a browser that says otherwise is believed.
            return cross_site(headers);
        }
        if !self.origins.iter().any(|r| r.matches(origin.as_bytes())) {
            return Admission::Refuse(ProxyError::OriginNotAllowed(quote(
                &String::from_utf8_lossy(origin.as_bytes()),
            )));
        }
        let cors = Cors::new(origin.clone());
        if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Admission::Preflight(cors.preflight(headers));
        }
        Admission::Forward(Some(cors))
    }

    /// One well-formed `Host` (none only in HTTP/1.0) that names this machine.
    fn check_host(
        &self,
        version: Version,
        headers: &HeaderMap,
        unix: bool,
    ) -> Result<(), ProxyError> {
        let mut all = headers.get_all(header::HOST).iter();
        let value = match (all.next(), all.next()) {
            (Some(v), None) => v,
            (Some(_), Some(_)) => return Err(ProxyError::BadHost("more than one Host header")),
            (None, _) if version <= Version::HTTP_10 => return Ok(()),
            (None, _) => return Err(ProxyError::BadHost("an HTTP/1.1 request needs one")),
        };
        let host = parse_host(value.as_bytes())
            .ok_or(ProxyError::BadHost("expected HOST or HOST:PORT"))?;
        match host {
            Host::Ip => Ok(()),
            Host::Name(_) if unix => Ok(()),
            Host::Name(name) if self.allows_name(name) => Ok(()),
            Host::Name(_) => Err(ProxyError::HostNotAllowed(quote(&String::from_utf8_lossy(
                value.as_bytes(),
            )))),
        }
    }

    /// Whether a host name (without port) is one of this machine's.
    fn allows_name(&self, name: &str) -> bool {
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        let name = name.strip_suffix('.').unwrap_or(&name);
        name == "localhost"
            || name.ends_with(".localhost")
            || self
                .hostname
                .as_deref()
                .is_some_and(|h| name == h || name.strip_suffix(".local") == Some(h))
            || self.hosts.iter().any(|r| r.matches(name))
    }
}

/// A request without `Origin`: refused when the browser says a page of another site sent it
/// (`Sec-Fetch-Site`, in any letter case, in any of its headers).
fn cross_site(headers: &HeaderMap) -> Admission {
    for v in headers.get_all(&SEC_FETCH_SITE) {
        let v = v.as_bytes();
        if v.eq_ignore_ascii_case(b"cross-site") {
            return Admission::Refuse(ProxyError::CrossSite("cross-site"));
        }
        if v.eq_ignore_ascii_case(b"same-site") {
            return Admission::Refuse(ProxyError::CrossSite("same-site"));
        }
    }
    Admission::Forward(None)
}

/// Whether `origin` is the proxy's own as this request reached it: `http://` or `https://`
/// and exactly its (one) `Host`, in any letter case. Called once that Host was checked.
pub(crate) fn same_origin(origin: &[u8], headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return false;
    };
    let authority = match origin.strip_prefix(b"http://") {
        Some(a) => a,
        None => match origin.strip_prefix(b"https://") {
            Some(a) => a,
            None => return false,
        },
    };
    !authority.is_empty() && authority.eq_ignore_ascii_case(host.as_bytes())
}

/// What a `Host` header names.
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    /// An IPv4 or (bracketed) IPv6 address.
    Ip,
    /// A registered name, as sent (possibly empty).
    Name(&'a str),
}

/// Parses `uri-host [ ":" port ]` (RFC 9110 §7.2); `None` when it is not that.
fn parse_host(value: &[u8]) -> Option<Host<'_>> {
    let s = std::str::from_utf8(value).ok()?;
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (None, port)
        }
        None => match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        },
    };
    if let Some(p) = port {
        let digits = p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || p.parse::<u32>().is_ok_and(|n| n > 65_535) {
            return None;
        }
    }
    let Some(host) = host else {
        return Some(Host::Ip);
    };
    if host.is_empty() && port.is_some() {
        return None;
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Some(Host::Ip);
    }
    // reg-name: unreserved, percent-encoded and sub-delims characters.
    let reg_name = host.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    reg_name.then_some(Host::Name(host))
}

/// This machine's host name, lowercase (`None` if it has none that is text).
fn machine_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..len]).ok()?.trim_end_matches('.');
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn guard(hosts: &[&str], origins: &[&str]) -> Guard {
        Guard {
            hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
            hostname: Some("gpu-box".into()),
            origins: origins.iter().map(|o| o.parse().unwrap()).collect(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn code(a: Admission) -> &'static str {
        match a {
            Admission::Refuse(e) => e.code(),
            Admission::Forward(_) => "forward",
            Admission::Preflight(_) => "preflight",
        }
    }

    #[test]
    fn host_syntax() {
        for (v, parsed) in [
            ("localhost", Some(Host::Name("localhost"))),
            ("localhost:2020", Some(Host::Name("localhost"))),
            ("127.0.0.1:2020", Some(Host::Ip)),
            ("[::1]:2020", Some(Host::Ip)),
            ("[::1]", Some(Host::Ip)),
            ("a:", Some(Host::Name("a"))),
            ("", Some(Host::Name(""))),
            ("a b", None),
            ("a@b", None),
            ("a:b", None),
            ("a:99999", None),
            (":80", None),
            ("[::1", None),
            ("[x]:1", None),
            ("[::1]x", None),
            ("a:1:2", None),
            ("a/b", None),
        ] {
            assert_eq!(parse_host(v.as_bytes()), parsed, "{v:?}");
        }
    }

    #[test]
    fn hosts() {
        let g = guard(&["proxy.lan", "*.home.arpa"], &[]);
        let admit = |host: &'static str| {
            code(g.admit(
                &Method::GET,
                Version::HTTP_11,
                &headers(&[("host", host)]),
                false,
            ))
        };
        for ok in [
            "localhost:2020",
            "LOCALHOST.",
            "a.localhost:2020",
            "127.0.0.1:2020",
            "[::1]:2020",
            "192.168.1.5",
            "gpu-box:2020",
            "gpu-box.local",
            "proxy.lan:2020",
            "x.home.arpa",
        ] {
            assert_eq!(admit(ok), "forward", "{ok}");
        }
        for refused in [
            "evil.example:2020",
            "",
            "localhost.evil",
            "home.arpa",
            "gpu-box.lan",
        ] {
            assert_eq!(admit(refused), "host_not_allowed", "{refused}");
        }
        assert_eq!(admit("a b"), "invalid_host");
        let none = |version, unix| code(g.admit(&Method::GET, version, &HeaderMap::new(), unix));
        assert_eq!(none(Version::HTTP_11, false), "invalid_host");
        assert_eq!(none(Version::HTTP_10, false), "forward");
        let two = headers(&[("host", "localhost"), ("host", "localhost")]);
        assert_eq!(
            code(g.admit(&Method::GET, Version::HTTP_11, &two, false)),
            "invalid_host"
        );
        // Over a Unix socket any name will do, but not bad syntax.
        let evil = headers(&[("host", "evil.example")]);
        assert_eq!(
            code(g.admit(&Method::GET, Version::HTTP_11, &evil, true)),
            "forward"
        );
        assert_eq!(none(Version::HTTP_11, true), "invalid_host");
    }

    #[test]
    fn origins() {
        let g = guard(&[], &["http://localhost:3000", "moz-extension://*"]);
        let admit = |method: Method, extra: &[(&'static str, &'static str)]| {
            let mut h = headers(&[("host", "127.0.0.1:2020")]);
            h.extend(headers(extra));
            g.admit(&method, Version::HTTP_11, &h, false)
        };
        assert_eq!(code(admit(Method::POST, &[])), "forward");
        assert_eq!(
            code(admit(Method::POST, &[("origin", "http://evil.example")])),
            "origin_not_allowed"
        );
        assert_eq!(
            code(admit(Method::GET, &[("sec-fetch-site", "cross-site")])),
            "origin_not_allowed"
        );
        assert_eq!(
            code(admit(Method::GET, &[("sec-fetch-site", "same-site")])),
            "origin_not_allowed"
        );
        assert_eq!(
            code(admit(Method::GET, &[("sec-fetch-site", "none")])),
            "forward"
        );
        for site in ["Cross-Site", "SAME-SITE"] {
            let refused = admit(
                Method::GET,
                &[("sec-fetch-site", "none"), ("sec-fetch-site", site)],
            );
            assert_eq!(code(refused), "origin_not_allowed", "{site}");
        }
        let two = [
            ("origin", "http://localhost:3000"),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(code(admit(Method::POST, &two)), "origin_not_allowed");
        let two = [
            ("origin", "http://localhost:3000"),
            ("origin", "http://localhost:3000"),
        ];
        assert_eq!(code(admit(Method::POST, &two)), "origin_not_allowed");
        for allowed in ["http://localhost:3000", "moz-extension://0a1b2c"] {
            match admit(
                Method::POST,
                &[("origin", allowed), ("sec-fetch-site", "cross-site")],
            ) {
                Admission::Forward(Some(_)) => {}
                other => panic!("{allowed}: {other:?}"),
            }
        }
        // The proxy's own page: its origin is the one the Host names.
        for own in ["http://127.0.0.1:2020", "https://127.0.0.1:2020"] {
            match admit(
                Method::POST,
                &[("origin", own), ("sec-fetch-site", "same-origin")],
            ) {
                Admission::Forward(None) => {}
                other => panic!("{own}: {other:?}"),
            }
        }
        for foreign in [
            "http://127.0.0.1:2021",
            "http://127.0.0.1",
            "ftp://127.0.0.1:2020",
            "http://127.0.0.1:2020/",
            "http://localhost:2020",
            "null",
        ] {
            assert_eq!(
                code(admit(Method::POST, &[("origin", foreign)])),
                "origin_not_allowed",
                "{foreign}"
            );
        }
        assert_eq!(
            code(admit(
                Method::POST,
                &[
                    ("origin", "http://127.0.0.1:2020"),
                    ("sec-fetch-site", "cross-site")
                ]
            )),
            "origin_not_allowed"
        );
        let preflight = admit(
            Method::OPTIONS,
            &[
                ("origin", "http://localhost:3000"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(code(preflight), "preflight");
        // OPTIONS without Access-Control-Request-Method is an ordinary request.
        let plain = admit(Method::OPTIONS, &[("origin", "http://localhost:3000")]);
        assert!(matches!(plain, Admission::Forward(Some(_))), "{plain:?}");
        // A preflight from another origin is refused like any request from it.
        let foreign = admit(
            Method::OPTIONS,
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert_eq!(code(foreign), "origin_not_allowed");
    }
}
