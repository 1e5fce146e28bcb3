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

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::request::Parts;
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::by_model::{fix_length, BodyModel};
use super::context::Ctx;
use super::rewrite::server_uri;
use super::start::Waiting;
use super::{Proxy, Target};
use crate::body::{Replay, RequestBody, ResponseBody};
use crate::config::BackendConfig;
use crate::error::ProxyError;
use crate::proxy::headers;
use crate::routing::model;
use crate::upstream::failure::{self, Failure};
use crate::upstream::pool::UpstreamError;
use crate::upstream::queue::Place;
use crate::upstream::{Backend, Held, Server};

/// A routed request that may be sent more than once.
pub(super) struct Outgoing {
    /// As the client sent it (normalized path, its own headers).
    pub parts: Parts,
    pub body: RequestBody,
    /// The model its body names, for each backend's aliases.
    pub model: Option<BodyModel>,
    /// Where it goes on the route's backend, and on its fallback.
    pub paths: [String; 2],
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

    /// An answer was taken: what was kept is not needed any more.
    fn settle(&self) {
        if let Source::Kept(r) = self {
            r.settle();
        }
    }
}

/// How the attempts of one request stand.
struct Attempts {
    source: Source,
    model: Option<BodyModel>,
    /// The answer when no attempt succeeds: the last failure's.
    last: Option<ProxyError>,
    /// Why the last attempt failed, in the words of the `reason` label.
    reason: &'static str,
    /// The body for the next attempt, when it had to be taken early (a 5xx answer is let go
    /// only once the fallback's body is sure).
    next: Option<RequestBody>,
}

impl Attempts {
    fn failed(&mut self, error: ProxyError, reason: &'static str) {
        self.last = Some(error);
        self.reason = reason;
    }

    /// The body of the next attempt to `backend`; `None` when more was sent than was kept.
    fn body(
        &mut self,
        alias: Option<&(Range<usize>, Vec<u8>)>,
        backend: &BackendConfig,
    ) -> Option<RequestBody> {
        self.next
            .take()
            .or_else(|| self.source.attempt(alias, backend))
    }
}

/// One backend's share of a request's attempts: the route's backend, then its fallback.
struct Leg<'a> {
    backend: &'a Arc<Backend>,
    /// The route's own backend (not the fallback).
    first: bool,
    /// The request's headers, rewritten for this backend.
    headers: HeaderMap,
    path: &'a str,
    /// The body's model replaced with this backend's alias for it: where, and with what.
    alias: Option<(Range<usize>, Vec<u8>)>,
    /// The wait for an on-demand backend: its turn, its server coming up.
    waiting: Option<Waiting>,
    /// For the answer's headers (each attempt has its own while a server comes up).
    deadline: Instant,
    /// Its place on the backend (`max_concurrent`), and how long it waited for it.
    place: Option<Place>,
    queued: Duration,
    /// The servers taken out for this request (a bit each).
    tried: u64,
    /// A connection was already closed before an answer once (one more try is free).
    closed_once: bool,
    /// The server to try first: the one that holds the response a request follows.
    first_server: Option<usize>,
}

impl Leg<'_> {
    /// The request for `server`, with `body`.
    fn request(
        &self,
        parts: &Parts,
        server: &Server,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, ProxyError> {
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = server_uri(&parts.uri, self.path, &self.backend.config, server)?;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        if let Some(h) = &server.host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
        Ok(req)
    }
}

/// What follows an attempt that failed before any answer.
enum Next {
    /// This backend again: another server, or the same after a back-off.
    Again,
    /// This backend is given up: on to the fallback, if there is one.
    GiveUp,
    /// The client gets this error now.
    Answer(ProxyError),
}

