//! Configuration: where it is found, how it is parsed, and what makes it valid.
//!
//! The TOML is first deserialized into `Raw*` structs that mirror the file one to one
//! (`deny_unknown_fields`, so a typo is an error, not a silently ignored key). Those are then
//! checked and turned into the validated [`Config`]. Every problem, whether found by the TOML
//! parser or by validation, is reported as a [`ConfigIssue`] with the file, the line and
//! column, and the dotted key it concerns; validation collects all of them rather than
//! stopping at the first. Secrets read here (API keys) are held as [`Secret`], which never
//! prints its value.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::router::normalize_path;

/// The commented example config, which is also what runs when no config file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/openai-proxy.toml");

/// The system-wide config file.
pub const SYSTEM_PATH: &str = "/etc/openai-proxy/config.toml";

/// Environment variable naming a config file (second in the lookup order).
pub const CONFIG_ENV: &str = "OPENAI_PROXY_CONFIG";

// ---------------------------------------------------------------------------------------------
// Lookup

/// Why a particular config was chosen; `check-config -v` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--config PATH` on the command line.
    Flag,
    /// `$OPENAI_PROXY_CONFIG`.
    Env,
    /// `$XDG_CONFIG_HOME/openai-proxy/config.toml` (or `~/.config/...`), for non-root users.
    User,
    /// `/etc/openai-proxy/config.toml`.
    System,
    /// No file found: the example config compiled into the binary.
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "--config",
            Origin::Env => "$OPENAI_PROXY_CONFIG",
            Origin::User => "user config ($XDG_CONFIG_HOME)",
            Origin::System => "system config",
            Origin::Embedded => "no config file found; embedded default",
        })
    }
}

/// Where the config came from: a file, or the embedded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub origin: Origin,
}

impl Source {
    /// How the file is named in messages.
    pub fn display_name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<embedded default>".to_string(),
        }
    }
}

/// Finds the config by the documented lookup order: `--config PATH`, `$OPENAI_PROXY_CONFIG`,
/// the user's `$XDG_CONFIG_HOME/openai-proxy/config.toml` (when not running as root),
/// `/etc/openai-proxy/config.toml`, then the embedded default. An explicitly named file
/// (flag or environment) must exist; the others are used only when present.
pub fn locate(flag: Option<&Path>) -> Source {
    if let Some(p) = flag {
        return Source {
            path: Some(p.to_path_buf()),
            origin: Origin::Flag,
        };
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Source {
            path: Some(PathBuf::from(p)),
            origin: Origin::Env,
        };
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if let Some(p) = user_config_path().filter(|p| p.is_file()) {
            return Source {
                path: Some(p),
                origin: Origin::User,
            };
        }
    }
    let system = PathBuf::from(SYSTEM_PATH);
    if system.is_file() {
        return Source {
            path: Some(system),
            origin: Origin::System,
        };
    }
    Source {
        path: None,
        origin: Origin::Embedded,
    }
}

fn user_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("openai-proxy").join("config.toml"))
}

/// Locates, reads, parses and validates the config.
pub fn load(flag: Option<&Path>) -> Result<Config, ConfigError> {
    let source = locate(flag);
    match &source.path {
        None => Config::parse(EMBEDDED_DEFAULT, source),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, source),
            Err(e) => Err(ConfigError {
                file: source.display_name(),
                issues: vec![ConfigIssue {
                    position: None,
                    key: String::new(),
                    message: format!("cannot read config file ({}): {e}", source.origin),
                }],
            }),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// 1-based line and column, when the problem can be pinned to a place in the file.
    pub position: Option<(usize, usize)>,
    /// Dotted key, e.g. `backends.ollama.url` or `route[2].backend`; empty for the file itself.
    pub key: String,
    pub message: String,
}

