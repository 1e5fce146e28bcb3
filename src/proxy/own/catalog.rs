//! The [`Catalog`]: `GET /v1/models` answered by the proxy: the lists of every backend that takes part, asked
//! in parallel with a short time-out and merged by `id`, each model object as its backend sent
//! it (`owned_by` included), plus the aliases. It answers when the config routes by model;
//! `GET /v1/models?backend=NAME` (one backend's list, as `check-endpoints` asks for it)
//! answers whatever the config.
//!
//! Each model says which backend it is of (`backend`) and its state, as llama.cpp's router
//! does (`"status": {"value": "loaded"}`): see [`super::models`]. The same list, for every
//! backend whatever the config, answers llama.cpp's `GET /models`.
//!
//! A backend that fails, times out, or answers anything but a model list is left out, logged
//! (when that changes), and named in the `X-Models-Skipped` response header, so that a user
//! can see why a model is missing; its aliases are listed all the same.
//!
//! Lists are cached for [`LIST_TTL`] and refreshed in the background when a request finds
//! them older. A backend that gets the client's own credentials (`forward_client_auth`) lists
//! what that key may use: it is asked afresh for every request, with that request's key, and
//! its answer is never cached.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::body::ResponseBody;
use crate::config::{format_duration, quote, AuthPolicy};
use crate::error::ProxyError;
use crate::observe::ledger::Ledger;
use crate::proxy::headers::{self, X_BACKEND};
use crate::routing::routes::ModelSet;
use crate::sync;
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

/// A backend that takes part in the list.
pub(crate) struct Member {
    pub backend: Arc<Backend>,
    /// Where its list is: the path a route to it would forward `/v1/models` to, or
    /// `/v1/models` under its base path.
    pub path: String,
    /// When every route to it lists `models`: only those models are shown (they are the ones
    /// that reach it).
    pub filter: Option<ModelSet>,
    /// Whether it is asked for its list. An on-demand backend with `list_models = false` is
    /// not (that would start its server): its models are those its routes name exactly (no
    /// `*`) and its aliases, so that their state can be shown.
    pub asked: bool,
}

/// What asking one backend came to.
#[derive(Clone, Debug)]
enum Outcome {
    /// The model objects, as sent.
    Listed(Arc<Vec<Value>>),
    /// Left out: a few words for the header, and the whole story for the log.
    Skipped { why: String, detail: String },
}

impl Outcome {
    fn ttl(&self) -> Duration {
        match self {
            Outcome::Listed(_) => LIST_TTL,
            Outcome::Skipped { .. } => FAILED_TTL,
        }
    }

    /// What is logged when it changes.
    fn summary(&self) -> &str {
        match self {
            Outcome::Listed(_) => "listed",
            Outcome::Skipped { why, .. } => why,
        }
    }
}

#[derive(Default)]
struct Slot {
    /// The last answer of a cacheable backend, and when it came.
    cached: Option<(Instant, Outcome)>,
    refreshing: bool,
    /// The summary of the last outcome, cached or not: only changes are logged.
    last: Option<String>,
}

/// The merged models of the chosen members.
#[derive(Default)]
struct Listing<'c> {
    /// Each model with the index of the member it came from.
    data: Vec<(usize, Value)>,
    /// The members that listed their models.
    listed: Vec<&'c str>,
    /// Those left out, and why.
    skipped: Vec<String>,
}

/// The model list of one config.
pub(crate) struct Catalog {
    /// Answer `GET /v1/models` itself (the config routes by model, and asking one backend
    /// as any request would is not the same).
    merged: bool,
    members: Vec<Member>,
    /// One per member.
    slots: Mutex<Vec<Slot>>,
    /// `server.secret_headers` beyond the built-in ones, handled as for any request.
    extra_secrets: Box<[HeaderName]>,
    /// Learns the model names backends list (its labels).
    ledger: Arc<Ledger>,
}

