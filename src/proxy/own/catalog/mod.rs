//! The [`Catalog`]: the model lists the proxy answers itself, each merged from the lists of
//! every backend that takes part, asked in parallel with a short time-out ([`fetch`]) and
//! merged by model ([`merge`]), each entry as its backend sent it, plus the aliases. The kinds
//! ([`shapes`]): OpenAI's `GET /v1/models`; Ollama's `GET /api/tags` and `GET /api/ps` (and
//! `GET /api/version`, the lowest version of those backends) from the backends that speak
//! Ollama's API; and Anthropic's `GET /v1/models` (asked with `anthropic-version`) from those
//! that speak Anthropic's, in Anthropic's shape.
//!
//! OpenAI's list is answered when the config routes by model; `GET /v1/models?backend=NAME`
//! (one backend's list, as `check-endpoints` asks for it) whatever the config. Each model
//! says which backend it is of (`backend`) and its state, as llama.cpp's router does
//! (`"status": {"value": "loaded"}`): see [`super::models`]. The same list, for every backend
//! whatever the config, answers llama.cpp's `GET /models`. The other kinds are answered
//! whenever a backend speaks their API.
//!
//! A backend that fails, times out, or answers anything but a list is left out, logged (when
//! that changes), and named in the `X-Models-Skipped` response header, so that a user can see
//! why a model is missing; its aliases are listed all the same.
//!
//! Lists are cached for [`LIST_TTL`] and refreshed in the background when a request finds
//! them older; what runs now (`/api/ps`) is asked afresh every time. A backend that gets the
//! client's own credentials (`forward_client_auth`) lists what that key may use: it is asked
//! afresh for every request, with that request's key, and its answer is never cached.

mod fetch;
mod merge;
pub(crate) mod shapes;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Response;
use serde_json::{json, Value};

use self::fetch::{Outcome, Slot};
use self::merge::Listing;
use self::shapes::Kind;
use crate::body::ResponseBody;
use crate::config::quote;
use crate::error::ProxyError;
use crate::observe::ledger::Ledger;
use crate::proxy::headers::X_BACKEND;
use crate::routing::routes::ModelSet;
use crate::upstream::Backend;

/// Names the backends whose lists are missing, and why.
pub(crate) static X_MODELS_SKIPPED: HeaderName = HeaderName::from_static("x-models-skipped");

/// How long a backend may take to list its models.
pub(crate) const LIST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a list is used before it is asked for again.
pub(crate) const LIST_TTL: Duration = Duration::from_secs(60);
/// How long a failure is remembered before the backend is asked again.
const FAILED_TTL: Duration = Duration::from_secs(10);
/// A cached answer older than this is not served while it is refreshed: the request waits.
const MAX_STALE: Duration = Duration::from_secs(600);
/// Largest model list read (OpenAI's is about 30 kB).
const MAX_LIST_BYTES: usize = 8 << 20;

/// Which backends a list takes, and what they may show.
pub(crate) type Keep<'k> = &'k (dyn Fn(&Backend, Option<&str>) -> bool + Sync);

/// A backend that takes part in a list.
pub(crate) struct Member {
    pub backend: Arc<Backend>,
    /// Where its list is: the path a route to it would forward the list's path to (as
    /// `/v1/models`), or that path under its base path.
    pub path: String,
    /// When every route to it lists `models`: only those models are shown (they are the ones
    /// that reach it).
    pub filter: Option<ModelSet>,
    /// Whether it is asked for its list. An on-demand backend with `list_models = false` is
    /// not (that would start its server): its models are those its routes name exactly (no
    /// `*`) and its aliases, so that their state can be shown.
    pub asked: bool,
}

/// Whom a list is asked for: the client's headers (rewritten for each backend as any request
/// to it), its address and the request's id.
#[derive(Clone, Copy)]
struct Asker<'r> {
    client: &'r HeaderMap,
    peer: Option<IpAddr>,
    rid: &'r HeaderValue,
}

/// The members of one kind of list, and their cache.
struct List {
    members: Vec<Member>,
    /// One per member.
    slots: Mutex<Vec<Slot>>,
}