/// Everything wrong with one config file. Displays one line per problem:
/// `FILE:LINE:COL: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&self.file)?;
            if let Some((line, col)) = issue.position {
                write!(f, ":{line}:{col}")?;
            }
            if !issue.key.is_empty() {
                write!(f, ": {}", issue.key)?;
            }
            write!(f, ": {}", issue.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A key path inside the document: `["backends", "ollama", "url"]`, `["route", 2, "backend"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The parsed document with spans, used only to turn key paths into positions and positions
/// into key paths when reporting problems.
struct Spans<'a> {
    text: &'a str,
    root: Option<toml::Spanned<toml::de::DeTable<'a>>>,
}

type DeVal<'a> = toml::Spanned<toml::de::DeValue<'a>>;

impl<'a> Spans<'a> {
    fn new(text: &'a str) -> Self {
        Spans {
            text,
            root: toml::de::DeTable::parse(text).ok(),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
            before[nl + 1..].chars().count()
        }) + 1;
        (line, col)
    }

    /// Span of the deepest existing part of `path` (the value if present, else its parent).
    fn span_of(&self, path: &[Seg]) -> Option<std::ops::Range<usize>> {
        let root = self.root.as_ref()?;
        let mut table = root.get_ref();
        let mut best: Option<std::ops::Range<usize>> = None;
        let mut value: Option<&DeVal<'a>> = None;
        for seg in path {
            let next = match (seg, value) {
                (Seg::Key(k), None) => table
                    .iter()
                    .find(|(key, _)| key.get_ref() == k)
                    .map(|(key, v)| (key.span(), v)),
                (Seg::Key(k), Some(v)) => v.get_ref().as_table().and_then(|t| {
                    t.iter()
                        .find(|(key, _)| key.get_ref() == k)
                        .map(|(key, v)| (key.span(), v))
                }),
                (Seg::Index(i), Some(v)) => v
                    .get_ref()
                    .as_array()
                    .and_then(|a| a.get(*i))
                    .map(|v| (v.span(), v)),
                (Seg::Index(_), None) => None,
            };
            let Some((key_span, v)) = next else { break };
            // A table value's span may cover a whole section; the key is the better anchor.
            best = Some(if v.get_ref().is_table() {
                key_span
            } else {
                v.span()
            });
            if let Some(t) = v.get_ref().as_table() {
                table = t;
            }
            value = Some(v);
        }
        best
    }

    /// The deepest key path whose key or value covers `offset`.
    fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut path = Vec::new();
        if let Some(root) = &self.root {
            Self::descend_table(root.get_ref(), offset, &mut path);
        }
        path
    }

    fn descend_table(table: &toml::de::DeTable<'a>, offset: usize, path: &mut Vec<Seg>) {
        for (key, value) in table.iter() {
            if key.span().contains(&offset) {
                path.push(Seg::Key(key.get_ref().to_string()));
                return;
            }
            if value.span().contains(&offset) || Self::contains_deep(value, offset) {
                path.push(Seg::Key(key.get_ref().to_string()));
                Self::descend_value(value, offset, path);
                return;
            }
        }
    }

    fn descend_value(value: &DeVal<'a>, offset: usize, path: &mut Vec<Seg>) {
        match value.get_ref() {
            toml::de::DeValue::Table(t) => Self::descend_table(t, offset, path),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    if item.span().contains(&offset) || Self::contains_deep(item, offset) {
                        path.push(Seg::Index(i));
                        Self::descend_value(item, offset, path);
                        return;
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether any key or value below `value` covers `offset` (table spans from `[headers]`
    /// do not always cover their contents).
    fn contains_deep(value: &DeVal<'a>, offset: usize) -> bool {
        match value.get_ref() {
            toml::de::DeValue::Table(t) => t.iter().any(|(k, v)| {
                k.span().contains(&offset)
                    || v.span().contains(&offset)
                    || Self::contains_deep(v, offset)
            }),
            toml::de::DeValue::Array(a) => a
                .iter()
                .any(|v| v.span().contains(&offset) || Self::contains_deep(v, offset)),
            _ => false,
        }
    }
}

/// Collects problems found during validation, each tied to a key path.
struct Issues {
    found: Vec<(Vec<Seg>, String)>,
}

impl Issues {
    fn add(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.found.push((path, message.into()));
    }

    fn into_error(self, spans: &Spans<'_>, file: &str) -> Option<ConfigError> {
        if self.found.is_empty() {
            return None;
        }
        let issues = self
            .found
            .into_iter()
            .map(|(path, message)| ConfigIssue {
                position: spans.span_of(&path).map(|s| spans.line_col(s.start)),
                key: key_string(&path),
                message,
            })
            .collect();
        Some(ConfigError {
            file: file.to_string(),
            issues,
        })
    }
}

macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}
impl From<&String> for Seg {
    fn from(s: &String) -> Self {
        Seg::Key(s.clone())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes

/// A duration written as a string: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"1d"`, or combined
/// (`"1m30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Longer durations are refused: nobody means them, and deadlines far out overflow clocks.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses the duration syntax of [`Dur`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"10s\", \"5m\" or \"250ms\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{s}\": expected a number followed by a unit (ms, s, m, h, d)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration \"{s}\": number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "" => {
                return Err(format!(
                    "invalid duration \"{s}\": missing unit; write e.g. \"{n}s\" (units: ms, s, m, h, d)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration \"{s}\": unknown unit \"{other}\" (units: ms, s, m, h, d)"
                ))
            }
        };
        total = total.saturating_add(part);
    }
    if total > MAX_DURATION {
        return Err(format!("duration \"{s}\" is too long (at most 365d)"));
    }
    Ok(total)
}

