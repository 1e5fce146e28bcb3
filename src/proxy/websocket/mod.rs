//! WebSocket pass-through. Here, the step of a WebSocket request (`Upgrade: websocket`) after
//! routing and the usual header rewrite: sent to one server of its backend on a connection of
//! its own ([`session`]); a `101` is answered with the join pending, anything else passed
//! back as it came.

pub(crate) mod session;

use http::request::Parts;
use http::{Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::Proxy;
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::proxy::headers;
use crate::upstream::failure;
use crate::upstream::swap::Turn;
use crate::upstream::{Backend, Server};
use session::Session;

impl Proxy {
    pub(super) async fn forward_websocket(
        &self,
        mut parts: Parts,
        body: RequestBody,
        backend: &Backend,
        server: &Server,
        turn: Option<Turn>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let bc = &backend.config;
        let client = parts.extensions.remove::<OnUpgrade>();
        let session = parts.extensions.remove::<Session>();
        session::prepare(&mut parts.headers, bc, &server.url);
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
        session::switching(res, client, session, bc, shutdown, turn).ok_or_else(|| {
            ProxyError::BackendFailed {
                backend: bc.name.clone(),
                url: server.url.url.clone(),
                detail: "the client's connection cannot be upgraded".into(),
            }
        })
    }
}
