//! Model state and model management in llama.cpp router mode's shape: each model of the model
//! lists (`GET /v1/models`, `GET /models`) says its backend and its state, and
//! `POST /models/load` / `POST /models/unload` with `{"model": NAME}` start or stop the server
//! of an on-demand backend through the service manager ([`crate::upstream::control`]),
//! answering `{"success": true, ...}`.
//!
//! States, llama.cpp's values: a backend whose address is a systemd socket unit is `loaded`
//! while its server's unit is active, `loading` while it is activating, else `unloaded`; any
//! other backend is `loaded` while a server of it is up as far as the proxy knows (health
//! checks, failed requests), else `unloaded`.
//!
//! Loading and unloading change the machine, so they are refused to web pages of another
//! origin (the guard has already refused origins not in `server.cors_origins`; here even
//! those are refused: only the proxy's own origin and clients that are no web page may), and
//! they need the client token like any request. Unloading waits for the backend's requests in
//! flight, streams included, to end, at most `server.shutdown_timeout`, unless
//! `"force": true`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Method, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::body::ResponseBody;
use crate::config::quote;
use crate::error::ProxyError;
use crate::proxy::context::Ctx;
use crate::proxy::headers::X_BACKEND;
use crate::proxy::Proxy;
use crate::upstream::control::{self, Action, Outcome};
use crate::upstream::health::Health;
use crate::upstream::units::{OnDemand, UnitState};
use crate::upstream::Backend;

/// Largest body of a load or unload request.
const MAX_BODY: usize = 16 << 10;
/// How long the client may take to send it.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an unload looks whether the requests in flight have ended.
const DRAIN_POLL: Duration = Duration::from_millis(20);

static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Whether a request asks for a model list the proxy filters for its client (`GET
/// /v1/models`, `GET /models`).
pub(crate) fn is_list(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/v1/models" | "/models")
}

/// The action of a model management path, whatever the method.
pub(crate) fn control_path(path: &str) -> Option<Action> {
    match path {
        "/models/load" => Some(Action::Load),
        "/models/unload" => Some(Action::Unload),
        _ => None,
    }
}

/// A model's state, from its backend: see the module's comment.
fn state_of(backend: &Backend, found: &[OnDemand]) -> &'static str {
    if let Some(f) = found.iter().find(|f| f.backend == backend.config.name) {
        return match f.state {
            UnitState::Running => "loaded",
            UnitState::Starting => "loading",
            UnitState::Stopping | UnitState::Stopped => "unloaded",
        };
    }
    let up = backend
        .servers
        .iter()
        .any(|s| matches!(s.state.report(), Health::Up));
    if up {
        "loaded"
    } else {
        "unloaded"
    }
}

/// What a load or unload request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    model: String,
    force: bool,
}

/// `{"model": NAME, "force": BOOL}` (`force` optional).
fn parse_ask(body: &[u8]) -> Result<Ask, ProxyError> {
    let bad = |why: &str| ProxyError::BadControlBody(why.to_string());
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad("expected a JSON object such as {\"model\": \"NAME\"}"))?;
    let Value::Object(o) = v else {
        return Err(bad("expected a JSON object such as {\"model\": \"NAME\"}"));
    };
    let model = match o.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(bad("\"model\" must be a non-empty string")),
    };
    let force = match o.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("\"force\" must be true or false")),
    };
    Ok(Ask { model, force })
}

/// Refuses a request from a web page of another origin than the proxy's own: an `Origin`
/// that does not name the request's `Host`, or `Sec-Fetch-Site` other than `same-origin` or
/// `none` (typed in or bookmarked).
fn same_origin(headers: &HeaderMap) -> Result<(), ProxyError> {
    for site in headers.get_all(&SEC_FETCH_SITE) {
        let ok = [&b"same-origin"[..], b"none"]
            .iter()
            .any(|s| site.as_bytes().eq_ignore_ascii_case(s));
        if !ok {
            let shown = String::from_utf8_lossy(site.as_bytes());
            return Err(ProxyError::NotSameOrigin(format!(
                "Sec-Fetch-Site: {}",
                quote(&shown)
            )));
        }
    }
    for origin in headers.get_all(header::ORIGIN) {
        if !crate::proxy::admit::guard::same_origin(origin.as_bytes(), headers) {
            let shown = String::from_utf8_lossy(origin.as_bytes());
            return Err(ProxyError::NotSameOrigin(format!(
                "Origin {}",
                quote(&shown)
            )));
        }
    }
    Ok(())
}

impl Proxy {
    /// `GET /v1/models` (`all` false: when it is the proxy's to answer) and `GET /models`
    /// (`all`), each model with its backend and state.
    pub(crate) async fn model_list(
        &self,
        parts: &Parts,
        ctx: &mut Ctx,
        all: bool,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        // A client that may use only some models gets the proxy's list of them, whatever
        // the routes.
        let all = all || ctx.models_limited();
        if !all && !self.catalog.answers(parts) {
            return Ok(None);
        }
        let found = self.on_demand.found().await;
        let state = |b: &Backend| state_of(b, &found);
        let keep = |b: &Backend, id: Option<&str>| super::client_keeps(ctx, b, id);
        let res = self
            .catalog
            .answer(parts, ctx.peer.ip, &ctx.rid, all, &state, &keep)
            .await?;
        if let Some(res) = &res {
            ctx.answered_by(res.headers().get(&X_BACKEND));
        }
        Ok(res)
    }