/// Formats a duration the way the config writes it (`"10s"`, `"5m"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\", \"5m\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit and quotes: write \"{v}s\" (units: ms, s, m, h, d)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size: an integer number of bytes or a string such as `"100MiB"`, `"1GiB"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// Parses the size syntax of [`Size`].
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(format!(
            "invalid size \"{s}\": expected a number and a unit such as \"100MiB\" or \"1GiB\""
        ));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("invalid size \"{s}\": number too large"))?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "K" | "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size \"{s}\": unknown unit \"{other}\" (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size \"{s}\": too large"))
}

/// Formats a size the way the config writes it (`"1GiB"`, `"100MiB"`, `"1500B"`).
pub fn format_size(n: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"100MiB\" or \"1GiB\", or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw file structure

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<String>>,
    max_body_size: Option<Size>,
    header_read_timeout: Option<Dur>,
    max_header_size: Option<Size>,
    client_tokens_file: Option<PathBuf>,
    shutdown_timeout: Option<Dur>,
    idle_exit: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    target: Option<String>,
    access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    url: Option<String>,
    forward_client_auth: Option<bool>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    api_key_credential: Option<String>,
    ca_file: Option<PathBuf>,
    tls_insecure: Option<bool>,
    connect_timeout: Option<Dur>,
    response_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Option<String>,
    backend: Option<String>,
    rewrite: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated config

/// Defaults, shared by the code and the documentation.
pub mod defaults {
    use std::time::Duration;
    pub const LISTEN: &str = "127.0.0.1:2020";
    pub const MAX_BODY_SIZE: u64 = 1 << 30;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    pub const MAX_HEADER_SIZE: u64 = 64 << 10;
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_EXIT: Duration = Duration::ZERO;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub server: ServerConfig,
    pub log: LogConfig,
    /// Sorted by name.
    pub backends: Vec<BackendConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
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
    /// How long SIGTERM waits for in-flight requests before giving up on them.
    pub shutdown_timeout: Duration,
    /// Socket-activated only: exit after this long without a connection (zero: never).
    pub idle_exit: Duration,
}

/// A place to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
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
                "invalid listen address \"{s}\": expected IP:PORT (\"127.0.0.1:2020\", \"[::1]:2020\") or \"unix:/path\""
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Auto,
    Journald,
    Syslog,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: tracing::Level,
    pub target: LogTarget,
    /// One line per request.
    pub access_log: bool,
}

/// An API key. Its `Debug` never shows the value, and the header it becomes is marked
/// sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(HeaderValue);

impl Secret {
    /// The `Authorization: Bearer ...` value for this key.
    pub fn bearer(&self) -> &HeaderValue {
        &self.0
    }

    fn from_key(key: &str) -> Result<Secret, String> {
        let key = key.trim();
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the key contains spaces or characters not allowed in an HTTP header".into(),
            );
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "the key is not a valid HTTP header value".to_string())?;
        v.set_sensitive(true);
        Ok(Secret(v))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Bounds of `server.max_header_size`: below 1 KiB ordinary requests would not fit; above
/// 256 KiB hyper's own read buffer would end the header block first.
const MIN_HEADER_SIZE: u64 = 1 << 10;
const MAX_HEADER_SIZE: u64 = 256 << 10;

/// Shortest client token accepted: shorter ones can be guessed.
pub const MIN_CLIENT_TOKEN_LEN: usize = 16;

