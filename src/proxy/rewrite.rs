//! The rewrite phase: a routed request made into a request for one server of its backend:
//! its URL (the server's scheme and authority, the forwarded path, the query without key
//! parameters where the backend must not get them) and its headers ([`headers`]).

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Uri};

use super::context::Ctx;
use super::Proxy;
use super::{headers, query};
use crate::config::BackendConfig;
use crate::error::ProxyError;
use crate::upstream::Server;

impl Proxy {
    /// The request's headers rewritten for a backend's server: hop-by-hop headers out, the
    /// backend's credentials policy, `X-Forwarded-*` (`Proto: https` behind the HTTPS
    /// listener), the request id, and the server's `Host` (`None`: the client sets it).
    pub(super) fn rewrite_request(
        &self,
        headers: &mut HeaderMap,
        bc: &BackendConfig,
        ctx: &Ctx,
        host: Option<&HeaderValue>,
    ) {
        let peer = ctx.peer;
        headers::rewrite_request(
            headers,
            &bc.auth,
            &self.extra_secrets,
            peer.ip,
            &ctx.rid,
            host,
        );
        if peer.https {
            headers::forwarded_https(headers);
        }
    }
}

/// The URL of a request on one server of its backend ([`backend_uri`] with the server's
/// scheme and authority and the backend's query-key policy).
pub(super) fn server_uri(
    client: &Uri,
    forward_path: &str,
    bc: &BackendConfig,
    server: &Server,
) -> Result<Uri, ProxyError> {
    backend_uri(
        client,
        forward_path,
        bc.strips_query_keys(),
        &server.url.scheme,
        &server.url.authority,
    )
}

/// The URL a request goes to: the backend's scheme and authority, `forward_path`, and the
/// client's query string, without its key parameters when `strip_keys`
/// ([`query::without_key_params`]). When the path and query are forwarded as the client
/// sent them (the usual case: already normal, no rewrite, no base path, no key in the query),
/// the client's path-and-query is reused as is, which copies nothing.
pub fn backend_uri(
    client: &Uri,
    forward_path: &str,
    strip_keys: bool,
    scheme: &Scheme,
    authority: &Authority,
) -> Result<Uri, ProxyError> {
    let stripped = match client.query() {
        Some(q) if strip_keys => query::without_key_params(q),
        _ => None,
    };
    let pq = match (client.path_and_query(), &stripped) {
        (Some(pq), None) if pq.path() == forward_path => pq.clone(),
        _ => {
            let query = match &stripped {
                Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
                None => client.query(),
            };
            let pq = match query {
                Some(q) => format!("{forward_path}?{q}"),
                None => forward_path.to_string(),
            };
            PathAndQuery::from_maybe_shared(Bytes::from(pq))
                .map_err(|_| ProxyError::BadPath("the query string is not valid"))?
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme.clone());
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(pq);
    Uri::from_parts(uri).map_err(|_| ProxyError::BadPath("cannot build the backend URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_uris() {
        let scheme = Scheme::HTTP;
        let authority = Authority::from_static("127.0.0.1:11434");
        let uri = |client: &'static str, fwd: &str| {
            backend_uri(&Uri::from_static(client), fwd, true, &scheme, &authority)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            uri("/v1/models?limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("//v1/./models?limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("/v1/audio/transcriptions", "/inference"),
            "http://127.0.0.1:11434/inference"
        );
        // Key parameters are removed (the query too when nothing else is left), unless the
        // backend keeps them.
        assert_eq!(
            uri("/v1/models?key=sk-x&limit=2", "/v1/models"),
            "http://127.0.0.1:11434/v1/models?limit=2"
        );
        assert_eq!(
            uri("/v1/models?api-key=sk-x", "/v1/models"),
            "http://127.0.0.1:11434/v1/models"
        );
        let kept = backend_uri(
            &Uri::from_static("/v1/models?key=k"),
            "/v1/models",
            false,
            &scheme,
            &authority,
        )
        .unwrap();
        assert_eq!(kept.to_string(), "http://127.0.0.1:11434/v1/models?key=k");
    }
}
