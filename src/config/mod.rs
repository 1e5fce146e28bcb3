//! Configuration: where it is found ([`lookup`]), the file as written ([`raw`]), what makes
//! it valid ([`validate`]), and how problems are reported ([`diagnostics`]): every problem at
//! once, each as `FILE:LINE:COL: KEY: MESSAGE`. Durations and sizes are in [`units`]; the
//! files a config names are read by [`files`], which never blocks on them.
//!
//! Secrets read here (API keys) are held as [`Secret`] ([`auth`]), which never prints its
//! value.

mod auth;
mod browsers;
pub(crate) mod clients;
pub(crate) mod defaults;
mod diagnostics;
mod files;
mod lookup;
mod raw;
pub(crate) mod tls;
pub(crate) mod tokens;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::HeaderName;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use crate::config::clients::ClientConfig;
use crate::config::tokens::ClientTokens;
use crate::routing::api::Apis;
use crate::routing::routes::{RouteSpec, Router};

pub use auth::AuthPolicy;
pub(crate) use auth::{KeySource, Secret};
pub(crate) use browsers::{HostRule, OriginRule};
pub(crate) use diagnostics::quote;
pub use diagnostics::{ConfigError, ConfigIssue};
pub(crate) use files::{readable_by_others, FileProblem};
pub use lookup::EMBEDDED_DEFAULT;
pub(crate) use lookup::{locate, user_config_path, Origin, Source, CONFIG_ENV, SYSTEM_PATH};
pub(crate) use units::{format_duration, format_size};
pub use units::{parse_duration, parse_size};
pub(crate) use validate::valid_name;

/// Largest config file read: a real one is a few kB; `/dev/zero` or a log file named by
/// mistake must not be read whole.
pub(crate) const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Locates, reads, parses and validates the config.
pub(crate) fn load(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let source = locate(flag);
    match &source.path {
        None => Config::parse(EMBEDDED_DEFAULT, source),
        Some(path) => match files::read_text(path, MAX_CONFIG_FILE) {
            Ok(text) => Config::parse(&text, source),
            Err(e) => Err(ConfigError::file(
                source.display_name(),
                format!("cannot read config file ({}): {e}", source.origin),
            )),
        },
    }
}

