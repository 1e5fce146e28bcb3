//! Sending a routed request, and what happens when its server fails before answering.
//!
//! With one server and no fallback, a request is sent once ([`Proxy::send_once`]), as it
//! always was. Otherwise ([`Proxy::send_retrying`]) its body is kept while in flight
//! ([`Replay`], up to `server.max_replay_body`), and the request may go out again, as long as
//! no byte of an answer has gone to the client (the retry point is the response headers):
//!
//! - to another server of the pool, when one cannot be connected to (refused, unreachable, no
//!   connection in time: it is taken out, see [`crate::upstream::health`]) or closes the
//!   connection before answering (tried once more; the second time it is taken out);
//! - then to the route's fallback, when no server of the backend answered: every server out or
//!   failing, no response headers within `response_timeout`, or a 5xx answer with
//!   `fallback_on_5xx`. The fallback gets the request as the client sent it, with its own
//!   credentials policy, its own aliases and the request's own path (not the route's
//!   rewrite).
//!
//! A body that no longer fits what was kept cannot go out again: the first error is the
//! answer. Once an answer's headers are taken, nothing is sent again: a stream cut later is
//! cut for the client too.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::HeaderMap;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::by_model::{fix_length, BodyModel};
use super::{server_uri, Peer, Proxy, Target};
use crate::body::{Replay, RequestBody, ResponseBody};
use crate::config::BackendConfig;
use crate::error::ProxyError;
use crate::observe::access::AccessRecord;
use crate::proxy::headers;
use crate::routing::model;
use crate::upstream::failure::{self, Failure};
use crate::upstream::Held;
use crate::upstream::{Backend, Server};

/// A routed request that may be sent more than once.
pub(super) struct Outgoing<'a> {
    /// As the client sent it (normalized path, its own headers).
    pub parts: Parts,
    pub body: RequestBody,
    /// The model its body names, for each backend's aliases.
    pub model: Option<BodyModel>,
    /// Where it goes on the route's backend, and on its fallback.
    pub paths: [String; 2],
    pub peer: Peer,
    pub rid: &'a HeaderValue,
}

/// The path a fallback gets: the request's own (no rewrite), under its base path, with its
/// alias for a model the path names.
pub(super) fn fallback_path(path: &str, fb: &BackendConfig) -> String {
    if let Some(to) = model::path_model(path).and_then(|id| fb.aliases.get(&*id)) {
        return format!("{}{}", fb.base_path, model::model_path(to));
    }
    format!("{}{path}", fb.base_path)
}

/// The body each attempt sends.
enum Source {
    /// None at all: every attempt sends none.
    Empty,
    Kept(Replay),
}

impl Source {
    /// The body for the next attempt; `None` when what was sent can no longer be sent again.
    fn attempt(
        &self,
        alias: Option<&(std::ops::Range<usize>, Vec<u8>)>,
        backend: &BackendConfig,
    ) -> Option<RequestBody> {
        match self {
            Source::Empty => Some(RequestBody::empty()),
            Source::Kept(r) => r.attempt(
                alias.map(|(span, with)| (span.clone(), with.as_slice())),
                backend.idle_timeout,
            ),
        }
    }
}

impl Proxy {
    /// The request's headers rewritten for a backend's server: hop-by-hop headers out, the
    /// backend's credentials policy, `X-Forwarded-*` (`Proto: https` behind the HTTPS
    /// listener), the request id, and the server's `Host` (`None`: the client sets it).
    pub(super) fn rewrite_request(
        &self,
        headers: &mut HeaderMap,
        bc: &BackendConfig,
        peer: Peer,
        rid: &HeaderValue,
        host: Option<&HeaderValue>,
    ) {
        headers::rewrite_request(headers, &bc.auth, &self.extra_secrets, peer.ip, rid, host);
        if peer.https {
            headers::forwarded_https(headers);
        }
    }

