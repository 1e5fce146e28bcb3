//! The per-request context: what every phase of one request shares (as pingora's `CTX` does):
//! its id, who sent it, and its access record (the access line, the metrics, the ledger).
//! The phases note in it what they decided (route, fallback, wait, answer), so that the access
//! line and the counters say it without each phase taking the record as a parameter.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Uri};
use tokio::time::Instant;

use super::headers;
use super::{Peer, Target};
use crate::observe::access::AccessRecord;
use crate::observe::ledger::Ledger;
use crate::observe::metrics::Tally;
use crate::observe::usage::UsageScanner;
use crate::upstream::{Backend, Server};

/// One request's context.
pub(crate) struct Ctx {
    /// The request id: the client's `X-Request-ID` when it is sane, else a new one.
    pub rid: HeaderValue,
    pub peer: Peer,
    /// Filled in as the request goes; the response body takes it at the end, and it is
    /// written when that body is done.
    pub access: Option<Box<AccessRecord>>,
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
        Ctx {
            rid,
            peer,
            access: Some(a),
        }
    }

    /// The request came with the client token named `name`.
    pub(super) fn client(&mut self, name: Option<&Arc<str>>) {
        if let (Some(a), Some(name)) = (self.access(), name) {
            a.client = Some(name.clone());
        }
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
        if let Some(a) = self.access() {
            a.answered = true;
            a.usage = UsageScanner::for_response(response);
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