impl Proxy {
    /// Sends a request (its URI the server's already) to a backend's only server, once; a
    /// request without a body and safe to repeat goes again when its pooled connection turned
    /// out closed.
    pub(super) async fn send_once(
        &self,
        mut parts: Parts,
        body: RequestBody,
        target: &Target,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let backend = &target.backend;
        let bc = &backend.config;
        if backend.pick(0).is_none() {
            return Err(no_server(backend));
        }
        let server = &backend.servers[0];
        self.rewrite_request(&mut parts.headers, bc, ctx, server.host.as_ref());
        // Without a body, an idempotent request can be sent again when the pooled connection
        // it went out on turns out to have been closed by the backend (see `is_stale`).
        let again = (parts.method.is_idempotent() && http_body::Body::is_end_stream(&body))
            .then(|| parts.clone());
        let deadline = Instant::now() + bc.response_timeout;
        let load = backend.counts_in_flight().then(|| server.state.start());
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
                    load,
                    turn: None,
                    place: None,
                },
                backend,
                server,
                ctx,
            )),
        }
    }

    /// Sends a request to a server of its backend, then to others and to the route's fallback
    /// as long as none answered (see the module documentation).
    pub(super) async fn send_retrying(
        &self,
        out: Outgoing,
        target: &Target,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let Outgoing {
            mut parts,
            body,
            model,
            paths,
        } = out;
        let source = if http_body::Body::is_end_stream(&body) {
            Source::Empty
        } else {
            Source::Kept(Replay::new(body, self.config.server.max_replay_body))
        };
        let mut att = Attempts {
            source,
            model,
            last: None,
            reason: "failed",
            next: None,
        };
        // A fallback that would spend the proxy's key for a client that may not use it is
        // not one for this request.
        let fallback = target.fallback.as_ref().filter(|f| ctx.may_use(f).is_ok());
        let legs = [Some(&target.backend), fallback];
        for (i, backend) in legs.into_iter().enumerate() {
            let Some(backend) = backend else {
                break;
            };
            if i == 1 {
                ctx.fell_back(target, backend, att.reason);
            }
            // The client's headers, rewritten for this backend: the last leg takes them, an
            // earlier one keeps them for the fallback (its own credentials policy).
            let headers = if i == 0 && fallback.is_some() {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let mut leg = match self
                .leg(backend, i == 0, headers, &paths[i], &att, ctx)
                .await
            {
                Ok(leg) => leg,
                Err(e) => {
                    let reason = failure::reason(&e);
                    att.failed(e, reason);
                    continue;
                }
            };
            if let Some(res) = self
                .try_leg(&mut leg, &parts, target, &mut att, ctx)
                .await?
            {
                return Ok(res);
            }
        }
        Err(att.last.unwrap_or_else(|| no_server(&target.backend)))
    }

    /// Readies the attempts to `backend`: the headers rewritten for it, the model's alias,
    /// and for an on-demand backend, its turn.
    async fn leg<'a>(
        &self,
        backend: &'a Arc<Backend>,
        first: bool,
        mut headers: HeaderMap,
        path: &'a str,
        att: &Attempts,
        ctx: &Ctx,
    ) -> Result<Leg<'a>, ProxyError> {
        let bc = &backend.config;
        let alias = att.model.as_ref().and_then(|m| m.alias_for(bc));
        if let Some((span, with)) = &alias {
            fix_length(&mut headers, span, with.len());
        }
        self.rewrite_request(&mut headers, bc, ctx, None);
        let (place, queued) = match &backend.queue {
            Some(q) => {
                let client = ctx.who.as_ref().map(|c| &c.config.name);
                let (place, waited) = q.enter(client, bc.queue_timeout).await.map_err(|full| {
                    ProxyError::BackendBusy {
                        backend: bc.name.clone(),
                        limit: full.limit,
                        after: bc.queue_timeout,
                    }
                })?;
                (Some(place), waited)
            }
            None => (None, Duration::ZERO),
        };
        let waiting = self.wait_turn(backend).await?;
        Ok(Leg {
            place,
            queued,
            backend,
            first,
            headers,
            path,
            alias,
            waiting,
            deadline: Instant::now() + bc.response_timeout,
            tried: 0,
            closed_once: false,
            first_server: ctx.follow.as_ref().and_then(|f| f.preferred(backend)),
        })
    }

    /// Sends to the servers of one backend until one answers (`Some`), or the backend is
    /// given up (`None`: why is in `att`).
    async fn try_leg(
        &self,
        leg: &mut Leg<'_>,
        parts: &Parts,
        target: &Target,
        att: &mut Attempts,
        ctx: &mut Ctx,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        let backend = leg.backend;
        let bc = &backend.config;
        loop {
            let Some(i) = backend.pick_first(leg.first_server.take(), leg.tried) else {
                // Nothing tried: every server is out. A pool whose servers all failed: each
                // of them is named (one server's own error says it all).
                if leg.tried == 0 || backend.counts_load() {
                    att.last = Some(no_server(backend));
                }
                if leg.tried == 0 {
                    att.reason = "no_server";
                }
                return Ok(None);
            };
            let server = &backend.servers[i];
            let Some(body) = att.body(leg.alias.as_ref(), bc) else {
                // More was sent than is kept: the first error is the answer.
                return Err(att.last.take().unwrap_or_else(|| no_server(backend)));
            };
            let req = leg.request(parts, server, body)?;
            let load = backend.counts_in_flight().then(|| server.state.start());
            // While waiting for a server to come up, each attempt has its own time-out.
            let deadline = match &leg.waiting {
                Some(_) => Instant::now() + bc.response_timeout,
                None => leg.deadline,
            };
            let e = match tokio::time::timeout_at(deadline, backend.send(server, req)).await {
                Err(_) => {
                    // Waiting as long again on another server helps no one: fall back.
                    att.failed(response_timeout(bc, server), "response_timeout");
                    return Ok(None);
                }
                Ok(Ok((res, lease))) => {
                    server.state.answered(&bc.name);
                    if fails_over(leg, target, &res, server, att) {
                        return Ok(None);
                    }
                    att.source.settle();
                    let mut held = Held {
                        lease,
                        load,
                        turn: None,
                        place: leg.place.take(),
                    };
                    // The wait: in the backend's queue, then for an on-demand server.
                    if let Some(w) = leg.waiting.take() {
                        ctx.waited(leg.queued + w.waited());
                        held.turn = w.turn;
                    } else if !leg.queued.is_zero() {
                        ctx.waited(leg.queued);
                    }
                    return Ok(Some(respond(res, held, backend, server, ctx)));
                }
                Ok(Err(e)) => e,
            };
            drop(load);
            match after_failure(leg, i, &e, att).await {
                Next::Again => {}
                Next::GiveUp => return Ok(None),
                Next::Answer(err) => return Err(err),
            }
        }
    }
}