/// Reads a small file a tool is given (a CA file): regular, at most 1 MiB, without blocking.
pub(crate) fn read_small_file(path: &Path) -> Result<Vec<u8>, FileProblem> {
    files::read_regular(path, files::MAX_SECRET_FILE)
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from.
    pub source: Source,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[usage]`.
    pub usage: UsageConfig,
    /// Sorted by name.
    pub backends: Vec<BackendConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
    /// Every named client (`[clients.NAME]`, and the tokens file's names without a table),
    /// sorted by name.
    pub clients: Vec<ClientConfig>,
}

impl Config {
    /// Parses and validates config text. `source` names the file in messages.
    pub fn parse(text: &str, source: Source) -> Result<Config, ConfigError> {
        let file = source.display_name();
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            issues: vec![diagnostics::parse_error(text, &e)],
        })?;
        let mut issues = diagnostics::Issues::new(text);
        let config = validate::validate(raw, source, &mut issues);
        match issues.into_error(&file) {
            Some(err) => Err(err),
            None => Ok(config),
        }
    }

    /// Parses config text that is not from a file (tests, tools).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Source {
                path: Some(PathBuf::from("<string>")),
                origin: Origin::Flag,
            },
        )
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The models a route takes, for routing: its `models` patterns plus the aliases of its
    /// backend (an alias name counts as a model of that backend). `None`: every model.
    pub fn route_models(&self, route: &RouteConfig) -> Option<Vec<String>> {
        let mut models = route.models.clone()?;
        if let Some(b) = self.backend(&route.backend) {
            models.extend(b.aliases.keys().cloned());
        }
        Some(models)
    }

    /// The routing table, each route's target made by `target`; the models a route takes
    /// include its backend's aliases ([`Config::route_models`]).
    pub fn router<T>(
        &self,
        mut target: impl FnMut(&RouteConfig) -> anyhow::Result<T>,
    ) -> anyhow::Result<Router<T>> {
        let mut specs = Vec::with_capacity(self.routes.len());
        for r in &self.routes {
            specs.push(RouteSpec {
                prefix: r.path.clone(),
                rewrite: r.rewrite.clone(),
                models: self.route_models(r),
                target: target(r)?,
            });
        }
        Ok(Router::build(specs))
    }

    /// Whether requests are routed by their model anywhere: some route lists `models` or
    /// some backend has `aliases`. Then `GET /v1/models` is answered with the merged list.
    pub fn routes_by_model(&self) -> bool {
        self.routes.iter().any(|r| r.models.is_some())
            || self.backends.iter().any(|b| !b.aliases.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Addresses bound when the service manager passes no sockets.
    pub listen: Vec<ListenAddr>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_size: u64,
    /// Slowloris guard: a client must send its whole header block within this time.
    pub header_read_timeout: Duration,
    /// Largest request line plus header block; larger ones get 431 and the connection closed.
    pub max_header_size: usize,
    /// Tokens clients must present (`Authorization: Bearer TOKEN`) when the proxy is exposed;
    /// empty: no client authentication.
    pub client_tokens: ClientTokens,
    /// Names the proxy answers to besides localhost, IP addresses and the machine's name
    /// (`Host` checked against DNS rebinding).
    pub allowed_hosts: Vec<HostRule>,
    /// Web origins whose pages may use the proxy (CORS); empty: no web page may.
    pub cors_origins: Vec<OriginRule>,
    /// Headers treated as secrets on top of the built-in ones (`headers::SECRET_HEADERS`),
    /// lowercase, none of them built in.
    pub secret_headers: Vec<HeaderName>,
    /// How long SIGTERM waits for in-flight requests before giving up on them.
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long new connections are still accepted (and `/ready` answers 503)
    /// before the listeners close: a load balancer's time to stop sending.
    pub shutdown_delay: Duration,
    /// Reload when the config file (or a file it names) changes.
    pub watch_config: bool,
    /// Socket-activated only: exit after this long without a connection (zero: never).
    pub idle_exit: Duration,
    /// How much of a request body is read, at most, to find its `model` when a route needs
    /// it (a JSON body, or a multipart body up to its `model` field).
    pub max_json_peek: u64,
    /// `tls_cert` and `tls_key`: TCP listeners speak HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<TlsFiles>,
    /// Worker threads serving connections, each with its own event loop.
    pub workers: WorkerCount,
    /// How much of a request body is kept while it is in flight, so that it can be sent again
    /// to another server or to the route's fallback when the first one fails before answering.
    pub max_replay_body: u64,
    /// Connections one client address may have open at once on the TCP listeners (loopback
    /// addresses not counted); the next one is closed right after it is accepted. Zero: no
    /// cap.
    pub max_connections_per_ip: u32,
}

/// `[metrics]`: Prometheus metrics on a listener of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served when no socket named `metrics` is inherited; `None`: no
    /// metrics (unless such a socket is).
    pub listen: Option<SocketAddr>,
}

/// `[usage]`: the totals of requests and tokens per model and client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageConfig {
    /// Where they are kept across restarts (an absolute path); `None`: in memory only.
    pub file: Option<PathBuf>,
}

/// `server.workers`: how many threads serve connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerCount {
    /// One per CPU the process may run on (its affinity mask and cgroup CPU quota).
    #[default]
    Auto,
    Count(usize),
}

impl WorkerCount {
    /// Most workers accepted: more threads than this only cost memory.
    pub const MAX: usize = 1024;

    /// The number of worker threads to start.
    pub fn resolve(self) -> usize {
        match self {
            WorkerCount::Count(n) => n.clamp(1, Self::MAX),
            WorkerCount::Auto => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(Self::MAX),
        }
    }
}

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerCount::Auto => write!(f, "auto ({})", self.resolve()),
            WorkerCount::Count(n) => write!(f, "{n}"),
        }
    }
}

/// The server's certificate and key (`server.tls_cert`, `server.tls_key`), read and checked
/// to match, as the TLS settings every new connection is accepted with.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Two settings are the same when they name the same files (the files' contents may have
/// changed: a reload reads them again either way).
impl PartialEq for TlsFiles {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.key_file == other.key_file
    }
}

impl Eq for TlsFiles {}

/// A place to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// An IP address and port.
    Tcp(SocketAddr),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "\"unix:\" needs a socket path, e.g. \"unix:/run/openai-proxy.sock\"".into(),
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
            format!(
                "invalid listen address {}: expected IP:PORT (\"127.0.0.1:2020\", \"[::1]:2020\") or \"unix:/path\"",
                diagnostics::quote(s)
            )
        })
    }
}

/// `[log] target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald when stderr is connected to the journal, else stderr.
    Auto,
    Journald,
    Syslog,
    Stderr,
}

impl LogTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTarget::Auto => "auto",
            LogTarget::Journald => "journald",
            LogTarget::Syslog => "syslog",
            LogTarget::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: tracing::Level,
    pub target: LogTarget,
    /// One line per request.
    pub access_log: bool,
}

/// One server of a backend: where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The URL as written, without a trailing `/` (the base path included), for messages,
    /// the status page and the metrics' `server` label.
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
}

