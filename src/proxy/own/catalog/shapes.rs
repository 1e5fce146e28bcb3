//! The kinds of list the catalog gathers, and their shapes: OpenAI's model list (`data`, each
//! model by `id`), Ollama's `GET /api/tags` and `GET /api/ps` (`models`, each by `name`),
//! Ollama's `GET /api/version` (one string), and Anthropic's model list, gathered as OpenAI's
//! (`data` by `id`: llama.cpp and Ollama list OpenAI-shaped objects there) and rendered in
//! Anthropic's shape ([`anthropic_page`]).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::routing::api::Api;

/// What Ollama and Anthropic say of a time they do not know.
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// Anthropic's page size when the client names none, and its largest.
const PAGE: usize = 20;
const MAX_PAGE: usize = 1000;

/// One kind of list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `GET /v1/models`, OpenAI's.
    Models,
    /// Ollama's `GET /api/tags`: the models a server has.
    Tags,
    /// Ollama's `GET /api/ps`: the models loaded now.
    Running,
    /// Ollama's `GET /api/version`.
    Version,
    /// `GET /v1/models` for an Anthropic client.
    Anthropic,
}

impl Kind {
    /// Every kind; a catalog keeps one list of each, in this order.
    pub(crate) const ALL: [Kind; 5] = [
        Kind::Models,
        Kind::Tags,
        Kind::Running,
        Kind::Version,
        Kind::Anthropic,
    ];

    /// The client's path for it, which a backend's list is found through (where a route would
    /// forward it).
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Models | Kind::Anthropic => "/v1/models",
            Kind::Tags => "/api/tags",
            Kind::Running => "/api/ps",
            Kind::Version => "/api/version",
        }
    }

    /// The kind of an Ollama path the proxy answers.
    pub(crate) fn of_ollama_path(path: &str) -> Option<Kind> {
        [Kind::Tags, Kind::Running, Kind::Version]
            .into_iter()
            .find(|k| k.path() == path)
    }

    /// What is added to the path on a backend: Anthropic's lists come 20 at a time unless
    /// asked for more.
    pub(crate) fn query(self) -> &'static str {
        match self {
            Kind::Anthropic => "?limit=1000",
            _ => "",
        }
    }

    /// The API a backend speaks to take part; `None`: any backend a route uses (OpenAI's
    /// list, as it always was).
    pub(crate) fn api(self) -> Option<Api> {
        match self {
            Kind::Models => None,
            Kind::Tags | Kind::Running | Kind::Version => Some(Api::Ollama),
            Kind::Anthropic => Some(Api::Anthropic),
        }
    }

    /// The member of the answer that holds the entries.
    fn array(self) -> &'static str {
        match self {
            Kind::Models | Kind::Anthropic => "data",
            Kind::Tags | Kind::Running => "models",
            Kind::Version => "version",
        }
    }

    /// The member of an entry that names its model.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Kind::Models | Kind::Anthropic => "id",
            Kind::Tags | Kind::Running => "name",
            Kind::Version => "version",
        }
    }

    /// Whether a backend's answer may be kept: what runs now is asked afresh every time.
    pub(crate) fn cached(self) -> bool {
        self != Kind::Running
    }

    /// Whether the config's own names stand in the list without the backend listing them (an
    /// alias whose model is not listed, a model a route names of a backend not asked): not in
    /// a list of what runs, which only the backend knows.
    pub(crate) fn names_from_config(self) -> bool {
        self != Kind::Running
    }

    /// What a backend's list is called in the log.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Models | Kind::Anthropic => "models",
            Kind::Tags => "tags",
            Kind::Running => "running models",
            Kind::Version => "version",
        }
    }

    /// The entries of a backend's answer; `Err`: what it answered instead.
    pub(crate) fn parse(self, body: &[u8]) -> Result<Vec<Value>, String> {
        let array = self.array();
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut o)) => match o.remove(array) {
                Some(Value::Array(entries)) => Ok(entries),
                Some(v @ Value::String(_)) if self == Kind::Version => Ok(vec![v]),
                _ => Err(self.expected()),
            },
            _ => Err(self.expected()),
        }
    }

    fn expected(self) -> String {
        match self {
            Kind::Version => "did not answer a JSON object with a \"version\" string".into(),
            _ => format!(
                "did not answer a JSON object with a \"{}\" array",
                self.array()
            ),
        }
    }

    /// The name of an entry.
    pub(crate) fn name(self, entry: &Value) -> Option<&str> {
        entry.get(self.key())?.as_str()
    }

    /// An entry made by the proxy for a model its backend did not list.
    pub(crate) fn plain(self, name: &str, backend: &str) -> Value {
        match self {
            Kind::Tags | Kind::Running => json!({
                "name": name,
                "model": name,
                "modified_at": EPOCH,
                "size": 0,
                "digest": "",
                "details": {},
            }),
            _ => json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": backend,
            }),
        }
    }

    /// The entry of an alias: its model's, under the alias's name.
    pub(crate) fn renamed(self, entry: &Value, alias: &str) -> Value {
        let mut v = entry.clone();
        if let Value::Object(o) = &mut v {
            let keys: &[&str] = match self {
                Kind::Tags | Kind::Running => &["name", "model"],
                _ => &["id"],
            };
            for k in keys {
                o.insert((*k).into(), Value::String(alias.into()));
            }
        }
        v
    }
}

