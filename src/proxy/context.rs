//! The per-request context: what every phase of one request shares (as pingora's `CTX` does):
//! its id, who sent it, and its access record (the access line, the metrics, the ledger).
//! The phases note in it what they decided (route, fallback, wait, answer), so that the access
//! line and the counters say it without each phase taking the record as a parameter.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Uri};
use tokio::time::Instant;

use super::headers;
use super::responses::Follow;
use super::{Peer, Target};
use crate::clients::Client;
use crate::config::{quote, AuthPolicy};
use crate::error::ProxyError;
use crate::observe::access::AccessRecord;
use crate::observe::ledger::Ledger;
use crate::observe::metrics::Tally;
use crate::observe::usage::UsageScanner;
use crate::routing::api::Api;
use crate::upstream::{Backend, Server};

/// The header Anthropic's clients send with every request.
pub(crate) static ANTHROPIC_VERSION: http::HeaderName =
    http::HeaderName::from_static("anthropic-version");

/// One request's context.
pub(crate) struct Ctx {
    /// The request id: the client's `X-Request-ID` when it is sane, else a new one.
    pub rid: HeaderValue,
    pub peer: Peer,
    /// Filled in as the request goes; the response body takes it at the end, and it is
    /// written when that body is done.
    pub access: Option<Box<AccessRecord>>,
    /// The named client it came from (its scope and limits).
    pub who: Option<Arc<Client>>,
    /// The client API it is in: the shape of the proxy's own answers.
    pub api: Api,
    /// A request of the Responses API that may be answered by more than one server.
    pub follow: Option<Box<Follow>>,
}

impl Ctx {
    /// The context of `req`: its record is written to the access log when it is on (`log`),
    /// counted (`unrouted`: the counters of the proxy's own answers, until it is routed) and
    /// added to `ledger` once routed.
    pub(super) fn new<B>(
        req: &Request<B>,
        peer: Peer,
        log: bool,
        unrouted: Option<&Arc<Tally>>,
        ledger: &Arc<Ledger>,
    ) -> Ctx {
        let rid = headers::request_id(req.headers());
        let mut a = Box::new(AccessRecord::new(
            rid.clone(),
            req.method().clone(),
            Instant::now(),
        ));
        a.log = log;
        a.count_on(unrouted);
        a.record_in(ledger);
        let path = req.uri().path();
        let api = Api::of_request(
            path,
            path.starts_with("/v1") && req.headers().contains_key(&ANTHROPIC_VERSION),
        );
        Ctx {
            rid,
            peer,
            access: Some(a),
            who: None,
            api,
            follow: None,
        }
    }

    /// The request came with the client token named `name`, the client `who`.
    pub(super) fn client(&mut self, name: Option<Arc<str>>, who: Option<&Arc<Client>>) {
        self.who = who.cloned();
        if let (Some(a), Some(name)) = (self.access(), name) {
            a.client = Some(name);
        }
    }

    /// Refuses what its client may not ask for: `path`.
    pub(super) fn may_use_path(&self, path: &str) -> Result<(), ProxyError> {
        match &self.who {
            Some(c) if !c.config.allows_path(path) => Err(ProxyError::RouteNotAllowed {
                client: c.config.name.clone(),
                path: path.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses what its client may not ask for: `model`.
    pub(super) fn may_use_model(&self, model: &str) -> Result<(), ProxyError> {
        match &self.who {
            Some(c) if !c.config.allows_model(model) => Err(ProxyError::ModelNotAllowed {
                client: c.config.name.clone(),
                model: quote(model),
            }),
            _ => Ok(()),
        }
    }

    /// Whether its client may have `backend` answer: not one that would get the proxy's key,
    /// unless the client may use it.
    pub(super) fn may_use(&self, backend: &Backend) -> Result<(), ProxyError> {
        let bc = &backend.config;
        match &self.who {
            Some(c)
                if matches!(bc.auth, AuthPolicy::Inject { .. })
                    && !c.config.may_use_key_of(&bc.name) =>
            {
                Err(ProxyError::ServerKeyNotAllowed {
                    client: c.config.name.clone(),
                    backend: bc.name.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Its client's models are limited: the model it asks for is looked for in every body.
    pub(super) fn models_limited(&self) -> bool {
        self.who.as_ref().is_some_and(|c| c.config.models.is_some())
    }

    /// Lets the request go to a backend under its client's limits (it counts in flight until
    /// its access record is done, and its tokens are counted then), or refuses it.
    pub(super) fn admit_client(&mut self) -> Result<(), ProxyError> {
        let Some(c) = &self.who else {
            return Ok(());
        };
        if !c.config.limits.any() {
            return Ok(());
        }
        // The request's arrival is its time (no clock read of its own).
        let now = self.access.as_ref().map_or_else(Instant::now, |a| a.start);
        let admitted = c
            .admit(now)
            .map_err(|r| ProxyError::RateLimited(Box::new(r)))?;
        if let Some(a) = self.access() {
            a.admitted = Some(admitted);
        }
        Ok(())
    }

    /// The request asks for model `name`.
    pub(super) fn model(&mut self, name: &str) {
        if let Some(a) = self.access() {
            a.model = Some(name.into());
        }
    }

    /// The access record, when one is kept.
    pub(super) fn access(&mut self) -> Option<&mut AccessRecord> {
        self.access.as_deref_mut()
    }

    /// The path the line shows: `normalized`, or the client's when it could not be.
    pub(super) fn path(&mut self, uri: &Uri, normalized: Option<&str>) {
        if let Some(a) = self.access() {
            a.set_path(uri, normalized);
        }
    }

    /// The request goes to `target`'s backend (counted on that route from now on).
    pub(super) fn routed(&mut self, target: &Target) {
        if let Some(a) = self.access() {
            a.route = Some(target.route.clone());
            a.backend = Some(target.backend.header.clone());
            a.backend_name = Some(target.backend.name.clone());
            a.route_to(target.tally.as_ref());
        }
    }

    /// The route's backend failed (`reason`): the request goes to its fallback `to`.
    pub(super) fn fell_back(&mut self, target: &Target, to: &Backend, reason: &'static str) {
        tracing::debug!(
            "route {}: backend '{}' failed ({reason}); falling back to '{}'",
            target.route,
            target.backend.config.name,
            to.config.name
        );
        if let Some(t) = &target.tally {
            t.fallback(reason);
        }
        if let Some(a) = self.access() {
            a.fallback = Some((target.backend.header.clone(), reason));
            a.backend = Some(to.header.clone());
            a.backend_name = Some(to.name.clone());
            a.route_to(target.fallback_tally.as_ref());
        }
    }

    /// The request waited `waited` for an on-demand backend (its turn, its server).
    pub(super) fn waited(&mut self, waited: Duration) {
        if let Some(a) = self.access() {
            a.waited = Some(waited);
        }
    }

    /// `server` of `backend` answered, with these response headers.
    pub(super) fn answered(&mut self, backend: &Backend, server: &Server, response: &HeaderMap) {
        let tap = self.follow.as_ref().and_then(|f| f.tap(backend, server));
        if let Some(a) = self.access() {
            a.answered = true;
            a.usage = UsageScanner::for_response(response);
            a.id_tap = tap;
            if backend.config.is_pool() {
                a.server = Some(server.state.url.clone());
            }
            if a.counts() && headers::is_event_stream(response) {
                a.streaming();
            }
        }
    }

    /// The backend that answered the proxy's own answer (a model list), when one did.
    pub(super) fn answered_by(&mut self, backend: Option<&HeaderValue>) {
        if let Some(a) = self.access() {
            a.backend = backend.cloned();
        }
    }
}
