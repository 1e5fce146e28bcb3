//! Who may address the proxy from a browser: the names it answers to (`server.allowed_hosts`)
//! and the web origins whose pages may use it (`server.cors_origins`), as written in the
//! config and as compared with a request. The checks themselves are in `guard`.
//!
//! Parse errors are short reasons without the value: validation puts the (bounded) value in
//! front of them.

use std::str::FromStr;

/// A name in `server.allowed_hosts`: requests whose `Host` names it are answered (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// Exactly this name (lowercase, without a trailing dot).
    Name(String),
    /// Any name below this domain, written `*.example.lan` (kept as `.example.lan`).
    Below(String),
    /// `*`: any name at all, so the DNS-rebinding guard is off (warned about at start).
    Any,
}

impl HostRule {
    /// Whether `name` (lowercase, without port or trailing dot) is covered.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostRule::Name(n) => n == name,
            HostRule::Below(suffix) => name.len() > suffix.len() && name.ends_with(suffix.as_str()),
            HostRule::Any => true,
        }
    }
}

impl std::fmt::Display for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostRule::Name(n) => f.write_str(n),
            HostRule::Below(suffix) => write!(f, "*{suffix}"),
            HostRule::Any => f.write_str("*"),
        }
    }
}

/// Letters, digits, `-`, `_` and `.`: what a host name in a config can be made of.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl FromStr for HostRule {
    type Err = String;
    fn from_str(s: &str) -> Result<HostRule, String> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostRule::Any);
        }
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if name.contains(':') {
            return Err("write the name without a port (any port is allowed)".into());
        }
        if let Some(domain) = name.strip_prefix("*.") {
            return if is_name(domain) {
                Ok(HostRule::Below(format!(".{domain}")))
            } else {
                Err("expected \"*.\" followed by a domain name, e.g. \"*.example.lan\"".into())
            };
        }
        if is_name(name) {
            Ok(HostRule::Name(name.to_string()))
        } else {
            Err(
                "expected a host name (letters, digits, '-', '_' and '.'), \"*.DOMAIN\" or \"*\""
                    .into(),
            )
        }
    }
}

/// An entry of `server.cors_origins`: pages of a matching origin may use the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// Exactly this origin, `scheme://host[:port]`, lowercase, without the scheme's default
    /// port (as browsers send it).
    Exact(String),
    /// Every origin of this scheme, written `moz-extension://*` (kept as `moz-extension://`):
    /// browser extensions, whose ids differ from one installation to the next.
    Scheme(String),
    /// `*`: every web page (warned about at start).
    Any,
}

impl OriginRule {
    /// Whether an `Origin` header value is covered (compared without regard to case).
    pub fn matches(&self, origin: &[u8]) -> bool {
        match self {
            OriginRule::Exact(o) => origin.eq_ignore_ascii_case(o.as_bytes()),
            OriginRule::Scheme(prefix) => {
                origin.len() > prefix.len()
                    && origin[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            OriginRule::Any => true,
        }
    }
}

impl std::fmt::Display for OriginRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginRule::Exact(o) => f.write_str(o),
            OriginRule::Scheme(prefix) => write!(f, "{prefix}*"),
            OriginRule::Any => f.write_str("*"),
        }
    }
}

impl FromStr for OriginRule {
    type Err = String;
    fn from_str(s: &str) -> Result<OriginRule, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(OriginRule::Any);
        }
        if s.eq_ignore_ascii_case("null") {
            return Err(
                "\"null\" is the origin of sandboxed frames and local files: any page \
                        can send it, so it cannot be allowed"
                    .into(),
            );
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(
                "expected an origin such as \"http://localhost:3000\", a scheme \
                        wildcard such as \"chrome-extension://*\", or \"*\""
                    .into(),
            );
        };
        let scheme = scheme.to_ascii_lowercase();
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err("the scheme may use only letters, digits, '+', '-' and '.'".into());
        }
        // A URL copied from the address bar ends in '/'; an origin has no path.
        let rest = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
        if rest == "*" {
            if scheme == "http" || scheme == "https" {
                return Err(format!(
                    "\"{scheme}://*\" would let every web page use the proxy; list the \
                     origins, or write \"*\" if that is really meant"
                ));
            }
            return Ok(OriginRule::Scheme(format!("{scheme}://")));
        }
        let (host, port) = match rest.find(']') {
            // "[v6]" or "[v6]:port"
            Some(end) => {
                let (host, after) = rest.split_at(end + 1);
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').unwrap_or(after))),
                }
            }
            None => match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest.as_str(), None),
            },
        };
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => is_name(host),
        };
        if !host_ok {
            return Err("an origin is SCHEME://HOST[:PORT], without a path, query or user".into());
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => return Err("the port must be a number from 0 to 65535".into()),
            },
        };
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        Ok(OriginRule::Exact(match port {
            Some(p) if Some(p) != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules() {
        assert_eq!(
            "Gpu-Box.lan.".parse(),
            Ok(HostRule::Name("gpu-box.lan".into()))
        );
        assert_eq!("*.Lan".parse(), Ok(HostRule::Below(".lan".into())));
        assert_eq!("*".parse(), Ok(HostRule::Any));
        for bad in ["", "a b", "host:2020", "*.", "*x", "a..b", "[::1]", "a/b"] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad:?}");
        }
        let below = HostRule::Below(".lan".into());
        assert!(below.matches("box.lan") && below.matches("a.box.lan"));
        assert!(!below.matches("lan") && !below.matches("evil-lan") && !below.matches(".lan"));
    }

    #[test]
    fn origin_rules() {
        let exact = |s: &str| OriginRule::Exact(s.into());
        assert_eq!(
            "HTTP://LocalHost:3000/".parse(),
            Ok(exact("http://localhost:3000"))
        );
        assert_eq!("https://ui.lan:443".parse(), Ok(exact("https://ui.lan")));
        assert_eq!("http://[::1]:8080".parse(), Ok(exact("http://[::1]:8080")));
        assert_eq!(
            "moz-extension://*".parse(),
            Ok(OriginRule::Scheme("moz-extension://".into()))
        );
        for bad in [
            "null",
            "localhost:3000",
            "http://*",
            "https://*",
            "http://a/path",
            "http://user@a",
            "http://a:99999",
            "1http://a",
            "http://",
        ] {
            assert!(bad.parse::<OriginRule>().is_err(), "{bad:?}");
        }
        let ext = OriginRule::Scheme("chrome-extension://".into());
        assert!(ext.matches(b"chrome-extension://abcdef"));
        assert!(!ext.matches(b"chrome-extension://") && !ext.matches(b"http://abcdef"));
        assert!(exact("http://localhost:3000").matches(b"http://LOCALHOST:3000"));
        assert!(!exact("http://localhost:3000").matches(b"http://localhost:30000"));
    }
}