/// The tokens in `server.client_tokens_file`, kept only as SHA-256 digests so that checking a
/// request costs one hash and a constant-time comparison per token, and the tokens themselves
/// are not held in memory. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTokens {
    digests: Vec<[u8; 32]>,
    /// The file they were read from (for messages).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTokens({} tokens)", self.digests.len())
    }
}

impl ClientTokens {
    /// Whether clients must present a token.
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Reads a tokens file: one token per line; blank lines and lines starting with `#` are
    /// ignored. Messages name the file and line, never a token.
    pub fn read(path: &Path) -> Result<ClientTokens, String> {
        let text = read_small_text(path, "client tokens file")?;
        ClientTokens::parse(&text)
            .map(|mut t| {
                t.file = Some(path.to_path_buf());
                t
            })
            .map_err(|e| format!("client tokens file {}: {e}", path.display()))
    }

    /// Parses the text of a tokens file (see [`ClientTokens::read`]).
    pub fn parse(text: &str) -> Result<ClientTokens, String> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token may contain only visible ASCII characters, no spaces",
                    i + 1
                ));
            }
            if token.len() < MIN_CLIENT_TOKEN_LEN {
                return Err(format!(
                    "line {}: the token is shorter than {MIN_CLIENT_TOKEN_LEN} characters \
                     (make one with `openssl rand -hex 32`)",
                    i + 1
                ));
            }
            digests.push(sha256(token.as_bytes()));
        }
        if digests.is_empty() {
            return Err("contains no token (one token per line)".into());
        }
        Ok(ClientTokens {
            digests,
            file: None,
        })
    }

    /// Whether `headers` carry `Authorization: Bearer TOKEN` with one of the tokens. The
    /// presented token is hashed and compared with every digest in constant time, so the time
    /// taken says nothing about how close a guess was or which token matched.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let b = value.as_bytes();
        let Some(token) = b
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| b.get(7..))
        else {
            return false;
        };
        let token = token.trim_ascii();
        if token.is_empty() {
            return false;
        }
        let presented = sha256(token);
        let mut found = false;
        for known in &self.digests {
            found |= constant_time_eq(&presented, known);
        }
        found
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The permission bits of `path` when users other than its owner and group may read it (a
/// key or token file should be private to the service).
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o004 != 0).then_some(mode)
}

/// Where an injected key came from (for messages; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
    Credential(String, PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(v) => write!(f, "env ${v}"),
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Credential(n, p) => write!(f, "credential {n} ({})", p.display()),
        }
    }
}

/// What happens to the client's credentials on the way to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Remove `Authorization`, `api-key`, `x-api-key`, `OpenAI-Organization`, `OpenAI-Project`.
    Strip,
    /// Pass the client's credentials through unchanged.
    Forward,
    /// Remove the client's credentials and send this key as `Authorization: Bearer`.
    Inject { key: Secret, source: KeySource },
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthPolicy::Strip => f.write_str("strip"),
            AuthPolicy::Forward => f.write_str("forward"),
            AuthPolicy::Inject { source, .. } => write!(f, "inject from {source}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    /// The URL as written (without a trailing `/`), for messages and the status page.
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prefixed to every forwarded path; empty or `/something` without a trailing `/`.
    pub base_path: String,
    pub auth: AuthPolicy,
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
}

impl BackendConfig {
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Normalized path prefix, matched on whole segments.
    pub path: String,
    pub backend: String,
    /// Replaces the matched prefix when forwarding.
    pub rewrite: Option<String>,
}