    /// `POST /models/load` and `POST /models/unload`.
    pub(crate) async fn control_model(
        &self,
        action: Action,
        parts: &Parts,
        body: Incoming,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if parts.method != Method::POST {
            return Err(ProxyError::MethodNotAllowed(parts.method.clone()));
        }
        same_origin(&parts.headers)?;
        let body = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
            .await
            .map_err(|_| ProxyError::ClientStalled(BODY_TIMEOUT))?
            .map_err(|e| ProxyError::BadControlBody(format!("cannot read it: {e}")))?
            .to_bytes();
        let ask = parse_ask(&body)?;
        ctx.may_use_model(&ask.model)?;
        let backend = self.model_backend(&ask.model, parts, ctx).await?;
        let bc = &backend.config;
        ctx.answered_by(Some(&backend.header));
        let refuse = |why| ProxyError::NotOnDemand {
            model: quote(&ask.model),
            backend: bc.name.clone(),
            why,
        };
        if !bc.on_demand {
            return Err(refuse(
                "is not on demand (on_demand = true in its config, as enable-backend prints)",
            ));
        }
        let Some(scope) = self.on_demand.scope() else {
            return Err(refuse(
                "is not started by a service manager here (no systemd)",
            ));
        };
        let found = self.on_demand.found().await;
        let Some(unit) = found.iter().find(|f| f.backend == bc.name) else {
            return Err(refuse(
                "has no systemd socket unit listening on its address (see enable-backend)",
            ));
        };
        let limit = match action {
            Action::Unload if !ask.force => {
                self.drain(&backend).await;
                control::STOP_TIMEOUT
            }
            Action::Unload => control::STOP_TIMEOUT,
            Action::Load => bc.start_wait(),
        };
        let outcome = control::run(scope, action, unit, limit).await;
        self.on_demand.forget().await;
        let unit_name = action.unit(unit).to_string();
        let outcome = outcome.map_err(|detail| ProxyError::UnitControl {
            backend: bc.name.clone(),
            action: action.as_str(),
            unit: unit_name.clone(),
            detail,
        })?;
        let state = match (action, outcome) {
            (Action::Load, Outcome::Done) => "loaded",
            (Action::Load, Outcome::Pending) => "loading",
            (Action::Unload, _) => "unloaded",
        };
        tracing::info!(
            "model {}: {} of backend '{}' ({unit_name}): {state}",
            quote(&ask.model),
            action.as_str(),
            bc.name
        );
        let answer = json!({
            "success": true,
            "model": ask.model,
            "backend": bc.name,
            "status": { "value": state },
        });
        Ok(super::own_response(
            "application/json",
            Bytes::from(answer.to_string()),
        ))
    }

    /// The backend a model name goes to, found as routing finds it: the first route whose
    /// `models` take it, a backend's alias, then the backends' model lists.
    async fn model_backend(
        &self,
        model: &str,
        parts: &Parts,
        ctx: &Ctx,
    ) -> Result<Arc<Backend>, ProxyError> {
        let by_route = self
            .router
            .routes()
            .iter()
            .find(|r| r.models.as_ref().is_some_and(|m| m.matches(model)));
        if let Some(r) = by_route {
            return Ok(r.target.backend.clone());
        }
        if let Some(b) = self
            .backends
            .iter()
            .find(|b| b.config.aliases.contains_key(model))
        {
            return Ok(b.clone());
        }
        self.catalog
            .owner_of(model, &parts.headers, ctx.peer.ip, &ctx.rid)
            .await
            .ok_or_else(|| ProxyError::UnknownModel(quote(model)))
    }

    /// Waits until the backend has no request in flight, at most `server.shutdown_timeout`
    /// (then the unload goes on all the same).
    async fn drain(&self, backend: &Backend) {
        let limit = self.config.server.shutdown_timeout;
        let start = Instant::now();
        loop {
            let n = backend.in_flight();
            if n == 0 {
                return;
            }
            if start.elapsed() >= limit {
                tracing::warn!(
                    "unloading backend '{}': {n} requests still in flight after {:?} \
                     (server.shutdown_timeout); stopping it all the same",
                    backend.config.name,
                    limit
                );
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks() {
        assert_eq!(
            parse_ask(br#"{"model":"a"}"#).unwrap(),
            Ask {
                model: "a".into(),
                force: false
            }
        );
        assert!(parse_ask(br#"{"model":"a","force":true}"#).unwrap().force);
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"model":""}"#,
            br#"{"model":1}"#,
            br#"{"model":"a","force":"yes"}"#,
        ] {
            let e = parse_ask(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_request_body", "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(*k, http::HeaderValue::from_static(v));
            }
            same_origin(&m)
        };
        assert!(h(&[("host", "127.0.0.1:2020")]).is_ok());
        assert!(h(&[
            ("host", "127.0.0.1:2020"),
            ("origin", "http://127.0.0.1:2020")
        ])
        .is_ok());
        assert!(h(&[
            ("host", "localhost:2020"),
            ("sec-fetch-site", "same-origin")
        ])
        .is_ok());
        assert!(h(&[
            ("host", "127.0.0.1:2020"),
            ("origin", "http://localhost:3000")
        ])
        .is_err());
        assert!(h(&[("host", "127.0.0.1:2020"), ("origin", "null")]).is_err());
        assert!(h(&[("host", "127.0.0.1:2020"), ("sec-fetch-site", "same-site")]).is_err());
        let e = h(&[("host", "127.0.0.1:2020"), ("sec-fetch-site", "cross-site")]).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
    }
}
