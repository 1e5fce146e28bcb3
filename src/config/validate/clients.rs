//! `[clients.NAME]`: a named token's scope (models, routes, backends whose key it may use)
//! and limits. Its token is the tokens file's entry of that name, or `token_hash` here.

use std::sync::Arc;

use toml::Spanned;

use super::super::clients::{ClientConfig, Limits};
use super::super::diagnostics::{cut, quote, Issues};
use super::super::raw::RawClient;
use super::check_model_name;
use crate::config::tokens::{client_name_rule, valid_client_name, ClientTokens};
use crate::routing::routes::normalize_path;

/// Largest limit accepted (a typo of many zeros is not meant).
const MAX_LIMIT: i64 = 1_000_000_000_000;

/// A positive whole number below `max`, or an issue naming `key`.
pub(super) fn positive(
    key: &str,
    raw: &Option<Spanned<i64>>,
    max: i64,
    issues: &mut Issues<'_>,
) -> Option<u64> {
    let v = raw.as_ref()?;
    match u64::try_from(*v.get_ref()) {
        Ok(n) if n >= 1 && *v.get_ref() <= max => Some(n),
        _ => {
            issues.add(
                key,
                Some(v.span()),
                format!("must be a whole number from 1 to {max} (remove the key for no limit)"),
            );
            None
        }
    }
}

