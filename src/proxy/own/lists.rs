//! The model lists in Ollama's and Anthropic's shapes, answered by the proxy when a backend
//! speaks that API: Ollama's `GET /api/tags`, `GET /api/ps` and `GET /api/version`, and an
//! Anthropic client's `GET /v1/models` (see [`super::catalog`]). Each shows only what the
//! client may use, as `GET /v1/models` does.

use http::request::Parts;
use http::Response;

use super::catalog::shapes::Kind;
use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::proxy::context::Ctx;
use crate::proxy::headers::X_BACKEND;
use crate::proxy::Proxy;
use crate::upstream::Backend;

impl Proxy {
    /// Whether the proxy answers this request with an Ollama list itself (then, as for
    /// `/v1/models`, a client sees its own models whatever its routes).
    pub(crate) fn answers_list(&self, method: &http::Method, path: &str) -> bool {
        method == http::Method::GET && self.ollama_kind(path).is_some()
    }

    /// The Ollama list `path` asks for, when a backend speaks Ollama's API (the proxy answers
    /// it then).
    fn ollama_kind(&self, path: &str) -> Option<Kind> {
        Kind::of_ollama_path(path).filter(|&k| self.catalog.speaks(k))
    }

    /// `GET /api/tags`, `GET /api/ps` or `GET /api/version` (`path`) when a backend speaks
    /// Ollama's API; `None`: another path, or no such backend (the request is routed).
    pub(crate) async fn ollama_list(
        &self,
        path: &str,
        parts: &Parts,
        ctx: &mut Ctx,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        let Some(kind) = self.ollama_kind(path) else {
            return Ok(None);
        };
        let keep = |b: &Backend, id: Option<&str>| super::client_keeps(ctx, b, id);
        let (peer, rid) = (ctx.peer.ip, &ctx.rid);
        let res = match kind {
            Kind::Version => self.catalog.version(parts, peer, rid, &keep).await,
            _ => self.catalog.answer_in(kind, parts, peer, rid, &keep).await,
        }?;
        ctx.answered_by(res.headers().get(&X_BACKEND));
        Ok(Some(res))
    }

    /// An Anthropic client's `GET /v1/models` when a backend speaks Anthropic's API; else as
    /// any client's ([`Proxy::model_list`]).
    pub(crate) async fn anthropic_models(
        &self,
        parts: &Parts,
        ctx: &mut Ctx,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        if !self.catalog.speaks(Kind::Anthropic) {
            return self.model_list(parts, ctx, false).await;
        }
        let keep = |b: &Backend, id: Option<&str>| super::client_keeps(ctx, b, id);
        let res = (self.catalog)
            .answer_in(Kind::Anthropic, parts, ctx.peer.ip, &ctx.rid, &keep)
            .await?;
        ctx.answered_by(res.headers().get(&X_BACKEND));
        Ok(Some(res))
    }
}