impl Config {
    /// Parses and validates config text. `source` names the file in messages.
    pub fn parse(text: &str, source: Source) -> Result<Config, ConfigError> {
        let file = source.display_name();
        let spans = Spans::new(text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (position, key) = match e.span() {
                Some(span) => (
                    Some(spans.line_col(span.start)),
                    key_string(&spans.path_at(span.start)),
                ),
                None => (None, String::new()),
            };
            ConfigError {
                file: file.clone(),
                issues: vec![ConfigIssue {
                    position,
                    key,
                    message: e.message().trim_end().to_string(),
                }],
            }
        })?;
        let mut issues = Issues { found: Vec::new() };
        let config = validate(raw, source, &mut issues);
        match issues.into_error(&spans, &file) {
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

    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

fn validate(raw: RawConfig, source: Source, issues: &mut Issues) -> Config {
    let server = validate_server(raw.server, issues);
    let log = validate_log(raw.log, issues);
    let mut backends = Vec::new();
    for (name, b) in raw.backends {
        if let Some(b) = validate_backend(&name, b, issues) {
            backends.push(b);
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        if let Some(r) = validate_route(i, r, &names, &mut seen, issues) {
            routes.push(r);
        }
    }
    if routes.is_empty() && issues.found.is_empty() {
        issues.add(
            path!["route"],
            "no [[route]] is defined, so every request would get 404; add at least one \
             [[route]] with path and backend",
        );
    }
    Config {
        source,
        server,
        log,
        backends,
        routes,
    }
}

fn validate_server(raw: RawServer, issues: &mut Issues) -> ServerConfig {
    let mut listen = Vec::new();
    match raw.listen {
        None => listen.push(ListenAddr::Tcp(
            defaults::LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 2020))),
        )),
        Some(list) => {
            if list.is_empty() {
                issues.add(
                    path!["server", "listen"],
                    "must name at least one address, e.g. [\"127.0.0.1:2020\"]",
                );
            }
            for (i, s) in list.iter().enumerate() {
                match s.parse::<ListenAddr>() {
                    Ok(a) if listen.contains(&a) => issues.add(
                        path!["server", "listen", i],
                        format!("\"{s}\" is listed twice"),
                    ),
                    Ok(a) => listen.push(a),
                    Err(e) => issues.add(path!["server", "listen", i], e),
                }
            }
        }
    }
    let max_body_size = raw.max_body_size.map_or(defaults::MAX_BODY_SIZE, |s| s.0);
    if max_body_size == 0 {
        issues.add(
            path!["server", "max_body_size"],
            "must be greater than zero",
        );
    }
    let header_read_timeout = raw
        .header_read_timeout
        .map_or(defaults::HEADER_READ_TIMEOUT, |d| d.0);
    if header_read_timeout.is_zero() {
        issues.add(
            path!["server", "header_read_timeout"],
            "must be greater than zero (it guards against clients that never finish their headers)",
        );
    }
    let max_header_size = raw
        .max_header_size
        .map_or(defaults::MAX_HEADER_SIZE, |s| s.0);
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&max_header_size) {
        issues.add(
            path!["server", "max_header_size"],
            format!(
                "must be between {} and {} (the request line and all headers together)",
                format_size(MIN_HEADER_SIZE),
                format_size(MAX_HEADER_SIZE)
            ),
        );
    }
    let client_tokens = match &raw.client_tokens_file {
        None => ClientTokens::default(),
        Some(path) => match ClientTokens::read(path) {
            Ok(t) => t,
            Err(e) => {
                issues.add(path!["server", "client_tokens_file"], e);
                ClientTokens::default()
            }
        },
    };
    ServerConfig {
        listen,
        max_body_size,
        header_read_timeout,
        max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
        client_tokens,
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
        idle_exit: raw.idle_exit.map_or(defaults::IDLE_EXIT, |d| d.0),
    }
}

