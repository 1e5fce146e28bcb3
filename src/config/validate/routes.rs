//! `[[route]]`: path, backend, rewrite, models, fallback.

use std::collections::HashMap;

use toml::Spanned;

use super::super::diagnostics::{cut, quote, Issues};
use super::super::raw::RawRoute;
use super::super::RouteConfig;
use super::{check_model_name, value};
use crate::routing::routes::normalize_path;

/// Routes seen so far by path: `true` when one of them takes every model on it.
pub(super) type SeenPaths = HashMap<String, bool>;

// Why one piece: the `[[route]]` table's keys, checked one after the other in the order the man
// page lists them, each a few lines adding to the same issue list and the same route; split,
// every part would take all of them.
pub(super) fn validate_route(
    i: usize,
    raw: Spanned<RawRoute>,
    backends: &[&str],
    seen: &mut SeenPaths,
    issues: &mut Issues<'_>,
) -> Option<RouteConfig> {
    let before = issues.count();
    let here = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("route[{i}].{k}");
    let path = match raw.path {
        None => {
            issues.add(
                format!("route[{i}]"),
                Some(here.clone()),
                "missing path = \"/v1/...\"",
            );
            String::new()
        }
        Some(p) => {
            let takes_all = raw.models.is_none();
            match check_route_path(p.get_ref()) {
                Err(e) => issues.add(key("path"), Some(p.span()), e),
                Ok(()) if seen.get(p.get_ref()) == Some(&true) => issues.add(
                    key("path"),
                    Some(p.span()),
                    format!(
                        "duplicate route path {}: an earlier route on it has no `models`, so it \
                         takes every request and this one would never be used (a path may \
                         appear again only after routes that list `models`)",
                        quote(p.get_ref())
                    ),
                ),
                Ok(()) => {
                    seen.insert(p.get_ref().clone(), takes_all);
                }
            }
            p.into_inner()
        }
    };
    let backend = match raw.backend {
        None => {
            issues.add(
                format!("route[{i}]"),
                Some(here),
                "missing backend = \"NAME\"",
            );
            String::new()
        }
        Some(b) => {
            if !backends.contains(&b.get_ref().as_str()) {
                issues.add(
                    key("backend"),
                    Some(b.span()),
                    format!(
                        "no backend named {} ({})",
                        quote(b.get_ref()),
                        known(backends)
                    ),
                );
            }
            b.into_inner()
        }
    };
    if let Some(r) = &raw.rewrite {
        if let Err(e) = check_route_path(r.get_ref()) {
            issues.add(key("rewrite"), Some(r.span()), e);
        }
    }
    let models = raw.models.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            issues.add(
                key("models"),
                Some(list.span()),
                "an empty list takes no request; list model names or globs such as \
                 \"llama3*\", or remove the key to take every model",
            );
        }
        let mut models = Vec::new();
        for (j, m) in list.get_ref().iter().enumerate() {
            match check_model_name(m.get_ref(), "model name") {
                Ok(()) => models.push(m.get_ref().clone()),
                Err(e) => issues.add(format!("route[{i}].models[{j}]"), Some(m.span()), e),
            }
        }
        models
    });
    let fallback = raw.fallback.as_ref().and_then(|f| {
        let problem = if !backends.contains(&f.get_ref().as_str()) {
            Some(format!(
                "no backend named {} ({})",
                quote(f.get_ref()),
                known(backends)
            ))
        } else if *f.get_ref() == backend {
            Some(format!(
                "the fallback must be another backend than {} itself",
                quote(&backend)
            ))
        } else {
            None
        };
        match problem {
            Some(p) => {
                issues.add(key("fallback"), Some(f.span()), p);
                None
            }
            None => Some(f.get_ref().clone()),
        }
    });
    let fallback_on_5xx = value(&raw.fallback_on_5xx).unwrap_or(false);
    if fallback_on_5xx && raw.fallback.is_none() {
        issues.add(
            key("fallback_on_5xx"),
            raw.fallback_on_5xx.as_ref().map(Spanned::span),
            "only applies to a route with fallback = \"BACKEND\"",
        );
    }
    (issues.count() == before).then_some(RouteConfig {
        path,
        backend,
        rewrite: value(&raw.rewrite),
        models,
        fallback,
        fallback_on_5xx,
        websockets_without_model: raw.websockets_without_model.unwrap_or(false),
    })
}

/// The backends defined, for a message about a name that is not one of them.
fn known(backends: &[&str]) -> String {
    if backends.is_empty() {
        "none is defined".to_string()
    } else {
        format!("defined: {}", cut(&backends.join(", ")))
    }
}

fn check_route_path(p: &str) -> Result<(), String> {
    let shown = quote(p);
    if !p.starts_with('/') {
        return Err(format!("{shown} must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!(
            "{shown} must not end with '/' (prefixes match whole segments: {} also matches \
             every path below it)",
            quote(p.trim_end_matches('/'))
        ));
    }
    match normalize_path(p) {
        Ok(n) if n == p => {}
        _ => {
            return Err(format!(
                "{shown} is not a normalized path (no '.', '..', '//', '%2F' or needless %-escapes)"
            ))
        }
    }
    if p == "/health" || p == "/ready" {
        return Err(format!(
            "{shown} is the proxy's own health or readiness check and cannot be routed"
        ));
    }
    if p.contains('?') || p.contains('#') {
        return Err(format!("{shown} must be a path only, without '?' or '#'"));
    }
    Ok(())
}