/// The model lists of one config.
pub(crate) struct Catalog {
    /// Answer `GET /v1/models` itself (the config routes by model, and asking one backend
    /// as any request would is not the same).
    merged: bool,
    /// One per kind, in [`Kind::ALL`]'s order.
    lists: [List; 5],
    /// `server.secret_headers` beyond the built-in ones, handled as for any request.
    extra_secrets: Box<[HeaderName]>,
    /// Learns the model names backends list (its labels).
    ledger: Arc<Ledger>,
}

impl Catalog {
    /// A catalog whose lists of each kind have the members `members` gives.
    pub(crate) fn new(
        members: impl Fn(Kind) -> Vec<Member>,
        routes_by_model: bool,
        extra_secrets: Box<[HeaderName]>,
        ledger: &Arc<Ledger>,
    ) -> Arc<Catalog> {
        let lists = Kind::ALL.map(|kind| {
            let members = members(kind);
            let slots = members.iter().map(|_| Slot::default()).collect();
            List {
                members,
                slots: Mutex::new(slots),
            }
        });
        let plain = matches!(&lists[Kind::Models as usize].members[..],
            [m] if m.asked && m.filter.is_none() && m.backend.config.aliases.is_empty());
        Arc::new(Catalog {
            merged: routes_by_model && !plain,
            lists,
            extra_secrets,
            ledger: ledger.clone(),
        })
    }

    fn list(&self, kind: Kind) -> &List {
        &self.lists[kind as usize]
    }

    /// Whether `GET /v1/models` is answered with the merged list.
    pub(crate) fn is_merged(&self) -> bool {
        self.merged
    }

    /// Whether `GET /v1/models` with this query is the proxy's to answer: the merged list, or
    /// one backend's (`?backend=NAME`).
    pub(crate) fn answers(&self, parts: &Parts) -> bool {
        self.merged || parts.uri.query().and_then(backend_param).is_some()
    }

    /// Whether the `kind` list has a backend to ask (one that speaks its API): then the proxy
    /// answers it.
    pub(crate) fn speaks(&self, kind: Kind) -> bool {
        self.list(kind).members.iter().any(|m| m.asked)
    }