impl Catalog {
    pub(crate) fn new(
        members: Vec<Member>,
        routes_by_model: bool,
        extra_secrets: Box<[HeaderName]>,
        ledger: &Arc<Ledger>,
    ) -> Arc<Catalog> {
        let plain = matches!(&members[..], [m] if m.asked && m.filter.is_none()
            && m.backend.config.aliases.is_empty());
        let slots = members.iter().map(|_| Slot::default()).collect();
        Arc::new(Catalog {
            merged: routes_by_model && !plain,
            members,
            slots: Mutex::new(slots),
            extra_secrets,
            ledger: ledger.clone(),
        })
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

    /// The backends that take part, in order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
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
        keep: &(dyn Fn(&Backend, Option<&str>) -> bool + Sync),
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        let only = parts.uri.query().and_then(backend_param);
        let mut chosen: Vec<usize> = match &only {
            None if !self.merged && !all => return Ok(None),
            None => (0..self.members.len()).collect(),
            Some(name) => vec![self
                .members
                .iter()
                .position(|m| m.backend.config.name == *name)
                .ok_or_else(|| ProxyError::UnknownListBackend(quote(name)))?],
        };
        // Not even asked for the client's sake: a backend it may not use.
        chosen.retain(|&i| keep(&self.members[i].backend, None));
        let list = self.listing(&chosen, &parts.headers, peer, rid).await;
        if list.data.is_empty() && !list.skipped.is_empty() {
            return Err(ProxyError::NoModelList(list.skipped.join(", ")));
        }
        let data: Vec<Value> = list
            .data
            .into_iter()
            .filter(|(i, model)| {
                let id = model.get("id").and_then(Value::as_str).unwrap_or_default();
                keep(&self.members[*i].backend, Some(id))
            })
            .map(|(i, mut model)| {
                let backend = &self.members[i].backend;
                if let Value::Object(o) = &mut model {
                    o.insert("backend".into(), json!(backend.config.name));
                    o.insert("status".into(), json!({ "value": state(backend) }));
                }
                model
            })
            .collect();
        let body = json!({ "object": "list", "data": data }).to_string();
        let mut res = Response::new(ResponseBody::full(Bytes::from(body)));
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
        Ok(Some(res))
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
        let all: Vec<usize> = (0..self.members.len()).collect();
        let list = self.listing(&all, client, peer, rid).await;
        list.data
            .iter()
            .find(|(_, model)| model["id"] == id)
            .map(|(i, _)| self.members[*i].backend.clone())
    }

    /// The chosen members' models merged (each with the member it came from), and which
    /// members listed or were left out.
    async fn listing(
        self: &Arc<Self>,
        chosen: &[usize],
        client: &HeaderMap,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
    ) -> Listing<'_> {
        let asked: Vec<usize> = chosen
            .iter()
            .copied()
            .filter(|&i| self.members[i].asked)
            .collect();
        let mut outcomes = self.outcomes(&asked, client, peer, rid).await.into_iter();
        let mut seen = HashSet::new();
        let mut list = Listing::default();
        for &i in chosen {
            let m = &self.members[i];
            let name = m.backend.config.name.as_str();
            let mut data = Vec::new();
            if !m.asked {
                merge(m, &named_models(m), &mut seen, &mut data);
            } else {
                match outcomes.next() {
                    Some(Outcome::Listed(models)) => {
                        list.listed.push(name);
                        merge(m, &models, &mut seen, &mut data);
                    }
                    Some(Outcome::Skipped { why, .. }) => {
                        list.skipped.push(format!("{name} ({why})"));
                        // Its aliases are still what the config says (whisper.cpp lists
                        // nothing).
                        merge(m, &[], &mut seen, &mut data);
                    }
                    None => {}
                }
            }
            list.data.extend(data.into_iter().map(|v| (i, v)));
        }
        list
    }

    /// The outcome for each chosen member, from the cache where it may be used.
    async fn outcomes(
        self: &Arc<Self>,
        chosen: &[usize],
        client: &HeaderMap,
        peer: Option<IpAddr>,
        rid: &HeaderValue,
    ) -> Vec<Outcome> {
        let now = Instant::now();
        let mut found: Vec<Option<Outcome>> = vec![None; chosen.len()];
        let mut asks = JoinSet::new();
        {
            let mut slots = sync::lock(&self.slots);
            for (k, &i) in chosen.iter().enumerate() {
                let m = &self.members[i];
                let request = || fetch_request(m, &self.extra_secrets, client, peer, rid);
                let slot = &mut slots[i];
                match &slot.cached {
                    Some((at, o)) if !per_client(m) && now - *at < MAX_STALE => {
                        found[k] = Some(o.clone());
                        if now - *at >= o.ttl() && !slot.refreshing {
                            // Stale: served as it is while it is refreshed.
                            slot.refreshing = true;
                            let this = self.clone();
                            let req = request();
                            tokio::spawn(async move {
                                let o = fetch(&this.members[i], req).await;
                                this.record(i, &o);
                            });
                        }
                    }
                    _ => {
                        let this = self.clone();
                        let req = request();
                        asks.spawn(async move { (k, i, fetch(&this.members[i], req).await) });
                    }
                }
            }
        }
        while let Some(done) = asks.join_next().await {
            if let Ok((k, i, o)) = done {
                self.record(i, &o);
                found[k] = Some(o);
            }
        }
        found
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Skipped {
                    why: "failed".into(),
                    detail: "the request was lost".into(),
                })
            })
            .collect()
    }

    /// Keeps a fresh outcome (when it may be cached) and logs a change.
    fn record(&self, i: usize, o: &Outcome) {
        let m = &self.members[i];
        let mut slots = sync::lock(&self.slots);
        let slot = &mut slots[i];
        slot.refreshing = false;
        if !per_client(m) {
            slot.cached = Some((Instant::now(), o.clone()));
            // A list that depends on the client's key (OpenAI's, with a hundred models) would
            // crowd the labels: only the backend's own lists name them.
            if let Outcome::Listed(models) = o {
                self.ledger
                    .learn(models.iter().filter_map(|v| v.get("id")?.as_str()));
            }
        }
        if slot.last.as_deref() == Some(o.summary()) {
            return;
        }
        slot.last = Some(o.summary().to_string());
        let (name, url) = (&m.backend.config.name, m.backend.config.url());
        match o {
            Outcome::Listed(models) => tracing::info!(
                "model list: backend '{name}' ({url}) lists {} models",
                models.len()
            ),
            Outcome::Skipped { detail, .. } => {
                tracing::warn!("model list: backend '{name}' ({url}) left out: {detail}")
            }
        }
    }
}

