//! Asking the members of one list, in parallel with a short time-out, from the cache where it
//! may be used: each backend's answer as an [`Outcome`], its changes logged.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use http_body_util::{BodyExt as _, Limited};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::shapes::Kind;
use super::{
    Asker, Catalog, Member, FAILED_TTL, LIST_TIMEOUT, LIST_TTL, MAX_LIST_BYTES, MAX_STALE,
};
use crate::config::{format_duration, AuthPolicy};
use crate::proxy::headers;
use crate::sync;

/// What asking one backend came to.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    /// The entries, as sent.
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

/// One member's place in a list's cache.
#[derive(Default)]
pub(super) struct Slot {
    /// The last answer of a cacheable backend, and when it came.
    cached: Option<(Instant, Outcome)>,
    refreshing: bool,
    /// The summary of the last outcome, cached or not: only changes are logged.
    last: Option<String>,
}

impl Catalog {
    /// The outcome for each chosen member of the `kind` list, from the cache where it may be
    /// used.
    pub(super) async fn outcomes(
        self: &Arc<Self>,
        kind: Kind,
        chosen: &[usize],
        asker: Asker<'_>,
    ) -> Vec<Outcome> {
        let now = Instant::now();
        let list = self.list(kind);
        let mut found: Vec<Option<Outcome>> = vec![None; chosen.len()];
        let mut asks = JoinSet::new();
        {
            let mut slots = sync::lock(&list.slots);
            for (k, &i) in chosen.iter().enumerate() {
                let m = &list.members[i];
                let request = || fetch_request(m, &self.extra_secrets, asker);
                let slot = &mut slots[i];
                match &slot.cached {
                    Some((at, o)) if cacheable(kind, m) && now - *at < MAX_STALE => {
                        found[k] = Some(o.clone());
                        if now - *at >= o.ttl() && !slot.refreshing {
                            // Stale: served as it is while it is refreshed.
                            slot.refreshing = true;
                            let this = self.clone();
                            let req = request();
                            tokio::spawn(async move {
                                let o = fetch(kind, &this.list(kind).members[i], req).await;
                                this.record(kind, i, &o);
                            });
                        }
                    }
                    _ => {
                        let this = self.clone();
                        let req = request();
                        asks.spawn(async move {
                            (k, i, fetch(kind, &this.list(kind).members[i], req).await)
                        });
                    }
                }
            }
        }
        while let Some(done) = asks.join_next().await {
            if let Ok((k, i, o)) = done {
                self.record(kind, i, &o);
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
    fn record(&self, kind: Kind, i: usize, o: &Outcome) {
        let list = self.list(kind);
        let m = &list.members[i];
        let mut slots = sync::lock(&list.slots);
        let slot = &mut slots[i];
        slot.refreshing = false;
        if cacheable(kind, m) {
            slot.cached = Some((Instant::now(), o.clone()));
        }
        if m.backend.config.auth != AuthPolicy::Forward && kind != Kind::Version {
            // A list that depends on the client's key (OpenAI's, with a hundred models) would
            // crowd the labels: only the backend's own lists name them.
            if let Outcome::Listed(models) = o {
                self.ledger
                    .learn(models.iter().filter_map(|v| kind.name(v)));
            }
        }
        if slot.last.as_deref() == Some(o.summary()) {
            return;
        }
        slot.last = Some(o.summary().to_string());
        let (name, url, noun) = (&m.backend.config.name, m.backend.config.url(), kind.noun());
        match o {
            Outcome::Listed(models) if kind == Kind::Version => {
                let v = models.first().and_then(Value::as_str).unwrap_or_default();
                tracing::info!("{noun}: backend '{name}' ({url}) is version {v}")
            }
            Outcome::Listed(models) => tracing::info!(
                "{} list: backend '{name}' ({url}) lists {} {noun}",
                kind.path(),
                models.len()
            ),
            Outcome::Skipped { detail, .. } => {
                tracing::warn!(
                    "{}: backend '{name}' ({url}) left out: {detail}",
                    kind.path()
                )
            }
        }
    }
}

/// Whether a backend's answer may be kept: never what runs now, nor a list that depends on
/// the client's credentials.
fn cacheable(kind: Kind, m: &Member) -> bool {
    kind.cached() && m.backend.config.auth != AuthPolicy::Forward
}

/// The headers of the request for one backend's list: the client's, rewritten as for any
/// request to that backend (its credentials policy applied; `Host` is its server's), without
/// what concerns a body or an encoding the proxy would have to undo.
fn fetch_request(m: &Member, extra_secrets: &[HeaderName], asker: Asker<'_>) -> HeaderMap {
    let bc = &m.backend.config;
    let mut h = asker.client.clone();
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
    let (peer, rid) = (asker.peer, asker.rid);
    headers::rewrite_request(&mut h, &bc.auth, extra_secrets, peer, rid, None);
    h
}

/// Asks one backend for its list.
async fn fetch(kind: Kind, m: &Member, headers: HeaderMap) -> Outcome {
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
        match kind.parse(&body) {
            Ok(entries) => Outcome::Listed(Arc::new(entries)),
            Err(what) => {
                let why = match kind {
                    Kind::Version => "not a version",
                    _ => "not a model list",
                };
                skip(why, format!("{} {what}", m.path))
            }
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