impl ServerUrl {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

/// How the health of a backend's servers is followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Active checks: `GET` this path (under the base path) on every server each `interval`;
    /// `None`: no active checks.
    pub path: Option<String>,
    pub interval: Duration,
    /// How long a server that refused, reset or did not accept a connection is left out at
    /// first; each failure in a row doubles it, up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: None,
            interval: defaults::HEALTH_INTERVAL,
            backoff: defaults::HEALTH_BACKOFF,
            backoff_max: defaults::HEALTH_BACKOFF_MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    /// Its servers: one (`url`), or a pool (`urls`), all with the same base path.
    pub servers: Vec<ServerUrl>,
    /// Prefixed to every forwarded path; empty or `/something` without a trailing `/`.
    pub base_path: String,
    pub auth: AuthPolicy,
    /// Remove `key`, `api-key` and `api_key` query parameters (client credentials some APIs
    /// take in the URL); applies only when the backend does not take the client's credentials.
    pub strip_query_keys: bool,
    /// Extra trust anchors for an HTTPS backend (e.g. a private CA).
    pub ca_certs: Vec<CertificateDer<'static>>,
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Opt-in, warned about at start.
    pub tls_insecure: bool,
    pub connect_timeout: Duration,
    /// Until the response headers arrive.
    pub response_timeout: Duration,
    /// Longest silence inside a body, either way.
    pub idle_timeout: Duration,
    /// Longest silence, both ways, of a WebSocket session joined through this backend.
    pub websocket_idle_timeout: Duration,
    /// Takes part in the merged `GET /v1/models`.
    pub list_models: bool,
    /// The client APIs it speaks (`api`; else those its routes' paths are of): which merged
    /// model lists it takes part in (`/v1/models`, Ollama's `/api/tags` and `/api/ps`,
    /// Anthropic's `/v1/models`).
    pub api: Apis,
    /// A server that systemd starts on demand and stops when idle (`on_demand`, or implied by
    /// `start_timeout` or `swap_group`): its idle pooled connections are closed quickly.
    pub on_demand: bool,
    /// How long a request waits for the server to come up (connections refused or reset
    /// before an answer are tried again); `None`: not at all.
    pub start_timeout: Option<Duration>,
    /// The backends whose servers never run at once (one GPU) share this name.
    pub swap_group: Option<String>,
    /// Requests it runs at once (what its server can: llama.cpp's `--parallel`); more wait
    /// in the proxy, fairly between clients, up to `queue_timeout`. `None`: no limit.
    pub max_concurrent: Option<u32>,
    pub queue_timeout: Duration,
    /// Model names clients send → the names this backend knows; the request's `model` is
    /// rewritten before forwarding.
    pub aliases: BTreeMap<String, String>,
    pub health: HealthConfig,
}

impl BackendConfig {
    /// Whether some server is reached over HTTPS.
    pub fn is_https(&self) -> bool {
        self.servers.iter().any(ServerUrl::is_https)
    }

    /// Several servers.
    pub fn is_pool(&self) -> bool {
        self.servers.len() > 1
    }

    /// Its URLs, for messages: the one URL, or the pool's, comma-separated.
    pub fn url(&self) -> String {
        let urls: Vec<&str> = self.servers.iter().map(|s| s.url.as_str()).collect();
        urls.join(", ")
    }

    /// Whether requests wait for its server: to come up, or for their turn in its swap group.
    pub fn waits(&self) -> bool {
        self.start_timeout.is_some() || self.swap_group.is_some()
    }

    /// How long a request may wait for its turn in the swap group and for the server to come
    /// up, together: `start_timeout`, else `response_timeout`.
    pub fn start_wait(&self) -> Duration {
        self.start_timeout.unwrap_or(self.response_timeout)
    }

    /// The file its key is read from (`api_key_file`, or a systemd credential's), if any.
    pub fn key_file(&self) -> Option<&Path> {
        match &self.auth {
            AuthPolicy::Inject {
                source: KeySource::File(p) | KeySource::Credential(_, p),
                ..
            } => Some(p),
            _ => None,
        }
    }

    /// Whether the client's credentials (secret headers, cookies) reach this backend.
    pub fn takes_client_credentials(&self) -> bool {
        self.auth == AuthPolicy::Forward
    }

    /// Whether key-bearing query parameters are removed on the way to this backend.
    pub fn strips_query_keys(&self) -> bool {
        self.strip_query_keys && !self.takes_client_credentials()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Normalized path prefix, matched on whole segments.
    pub path: String,
    pub backend: String,
    /// Replaces the matched prefix when forwarding.
    pub rewrite: Option<String>,
    /// Model names and `*` globs this route takes; `None`: every request on its path.
    pub models: Option<Vec<String>>,
    /// The backend that answers when `backend` fails before a byte of its response went to
    /// the client.
    pub fallback: Option<String>,
    /// A 5xx answer of `backend` counts as a failure too.
    pub fallback_on_5xx: bool,
    /// WebSocket upgrades on its path that name no model come here (else 426, when the path
    /// goes by model).
    pub websockets_without_model: bool,
}