    /// Sends a request (its URI the server's already) to a backend's only server, once; a
    /// request without a body and safe to repeat goes again when its pooled connection turned
    /// out closed.
    pub(super) async fn send_once(
        &self,
        mut parts: Parts,
        body: RequestBody,
        target: &Target,
        peer: Peer,
        rid: &HeaderValue,
        access: Option<&mut AccessRecord>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let backend = &target.backend;
        let bc = &backend.config;
        if backend.pick(0).is_none() {
            return Err(no_server(backend));
        }
        let server = &backend.servers[0];
        self.rewrite_request(&mut parts.headers, bc, peer, rid, server.host.as_ref());
        // Without a body, an idempotent request can be sent again when the pooled connection
        // it went out on turns out to have been closed by the backend (see `is_stale`).
        let again = (parts.method.is_idempotent() && http_body::Body::is_end_stream(&body))
            .then(|| parts.clone());
        let deadline = Instant::now() + bc.response_timeout;
        let upstream = backend.send(server, Request::from_parts(parts, body));
        let mut result = tokio::time::timeout_at(deadline, upstream).await;
        if let (Some(parts), Ok(Err(e))) = (again, &result) {
            if failure::is_stale(e) {
                tracing::debug!(
                    "backend '{}': connection closed before any response; sending again",
                    bc.name
                );
                let again = Request::from_parts(parts, RequestBody::empty());
                result = tokio::time::timeout_at(deadline, backend.send(server, again)).await;
            }
        }
        match result {
            Err(_) => Err(response_timeout(bc, server)),
            Ok(Err(e)) => {
                Err(failure::classify(&e, e.is_connect(), bc, &server.url.url).into_error())
            }
            Ok(Ok((res, lease))) => Ok(respond(
                res,
                Held {
                    lease,
                    load: None,
                    turn: None,
                },
                backend,
                server,
                access,
            )),
        }
    }

