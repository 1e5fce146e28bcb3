//! Routing by model, for one request: the route a path naming a model goes to, and the route
//! the model in a body picks (read with [`crate::routing::model`] as far as needed; an alias is spliced
//! in for the backend that gets it); and, for each config, the backends that take part in the
//! model list.

use std::ops::Range;

use http::header::{self, HeaderMap, HeaderValue};

use super::{Proxy, Target};
use crate::body::RequestBody;
use crate::config::{quote, BackendConfig, Config};
use crate::error::ProxyError;
use crate::proxy::own::catalog::shapes::Kind;
use crate::proxy::own::catalog::Member;
use crate::routing::model::{self, Found, Missing, Scanner};
use crate::routing::routes::{Match, ModelSet, Router};

impl Proxy {
    /// For a path that names a model (`/v1/models/{id}`) that a route's `models` take: that
    /// route, and the path with an alias's model in place of the id.
    pub(super) fn by_path_model<'p>(
        &self,
        path: &'p str,
    ) -> Option<(Match<'_, 'p, Target>, Option<String>)> {
        if !self.router.has_model_routes() {
            return None;
        }
        let id = model::path_model(path)?;
        let m = self.router.find_model_route(path, &id)?;
        let alias = m.route.target.backend.config.aliases.get(&*id);
        Some((m, alias.map(|to| model::model_path(to))))
    }

    /// Reads as much of the body as it takes to find its `model` and see that it is the only
    /// one, and picks the first route that takes it (or, without a model, the first that takes
    /// every model); a body that names it ambiguously is refused. The model and
    /// where it stands come back too, for an alias to be spliced in for the backend that gets
    /// the request ([`BodyModel::alias_for`]).
    ///
    /// `also`: another top-level key whose value comes back too ([`Also`]).
    pub(super) async fn by_body_model<'p>(
        &self,
        path: &'p str,
        headers: &HeaderMap,
        body: &mut RequestBody,
        also: Also,
    ) -> Result<(Match<'_, 'p, Target>, Option<BodyModel>, Option<String>), ProxyError> {
        let (found, kind, also) = self.read_model(headers, body, also).await?;
        let (name, span) = match found {
            Found::Model { name, span } => (name, span),
            // Refused before any route is chosen: no backend gets a body it could read as
            // naming another model.
            Found::Ambiguous(why) => {
                return Err(ProxyError::AmbiguousModel {
                    path: path.to_string(),
                    why,
                })
            }
            Found::Missing(why) => {
                let m =
                    self.router
                        .find_for_model(path, None)
                        .ok_or_else(|| ProxyError::NoModel {
                            path: path.to_string(),
                            why: why.to_string(),
                            code: why.code(),
                        })?;
                return Ok((m, None, also));
            }
        };
        let m = self.route_for_model(path, &name)?;
        Ok((m, Some(BodyModel { name, span, kind }), also))
    }

    /// The first route on `path` that takes model `name`; 404 `model_not_found` when none does.
    pub(super) fn route_for_model<'p>(
        &self,
        path: &'p str,
        name: &str,
    ) -> Result<Match<'_, 'p, Target>, ProxyError> {
        self.router
            .find_for_model(path, Some(name))
            .ok_or_else(|| ProxyError::ModelNotFound {
                model: quote(name),
                path: path.to_string(),
            })
    }
}

/// Another top-level key of a JSON body read with its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Also {
    Nothing,
    /// Ollama's older `name`, the model when there is no `model` (`/api/show`, `/api/pull`...).
    OllamaName,
    /// The Responses API's `previous_response_id`: comes back.
    PreviousResponse,
}

impl Also {
    fn key(self) -> Option<&'static str> {
        match self {
            Also::Nothing => None,
            Also::OllamaName => Some("name"),
            Also::PreviousResponse => Some("previous_response_id"),
        }
    }
}