fn validate_log(raw: RawLog, issues: &mut Issues) -> LogConfig {
    let level = match raw.level.as_deref().unwrap_or("info") {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            issues.add(
                path!["log", "level"],
                format!("unknown level \"{other}\" (error, warn, info, debug, trace)"),
            );
            tracing::Level::INFO
        }
    };
    let target = match raw.target.as_deref().unwrap_or("auto") {
        "auto" => LogTarget::Auto,
        "journald" => LogTarget::Journald,
        "syslog" => LogTarget::Syslog,
        "stderr" => LogTarget::Stderr,
        other => {
            issues.add(
                path!["log", "target"],
                format!("unknown target \"{other}\" (auto, journald, syslog, stderr)"),
            );
            LogTarget::Auto
        }
    };
    LogConfig {
        level,
        target,
        access_log: raw.access_log.unwrap_or(true),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_backend(name: &str, raw: RawBackend, issues: &mut Issues) -> Option<BackendConfig> {
    let before = issues.found.len();
    if !valid_name(name) {
        issues.add(
            path!["backends", name],
            "backend names may use only letters, digits, '-' and '_' (at most 64)",
        );
    }
    let parsed = match &raw.url {
        None => {
            issues.add(
                path!["backends", name, "url"],
                "missing: every backend needs url = \"http://HOST:PORT\" or \"https://...\"",
            );
            None
        }
        Some(url) => match parse_backend_url(url) {
            Ok(p) => Some(p),
            Err(e) => {
                issues.add(path!["backends", name, "url"], e);
                None
            }
        },
    };
    let auth = validate_auth(name, &raw, issues);
    let mut ca_certs = Vec::new();
    if let Some(path) = &raw.ca_file {
        match read_ca_file(path) {
            Ok(c) => ca_certs = c,
            Err(e) => issues.add(path!["backends", name, "ca_file"], e),
        }
    }
    let tls_insecure = raw.tls_insecure.unwrap_or(false);
    if let Some((scheme, _, _)) = &parsed {
        if *scheme != Scheme::HTTPS {
            if raw.ca_file.is_some() {
                issues.add(
                    path!["backends", name, "ca_file"],
                    "only applies to https:// backends",
                );
            }
            if tls_insecure {
                issues.add(
                    path!["backends", name, "tls_insecure"],
                    "only applies to https:// backends",
                );
            }
        }
    }
    let connect_timeout = raw
        .connect_timeout
        .map_or(defaults::CONNECT_TIMEOUT, |d| d.0);
    let response_timeout = raw
        .response_timeout
        .map_or(defaults::RESPONSE_TIMEOUT, |d| d.0);
    let idle_timeout = raw.idle_timeout.map_or(defaults::IDLE_TIMEOUT, |d| d.0);
    for (key, d) in [
        ("connect_timeout", connect_timeout),
        ("response_timeout", response_timeout),
        ("idle_timeout", idle_timeout),
    ] {
        if d.is_zero() {
            issues.add(path!["backends", name, key], "must be greater than zero");
        }
    }
    let (scheme, authority, base_path) = parsed?;
    if issues.found.len() != before {
        return None;
    }
    let url = format!("{scheme}://{authority}{base_path}");
    Some(BackendConfig {
        name: name.to_string(),
        url,
        scheme,
        authority,
        base_path,
        auth: auth?,
        ca_certs,
        ca_file: raw.ca_file,
        tls_insecure,
        connect_timeout,
        response_timeout,
        idle_timeout,
    })
}

fn parse_backend_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("\"{url}\" is not a valid URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(other) => {
            return Err(format!(
                "unsupported scheme \"{other}\" in \"{url}\": use http:// or https://"
            ))
        }
        None => {
            return Err(format!(
                "\"{url}\" has no scheme: write \"http://{url}\" or \"https://{url}\""
            ))
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("\"{url}\" has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "credentials in the URL are not allowed (they would show in logs and on the status \
             page); use api_key_file, api_key_env or api_key_credential"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "\"{url}\" has a query string; a backend URL may carry only a base path"
        ));
    }
    let path = uri.path().trim_end_matches('/');
    if !path.is_empty() && normalize_path(path).map(|p| p != path).unwrap_or(true) {
        return Err(format!(
            "the base path \"{}\" is not normalized (no '.', '..', '//' or encoded '/')",
            uri.path()
        ));
    }
    Ok((scheme, authority, path.to_string()))
}