/// A 5xx answer of the route's backend with `fallback_on_5xx`: the fallback gets the request
/// instead, when its body can still be sent (taken now, into `att.next`), and the answer is
/// let go.
fn fails_over(
    leg: &Leg<'_>,
    target: &Target,
    res: &Response<Incoming>,
    server: &Server,
    att: &mut Attempts,
) -> bool {
    if !(leg.first && target.fallback_on_5xx && res.status().is_server_error()) {
        return false;
    }
    let Some(fb) = target.fallback.as_ref().map(|f| &f.config) else {
        return false;
    };
    let fb_alias = att.model.as_ref().and_then(|m| m.alias_for(fb));
    let Some(body) = att.source.attempt(fb_alias.as_ref(), fb) else {
        return false;
    };
    att.next = Some(body);
    let error = ProxyError::BackendFailed {
        backend: leg.backend.config.name.clone(),
        url: server.url.url.clone(),
        detail: format!("it answered {}", res.status()),
    };
    att.failed(error, "status_5xx");
    true
}

/// After an attempt on server `i` failed before any answer: what the failure says about the
/// server (taken out, or not), and what follows.
async fn after_failure(leg: &mut Leg<'_>, i: usize, e: &UpstreamError, att: &mut Attempts) -> Next {
    let backend = leg.backend;
    let bc = &backend.config;
    let server = &backend.servers[i];
    let failed = failure::classify(e, e.is_connect(), bc, &server.url.url);
    att.reason = failed.reason();
    let refused = matches!(failed, Failure::Connect(_) | Failure::Closed(_));
    if let (Some(w), true) = (leg.waiting.as_mut(), refused) {
        if w.again().await {
            att.last = Some(failed.into_error());
            return Next::Again;
        }
        if bc.start_timeout.is_some() {
            let error = w.timed_out(backend, &server.url.url, failure::describe(e));
            let reason = failure::reason(&error);
            att.failed(error, reason);
            return Next::GiveUp;
        }
    }
    match failed {
        Failure::Client(error) => Next::Answer(error),
        Failure::Closed(error) if !leg.closed_once => {
            // A keep-alive race, or a server going away: once more, anywhere.
            leg.closed_once = true;
            att.last = Some(error);
            Next::Again
        }
        Failure::Connect(error) | Failure::Closed(error) => {
            if backend.counts_load() {
                server
                    .state
                    .failed(&bc.name, &failure::describe(e), &bc.health);
            }
            leg.tried |= 1 << i;
            att.last = Some(error);
            Next::Again
        }
        Failure::Other(error) => {
            att.last = Some(error);
            Next::GiveUp
        }
    }
}

/// The client's response from a backend's: headers rewritten, `X-Backend` set, the body
/// streamed with its connection and load held until it is done.
fn respond(
    res: Response<Incoming>,
    held: Held,
    backend: &Backend,
    server: &Server,
    ctx: &mut Ctx,
) -> Response<ResponseBody> {
    let (mut rparts, rbody) = res.into_parts();
    rparts.version = Version::HTTP_11;
    let bc = &backend.config;
    headers::rewrite_response(
        &mut rparts.headers,
        &backend.header,
        bc.takes_client_credentials(),
    );
    ctx.answered(backend, server, &rparts.headers);
    let mut body = ResponseBody::upstream(rbody, bc.idle_timeout);
    body.set_held(Box::new(held));
    Response::from_parts(rparts, body)
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
