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

impl Proxy {
    /// Before anything else looks at a request: its head (length, framing), and who sent it
    /// (`guard`: Host, Origin, CORS preflights). Requests over a Unix socket have no peer. An
    /// HTTP/2 request names its host in `:authority`: that becomes its `Host`.
    pub(super) fn admit(&self, req: &mut Request<Incoming>, peer: Peer) -> Admission {
        if let Err(e) = check_head(req.uri(), req.headers()) {
            return Admission::Refuse(e);
        }
        if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().map(|a| a.as_str().to_owned());
            if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
                req.headers_mut().insert(header::HOST, v);
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