impl Proxy {
    /// The model a body names, if it names one (read as [`Proxy::by_body_model`] does, for a
    /// client whose models are limited on a route that does not go by model).
    pub(super) async fn body_model(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: &mut RequestBody,
        also: Also,
    ) -> Result<(Option<String>, Option<String>), ProxyError> {
        let (found, _, also) = self.read_model(headers, body, also).await?;
        match found {
            Found::Model { name, .. } => Ok((Some(name), also)),
            Found::Missing(_) => Ok((None, also)),
            Found::Ambiguous(why) => Err(ProxyError::AmbiguousModel {
                path: path.to_string(),
                why,
            }),
        }
    }

    /// Reads as much of the body as it takes to find its `model` (and the value of `also`'s
    /// key, when it comes before the end of the scan: it comes back, unless it stands for
    /// the model).
    async fn read_model(
        &self,
        headers: &HeaderMap,
        body: &mut RequestBody,
        also: Also,
    ) -> Result<(Found, model::Kind, Option<String>), ProxyError> {
        let content_type = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        let peek = usize::try_from(self.config.server.max_json_peek).unwrap_or(usize::MAX);
        let mut scanner = match Scanner::new(content_type, peek) {
            Err(why) => return Ok((Found::Missing(why), model::Kind::Json, None)),
            Ok(scanner) => scanner,
        };
        if let Some(key) = also.key() {
            scanner.also_read(key);
        }
        let found = body
            .peek(|data| scanner.feed(data))
            .await
            .map_err(|e| ProxyError::from(&e))?
            .unwrap_or_else(|| scanner.finish());
        let value = scanner.also().cloned();
        Ok(match (found, value) {
            (Found::Missing(Missing::NoModel), Some((name, span))) if also == Also::OllamaName => {
                (Found::Model { name, span }, scanner.kind(), None)
            }
            (found, value) => (found, scanner.kind(), value.map(|(v, _)| v)),
        })
    }
}

/// The model a body names, and where.
pub(super) struct BodyModel {
    name: String,
    span: Range<usize>,
    kind: model::Kind,
}

impl BodyModel {
    /// The model's name, as the body gives it.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The span to replace and what to put there, when `backend` has an alias for the model.
    pub(super) fn alias_for(&self, backend: &BackendConfig) -> Option<(Range<usize>, Vec<u8>)> {
        let to = backend.aliases.get(&self.name)?;
        Some((self.span.clone(), self.kind.encode(to)))
    }
}

/// Fixes a Content-Length for a body whose `span` is replaced by `with` bytes (a chunked body
/// has none and stays chunked).
pub(super) fn fix_length(headers: &mut HeaderMap, span: &Range<usize>, with: usize) {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = length {
        let n = n.saturating_sub(span.len() as u64) + with as u64;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// The backends that take part in the `kind` model list, in the order their first route
/// comes in the config: those a route uses that speak its API (any, for OpenAI's list),
/// unless `list_models = false` (an on-demand backend takes part all the same, without being
/// asked: see [`Member::asked`]).
pub(super) fn members(config: &Config, router: &Router<Target>, kind: Kind) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::new();
    for r in &config.routes {
        let Some(route) = router
            .routes()
            .iter()
            .find(|t| t.target.backend.config.name == r.backend)
        else {
            continue;
        };
        let backend = &route.target.backend;
        let bc = &backend.config;
        let silent = !bc.list_models && !bc.on_demand;
        let speaks = kind.api().map_or(true, |api| bc.api.contains(api));
        if silent || !speaks || members.iter().any(|m| m.backend.config.name == bc.name) {
            continue;
        }
        // Every route to it takes only some models: only those are listed.
        let routes_to_it = config.routes.iter().filter(|t| t.backend == bc.name);
        let filter = routes_to_it
            .map(|t| config.route_models(t))
            .collect::<Option<Vec<Vec<String>>>>()
            .map(|sets| ModelSet::new(sets.concat()));
        // Where a request for the list would go through a route to it.
        let path = router
            .candidates(kind.path())
            .find(|m| m.route.target.backend.config.name == bc.name)
            .map_or_else(
                || format!("{}{}", bc.base_path, kind.path()),
                |m| m.forward_path(&bc.base_path).into_owned(),
            );
        members.push(Member {
            backend: backend.clone(),
            path: path + kind.query(),
            filter,
            asked: bc.list_models,
        });
    }
    members
}
