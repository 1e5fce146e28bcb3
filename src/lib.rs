//! openai-proxy: routes OpenAI-API requests by path and by model to self-hosted services
//! (whisper.cpp, Ollama, Kokoro-FastAPI, llama.cpp...) and to OpenAI, streaming bodies both
//! ways, untouched.
//!
//! # Layout
//!
//! A request flows down this list: `serve` accepts it, `proxy` admits, routes and sends it,
//! `upstream` holds the connection it goes out on. A folder imports only from folders below
//! it (and `config`, `body`, `error`, `shard`, which every floor may use).
//!
//! - `daemon`: the process: start-up (`serve`), worker threads, listeners, reload,
//!   readiness for systemd and launchd, stop.
//! - `serve`: the accept loop, connections, server-side TLS, answers to requests hyper
//!   cannot parse, the metrics listener.
//! - `proxy`: one request: admit (Host/Origin, CORS, client token) → route → rewrite
//!   headers → send; what the proxy answers itself; WebSockets.
//! - `upstream`: backends and their servers, the connection pool, health, swap groups,
//!   on-demand units, failure classification, client TLS.
//! - `observe`: access log, daemon log, metrics.
//! - `clients`: named tokens' counters against their limits (requests in flight, a minute,
//!   tokens a minute and a day), kept across reloads.
//! - `routing`: pure: path normalisation, routes, a request's `model`.
//! - `body`: streamed bodies: size limits, idle time-outs, byte counts, replayed frames.
//! - `config`: lookup, parsing, validation (file:line:column messages), client tokens,
//!   TLS files.
//! - `error`: `ProxyError` → status + OpenAI-shaped JSON.
//! - `sync`: what worker threads share: which worker this is, per-worker parts, locks.
//! - `commands`: the tools apart from the daemon, with their clap types (`init`,
//!   `check-config`, `check-endpoints`, start/stop/status, `container`, `generate`).

mod body;
mod clients;
mod config;
mod daemon;
mod error;
mod observe;
mod proxy;
mod routing;
mod sync;
mod upstream;

pub mod commands;
pub mod serve;

// The daemon's surface: what `main` runs and what the tests start.
pub use commands::cli;
pub use config::tokens::{ClientTokens, MIN_CLIENT_TOKEN_LEN};
pub use config::{AuthPolicy, Config, ConfigError, ConfigIssue, ListenAddr, EMBEDDED_DEFAULT};
pub use daemon::lifecycle::serve;
pub use daemon::listeners::bind;
pub use daemon::workers::Workers;
pub use proxy::{Peer, Proxy};
pub use serve::StdListener;

/// The per-request pure code, for the micro-benchmarks (`benches/`) and the fuzz targets
/// (`fuzz/`): path normalization and routing, header rewriting, value parsing, finding a
/// body's model, the access line.
#[doc(hidden)]
pub mod hot_path {
    pub use crate::config::{parse_duration, parse_size};
    pub use crate::observe::access::AccessRecord;
    pub use crate::proxy::backend_uri;
    pub use crate::proxy::headers::{
        extra_secrets, is_sane_request_id, new_request_id, request_id, rewrite_request,
        rewrite_response, HOP_BY_HOP, SECRET_HEADERS,
    };
    pub use crate::proxy::query::without_key_params;
    pub use crate::routing::model::{Found, Scanner};
    pub use crate::routing::routes::{normalize_path, Router};
}