fn validate_auth(name: &str, raw: &RawBackend, issues: &mut Issues) -> Option<AuthPolicy> {
    let given: Vec<&str> = [
        ("api_key_env", raw.api_key_env.is_some()),
        ("api_key_file", raw.api_key_file.is_some()),
        ("api_key_credential", raw.api_key_credential.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if given.len() > 1 {
        issues.add(
            path!["backends", name, given[1]],
            format!("set only one of {}", given.join(", ")),
        );
        return None;
    }
    let loaded = if let Some(var) = &raw.api_key_env {
        let key = path!["backends", name, "api_key_env"];
        match std::env::var(var) {
            Ok(v) => Secret::from_key(&v)
                .map(|k| (k, KeySource::Env(var.clone())))
                .map_err(|e| (key, format!("environment variable ${var}: {e}"))),
            Err(_) => Err((key, format!("environment variable ${var} is not set"))),
        }
    } else if let Some(file) = &raw.api_key_file {
        read_key_file(file)
            .map(|k| (k, KeySource::File(file.clone())))
            .map_err(|e| (path!["backends", name, "api_key_file"], e))
    } else if let Some(cred) = &raw.api_key_credential {
        let key = path!["backends", name, "api_key_credential"];
        if !valid_name(cred) {
            Err((
                key,
                "credential names may use only letters, digits, '-' and '_'".into(),
            ))
        } else {
            match std::env::var_os("CREDENTIALS_DIRECTORY") {
                None => Err((
                    key,
                    "$CREDENTIALS_DIRECTORY is not set (systemd sets it when the unit has \
                     LoadCredential=)"
                        .into(),
                )),
                Some(dir) => {
                    let file = PathBuf::from(dir).join(cred);
                    read_key_file(&file)
                        .map(|k| (k, KeySource::Credential(cred.clone(), file)))
                        .map_err(|e| (key, e))
                }
            }
        }
    } else {
        return Some(if raw.forward_client_auth.unwrap_or(false) {
            AuthPolicy::Forward
        } else {
            AuthPolicy::Strip
        });
    };
    match loaded {
        Ok((key, source)) => Some(AuthPolicy::Inject { key, source }),
        Err((path, msg)) => {
            issues.add(path, msg);
            None
        }
    }
}

/// Key, token and CA files are small; a larger one (or `/dev/zero`) is a mistake.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Reads a small regular file named in the config; `what` names it in messages.
fn read_small_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let fail = |e: std::io::Error| format!("cannot read {what} {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(fail)?;
    if !file.metadata().map_err(fail)?.is_file() {
        return Err(format!("{what} {} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "{what} {} is larger than {}",
            path.display(),
            format_size(MAX_SECRET_FILE)
        ));
    }
    Ok(bytes)
}

fn read_small_text(path: &Path, what: &str) -> Result<String, String> {
    String::from_utf8(read_small_file(path, what)?)
        .map_err(|_| format!("{what} {} is not UTF-8 text", path.display()))
}

fn read_key_file(path: &Path) -> Result<Secret, String> {
    let text = read_small_text(path, "key file")?;
    Secret::from_key(&text).map_err(|e| format!("key file {}: {e}", path.display()))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_small_file(path, "CA file")?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| format!("CA file {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {} contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn validate_route(
    i: usize,
    raw: RawRoute,
    backends: &[&str],
    seen: &mut HashSet<String>,
    issues: &mut Issues,
) -> Option<RouteConfig> {
    let before = issues.found.len();
    let path = match raw.path {
        None => {
            issues.add(path!["route", i], "missing path = \"/v1/...\"");
            String::new()
        }
        Some(p) => {
            match check_route_path(&p) {
                Err(e) => issues.add(path!["route", i, "path"], e),
                Ok(()) if !seen.insert(p.clone()) => issues.add(
                    path!["route", i, "path"],
                    format!("duplicate route path \"{p}\": each path may appear once"),
                ),
                Ok(()) => {}
            }
            p
        }
    };
    let backend = match raw.backend {
        None => {
            issues.add(path!["route", i], "missing backend = \"NAME\"");
            String::new()
        }
        Some(b) => {
            if !backends.contains(&b.as_str()) {
                let known = if backends.is_empty() {
                    "none is defined".to_string()
                } else {
                    format!("defined: {}", backends.join(", "))
                };
                issues.add(
                    path!["route", i, "backend"],
                    format!("no backend named \"{b}\" ({known})"),
                );
            }
            b
        }
    };
    if let Some(r) = &raw.rewrite {
        if let Err(e) = check_route_path(r) {
            issues.add(path!["route", i, "rewrite"], e);
        }
    }
    (issues.found.len() == before).then_some(RouteConfig {
        path,
        backend,
        rewrite: raw.rewrite,
    })
}

fn check_route_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("\"{p}\" must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!(
            "\"{p}\" must not end with '/' (prefixes match whole segments: \"{}\" also matches \"{p}...\")",
            p.trim_end_matches('/')
        ));
    }
    match normalize_path(p) {
        Ok(n) if n == p => {}
        _ => {
            return Err(format!(
                "\"{p}\" is not a normalized path (no '.', '..', '//', '%2F' or needless %-escapes)"
            ))
        }
    }
    if p == "/health" {
        return Err("\"/health\" is the proxy's own health check and cannot be routed".into());
    }
    if p.contains('?') || p.contains('#') {
        return Err(format!("\"{p}\" must be a path only, without '?' or '#'"));
    }
    Ok(())
}