/// An entry in Anthropic's shape: one an Anthropic backend sent (`type` `model`, with
/// `created_at`) as it is; an OpenAI-shaped one with `display_name` its id and `created_at`
/// from `created` (seconds since 1970).
pub(crate) fn anthropic_entry(entry: Value) -> Value {
    let from_anthropic = entry["type"] == "model" && entry["created_at"].is_string();
    if from_anthropic {
        return entry;
    }
    let id = entry["id"].as_str().unwrap_or_default();
    let created_at = entry["created"]
        .as_u64()
        .map(|s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)))
        .map_or_else(|| EPOCH.to_string(), |t| t.to_string());
    json!({
        "type": "model",
        "id": id,
        "display_name": id,
        "created_at": created_at,
    })
}

/// One page of Anthropic's list, as its `limit`, `after_id` and `before_id` query parameters
/// ask (20 entries unless `limit` says, at most 1000): `data`, `has_more` (more beyond the page
/// in the direction asked), `first_id` and `last_id`.
pub(crate) fn anthropic_page(entries: Vec<Value>, query: Option<&str>) -> Value {
    let param = |name: &str| {
        query?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .map_or(PAGE, |l| l.clamp(1, MAX_PAGE));
    let place = |id: &str| entries.iter().position(|e| e["id"] == id);
    let (start, end, more) = match (param("before_id"), param("after_id")) {
        (Some(before), _) => {
            let end = place(before).unwrap_or(0);
            let start = end.saturating_sub(limit);
            (start, end, start > 0)
        }
        (None, Some(after)) => {
            let start = place(after).map_or(entries.len(), |i| i + 1);
            let end = (start + limit).min(entries.len());
            (start, end, end < entries.len())
        }
        (None, None) => {
            let end = limit.min(entries.len());
            (0, end, end < entries.len())
        }
    };
    let data: Vec<Value> = entries.into_iter().skip(start).take(end - start).collect();
    let mut page = Map::new();
    page.insert(
        "first_id".into(),
        data.first().map_or(Value::Null, |e| e["id"].clone()),
    );
    page.insert(
        "last_id".into(),
        data.last().map_or(Value::Null, |e| e["id"].clone()),
    );
    page.insert("has_more".into(), Value::Bool(more));
    page.insert("data".into(), Value::Array(data));
    Value::Object(page)
}

/// The lowest of Ollama versions (`0.5.7`, `0.6.0-rc1`): by their numbers, a pre-release
/// below its release.
pub(crate) fn lowest_version<'v>(versions: impl Iterator<Item = &'v str>) -> Option<&'v str> {
    versions.min_by_key(|v| {
        let (release, pre) = v.split_once('-').map_or((*v, None), |(r, p)| (r, Some(p)));
        let numbers: Vec<u64> = release
            .split('.')
            .map(|n| n.trim_start_matches('v').parse().unwrap_or(0))
            .collect();
        (numbers, pre.is_none(), pre.unwrap_or_default().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let lowest = |v: &[&'static str]| lowest_version(v.iter().copied());
        assert_eq!(lowest(&["0.6.2", "0.5.10", "0.5.9"]), Some("0.5.9"));
        assert_eq!(lowest(&["0.6.0", "0.6.0-rc1"]), Some("0.6.0-rc1"));
        assert_eq!(lowest(&["0.12.1", "0.9.0"]), Some("0.9.0"));
        assert_eq!(lowest(&[]), None);
    }

    #[test]
    fn anthropic_entries_and_pages() {
        let e = anthropic_entry(json!({"id": "m", "object": "model", "created": 1727000000}));
        assert_eq!(
            e,
            json!({"type": "model", "id": "m", "display_name": "m",
                   "created_at": "2024-09-22T10:13:20Z"})
        );
        assert_eq!(anthropic_entry(json!({"id": "x"}))["created_at"], EPOCH);
        let kept = json!({"type": "model", "id": "c", "display_name": "Claude",
                          "created_at": "2025-01-01T00:00:00Z"});
        assert_eq!(anthropic_entry(kept.clone()), kept);

        let all: Vec<Value> = ["a", "b", "c"].iter().map(|i| json!({"id": i})).collect();
        let ids = |p: &Value| p["data"].as_array().unwrap().len();
        let p = anthropic_page(all.clone(), None);
        assert_eq!(
            (ids(&p), &p["has_more"], &p["first_id"], &p["last_id"]),
            (3, &json!(false), &json!("a"), &json!("c"))
        );
        let p = anthropic_page(all.clone(), Some("limit=2"));
        assert_eq!(
            (ids(&p), &p["has_more"], &p["last_id"]),
            (2, &json!(true), &json!("b"))
        );
        let p = anthropic_page(all.clone(), Some("limit=2&after_id=b"));
        assert_eq!(
            (ids(&p), &p["has_more"], &p["first_id"]),
            (1, &json!(false), &json!("c"))
        );
        let p = anthropic_page(all.clone(), Some("limit=1&before_id=c"));
        assert_eq!(
            (ids(&p), &p["has_more"], &p["first_id"]),
            (1, &json!(true), &json!("b"))
        );
        let p = anthropic_page(all, Some("after_id=zz"));
        assert_eq!((ids(&p), &p["first_id"]), (0, &Value::Null));
    }
}
