//! The route phase of one admitted request: the client token, the proxy's own answers
//! (`/health`, `/`, `/usage`, `/v1/models`, `/models`, loading and unloading models), the
//! route its path or its model picks, and how it is sent: as a WebSocket session, once, or
//! with retries and fallback ([`super::send`]).

use std::borrow::Cow;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::admit::check_client_token;
use super::by_model::{self, Also, BodyModel};
use super::context::Ctx;
use super::own::{models, own_response, page};
use super::responses::{self, Kind};
use super::rewrite::server_uri;
use super::send::{self, Outgoing};
use super::websocket::session;
use super::{Proxy, Target};
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::routing::api::Api;
use crate::routing::routes::normalize_path;

impl Proxy {
    /// Everything after admission; errors become the client's answer.
    // Why one piece: the route phase in the order it happens; its steps that stand alone are
    // functions of their own (`answer_own`, `request_body`, `by_body_model`, `once`).
    pub(super) async fn forward(
        &self,
        req: Request<Incoming>,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(parts.method));
        }
        let normalized = normalize_path(parts.uri.path());
        ctx.path(&parts.uri, normalized.as_deref().ok());
        let path = normalized.map_err(|e| ProxyError::BadPath(e.0))?;
        let websocket = session::is_websocket(&parts.method, parts.version, &parts.headers);
        let token = match &*path {
            "/health" | "/ready" => None,
            // The page's files hold no data: the page asks for the token itself.
            p if page::is_page(&parts.method, p, &parts.headers) => None,
            _ => check_client_token(
                &self.config.server.client_tokens,
                &mut parts.headers,
                websocket,
            )?,
        };
        let token = token.map(|(digest, place)| {
            let name = self.config.server.client_tokens.name_at(place);
            ctx.client(
                name.cloned(),
                self.by_token.get(place).and_then(Option::as_ref),
            );
            digest
        });
        // The model lists are the client's own (filtered); nothing else is out of its routes.
        if !models::is_list(&parts.method, &path) && !self.answers_list(&parts.method, &path) {
            ctx.may_use_path(&path)?;
        }
        if let Some(action) = models::control_path(&path) {
            // After the client token: it changes the machine.
            return self.control_model(action, &parts, body, ctx).await;
        }
        if let Some(res) = self.answer_own(&path, &parts, ctx).await? {
            return Ok(res);
        }
        let Some(first) = self.router.find(&path) else {
            return Err(no_route(path));
        };

        let idle = first.route.target.backend.config.idle_timeout;
        let mut body = self.request_body(body, idle, ctx)?;
        // The Responses API, where more than one server may answer: a request about an
        // earlier response goes where it was created (see `responses`).
        let (also, mut earlier) = match responses::kind(&parts.method, &path) {
            Some(kind) if self.several_answer(&path) => match kind {
                Kind::Create => (Also::PreviousResponse, None),
                Kind::Of(id) => {
                    let (route, follow) = self.follow(&path, Some(id), false);
                    ctx.follow = Some(Box::new(follow));
                    (Also::Nothing, route)
                }
            },
            _ if Api::of_path(&path) == Api::Ollama => (Also::OllamaName, None),
            _ => (Also::Nothing, None),
        };
        let (m, model_path, model) = match self.by_path_model(&path) {
            Some((m, p)) => (m, p, None),
            None if earlier.is_some() => (earlier.take().unwrap_or(first), None, None),
            // A WebSocket's model is in its query, if anywhere: its body is the session.
            None if websocket && first.route.models.is_some() => (
                self.socket_route(&path, parts.uri.query(), ctx)?,
                None,
                None,
            ),
            None if first.route.models.is_none() => {
                let mut m = first;
                if ctx.models_limited() || also == Also::PreviousResponse {
                    // Not routed by it, but the client may use only some models, or the
                    // request may follow an earlier response.
                    let (asked, previous) = self
                        .body_model(&path, &parts.headers, &mut body, also)
                        .await?;
                    if let Some(name) = asked {
                        ctx.model(&name);
                        ctx.may_use_model(&name)?;
                    }
                    if also == Also::PreviousResponse {
                        m = self
                            .created_by(&path, previous.as_deref(), ctx)
                            .unwrap_or(m);
                    }
                }
                (m, None, None)
            }
            // Boxed: its state stays out of this future, which every request moves.
            None => {
                let (m, model, previous) =
                    Box::pin(self.by_body_model(&path, &parts.headers, &mut body, also)).await?;
                if let Some(found) = &model {
                    ctx.model(found.name());
                }
                let m = match also {
                    Also::PreviousResponse => self
                        .created_by(&path, previous.as_deref(), ctx)
                        .unwrap_or(m),
                    _ => m,
                };
                (m, None, model)
            }
        };
        let target = &m.route.target;
        let bc = &target.backend.config;
        if let Some(found) = &model {
            ctx.may_use_model(found.name())?;
        } else if let Some(id) = crate::routing::model::path_model(&path) {
            ctx.may_use_model(&id)?;
        }
        ctx.may_use(&target.backend)?;
        ctx.admit_client()?;
        body.set_idle_timeout(bc.idle_timeout);
        let forward_path = match model_path {
            Some(p) => Cow::Owned(format!("{}{p}", bc.base_path)),
            None => m.forward_path(&bc.base_path),
        };
        ctx.routed(target);
        parts.version = Version::HTTP_11;
        if websocket {
            let forward_path = forward_path.into_owned();
            drop(path);
            let opened = (parts, body, token);
            return Box::pin(self.open_session(opened, target, &forward_path, ctx)).await;
        }
        if target.fallback.is_none() && !bc.is_pool() && !bc.waits() && bc.max_concurrent.is_none()
        {
            // One server and nowhere else to go: the request is sent once, as it is.
            let uri = once(
                &mut parts.headers,
                &parts.uri,
                &mut body,
                model.as_ref(),
                &forward_path,
                target,
            )?;
            drop(forward_path);
            drop(path);
            parts.uri = uri;
            return self.send_once(parts, body, target, ctx).await;
        }
        let fallback_path = target
            .fallback
            .as_ref()
            .map(|fb| send::fallback_path(&path, &fb.config));
        let paths = [forward_path.into_owned(), fallback_path.unwrap_or_default()];
        drop(path);
        let outgoing = Outgoing {
            parts,
            body,
            model,
            paths,
        };
        Box::pin(self.send_retrying(outgoing, target, ctx)).await
    }

    /// The client's body as it goes on: cut off past `server.max_body_size` (at once when its
    /// `Content-Length` says so) or after `idle` without a byte, its bytes counted.
    fn request_body(
        &self,
        body: Incoming,
        idle: std::time::Duration,
        ctx: &Ctx,
    ) -> Result<RequestBody, ProxyError> {
        let limit = self.config.server.max_body_size;
        // hyper's size hint is exactly the Content-Length, when there is one.
        if body.size_hint().lower() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let counter = ctx.access.as_deref().map(|a| a.bytes_in.clone());
        Ok(RequestBody::new(body, limit, idle, counter))
    }

    /// What the proxy answers itself, before any route: `/health`, `/` (a page for a
    /// browser, with its files: [`page`]), `GET /usage`, the merged `GET /v1/models` (when it
    /// answers that: see [`super::own::catalog`]; an Anthropic client's, and Ollama's
    /// `/api/tags`, `/api/ps` and `/api/version`, when a backend speaks that API) and
    /// llama.cpp's `GET /models` ([`super::own::models`]).
    async fn answer_own(
        &self,
        path: &str,
        parts: &Parts,
        ctx: &mut Ctx,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        match path {
            "/health" => Ok(Some(own_response(
                "application/json",
                Bytes::from_static(b"{\"status\":\"ok\"}\n"),
            ))),
            "/ready" => Ok(Some(self.readiness())),
            _ if page::is_page(&parts.method, path, &parts.headers) => Ok(page::answer(path)),
            "/" => Ok(Some(self.status(&parts.headers).await)),
            "/usage" if parts.method == Method::GET => {
                let after = super::own::usage::after(parts.uri.query());
                let limits = super::own::usage::limited(self.clients.values());
                let body = self
                    .lasting
                    .ledger
                    .read(|book| super::own::usage::usage_json(book, after, &limits));
                Ok(Some(own_response("application/json", body)))
            }
            "/v1/models" if parts.method == Method::GET && ctx.api == Api::Anthropic => {
                self.anthropic_models(parts, ctx).await
            }
            "/v1/models" if parts.method == Method::GET => self.model_list(parts, ctx, false).await,
            "/api/tags" | "/api/ps" | "/api/version" if parts.method == Method::GET => {
                self.ollama_list(path, parts, ctx).await
            }
            "/models" if parts.method == Method::GET => self.model_list(parts, ctx, true).await,
            _ => Ok(None),
        }
    }
}

