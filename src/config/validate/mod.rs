//! From the file as written ([`RawConfig`]) to a [`Config`] the proxy can run: every value
//! checked, defaults filled in, key files read, every problem collected (not only the first).
//!
//! By section: [`server`] (`[server]`, `[log]`, `[metrics]`), [`backends`] (URLs and pools,
//! time-outs, health, aliases), [`keys`] (the files and variables a config names: keys,
//! tokens, CA certificates), [`routes`] (paths, models, fallbacks).

mod backends;
mod clients;
mod keys;
mod routes;
mod server;

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;

use super::diagnostics::{quote, Issues};
use super::raw::RawConfig;
use super::{Config, Source};
use crate::routing::api::Api;

/// The span of an optional spanned value.
fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// The value of an optional spanned value.
fn value<T: Clone>(v: &Option<Spanned<T>>) -> Option<T> {
    v.as_ref().map(|s| s.get_ref().clone())
}

pub(super) fn validate(raw: RawConfig, source: Source, issues: &mut Issues<'_>) -> Config {
    let mut server = server::validate_server(raw.server, issues);
    let log = server::validate_log(raw.log);
    let metrics = server::validate_metrics(&raw.metrics, issues);
    let usage = server::validate_usage(raw.usage, issues);
    let mut backends = Vec::new();
    for (name, b) in raw.backends {
        if let Some(b) = backends::validate_backend(&name, b, issues) {
            backends.push(b);
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let mut routes = Vec::new();
    let mut seen = HashMap::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        if let Some(r) = routes::validate_route(i, r, &names, &mut seen, issues) {
            routes.push(r);
        }
    }
    let clients = clients::validate_clients(raw.clients, &mut server.client_tokens, &names, issues);
    // A backend that does not say which APIs it speaks speaks those its routes' paths are
    // of (OpenAI's when no route leads to it).
    for b in backends.iter_mut().filter(|b| b.api.is_empty()) {
        b.api = routes
            .iter()
            .filter(|r| r.backend == b.name)
            .map(|r| Api::of_path(&r.path))
            .collect();
        if b.api.is_empty() {
            b.api.insert(Api::OpenAi);
        }
    }
    if routes.is_empty() && issues.count() == 0 {
        issues.add(
            "route",
            None,
            "no [[route]] is defined, so every request would get 404; add at least one \
             [[route]] with path and backend",
        );
    }
    Config {
        source,
        server,
        log,
        metrics,
        usage,
        backends,
        routes,
        clients,
    }
}

/// Whether `name` can name a backend (and a credential): letters, digits, `-` and `_`, at most 64.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Longest model name or pattern accepted (OpenAI's longest ids are under 100 characters).
pub(super) const MAX_MODEL_NAME: usize = 256;

/// What is wrong with a model name or pattern, if anything.
pub(super) fn check_model_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("an empty {what} matches no request"));
    }
    if name.len() > MAX_MODEL_NAME {
        return Err(format!(
            "{what} {} is longer than {MAX_MODEL_NAME} bytes",
            quote(name)
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "{what} {} contains a control character",
            quote(name)
        ));
    }
    Ok(())
}

/// Headers the proxy needs to forward a request: never removed as secrets.
pub(super) const NOT_SECRETS: [&str; 3] = ["host", "content-length", "transfer-encoding"];
