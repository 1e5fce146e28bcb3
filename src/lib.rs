//! openai-proxy: routes OpenAI-API requests by path to self-hosted services (whisper.cpp,
//! Ollama, Kokoro-FastAPI) and to OpenAI, streaming bodies both ways.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap); also feeds the man page and completions.
//! - [`config`]: config lookup, strict parsing, validation with file:line:column messages.
//! - [`router`]: path normalization and longest-prefix routing; pure.
//! - [`proxy`]: one request: route, rewrite, auth policy, forward, map errors.
//! - [`headers`]: hop-by-hop stripping, `X-Forwarded-*`, request ids, secret headers.
//! - [`body`]: streamed bodies with size limits, idle time-outs and byte counts.
//! - [`upstream`]: one pooled HTTP(S) client per backend (rustls, HTTP/2 via ALPN).
//! - [`server`]: the accept loop on given listeners, graceful drain.
//! - [`listeners`]: listening sockets inherited from systemd/launchd, or bound (TCP, Unix).
//! - [`lifecycle`]: `serve`: start-up, readiness, reload on SIGHUP, idle exit, drain on stop.
//! - [`notify`]: `sd_notify` messages to the service manager (path or abstract socket).
//! - `launchd`: launchd socket activation (macOS only).
//! - [`manage`]: start/stop/restart/reload/status/enable/disable via systemctl or launchctl.
//! - [`check`]: `check-config` and `check-endpoints`: validate a config, test a running proxy.
//! - [`container`]: `container start|stop|status|logs|enable|disable`: the proxy under Podman.
//! - [`docs`]: the man page and shell completions, generated from [`cli`].
//! - [`logging`]: tracing to journald, syslog or stderr, and the access log.
//! - [`error`]: `ProxyError` → status code + OpenAI-shaped JSON.

pub mod body;
pub mod check;
pub mod cli;
pub mod config;
pub mod container;
pub mod docs;
pub mod error;
pub mod headers;
pub mod launchd;
pub mod lifecycle;
pub mod listeners;
pub mod logging;
pub mod manage;
pub mod notify;
pub mod proxy;
pub mod router;
pub mod server;
pub mod upstream;