/// Checks every `[clients.NAME]`, adding their `token_hash`es to `tokens`; `backends` are the
/// backend names.
pub(super) fn validate_clients(
    raw: std::collections::BTreeMap<Spanned<String>, Spanned<RawClient>>,
    tokens: &mut ClientTokens,
    backends: &[&str],
    issues: &mut Issues<'_>,
) -> Vec<ClientConfig> {
    let named = tokens
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    let mut clients = Vec::new();
    for (name, table) in raw {
        let here = table.span();
        let raw = table.into_inner();
        let key = |k: &str| format!("clients.{}.{k}", cut(name.get_ref()));
        let n = name.get_ref();
        if !valid_client_name(n) {
            issues.add(
                format!("clients.{}", cut(n)),
                Some(name.span()),
                client_name_rule(),
            );
            continue;
        }
        let in_file = named.iter().any(|f| f == n);
        match (&raw.token_hash, in_file) {
            (Some(h), true) => issues.add(
                key("token_hash"),
                Some(h.span()),
                "the client tokens file already has a token of this name: keep one of them",
            ),
            (Some(h), false) => {
                if let Err(e) = tokens.add_hash(n, h.get_ref()) {
                    issues.add(key("token_hash"), Some(h.span()), e);
                }
            }
            (None, true) => {}
            (None, false) => issues.add(
                format!("clients.{}", cut(n)),
                Some(here),
                "has no token: add a line with this name to server.client_tokens_file, or \
                 token_hash = \"sha256:...\" here (`openai-proxy client add` does either)",
            ),
        }
        let models = raw.models.as_ref().map(|list| {
            let mut out = Vec::new();
            for (j, m) in list.get_ref().iter().enumerate() {
                match check_model_name(m.get_ref(), "model name") {
                    Ok(()) => out.push(m.get_ref().clone()),
                    Err(e) => issues.add(key(&format!("models[{j}]")), Some(m.span()), e),
                }
            }
            out
        });
        let routes = raw.routes.as_ref().map(|list| {
            let mut out = Vec::new();
            for (j, r) in list.get_ref().iter().enumerate() {
                match normalize_path(r.get_ref()) {
                    Ok(p) if r.get_ref().starts_with('/') => out.push(p.into_owned()),
                    _ => issues.add(
                        key(&format!("routes[{j}]")),
                        Some(r.span()),
                        format!("{} is not a path such as \"/v1/chat\"", quote(r.get_ref())),
                    ),
                }
            }
            out
        });
        let with_key = raw.backends_with_server_key.as_ref().map(|list| {
            let mut out = Vec::new();
            for (j, b) in list.iter().enumerate() {
                if backends.contains(&b.get_ref().as_str()) {
                    out.push(b.get_ref().clone());
                } else {
                    issues.add(
                        key(&format!("backends_with_server_key[{j}]")),
                        Some(b.span()),
                        format!("no backend named {}", quote(b.get_ref())),
                    );
                }
            }
            out
        });
        let mut limit = |k: &str, v: &Option<Spanned<i64>>, max| positive(&key(k), v, max, issues);
        let small = i64::from(u32::MAX);
        let limits = Limits {
            max_concurrent: limit("max_concurrent", &raw.max_concurrent, small)
                .and_then(|n| u32::try_from(n).ok()),
            requests_per_minute: limit("requests_per_minute", &raw.requests_per_minute, small)
                .and_then(|n| u32::try_from(n).ok()),
            tokens_per_minute: limit("tokens_per_minute", &raw.tokens_per_minute, MAX_LIMIT),
            tokens_per_day: limit("tokens_per_day", &raw.tokens_per_day, MAX_LIMIT),
        };
        clients.push(ClientConfig {
            models,
            routes,
            backends_with_server_key: with_key,
            limits,
            ..ClientConfig::unlimited(Arc::from(n.as_str()))
        });
    }
    // The tokens file's other names: clients without limits.
    for n in named {
        if !clients.iter().any(|c| *c.name == *n) {
            clients.push(ClientConfig::unlimited(Arc::from(n)));
        }
    }
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    clients
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const ROUTES: &str =
        "[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";

    /// The config error of `text`, as `serve` prints it.
    fn error(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_bad_client_queue_and_stop_key_is_named_with_its_line() {
        let hash = format!("sha256:{}", "a".repeat(64));
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("guest {}\n", "t".repeat(24))).unwrap();
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{ROUTES}[clients.c]\nmax_concurrent = 2\n"),
                ":6:1: clients.c:",
                "has no token",
            ),
            (
                format!("{ROUTES}[clients.c]\ntoken_hash = \"abc\"\n"),
                ":7:14: clients.c.token_hash:",
                "a hash is sha256: and 64 hex digits",
            ),
            (
                format!(
                    "[server]\nclient_tokens_file = {tokens:?}\n{ROUTES}[clients.guest]\n\
                     token_hash = \"{hash}\"\n"
                ),
                ":9:14: clients.guest.token_hash:",
                "already has a token of this name",
            ),
            (
                format!("{ROUTES}[clients.c]\ntoken_hash = \"{hash}\"\nroutes = [\"v1\"]\n"),
                ":8:11: clients.c.routes[0]:",
                "is not a path",
            ),
            (
                format!("{ROUTES}[clients.c]\ntoken_hash = \"{hash}\"\nmodels = [\"\"]\n"),
                ":8:11: clients.c.models[0]:",
                "empty",
            ),
            (
                format!(
                    "{ROUTES}[clients.c]\ntoken_hash = \"{hash}\"\n\
                     backends_with_server_key = [\"nope\"]\n"
                ),
                ":8:29: clients.c.backends_with_server_key[0]:",
                "no backend named \"nope\"",
            ),
            (
                format!("{ROUTES}[clients.c]\ntoken_hash = \"{hash}\"\ntokens_per_day = 0\n"),
                ":8:18: clients.c.tokens_per_day:",
                "must be a whole number from 1",
            ),
            (
                format!("{ROUTES}[clients.\"a/b\"]\ntoken_hash = \"{hash}\"\n"),
                ":6:10: clients.a/b:",
                "a client name may have",
            ),
            (
                ROUTES.replace("9\"\n", "9\"\nqueue_timeout = \"5s\"\n"),
                ":3:17: backends.b.queue_timeout:",
                "only applies with max_concurrent",
            ),
            (
                ROUTES.replace("9\"\n", "9\"\nmax_concurrent = 0\n"),
                ":3:18: backends.b.max_concurrent:",
                "must be a whole number from 1",
            ),
            (
                format!("[server]\nshutdown_delay = \"10m\"\n{ROUTES}"),
                ":2:18: server.shutdown_delay:",
                "must be at most 5m",
            ),
            (
                ROUTES.replace("\"/v1\"", "\"/ready\""),
                ":4:8: route[0].path:",
                "the proxy's own health or readiness check",
            ),
            (
                ROUTES.replace("9\"\n", "9\"\napi = []\n"),
                ":3:7: backends.b.api:",
                "lists no API",
            ),
            (
                ROUTES.replace("9\"\n", "9\"\napi = [\"openai\", \"Ollama\"]\n"),
                ":3:18: backends.b.api:",
                "unknown API \"Ollama\"",
            ),
            (
                ROUTES.replace("9\"\n", "9\"\napi = [\"ollama\", \"ollama\"]\n"),
                ":3:18: backends.b.api:",
                "ollama is listed twice",
            ),
        ];
        for (text, at, says) in cases {
            let e = error(&text);
            assert!(e.contains(at) && e.contains(says), "{at} {says} in:\n{e}");
            assert!(!e.contains(&"t".repeat(24)), "a token in:\n{e}");
        }
    }

    #[test]
    fn a_backend_speaks_the_apis_of_its_routes_unless_it_says() {
        use crate::routing::api::{Api, Apis};
        let text = "[backends.o]\nurl = \"http://127.0.0.1:9\"\n\
                    [backends.n]\nurl = \"http://127.0.0.1:8\"\n\
                    [backends.s]\nurl = \"http://127.0.0.1:7\"\napi = [\"anthropic\"]\n\
                    [[route]]\npath = \"/api\"\nbackend = \"o\"\n\
                    [[route]]\npath = \"/v1/messages\"\nbackend = \"o\"\n\
                    [[route]]\npath = \"/v1\"\nbackend = \"s\"\n";
        let c = Config::from_toml(text).unwrap();
        let api = |name: &str| c.backend(name).unwrap().api;
        let set = |apis: &[Api]| apis.iter().copied().collect::<Apis>();
        assert_eq!(api("o"), set(&[Api::Ollama, Api::Anthropic]));
        assert_eq!(api("n"), set(&[Api::OpenAi]), "no route: OpenAI's");
        assert_eq!(api("s"), set(&[Api::Anthropic]), "written: as written");
    }
}
