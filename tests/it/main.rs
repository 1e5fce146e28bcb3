//! The integration tests: one binary (ripgrep style), a module per area, grouped by kind.
//! Everything runs on loopback against in-process mock backends, through `serve::run` or the
//! real binary, and needs neither root nor changes to the machine: the tests that do are in
//! the `machine` binary (tests/machine/), the heavy ones in `load` (tests/load.rs).

// The crate-wide lints are for the library: a test or benchmark crate's items are its own.
#![allow(unreachable_pub, missing_docs)]

#[path = "../support/mod.rs"]
mod support;

/// The request path: what happens to a request and its response on the way through.
mod proxy {
    mod access_log; // one access line per request with the documented fields, no secrets in logs
    mod anthropic_clients; // the Anthropic Python SDK and Claude Code: by model to a local server or Anthropic with the proxy's key
    mod api_lists; // Ollama's /api/tags, /api/ps, /api/version and Anthropic's model list, merged; the Ollama Python library
    mod api_routing; // each client API's error shape, Ollama's `name`, sockets without a model (426), Responses follow-ups on their server
    mod auth; // which credentials each backend sees (forward or injected, never both)
    mod behind_proxy; // streams and WebSockets behind another proxy (the service guide's nginx block)
    mod browsers; // web pages: allowed origins, CORS, DNS rebinding, the Host check
    mod client_tokens; // server.client_tokens_file: 401 without a token, the token never forwarded
    mod clients_daemon; // a guest's day through the binary: access log, /metrics, /usage; kept across SIGHUP and restart; its token nowhere
    mod clients_limits; // [clients.NAME] limits: 429 with Retry-After and x-ratelimit-* at the right request, recovery, reload
    pub mod clients_scope; // [clients.NAME]: 403 for models, routes and backends keys it may not use; its own model list
    mod codex; // Codex CLI: its built-in provider's WebSocket gets 426 and goes on over HTTP; a custom provider
    mod credential_edges; // key subprotocols, a token sent twice, odd query keys, guard edges, revoked sessions
    mod errors; // failures become OpenAI-shaped JSON errors or a visibly broken stream
    mod fallback; // a route's fallback backend, before the first byte of an answer only
    mod faults; // backend resets, stalls, garbage and stale connections: 502/504, never a hang
    mod fuzz_regressions; // the fuzz targets' properties on their seeds and past findings
    mod hostile; // oversized heads, request smuggling, route confusion
    mod https; // the HTTPS listener: SDK over TLS, HTTP/2 by ALPN, certificates on reload
    mod keys; // an injected key reaches its own backend's Authorization header only
    pub mod ledger; // who, which model, tokens and speed: access line, /usage, /metrics; kept across reloads and restarts
    mod metrics; // /metrics as Prometheus text and OpenMetrics, counters, no client labels
    mod model_list; // GET /v1/models merged from every backend, aliases, per-key OpenAI lists
    pub mod model_routing; // routing by the request's model: JSON and multipart bodies, aliases
    mod model_state; // each listed model's backend and state; load/unload refused: not on demand, unknown, cross-origin, no token
    mod on_demand_proxy; // start_timeout, swap groups, idle connections to on-demand servers
    mod page; // GET / for a browser: the page, its files, its headers, its origin; text and JSON as before
    mod parse_errors; // requests hyper refuses still get OpenAI-shaped JSON on the wire
    mod pool; // plain-HTTP backends: origin-form requests, keep-alive reuse
    mod pools; // backends with several servers: least in flight, back-off, health checks
    mod queues; // a backend's max_concurrent: clients take turns, a gone client leaves the queue, 503 backend_busy after queue_timeout
    mod responses; // the OpenAI SDK on the Responses API: typed events as sent; follow-ups to the pool server that made the response
    mod routing; // each route reaches its backend with the request and response intact
    pub mod sdk; // the official OpenAI Python SDK through the proxy
    mod secrets; // cookies, vendor key headers and key query parameters by backend policy
    mod streaming; // bodies stream both ways, nothing held in memory
    mod two_tiers; // an edge proxy in front of node proxies: routing by model, one request id, headers, keys, a node stopped under load
    mod two_tiers_streams; // through edge and node: a 1 GiB upload, SSE as generated, a WebSocket
    mod usage; // token usage found in answers: access line, /metrics; streams complete at their last event
    mod vendors; // other vendors' APIs by config (Anthropic's /v1/messages, x-api-key)
    mod websocket; // WebSockets through the proxy: messages, closing, keys, time-outs, swap turns
}

/// The daemon: configs, listeners, workers, signals.
mod daemon {
    pub mod config_errors; // a wrong config: exit 78, file, line:column and key, never a key
    mod files; // FIFOs, devices and huge files as config, key or tokens file refused at once
    mod h2_limits; // HTTP/2 time-outs and limits like HTTP/1.1's, max_connections_per_ip, GOAWAY on stop
    pub mod readiness; // /ready turns 503 at SIGTERM, shutdown_delay keeps accepting; watch_config reloads a ConfigMap-shaped swap
    mod shutdown; // SIGTERM: stop accepting, finish the stream in flight, exit 0
    mod socket_activation; // systemd-socket-activate, sd_notify readiness, idle exit, reload
    mod workers; // server.workers: several event loops, reload, drain, idle exit, access log
}

/// The command line and the files made from it.
mod cli {
    mod bench_smoke; // the benchmark harness behind bench/run: arguments and a smoke run
    pub mod check; // check-config and check-endpoints through the real binary
    mod check_apis; // check-endpoints of Ollama's, Anthropic's and the Responses API: a stream each, complete or not
    mod check_models; // check-endpoints and routing by model (--model NAME)
    mod clients_cmd; // client add|list|remove: the token printed once, only its hash stored, files kept byte for byte
    mod closed_stdout; // a closed stdout ends a command quietly (`... | head -1`)
    mod docs_links; // every relative link and #anchor in README.md, CONTRIBUTING.md and docs/ resolves
    mod init; // openai-proxy init: the example config, --force, the services that answered
    mod kubernetes; // contrib/kubernetes renders, validates offline, and its pod runs as the Deployment says: reload, drain
    mod launchd_plists; // contrib/launchd plists are what the launchd crate generates
    mod man_completions; // man pages and completions are generated; config keys agree everywhere
    mod on_demand; // enable-backend, wait-ready and the on-demand units (systemd-analyze verify)
}
