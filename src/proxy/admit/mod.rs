//! Whether a request may go on, before it is routed: the `Host` and `Origin` guard (DNS
//! rebinding, cross-site pages), CORS preflights and headers, the client token.

pub(crate) mod cors;
pub(crate) mod guard;
mod head;
mod token;

use http::header::{self, HeaderValue};
use http::{Request, Version};
use hyper::body::Incoming;

use self::guard::Admission;
use self::head::check_head;
pub(crate) use self::token::check_client_token;
use super::{Peer, Proxy};
use crate::error::ProxyError;

impl Proxy {
    /// Before anything else looks at a request: its head (length, framing), and who sent it
    /// (`guard`: Host, Origin, CORS preflights). Requests over a Unix socket have no peer. An
    /// HTTP/2 request names its host in `:authority`: that becomes its `Host`; one that also
    /// sends a `Host` naming something else is refused (RFC 9113 §8.3.1: malformed), as the
    /// guard and a backend could otherwise each read another name.
    pub(super) fn admit(&self, req: &mut Request<Incoming>, peer: Peer) -> Admission {
        if let Err(e) = check_head(req.uri(), req.headers()) {
            return Admission::Refuse(e);
        }
        if req.version() == Version::HTTP_2 {
            if let Err(e) = authority_as_host(req) {
                return Admission::Refuse(e);
            }
        }
        self.guard.admit(
            req.method(),
            req.version(),
            req.headers(),
            peer.ip.is_none(),
        )
    }
}

/// Makes an HTTP/2 request's `:authority` its `Host`; a `Host` that differs from it (in more
/// than letter case) is an error. Without `:authority`, its `Host` (if any) is used.
fn authority_as_host(req: &mut Request<Incoming>) -> Result<(), ProxyError> {
    let Some(authority) = req.uri().authority() else {
        return Ok(());
    };
    let mut hosts = req.headers().get_all(header::HOST).iter();
    if hosts.next().is_none() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
        return Ok(());
    }
    let same = |v: &HeaderValue| {
        v.as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    };
    if req.headers().get_all(header::HOST).iter().all(same) {
        Ok(())
    } else {
        Err(ProxyError::BadHost("Host differs from :authority"))
    }
}