impl Proxy {
    /// `GET /ready`: 200 while serving, 503 from the moment a graceful stop begins (while
    /// requests in flight drain, and new ones are still taken during `server.shutdown_delay`),
    /// so that a load balancer sends no more.
    fn readiness(&self) -> Response<ResponseBody> {
        if !self
            .lasting
            .stopping
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return own_response(
                "application/json",
                Bytes::from_static(b"{\"status\":\"ready\"}\n"),
            );
        }
        let mut res = own_response(
            "application/json",
            Bytes::from_static(b"{\"status\":\"stopping\"}\n"),
        );
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res
    }
}

impl Proxy {
    /// For a request that creates a response of the Responses API: the route to the backend
    /// that created the response it follows (`previous`), if known; its id will be
    /// remembered.
    fn created_by<'p>(
        &self,
        path: &'p str,
        previous: Option<&str>,
        ctx: &mut Ctx,
    ) -> Option<crate::routing::routes::Match<'_, 'p, Target>> {
        let (route, follow) = self.follow(path, previous, true);
        ctx.follow = Some(Box::new(follow));
        route
    }

    /// The route of a WebSocket upgrade on a path routed by model: by the query's
    /// `?model=NAME` (as the Realtime API's clients send it), else the first route on the path
    /// with `websockets_without_model`. Without either, 426: the client (Codex CLI opening a
    /// Responses socket, with the model only inside it) goes on over HTTP, where the model
    /// is in the body.
    fn socket_route<'p>(
        &self,
        path: &'p str,
        query: Option<&str>,
        ctx: &mut Ctx,
    ) -> Result<crate::routing::routes::Match<'_, 'p, Target>, ProxyError> {
        let Some(name) = query.and_then(crate::routing::model::query_model) else {
            return self
                .router
                .candidates(path)
                .find(|m| m.route.target.websockets_without_model)
                .ok_or_else(|| ProxyError::WebSocketModelRequired(path.to_string()));
        };
        ctx.model(&name);
        ctx.may_use_model(&name)?;
        self.route_for_model(path, &name)
    }
}

/// Readies a request that goes once to its backend's only server: the model's alias spliced
/// into its body; its URL on that server comes back.
fn once(
    headers: &mut HeaderMap,
    uri: &Uri,
    body: &mut RequestBody,
    model: Option<&BodyModel>,
    forward_path: &str,
    target: &Target,
) -> Result<Uri, ProxyError> {
    let backend = &target.backend;
    let bc = &backend.config;
    if let Some((span, with)) = model.and_then(|f| f.alias_for(bc)) {
        by_model::fix_length(headers, &span, with.len());
        body.splice(span, &with);
    }
    server_uri(uri, forward_path, bc, &backend.servers[0])
}

/// The error of a path no route takes: the API's own under `/v1`, a plain 404 elsewhere.
fn no_route(path: Cow<'_, str>) -> ProxyError {
    if path == "/v1" || path.starts_with("/v1/") {
        ProxyError::NoRoute(path.into_owned())
    } else {
        ProxyError::NotFound(path.into_owned())
    }
}
