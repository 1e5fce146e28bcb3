//! `[clients.NAME]`: what one client (a named token) may use and how much: the models and
//! routes it may ask for, the backends whose server-side key it may spend, and its limits.
//! A token of the tokens file with no table is a client without limits.

use std::sync::Arc;

use crate::routing::routes::{glob_match, under};

/// One client's scope and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub name: Arc<str>,
    /// Model names or `*` globs it may ask for; `None`: every model.
    pub models: Option<Vec<String>>,
    /// Path prefixes it may use; `None`: every path.
    pub routes: Option<Vec<String>>,
    /// Backends whose server-side key (`api_key_*`) it may use; `None`: every backend.
    pub backends_with_server_key: Option<Vec<String>>,
    pub limits: Limits,
}

/// A client's limits; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight at once (a stream until it ends).
    pub max_concurrent: Option<u32>,
    pub requests_per_minute: Option<u32>,
    /// Prompt and completion tokens, as the answers report them.
    pub tokens_per_minute: Option<u64>,
    /// The same, per day (UTC).
    pub tokens_per_day: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != Limits::default()
    }
}

impl ClientConfig {
    /// A client with no table: no scope, no limits.
    pub fn unlimited(name: Arc<str>) -> ClientConfig {
        ClientConfig {
            name,
            models: None,
            routes: None,
            backends_with_server_key: None,
            limits: Limits::default(),
        }
    }

    /// Whether it may ask for `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .map_or(true, |m| m.iter().any(|p| glob_match(p, model)))
    }

    /// Whether it may use `path` (normalized): one of its prefixes, whole segments only.
    pub fn allows_path(&self, path: &str) -> bool {
        self.routes
            .as_ref()
            .map_or(true, |r| r.iter().any(|p| under(path, p)))
    }

    /// Whether it may use the server-side key of backend `name`.
    pub fn may_use_key_of(&self, backend: &str) -> bool {
        self.backends_with_server_key
            .as_ref()
            .map_or(true, |b| b.iter().any(|n| n == backend))
    }

    /// Whether it is limited in what it may use (its model lists are then filtered).
    pub fn scoped(&self) -> bool {
        self.models.is_some() || self.backends_with_server_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_checks() {
        let c = ClientConfig {
            models: Some(vec!["llama*".into(), "qwen3".into()]),
            routes: Some(vec!["/v1/chat".into(), "/v1/models/".into()]),
            backends_with_server_key: Some(vec!["ollama".into()]),
            ..ClientConfig::unlimited("guest".into())
        };
        assert!(c.allows_model("llama3.2:3b") && c.allows_model("qwen3"));
        assert!(!c.allows_model("gpt-4o") && !c.allows_model("qwen3:8b"));
        assert!(c.allows_path("/v1/chat/completions") && c.allows_path("/v1/chat"));
        assert!(c.allows_path("/v1/models") && c.allows_path("/v1/models/x"));
        assert!(!c.allows_path("/v1/chatter") && !c.allows_path("/v1/embeddings"));
        assert!(c.may_use_key_of("ollama") && !c.may_use_key_of("openai"));
        let open = ClientConfig::unlimited("x".into());
        assert!(open.allows_model("gpt-4o") && open.allows_path("/anything"));
        assert!(open.may_use_key_of("openai") && !open.scoped());
    }
}
