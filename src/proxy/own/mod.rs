//! What the proxy answers itself instead of a backend: `/` (routes and servers' health; for a
//! browser, a page that watches them, with its files), `/health`, `GET /v1/models` (every
//! backend's list, merged), Ollama's `GET /api/tags`, `/api/ps` and `/api/version`, an
//! Anthropic client's `GET /v1/models`, `/usage` (the ledger), `/metrics`, and llama.cpp
//! router's `GET /models`, `POST /models/load` and `POST /models/unload`.

pub(crate) mod catalog;
mod lists;
pub(crate) mod models;
pub(crate) mod page;
mod scrape;
pub(crate) mod status;
pub(crate) mod usage;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::proxy::context::Ctx;
use crate::upstream::Backend;

/// Whether a model list shows `backend` (and its model `id`) to the request's client: what it
/// may use.
fn client_keeps(ctx: &Ctx, backend: &Backend, id: Option<&str>) -> bool {
    ctx.may_use(backend).is_ok() && id.map_or(true, |id| ctx.may_use_model(id).is_ok())
}

/// A `200` of the proxy's own.
pub(crate) fn own_response(content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(body));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    *res.status_mut() = StatusCode::OK;
    res
}
