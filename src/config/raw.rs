//! The config file as written: serde structs that mirror the TOML one to one. Unknown keys are
//! errors (`deny_unknown_fields`), so a typo is reported, not silently ignored. Values that
//! validation checks keep their [`Spanned`] position, so a problem found later still points
//! at its line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::units::{Dur, Size};
use super::LogTarget;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub usage: RawUsage,
    #[serde(default)]
    pub backends: BTreeMap<Spanned<String>, RawBackend>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub clients: BTreeMap<Spanned<String>, Spanned<RawClient>>,
}

/// `[clients.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub token_hash: Option<Spanned<String>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    pub backends_with_server_key: Option<Vec<Spanned<String>>>,
    pub max_concurrent: Option<Spanned<i64>>,
    pub requests_per_minute: Option<Spanned<i64>>,
    pub tokens_per_minute: Option<Spanned<i64>>,
    pub tokens_per_day: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_body_size: Option<Spanned<Size>>,
    pub header_read_timeout: Option<Spanned<Dur>>,
    pub max_header_size: Option<Spanned<Size>>,
    pub client_tokens_file: Option<Spanned<PathBuf>>,
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    pub cors_origins: Option<Vec<Spanned<String>>>,
    pub secret_headers: Option<Vec<Spanned<String>>>,
    pub shutdown_timeout: Option<Dur>,
    pub idle_exit: Option<Dur>,
    pub shutdown_delay: Option<Spanned<Dur>>,
    pub watch_config: Option<bool>,
    pub max_json_peek: Option<Spanned<Size>>,
    pub tls_cert: Option<Spanned<PathBuf>>,
    pub tls_key: Option<Spanned<PathBuf>>,
    pub max_replay_body: Option<Spanned<Size>>,
    pub workers: Option<Spanned<RawWorkers>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
}

/// `server.workers` as written: `"auto"` or a number (checked in validation).
#[derive(Debug, Clone, Copy)]
pub(super) enum RawWorkers {
    Auto,
    Count(i64),
}

impl<'de> Deserialize<'de> for RawWorkers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = RawWorkers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of worker threads")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawWorkers, E> {
                if v == "auto" {
                    Ok(RawWorkers::Auto)
                } else {
                    Err(E::custom(
                        "expected \"auto\" or a number of worker threads such as 2",
                    ))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawWorkers, E> {
                Ok(RawWorkers::Count(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[log] level`: the names `tracing` uses.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<RawLevel> for tracing::Level {
    fn from(l: RawLevel) -> Self {
        match l {
            RawLevel::Error => tracing::Level::ERROR,
            RawLevel::Warn => tracing::Level::WARN,
            RawLevel::Info => tracing::Level::INFO,
            RawLevel::Debug => tracing::Level::DEBUG,
            RawLevel::Trace => tracing::Level::TRACE,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: Option<RawLevel>,
    pub target: Option<LogTarget>,
    pub access_log: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

/// `[usage]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    pub file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub url: Option<Spanned<String>>,
    /// A pool: several servers of the same service (instead of `url`).
    pub urls: Option<Spanned<Vec<Spanned<String>>>>,
    pub forward_client_auth: Option<bool>,
    pub strip_query_keys: Option<Spanned<bool>>,
    pub api_key_env: Option<Spanned<String>>,
    pub api_key_file: Option<Spanned<PathBuf>>,
    pub api_key_credential: Option<Spanned<String>>,
    pub api_key_header: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub tls_insecure: Option<Spanned<bool>>,
    pub connect_timeout: Option<Spanned<Dur>>,
    pub response_timeout: Option<Spanned<Dur>>,
    pub idle_timeout: Option<Spanned<Dur>>,
    pub websocket_idle_timeout: Option<Spanned<Dur>>,
    pub list_models: Option<Spanned<bool>>,
    /// The client APIs it speaks: `openai`, `ollama`, `anthropic`.
    pub api: Option<Spanned<Vec<Spanned<String>>>>,
    pub on_demand: Option<Spanned<bool>>,
    pub start_timeout: Option<Spanned<Dur>>,
    pub swap_group: Option<Spanned<String>>,
    pub health_path: Option<Spanned<String>>,
    pub health_interval: Option<Spanned<Dur>>,
    pub health_backoff: Option<Spanned<Dur>>,
    pub health_backoff_max: Option<Spanned<Dur>>,
    pub max_concurrent: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<Dur>>,
    /// `"name the client sends" = "name the backend knows"`.
    pub aliases: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub path: Option<Spanned<String>>,
    pub backend: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub models: Option<Spanned<Vec<Spanned<String>>>>,
    pub fallback: Option<Spanned<String>>,
    pub fallback_on_5xx: Option<Spanned<bool>>,
    pub websockets_without_model: Option<bool>,
}
