//! OpenAI's Responses API, when its routes reach more than one server: a request that names an
//! earlier response goes to the backend and server that created it ([`Affinity`]), and a new
//! response's id is remembered as it passes.
//!
//! - `POST /v1/responses` with `previous_response_id` in its body (read with the model);
//! - `GET`, `DELETE` and `POST` on `/v1/responses/{id}` and below it (`/cancel`,
//!   `/input_items`).
//!
//! A response the proxy does not know (made before a restart, or too long ago) goes where its
//! route sends it, as it would without this.

use std::sync::Arc;

use http::Method;

use super::{Proxy, Target};
use crate::observe::usage::IdTap;
use crate::routing::routes::Match;
use crate::upstream::affinity::{Affinity, Origin};
use crate::upstream::{Backend, Server};

/// The path of the Responses API.
const RESPONSES: &str = "/v1/responses";

/// What a request of the Responses API is.
pub(super) enum Kind<'p> {
    /// Creates a response (which may follow an earlier one).
    Create,
    /// Is about the response with this id.
    Of(&'p str),
}

/// What a request of the Responses API is, if it is one.
pub(super) fn kind<'p>(method: &Method, path: &'p str) -> Option<Kind<'p>> {
    let rest = path.strip_prefix(RESPONSES)?;
    if rest.is_empty() {
        return (method == Method::POST).then_some(Kind::Create);
    }
    let id = rest.strip_prefix('/')?.split('/').next()?;
    (!id.is_empty()).then_some(Kind::Of(id))
}

/// One request's part in it: the server to try first, and whether the answer's id is
/// remembered.
pub(crate) struct Follow {
    store: Arc<Affinity>,
    /// The URL of the server that created the response it follows.
    prefer: Option<Arc<str>>,
    /// A response is created: its id is remembered.
    remember: bool,
}

impl Follow {
    /// Which of `backend`'s servers to try first, if any.
    pub(super) fn preferred(&self, backend: &Backend) -> Option<usize> {
        let url = self.prefer.as_deref()?;
        backend.servers.iter().position(|s| &*s.state.url == url)
    }

    /// A tap that remembers the id of the answer `server` of `backend` sends, when it
    /// creates a response.
    pub(super) fn tap(&self, backend: &Backend, server: &Server) -> Option<Box<IdTap>> {
        if !self.remember {
            return None;
        }
        let store = self.store.clone();
        let origin = Origin {
            backend: Arc::from(backend.config.name.as_str()),
            server: Arc::from(&*server.state.url),
        };
        Some(Box::new(IdTap::new(Box::new(move |id| {
            store.remember(id, origin);
        }))))
    }
}

impl Proxy {
    /// Whether more than one server may answer `path` (several routes, a pool, a fallback):
    /// only then does it matter where a response was created.
    pub(super) fn several_answer(&self, path: &str) -> bool {
        let mut routes = self.router.candidates(path);
        match (routes.next(), routes.next()) {
            (Some(m), None) => {
                let t = &m.route.target;
                t.backend.config.is_pool() || t.fallback.is_some()
            }
            (Some(_), Some(_)) => true,
            (None, _) => false,
        }
    }

    /// The route to the backend that created response `id`, and the request's [`Follow`]
    /// (`create`: the answer is a new response, whose id is remembered). `None` for the
    /// route: go where the request's route sends it.
    pub(super) fn follow<'p>(
        &self,
        path: &'p str,
        id: Option<&str>,
        create: bool,
    ) -> (Option<Match<'_, 'p, Target>>, Follow) {
        let store = self.lasting.affinity.clone();
        let origin = id.and_then(|id| store.find(id));
        let route = origin.as_ref().and_then(|o| {
            self.router
                .candidates(path)
                .find(|m| *m.route.target.backend.config.name == *o.backend)
        });
        let follow = Follow {
            store,
            prefer: route.as_ref().and(origin.map(|o| o.server)),
            remember: create,
        };
        (route, follow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_of_the_responses_api() {
        assert!(matches!(
            kind(&Method::POST, "/v1/responses"),
            Some(Kind::Create)
        ));
        assert!(kind(&Method::GET, "/v1/responses").is_none());
        assert!(matches!(
            kind(&Method::GET, "/v1/responses/resp_1"),
            Some(Kind::Of("resp_1"))
        ));
        assert!(matches!(
            kind(&Method::GET, "/v1/responses/resp_1/input_items"),
            Some(Kind::Of("resp_1"))
        ));
        assert!(kind(&Method::POST, "/v1/responsesx").is_none());
        assert!(kind(&Method::POST, "/v1/chat/completions").is_none());
    }
}