/// Whether a backend's list depends on the client's credentials (then it is never cached).
fn per_client(m: &Member) -> bool {
    m.backend.config.auth == AuthPolicy::Forward
}

/// `backend=NAME` from a query string.
fn backend_param(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("backend="))
        .map(str::to_string)
}

/// The models a backend that is not asked has: those its routes name exactly, in a plain
/// entry each.
fn named_models(m: &Member) -> Vec<Value> {
    let names = m.filter.as_ref().map_or(&[][..], ModelSet::patterns);
    names
        .iter()
        .filter(|n| !n.contains('*'))
        .map(|id| plain_entry(id, &m.backend.config.name))
        .collect()
}

/// A model entry made by the proxy: `id`, `object`, `created` 0, `owned_by` its backend.
fn plain_entry(id: &str, backend: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": 0,
        "owned_by": backend,
    })
}

/// Adds one backend's models (those its filter lets through) and its aliases to the list, each
/// `id` once: the first backend to list it keeps it.
fn merge(m: &Member, models: &[Value], seen: &mut HashSet<String>, data: &mut Vec<Value>) {
    for model in models {
        let Some(id) = model["id"].as_str() else {
            continue;
        };
        if m.filter.as_ref().map_or(true, |f| f.matches(id)) && seen.insert(id.to_string()) {
            data.push(model.clone());
        }
    }
    for (alias, target) in &m.backend.config.aliases {
        if !seen.insert(alias.clone()) {
            continue;
        }
        // The model it stands for, under the alias's name; or a plain entry.
        let entry = match models.iter().find(|v| v["id"] == **target) {
            Some(v) => {
                let mut v = v.clone();
                v["id"] = Value::String(alias.clone());
                v
            }
            None => plain_entry(alias, &m.backend.config.name),
        };
        data.push(entry);
    }
}

/// The headers of the request for one backend's list: the client's, rewritten as for any
/// request to that backend (its credentials policy applied; `Host` is its server's), without
/// what concerns a body or an encoding the proxy would have to undo.
fn fetch_request(
    m: &Member,
    extra_secrets: &[HeaderName],
    client: &HeaderMap,
    peer: Option<IpAddr>,
    rid: &HeaderValue,
) -> HeaderMap {
    let bc = &m.backend.config;
    let mut h = client.clone();
    for name in [
        header::ACCEPT_ENCODING,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
    ] {
        h.remove(name);
    }
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers::rewrite_request(&mut h, &bc.auth, extra_secrets, peer, rid, None);
    h
}

/// Asks one backend for its list.
async fn fetch(m: &Member, headers: HeaderMap) -> Outcome {
    let skip = |why: &str, detail: String| Outcome::Skipped {
        why: why.to_string(),
        detail,
    };
    let bc = &m.backend.config;
    let limit = LIST_TIMEOUT.min(bc.response_timeout);
    let exchange = async {
        let (res, held) = match m.backend.get(&m.path, &headers).await {
            Ok(res) => res,
            Err(e) => {
                let why = if e.is_connect() {
                    "unreachable"
                } else {
                    "failed"
                };
                return skip(why, error_chain(&e));
            }
        };
        let status = res.status();
        if status != StatusCode::OK {
            let why = format!("HTTP {}", status.as_u16());
            return skip(&why, format!("{} answered {status}", m.path));
        }
        let body = match Limited::new(res.into_body(), MAX_LIST_BYTES)
            .collect()
            .await
        {
            Ok(b) => {
                // Read to its end: the connection can serve the next request.
                held.release();
                b.to_bytes()
            }
            Err(e) => return skip("failed", format!("reading the list: {e}")),
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut o)) if o.get("data").is_some_and(Value::is_array) => {
                let Some(Value::Array(models)) = o.remove("data") else {
                    return skip("not a model list", String::new());
                };
                Outcome::Listed(Arc::new(models))
            }
            _ => skip(
                "not a model list",
                format!(
                    "{} did not answer a JSON object with a \"data\" array",
                    m.path
                ),
            ),
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(o) => o,
        Err(_) => {
            let why = format!("no answer within {}", format_duration(limit));
            skip(&why, why.clone())
        }
    }
}

/// An error and its causes, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
