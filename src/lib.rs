//! openai-proxy: routes OpenAI-API requests by path to self-hosted services (whisper.cpp,
//! Ollama, Kokoro-FastAPI) and to OpenAI, streaming bodies both ways.
//!
//! # Layout
//!
//! The daemon, in the order a request flows through it:
//!
//! - `listeners`: listening sockets inherited from systemd/launchd, or bound (TCP, Unix).
//! - `workers`: `server.workers` threads, each a single-threaded event loop.
//! - `server`: the accept loop on given listeners, one connection task each, graceful drain;
//!   the state every worker shares.
//!   - `parse_errors`: hyper's own answers to requests it cannot parse, rewritten as JSON.
//! - `proxy`: one request: who sent it, client token, route, rewrite, auth policy, forward,
//!   map errors.
//!   - `guard`: `Host` and `Origin` checks before routing (DNS rebinding, cross-site pages).
//!   - `cors`: preflight answers and response headers for the web origins allowed.
//!   - `tokens`: client tokens, checked in constant time.
//!   - `router`: path normalization, longest-prefix routing, routes by model; pure.
//!   - `model`: the request's `model` in a JSON prefix, a multipart head or the path; pure.
//!   - `models`: `GET /v1/models` answered by the proxy: every backend's list, merged.
//!   - `headers`: hop-by-hop stripping, `X-Forwarded-*`, request ids, secret headers,
//!     key-bearing query parameters.
//!   - `body`: streamed bodies with size limits, idle time-outs, byte counts, and the
//!     first frames read (to find the model) and sent first.
//!   - `upstream`: the client of each backend: `pool` (plain HTTP/1 connections, one pool
//!     per worker) or hyper-util's client (HTTPS: rustls, HTTP/2 via ALPN).
//!   - `error`: `ProxyError` → status code + OpenAI-shaped JSON.
//! - `access`: the access-log line, written when the response is done.
//!
//! Around it: `config` (lookup, parsing, validation with file:line:column messages),
//! `lifecycle` (`serve`: start-up, readiness, reload on SIGHUP, idle exit, drain on stop),
//! `reload` (reading the config for a reload off the serving thread, with a time limit),
//! `notify` (`sd_notify`), `logging` (journald, syslog or stderr), `launchd` (macOS socket
//! activation).
//!
//! The surface: [`serve`] (what `main` runs), and for the tests [`server::run`] on
//! listeners they bound ([`bind`]) with a [`Proxy`] built from a [`Config`], and more
//! [`Workers`] beside it.
//!
//! The tools, apart from the daemon: [`cli`] (the command line, clap types only; `main`
//! turns them into plain values) and [`commands`] (`init`, `check-config`,
//! `check-endpoints`, start/stop/status..., `container ...`, the man page and completions).

mod access;
mod backend_units;
mod body;
mod config;
mod cors;
mod error;
mod guard;
mod headers;
mod lasting;
mod lifecycle;
mod listeners;
mod logging;
mod metrics;
mod model;
mod models;
mod notify;
mod parse_errors;
mod pool;
mod proxy;
mod reload;
mod router;
mod shard;
mod tls;
mod tokens;
mod upgrade;
mod upstream;
mod workers;

mod launchd;

pub mod cli;
pub mod commands;
pub mod server;

// The daemon's surface: what `main` runs and what the tests start.
pub use config::{AuthPolicy, Config, ConfigError, ConfigIssue, ListenAddr, EMBEDDED_DEFAULT};
pub use lifecycle::serve;
pub use listeners::{bind, StdListener};
pub use proxy::{Peer, Proxy};
pub use tokens::{ClientTokens, MIN_CLIENT_TOKEN_LEN};
pub use workers::Workers;

/// The per-request pure code, for the micro-benchmarks (`benches/`) and the fuzz targets
/// (`fuzz/`): path normalization and routing, header rewriting, value parsing, finding a
/// body's model, the access line.
pub mod hot_path {
    pub use crate::access::AccessRecord;
    pub use crate::config::{parse_duration, parse_size};
    pub use crate::headers::{
        extra_secrets, is_sane_request_id, new_request_id, request_id, rewrite_request,
        rewrite_response, without_key_params, HOP_BY_HOP, SECRET_HEADERS,
    };
    pub use crate::model::{Found, Scanner};
    pub use crate::proxy::backend_uri;
    pub use crate::router::{normalize_path, Router};
}
