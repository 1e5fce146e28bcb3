//! WebSocket pass-through. Here, the step of a WebSocket request (`Upgrade: websocket`) after
//! routing and the usual header rewrite: sent to one server of its backend on a connection of
//! its own ([`session`]); a `101` is answered with the join pending, anything else passed
//! back as it came.

pub(crate) mod protocols;
pub(crate) mod revoke;
pub(crate) mod session;

use http::request::Parts;
use http::{Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::context::Ctx;
use super::rewrite::server_uri;
use super::send::no_server;
use super::{Proxy, Target};
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::proxy::headers;
use crate::upstream::failure;
use crate::upstream::swap::Turn;
use crate::upstream::{Backend, Server};
use revoke::Revocation;
use session::Session;

impl Proxy {
    /// A routed WebSocket request: joined to one server of its backend (the least busy one
    /// that is in), holding its swap group's turn while the session lasts, so that a swap
    /// never cuts it. `token`: the digest of the client token it was admitted with, if any
    /// (the session ends when a reload no longer accepts it).
    pub(in crate::proxy) async fn open_session(
        &self,
        (mut parts, body, token): (Parts, RequestBody, Option<[u8; 32]>),
        target: &Target,
        forward_path: &str,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let backend = &target.backend;
        let bc = &backend.config;
        let turn = self.wait_turn(backend).await?.and_then(|w| w.turn);
        let Some(i) = backend.pick(0) else {
            return Err(no_server(backend));
        };
        let server = &backend.servers[i];
        parts.uri = server_uri(&parts.uri, forward_path, bc, server)?;
        self.rewrite_request(&mut parts.headers, bc, ctx, server.host.as_ref());
        let revocation = token.map(|t| self.sessions.register(t));
        self.forward_websocket(parts, body, backend, server, (turn, revocation))
            .await
    }

    async fn forward_websocket(
        &self,
        mut parts: Parts,
        body: RequestBody,
        backend: &Backend,
        server: &Server,
        held: (Option<Turn>, Option<Revocation>),
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let bc = &backend.config;
        let client = parts.extensions.remove::<OnUpgrade>();
        let session = parts.extensions.remove::<Session>();
        session::prepare(&mut parts.headers, &server.url);
        let deadline = Instant::now() + bc.response_timeout;
        let sent = session::send(bc, Request::from_parts(parts, body));
        let mut res = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => {
                return Err(ProxyError::ResponseTimeout {
                    backend: bc.name.clone(),
                    url: server.url.url.clone(),
                    after: bc.response_timeout,
                })
            }
            Ok(Err(e)) => {
                let failed = failure::classify(&*e.error, e.connect, bc, &server.url.url);
                return Err(failed.into_error());
            }
            Ok(Ok(res)) => res,
        };
        headers::rewrite_response(
            res.headers_mut(),
            &backend.header,
            bc.takes_client_credentials(),
        );
        if !session::switched(&res) {
            // Refused (or answered some other way): back to the client as it came.
            let (mut parts, body) = res.into_parts();
            parts.version = Version::HTTP_11;
            return Ok(Response::from_parts(
                parts,
                ResponseBody::upstream(body, bc.idle_timeout),
            ));
        }
        let shutdown = self.config.server.shutdown_timeout;
        session::switching(res, client, session, bc, shutdown, held).ok_or_else(|| {
            ProxyError::BackendFailed {
                backend: bc.name.clone(),
                url: server.url.url.clone(),
                detail: "the client's connection cannot be upgraded".into(),
            }
        })
    }
}