    /// The backends that take part in OpenAI's list, in order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.list(Kind::Models).members.iter()
    }

    /// Answers `GET /v1/models` when it is the proxy's to answer (`all`: whatever the config,
    /// as for llama.cpp's `GET /models`); `None`: route it as any other request. Each model
    /// gets its backend's name and its state (`state`: see [`super::models`]); only those
    /// `keep` keeps are listed (a client's: a backend, and a model of it).
    pub(crate) async fn answer(
        self: &Arc<Self>,
        parts: &Parts,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
        all: bool,
        state: &(dyn Fn(&Backend) -> &'static str + Sync),
        keep: Keep<'_>,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        let kind = Kind::Models;
        let only = parts.uri.query().and_then(backend_param);
        let chosen: Vec<usize> = match &only {
            None if !self.merged && !all => return Ok(None),
            None => (0..self.members().count()).collect(),
            Some(name) => vec![self
                .members()
                .position(|m| m.backend.config.name == *name)
                .ok_or_else(|| ProxyError::UnknownListBackend(quote(name)))?],
        };
        let list = self.kept(kind, chosen, parts, peer, rid, keep).await?;
        let members = &self.list(kind).members;
        let data: Vec<Value> = (list.data.iter())
            .map(|(i, model)| {
                let backend = &members[*i].backend;
                let mut model = model.clone();
                if let Value::Object(o) = &mut model {
                    o.insert("backend".into(), json!(backend.config.name));
                    o.insert("status".into(), json!({ "value": state(backend) }));
                }
                model
            })
            .collect();
        Ok(Some(respond(
            &json!({ "object": "list", "data": data }),
            &list,
        )))
    }

    /// Answers a list of another kind than OpenAI's, every member's merged, in its API's
    /// shape: Ollama's `{"models": [...]}`, or a page of Anthropic's (see
    /// [`shapes::anthropic_page`]); only what `keep` keeps.
    pub(crate) async fn answer_in(
        self: &Arc<Self>,
        kind: Kind,
        parts: &Parts,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
        keep: Keep<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let chosen = (0..self.list(kind).members.len()).collect();
        let list = self.kept(kind, chosen, parts, peer, rid, keep).await?;
        let entries = list.data.iter().map(|(_, v)| v.clone());
        let body = match kind {
            Kind::Anthropic => shapes::anthropic_page(
                entries.map(shapes::anthropic_entry).collect(),
                parts.uri.query(),
            ),
            _ => json!({ "models": entries.collect::<Vec<Value>>() }),
        };
        Ok(respond(&body, &list))
    }

    /// Answers Ollama's `GET /api/version`: the lowest version of the backends that speak
    /// Ollama's API (those `keep` keeps), so that a client relies only on what every one has.
    pub(crate) async fn version(
        self: &Arc<Self>,
        parts: &Parts,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
        keep: Keep<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let members = &self.list(Kind::Version).members;
        let chosen: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].asked && keep(&members[i].backend, None))
            .collect();
        let outcomes = self
            .outcomes(Kind::Version, &chosen, asker(parts, peer, rid))
            .await;
        let mut list = Listing::default();
        let mut versions = Vec::new();
        for (&i, o) in chosen.iter().zip(&outcomes) {
            let name = members[i].backend.config.name.as_str();
            match o {
                Outcome::Listed(v) => {
                    list.listed.push(name);
                    versions.extend(v.iter().filter_map(Value::as_str));
                }
                Outcome::Skipped { why, .. } => list.skipped.push(format!("{name} ({why})")),
            }
        }
        let lowest = shapes::lowest_version(versions.into_iter())
            .ok_or_else(|| ProxyError::NoVersion(list.skipped.join(", ")))?;
        Ok(respond(&json!({ "version": lowest }), &list))
    }

    /// The backend whose model list (or aliases) has the model `id`: the first to list it, as
    /// in the merged list.
    pub(crate) async fn owner_of(
        self: &Arc<Self>,
        id: &str,
        client: &HeaderMap,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
    ) -> Option<Arc<Backend>> {
        let all: Vec<usize> = (0..self.members().count()).collect();
        let list = self
            .listing(Kind::Models, &all, Asker { client, peer, rid })
            .await;
        list.data
            .iter()
            .find(|(_, model)| model["id"] == id)
            .map(|(i, _)| self.list(Kind::Models).members[*i].backend.clone())
    }

    /// The chosen members' merged `kind` list as the client may see it: only the backends
    /// `keep` keeps are asked, and only the models it keeps are listed. No model and some
    /// backend left out: an error that names them.
    async fn kept(
        self: &Arc<Self>,
        kind: Kind,
        mut chosen: Vec<usize>,
        parts: &Parts,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
        keep: Keep<'_>,
    ) -> Result<Listing<'_>, ProxyError> {
        let members = &self.list(kind).members;
        // Not even asked for the client's sake: a backend it may not use.
        chosen.retain(|&i| keep(&members[i].backend, None));
        let mut list = self.listing(kind, &chosen, asker(parts, peer, rid)).await;
        if list.data.is_empty() && !list.skipped.is_empty() {
            return Err(ProxyError::NoModelList(list.skipped.join(", ")));
        }
        list.data.retain(|(i, model)| {
            let name = kind.name(model).unwrap_or_default();
            keep(&members[*i].backend, Some(name))
        });
        Ok(list)
    }
}

/// A list's answer: `body`, the backends that listed in `X-Backend`, those left out in
/// `X-Models-Skipped`.
fn respond(body: &Value, list: &Listing<'_>) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&list.listed.join(",")) {
        h.insert(X_BACKEND.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&list.skipped.join(", ")) {
        if !list.skipped.is_empty() {
            h.insert(X_MODELS_SKIPPED.clone(), v);
        }
    }
    res
}

/// The [`Asker`] of a client's request.
fn asker<'r>(parts: &'r Parts, peer: Option<IpAddr>, rid: &'r HeaderValue) -> Asker<'r> {
    Asker {
        client: &parts.headers,
        peer,
        rid,
    }
}

/// `backend=NAME` from a query string.
fn backend_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("backend="))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_parameter() {
        assert_eq!(backend_param("backend=ollama"), Some("ollama".into()));
        assert_eq!(backend_param("a=1&backend=x"), Some("x".into()));
        assert_eq!(backend_param("backends=x"), None);
    }
}