    /// Sends a request to a server of its backend, then to others and to the route's fallback
    /// as long as none answered (see the module documentation).
    pub(super) async fn send_retrying(
        &self,
        out: Outgoing<'_>,
        target: &Target,
        mut access: Option<&mut AccessRecord>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let Outgoing {
            mut parts,
            body,
            model,
            paths,
            peer,
            rid,
        } = out;
        let source = if http_body::Body::is_end_stream(&body) {
            Source::Empty
        } else {
            Source::Kept(Replay::new(body, self.config.server.max_replay_body))
        };
        let legs = [Some(&target.backend), target.fallback.as_ref()];
        let mut last: Option<ProxyError> = None;
        // Why the last attempt failed, in the words of the `reason` label.
        let mut reason = "failed";
        // The body for the next attempt, when it had to be taken early (a 5xx answer is let go
        // only once the fallback's body is sure).
        let mut next: Option<RequestBody> = None;
        for (leg, backend) in legs.into_iter().enumerate() {
            let Some(backend) = backend else {
                break;
            };
            let bc = &backend.config;
            let alias = model.as_ref().and_then(|m| m.alias_for(bc));
            if leg == 1 {
                tracing::debug!(
                    "route {}: backend '{}' failed ({reason}); falling back to '{}'",
                    target.route,
                    target.backend.config.name,
                    bc.name
                );
                if let Some(t) = &target.tally {
                    t.fallback(reason);
                }
                if let Some(a) = access.as_deref_mut() {
                    a.fallback = Some((target.backend.header.clone(), reason));
                    a.backend = Some(backend.header.clone());
                    a.route_to(target.fallback_tally.as_ref());
                }
            }
            // The client's headers, rewritten for this backend: the last leg takes them, an
            // earlier one keeps them for the fallback (its own credentials policy).
            let mut headers = if leg == 0 && target.fallback.is_some() {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            if let Some((span, with)) = &alias {
                fix_length(&mut headers, span, with.len());
            }
            self.rewrite_request(&mut headers, bc, peer, rid, None);
            let mut waiting = match self.wait_turn(backend).await {
                Ok(w) => w,
                Err(e) => {
                    reason = failure::reason(&e);
                    last = Some(e);
                    continue;
                }
            };
            let leg_deadline = Instant::now() + bc.response_timeout;
            let mut tried = 0u64;
            let mut closed_once = false;
            loop {
                let Some(i) = backend.pick(tried) else {
                    // Nothing tried: every server is out. A pool whose servers all failed: each
                    // of them is named (one server's own error says it all).
                    if tried == 0 || backend.counts_load() {
                        last = Some(no_server(backend));
                    }
                    if tried == 0 {
                        reason = "no_server";
                    }
                    break;
                };
                let server = &backend.servers[i];
                let body = match next.take().or_else(|| source.attempt(alias.as_ref(), bc)) {
                    Some(b) => b,
                    // More was sent than is kept: the first error is the answer.
                    None => return Err(last.unwrap_or_else(|| no_server(backend))),
                };
                let mut req = Request::new(body);
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = server_uri(&parts.uri, &paths[leg], bc, server)?;
                *req.version_mut() = Version::HTTP_11;
                *req.headers_mut() = headers.clone();
                if let Some(h) = &server.host {
                    req.headers_mut().insert(header::HOST, h.clone());
                }
                let load = backend.counts_load().then(|| server.state.start());
                // While waiting for a server to come up, each attempt has its own time-out.
                let deadline = match &waiting {
                    Some(_) => Instant::now() + bc.response_timeout,
                    None => leg_deadline,
                };
                let result = tokio::time::timeout_at(deadline, backend.send(server, req)).await;
                let e = match result {
                    Err(_) => {
                        // Waiting as long again on another server helps no one: fall back.
                        last = Some(response_timeout(bc, server));
                        reason = "response_timeout";
                        break;
                    }
                    Ok(Ok((res, lease))) => {
                        server.state.answered(&bc.name);
                        let to_fallback = leg == 0
                            && target.fallback_on_5xx
                            && res.status().is_server_error()
                            && target.fallback.is_some();
                        if to_fallback {
                            let fb = target.fallback.as_ref().map(|f| &f.config);
                            let fb_alias = fb.and_then(|f| model.as_ref()?.alias_for(f));
                            if let Some(b) = fb.and_then(|f| source.attempt(fb_alias.as_ref(), f)) {
                                next = Some(b);
                                last = Some(ProxyError::BackendFailed {
                                    backend: bc.name.clone(),
                                    url: server.url.url.clone(),
                                    detail: format!("it answered {}", res.status()),
                                });
                                reason = "status_5xx";
                                break;
                            }
                        }
                        if let Source::Kept(r) = &source {
                            r.settle();
                        }
                        let mut held = Held {
                            lease,
                            load,
                            turn: None,
                        };
                        if let Some(w) = waiting {
                            if let Some(a) = access.as_deref_mut() {
                                a.waited = Some(w.waited());
                            }
                            held.turn = w.turn;
                        }
                        return Ok(respond(res, held, backend, server, access));
                    }
                    Ok(Err(e)) => e,
                };
                drop(load);
                let failed = failure::classify(&e, e.is_connect(), bc, &server.url.url);
                reason = failed.reason();
                let refused = matches!(failed, Failure::Connect(_) | Failure::Closed(_));
                if let (Some(w), true) = (waiting.as_mut(), refused) {
                    if w.again().await {
                        last = Some(failed.into_error());
                        continue;
                    }
                    if bc.start_timeout.is_some() {
                        let err = w.timed_out(backend, &server.url.url, failure::describe(&e));
                        reason = failure::reason(&err);
                        last = Some(err);
                        break;
                    }
                }
                match failed {
                    Failure::Client(err) => return Err(err),
                    Failure::Closed(err) if !closed_once => {
                        // A keep-alive race, or a server going away: once more, anywhere.
                        closed_once = true;
                        last = Some(err);
                    }
                    Failure::Connect(err) | Failure::Closed(err) => {
                        if backend.counts_load() {
                            server
                                .state
                                .failed(&bc.name, &failure::describe(&e), &bc.health);
                        }
                        tried |= 1 << i;
                        last = Some(err);
                    }
                    Failure::Other(err) => {
                        last = Some(err);
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| no_server(&target.backend)))
    }
}

/// The client's response from a backend's: headers rewritten, `X-Backend` set, the body
/// streamed with its connection and load held until it is done.
fn respond(
    res: Response<Incoming>,
    held: Held,
    backend: &Backend,
    server: &Server,
    access: Option<&mut AccessRecord>,
) -> Response<ResponseBody> {
    let (mut rparts, rbody) = res.into_parts();
    rparts.version = Version::HTTP_11;
    let bc = &backend.config;
    headers::rewrite_response(
        &mut rparts.headers,
        &backend.header,
        bc.takes_client_credentials(),
    );
    if let Some(a) = access {
        a.answered = true;
        if bc.is_pool() {
            a.server = Some(server.state.url.clone());
        }
        if a.counts() && is_event_stream(&rparts.headers) {
            a.streaming();
        }
    }
    let mut body = ResponseBody::upstream(rbody, bc.idle_timeout);
    body.set_held(Box::new(held));
    Response::from_parts(rparts, body)
}

fn is_event_stream(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

fn response_timeout(bc: &BackendConfig, server: &Server) -> ProxyError {
    ProxyError::ResponseTimeout {
        backend: bc.name.clone(),
        url: server.url.url.clone(),
        after: bc.response_timeout,
    }
}

/// Longest list of servers and their states in a message.
const MAX_DETAIL: usize = 1000;

pub(super) fn no_server(backend: &Arc<Backend>) -> ProxyError {
    let mut detail = backend.why_none();
    if let Some((at, _)) = detail.char_indices().nth(MAX_DETAIL) {
        detail = format!("{}… ({} servers)", &detail[..at], backend.servers.len());
    }
    ProxyError::NoServer {
        backend: backend.config.name.clone(),
        detail,
    }
}
