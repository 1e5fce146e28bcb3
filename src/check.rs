//! `check-config` and `check-endpoints`: tell the truth about a setup.
//!
//! `check-config` runs the code `serve` runs at start-up (`config::load`, then building every
//! backend's client), so a config it accepts is one `serve` accepts; `-v` shows what the
//! config resolves to and why that file was chosen.
//!
//! `check-endpoints` is a client of a running proxy. It sends the requests an OpenAI SDK
//! sends and passes a check only when the status is right *and* the body is well formed and of
//! the right kind: a 500, or a 200 carrying an HTML page where audio belongs, is a failure.
//! The key from `$OPENAI_API_KEY` is sent but never shown: it is replaced in every response
//! body as it arrives, every line printed goes through [`Output`], which redacts it again,
//! and credential headers are never printed at all.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::cli::CheckEndpointsArgs;
use crate::config::{self, format_duration, format_size, Config, ListenAddr, LogTarget, Origin};
use crate::proxy::Proxy;

// ---------------------------------------------------------------------------------------------
// check-config

/// Validates the config as `serve` does and prints `Configuration is valid` (with `verbose`,
/// after the resolved table). A [`config::ConfigError`] comes back inside the error, which
/// `main` prints line by line and turns into exit status 78.
pub fn check_config(flag: Option<&Path>, verbose: bool) -> anyhow::Result<()> {
    let config = config::load(flag)?;
    // `serve` also builds each backend's client (trust roots from ca_file); a config that
    // fails there must not pass here.
    Proxy::new(config.clone())?;
    let mut text = if verbose {
        describe(&config)
    } else {
        String::new()
    };
    text.push_str("Configuration is valid\n");
    // Not `print!`: it panics when stdout is closed (e.g. piped into `head`).
    let _ = io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// Why the lookup order picked this config.
fn why_chosen(origin: Origin) -> &'static str {
    match origin {
        Origin::Flag => "named with --config (or check-config PATH)",
        Origin::Env => "named by $OPENAI_PROXY_CONFIG (no --config given)",
        Origin::User => {
            "no --config, $OPENAI_PROXY_CONFIG not set, and the user config \
             ($XDG_CONFIG_HOME/openai-proxy/config.toml) exists"
        }
        Origin::System => {
            "no --config, $OPENAI_PROXY_CONFIG not set, no user config (or running as root), \
             and /etc/openai-proxy/config.toml exists"
        }
        Origin::Embedded => {
            "no --config, $OPENAI_PROXY_CONFIG not set, and no user or system config file \
             exists: the built-in default"
        }
    }
}

/// The resolved configuration, as `check-config -v` prints it.
fn describe(c: &Config) -> String {
    let mut s = String::new();
    let listen: Vec<String> = c.server.listen.iter().map(|l| l.to_string()).collect();
    let target = match c.log.target {
        LogTarget::Auto => "auto",
        LogTarget::Journald => "journald",
        LogTarget::Syslog => "syslog",
        LogTarget::Stderr => "stderr",
    };
    let _ = writeln!(s, "Config file: {}", c.source.display_name());
    let _ = writeln!(s, "  chosen because: {}", why_chosen(c.source.origin));
    let _ = writeln!(
        s,
        "Listen:      {} (unless systemd or launchd passes sockets)",
        listen.join(", ")
    );
    let _ = writeln!(
        s,
        "Server:      max_body_size {}, max_header_size {}, header_read_timeout {}, \
         shutdown_timeout {}, idle_exit {}",
        format_size(c.server.max_body_size),
        format_size(c.server.max_header_size as u64),
        format_duration(c.server.header_read_timeout),
        format_duration(c.server.shutdown_timeout),
        format_duration(c.server.idle_exit),
    );
    let tokens = &c.server.client_tokens;
    let _ = match &tokens.file {
        Some(f) if tokens.enabled() => writeln!(
            s,
            "Clients:     need one of {} tokens from {} (Authorization: Bearer)",
            tokens.len(),
            f.display()
        ),
        _ => writeln!(s, "Clients:     no token needed (no client_tokens_file)"),
    };
    let _ = writeln!(
        s,
        "Log:         level {}, target {target}, access_log {}",
        c.log.level.as_str().to_ascii_lowercase(),
        if c.log.access_log { "on" } else { "off" },
    );
    s.push_str("\nRoutes (longest matching prefix wins):\n");
    let mut rows = vec![[
        "ROUTE", "BACKEND", "URL", "REWRITE", "CONNECT", "RESPONSE", "IDLE", "AUTH",
    ]
    .map(String::from)];
    for r in &c.routes {
        let Some(b) = c.backend(&r.backend) else {
            continue;
        };
        rows.push([
            r.path.clone(),
            b.name.clone(),
            b.url.clone(),
            r.rewrite.clone().unwrap_or_else(|| "-".into()),
            format_duration(b.connect_timeout),
            format_duration(b.response_timeout),
            format_duration(b.idle_timeout),
            b.auth.to_string(),
        ]);
    }
    s.push_str(&table(&rows));
    for b in &c.backends {
        if let Some(ca) = &b.ca_file {
            let _ = writeln!(
                s,
                "Backend {}: also trusts the CA certificates in {}",
                b.name,
                ca.display()
            );
        }
        if b.tls_insecure {
            let _ = writeln!(
                s,
                "Backend {}: tls_insecure = true: its certificate is NOT verified",
                b.name
            );
        }
        if !c.routes.iter().any(|r| r.backend == b.name) {
            let _ = writeln!(s, "Backend {} ({}): no route uses it", b.name, b.url);
        }
    }
    s
}

/// Lays rows out in columns two spaces apart (the last column unpadded).
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        s.push_str("  ");
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// check-endpoints: what is checked, and where

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum CheckName {
    /// GET /health: the proxy itself answers {"status":"ok"}
    Health,
    /// GET /v1/models: a JSON list of models
    Models,
    /// POST /v1/chat/completions: one JSON answer
    Chat,
    /// POST /v1/chat/completions with "stream": true: server-sent events ending in [DONE]
    ChatStream,
    /// POST /v1/audio/speech: audio
    Speech,
    /// POST /v1/audio/transcriptions: JSON with the text
    Transcription,
}

impl CheckName {
    pub const ALL: [CheckName; 6] = [
        CheckName::Health,
        CheckName::Models,
        CheckName::Chat,
        CheckName::ChatStream,
        CheckName::Speech,
        CheckName::Transcription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Health => "health",
            CheckName::Models => "models",
            CheckName::Chat => "chat",
            CheckName::ChatStream => "chat-stream",
            CheckName::Speech => "speech",
            CheckName::Transcription => "transcription",
        }
    }
}

/// Where the proxy is: an `http://` authority and a base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    authority: Authority,
    /// Put in front of every request path: empty, or `/something` without a trailing `/` (and
    /// without the `/v1` an `OPENAI_BASE_URL` ends with, since the checks' paths carry it).
    base_path: String,
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.base_path)
    }
}

impl ProxyUrl {
    fn uri(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

/// Parses `--url` or `$OPENAI_BASE_URL`: `http://HOST:PORT[/base]`, the scheme optional, a
/// trailing `/v1` dropped.
pub fn parse_proxy_url(s: &str) -> Result<ProxyUrl, String> {
    let t = s.trim();
    if t.contains('@') {
        // Never echo the value: it may hold a password.
        return Err("credentials in the URL are not supported; set $OPENAI_API_KEY".into());
    }
    let full = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let uri: Uri = full
        .parse()
        .map_err(|e| format!("\"{t}\" is not a valid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "\"{t}\": only http:// URLs are supported (the proxy speaks plain HTTP)"
        ));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("\"{t}\" has no host"))?;
    if uri.query().is_some() {
        return Err(format!(
            "\"{t}\" has a query string; give only the base URL"
        ));
    }
    let path = uri.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .unwrap_or(path)
        .trim_end_matches('/');
    Ok(ProxyUrl {
        authority,
        base_path: path.to_string(),
    })
}

/// The proxy's URL and where it came from: `--url`, then `$OPENAI_BASE_URL`, then the
/// config's first TCP listen address (unspecified addresses reached through loopback).
fn locate_proxy(
    config_flag: Option<&Path>,
    url: Option<&ProxyUrl>,
) -> anyhow::Result<(ProxyUrl, String)> {
    if let Some(u) = url {
        return Ok((u.clone(), "--url".into()));
    }
    if let Some(v) = std::env::var_os("OPENAI_BASE_URL").filter(|v| !v.is_empty()) {
        let v = v
            .to_str()
            .ok_or_else(|| anyhow!("$OPENAI_BASE_URL is not valid UTF-8"))?;
        let u = parse_proxy_url(v).map_err(|e| {
            anyhow!("$OPENAI_BASE_URL: {e}; pass --url to check the proxy somewhere else")
        })?;
        return Ok((u, "$OPENAI_BASE_URL".into()));
    }
    let config = config::load(config_flag)?;
    let file = config.source.display_name();
    let mut addr = config
        .server
        .listen
        .iter()
        .find_map(|l| match l {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        })
        .ok_or_else(|| {
            anyhow!(
                "server.listen in {file} has no IP:PORT address to reach the proxy over HTTP; \
                 pass --url http://HOST:PORT"
            )
        })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let authority = Authority::try_from(addr.to_string())
        .with_context(|| format!("server.listen address {addr} as a URL"))?;
    Ok((
        ProxyUrl {
            authority,
            base_path: String::new(),
        },
        format!("server.listen in {file}"),
    ))
}

/// `$OPENAI_API_KEY` as a sensitive `Authorization` value, and the key itself (to redact).
fn api_key() -> anyhow::Result<Option<(HeaderValue, String)>> {
    let Some(raw) = std::env::var_os("OPENAI_API_KEY") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok_or_else(|| anyhow!("$OPENAI_API_KEY is not valid UTF-8"))?
        .trim();
    if key.is_empty() {
        return Ok(None);
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        anyhow!("$OPENAI_API_KEY contains characters that are not allowed in an HTTP header")
    })?;
    value.set_sensitive(true);
    Ok(Some((value, key.to_string())))
}

// ---------------------------------------------------------------------------------------------
// check-endpoints: running

/// What the speech check asks for, and what the transcription of it should give back.
const SPEECH_TEXT: &str = "The quick brown fox jumps over the lazy dog.";
/// Model and voice names OpenAI knows and Kokoro-FastAPI maps to its own.
const SPEECH_MODEL: &str = "tts-1";
const SPEECH_VOICE: &str = "alloy";
/// OpenAI's name; whisper.cpp ignores it.
const TRANSCRIPTION_MODEL: &str = "whisper-1";
const CHAT_PROMPT: &str = "Reply with the single word: pong";

/// The clip sent for transcription when there is no fresh speech to send, and its words.
const SAMPLE_CLIP: &[u8] = include_bytes!("../tests/fixtures/huge-manatees.mp3");
const SAMPLE_CLIP_NAME: &str = "huge-manatees.mp3";
const SAMPLE_CLIP_TEXT: &str = "Huge manatees.";

/// Audio shorter than this is not speech, whatever its header says.
const MIN_AUDIO_BYTES: usize = 1024;
/// Responses are read whole; nothing a check asks for comes near this.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Connecting to the proxy (normally on loopback) takes no longer than this.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `-v` shows at most this many characters of a body.
const BODY_EXCERPT_CHARS: usize = 1000;
/// Header names whose values are never printed.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Runs `check-endpoints`; `Ok(true)` when the exit status should be 0.
pub fn check_endpoints(
    config_flag: Option<&Path>,
    args: &CheckEndpointsArgs,
) -> anyhow::Result<bool> {
    let (url, from) = locate_proxy(config_flag, args.url.as_ref())?;
    let key = api_key()?;
    let selected: Vec<CheckName> = CheckName::ALL
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.contains(c))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(args.timeout.min(MAX_CONNECT_TIMEOUT)));
    let (auth, secret) = key.unzip();
    let checker = Checker {
        client: Client::builder(TokioExecutor::new()).build(connector),
        url,
        auth,
        timeout: args.timeout,
        out: Output {
            verbose: args.verbose,
            headers: args.headers,
            secret,
        },
    };
    checker
        .out
        .line(&format!("Checking the proxy at {} ({from})", checker.url));
    let reports = runtime.block_on(checker.run(&selected, args.chat_model.as_deref()))?;
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let passed = count(|v| matches!(v, Verdict::Pass(_)));
    let failed = count(|v| matches!(v, Verdict::Fail(_)));
    let skipped = count(|v| matches!(v, Verdict::Skip { .. }));
    checker.out.line(&format!(
        "{passed} passed, {failed} failed, {skipped} skipped"
    ));
    let excused = |v: &Verdict| match v {
        Verdict::Skip { no_route, .. } => *no_route && args.only.is_empty(),
        _ => true,
    };
    Ok(failed == 0 && reports.iter().all(|r| excused(&r.verdict)))
}

/// Everything printed goes through here, so the API key can never appear.
struct Output {
    verbose: bool,
    headers: bool,
    /// The key from `$OPENAI_API_KEY`, replaced wherever it would be printed (a backend could
    /// echo it in a body).
    secret: Option<String>,
}

impl Output {
    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.secret {
            Some(k) if text.contains(k.as_str()) => {
                Cow::Owned(text.replace(k.as_str(), "[redacted]"))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// A response body with every occurrence of the key replaced, before any of it is cut
    /// into excerpts (a cut could otherwise leave part of the key standing).
    fn redact_body(&self, body: Bytes) -> Bytes {
        let Some(key) = self.secret.as_deref().map(str::as_bytes) else {
            return body;
        };
        let find = |hay: &[u8]| hay.windows(key.len()).position(|w| w == key);
        if key.is_empty() || find(&body).is_none() {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(i) = find(rest) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(b"[redacted]");
            rest = &rest[i + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    fn line(&self, text: &str) {
        // Not `println!`, which panics when stdout is closed (e.g. piped into `head`).
        let _ = writeln!(io::stdout().lock(), "{}", self.redact(text));
    }

    fn report(&self, r: &Report) {
        let name = r.name.as_str();
        let (mark, detail) = match &r.verdict {
            Verdict::Pass(d) => ("✓", Cow::Borrowed(d.as_str())),
            Verdict::Fail(d) => ("✗", Cow::Borrowed(d.as_str())),
            Verdict::Skip { reason, .. } => ("-", Cow::Owned(format!("skipped: {reason}"))),
        };
        let Some(a) = &r.answer else {
            self.line(&format!("{mark} {name:<13}  {detail}"));
            return;
        };
        self.line(&format!(
            "{mark} {name:<13}  {:<10} {:>3} {:>6} ms  {detail}",
            a.backend().unwrap_or("-"),
            a.status.as_u16(),
            a.elapsed.as_millis(),
        ));
        if self.headers {
            for (k, v) in &a.headers {
                let value = if SECRET_HEADERS.contains(&k.as_str()) {
                    "[redacted]".into()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                self.line(&format!("    {k}: {value}"));
            }
        }
        if self.verbose {
            for l in body_excerpt(&a.body).lines() {
                self.line(&format!("    | {l}"));
            }
        }
    }
}

/// A body for `-v`: text cut after [`BODY_EXCERPT_CHARS`], binary as its size.
fn body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".into();
    }
    match std::str::from_utf8(body) {
        Err(_) => format!("({} of binary data)", human_size(body.len())),
        Ok(text) => match text.char_indices().nth(BODY_EXCERPT_CHARS) {
            None => text.to_string(),
            Some((cut, _)) => format!("{}\n… ({} bytes in all)", &text[..cut], body.len()),
        },
    }
}

/// A short one-line excerpt for a result line.
fn snippet(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(max) {
        None => flat.to_string(),
        Some((cut, _)) => format!("{}…", &flat[..cut]),
    }
}

fn human_size(n: usize) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// One complete exchange with the proxy.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    /// The whole body, with `$OPENAI_API_KEY` replaced wherever a backend echoed it.
    body: Bytes,
    /// From sending the request to the last byte of the body.
    elapsed: Duration,
}

impl Answer {
    /// The backend that answered, as the proxy says in `X-Backend`.
    fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON, or why it is not.
    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|_| {
            format!(
                "the body is not JSON (content type \"{}\"): {}",
                self.content_type(),
                snippet(&String::from_utf8_lossy(&self.body), 80)
            )
        })
    }

    /// The proxy's own 404 for a path no route covers (it sets no `X-Backend`).
    fn is_no_route(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && self.backend().is_none()
            && self.json().is_ok_and(|v| {
                v["error"]["code"] == "no_route" || v["error"]["code"] == "not_found"
            })
    }

    /// What an error answer says: OpenAI's `error.message`, Ollama's `error`, FastAPI's
    /// `detail`, or the start of the body.
    fn error_text(&self) -> String {
        let v = self.json().unwrap_or(Value::Null);
        let text = [&v["error"]["message"], &v["error"], &v["detail"]]
            .into_iter()
            .find_map(|m| m.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        snippet(&text, 200)
    }
}

/// The outcome of one check.
enum Verdict {
    Pass(String),
    Fail(String),
    /// The check could not run. `no_route`: because the proxy has no route for its path, a
    /// choice of the config rather than a fault.
    Skip {
        reason: String,
        no_route: bool,
    },
}

struct Report {
    name: CheckName,
    verdict: Verdict,
    /// The answer the verdict is about, when one came.
    answer: Option<Answer>,
}

impl Report {
    fn skip(name: CheckName, reason: String) -> Report {
        Report {
            name,
            verdict: Verdict::Skip {
                reason,
                no_route: false,
            },
            answer: None,
        }
    }

    fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Pass(_))
    }
}

/// A request one check sends.
struct Ask<'a> {
    method: Method,
    path: &'static str,
    accept: &'static str,
    content_type: Option<&'a str>,
    body: Bytes,
}

impl Ask<'_> {
    fn get(path: &'static str) -> Ask<'static> {
        Ask {
            method: Method::GET,
            path,
            accept: "application/json",
            content_type: None,
            body: Bytes::new(),
        }
    }

    fn post_json(path: &'static str, accept: &'static str, body: &Value) -> Ask<'static> {
        Ask {
            method: Method::POST,
            path,
            accept,
            content_type: Some("application/json"),
            body: Bytes::from(body.to_string()),
        }
    }
}

/// Why an exchange produced no answer.
enum SendError {
    /// The proxy cannot be reached at all; the run stops, as every check would fail alike.
    Connect(String),
    /// This exchange failed (time-out, connection closed mid-body, body too large).
    Failed(String),
}

/// An audio format, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AudioFormat {
    name: &'static str,
    /// For the uploaded file's name and part type: services guess the format from them.
    ext: &'static str,
    mime: &'static str,
}

const fn format(name: &'static str, ext: &'static str, mime: &'static str) -> AudioFormat {
    AudioFormat { name, ext, mime }
}

const MP3: AudioFormat = format("MP3", "mp3", "audio/mpeg");

fn audio_format(b: &[u8]) -> Option<AudioFormat> {
    let at = |i: usize, magic: &[u8]| b.get(i..i + magic.len()) == Some(magic);
    if at(0, b"ID3") {
        Some(MP3)
    } else if b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0 {
        // MPEG audio frame sync; layer bits 00 mean AAC in an ADTS frame.
        if b[1] & 0x06 == 0 {
            Some(format("AAC", "aac", "audio/aac"))
        } else {
            Some(MP3)
        }
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some(format("WAV", "wav", "audio/wav"))
    } else if at(0, b"OggS") {
        Some(format("Ogg", "ogg", "audio/ogg"))
    } else if at(0, b"fLaC") {
        Some(format("FLAC", "flac", "audio/flac"))
    } else if at(4, b"ftyp") {
        Some(format("MP4", "m4a", "audio/mp4"))
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(format("WebM", "webm", "audio/webm"))
    } else {
        None
    }
}

/// Lower-case words, punctuation dropped: what a round trip through speech should keep.
fn words(text: &str) -> Vec<String> {
    text.chars()
        .filter(|c| *c != '\'' && *c != '’')
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A `multipart/form-data` upload of `audio`, as the SDKs send it: its content type and body.
fn multipart(file_name: &str, mime: &str, audio: &[u8]) -> (String, Bytes) {
    let mut boundary = String::from("openai-proxy-check-5f0c9e2a7b");
    while audio
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let mut body = Vec::with_capacity(audio.len() + 512);
    for (name, value) in [("model", TRANSCRIPTION_MODEL), ("response_format", "json")] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{file_name}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// What `/v1/models` gave: the model ids, or why there are none to use.
type ModelList = Result<Vec<String>, String>;

/// Audio to transcribe and what it says.
struct Clip {
    audio: Bytes,
    file_name: String,
    mime: &'static str,
    text: &'static str,
    /// Where it came from, for the result line.
    origin: &'static str,
}

/// A client of the proxy with the settings of one run.
struct Checker {
    client: Client<HttpConnector, Full<Bytes>>,
    url: ProxyUrl,
    /// `Authorization: Bearer $OPENAI_API_KEY`, marked sensitive.
    auth: Option<HeaderValue>,
    /// For each exchange, from connecting to the last byte.
    timeout: Duration,
    out: Output,
}

impl Checker {
    /// Runs the selected checks in order, printing each result as it comes. Fails only when
    /// the proxy cannot be reached.
    async fn run(
        &self,
        selected: &[CheckName],
        chat_model: Option<&str>,
    ) -> anyhow::Result<Vec<Report>> {
        let mut reports = Vec::new();
        let mut models: Option<ModelList> = None;
        let mut speech: Option<Clip> = None;
        for &name in selected {
            let report = match name {
                CheckName::Health => self.health().await?,
                CheckName::Models => {
                    let (report, list) = self.models().await?;
                    models = Some(list);
                    report
                }
                CheckName::Chat | CheckName::ChatStream => {
                    let model = match (chat_model, &models) {
                        (Some(m), _) => Ok((m.to_string(), false)),
                        (None, Some(list)) => pick_model(list),
                        (None, None) => {
                            // Not selected: ask quietly, only for a model name.
                            let list = self.models().await?.1;
                            let picked = pick_model(&list);
                            models = Some(list);
                            picked
                        }
                    };
                    match model {
                        Ok((model, guessed)) => self.chat(name, &model, guessed).await?,
                        Err(reason) => Report::skip(name, reason),
                    }
                }
                CheckName::Speech => {
                    let report = self.speech().await?;
                    speech = report.answer.as_ref().filter(|_| report.passed()).map(|a| {
                        let format = audio_format(&a.body).unwrap_or(MP3);
                        Clip {
                            audio: a.body.clone(),
                            file_name: format!("speech.{}", format.ext),
                            mime: format.mime,
                            text: SPEECH_TEXT,
                            origin: "round trip of the speech check",
                        }
                    });
                    report
                }
                CheckName::Transcription => {
                    let clip = speech.take().unwrap_or_else(|| Clip {
                        audio: Bytes::from_static(SAMPLE_CLIP),
                        file_name: SAMPLE_CLIP_NAME.into(),
                        mime: MP3.mime,
                        text: SAMPLE_CLIP_TEXT,
                        origin: "built-in clip",
                    });
                    self.transcription(&clip).await?
                }
            };
            self.out.report(&report);
            reports.push(report);
        }
        Ok(reports)
    }

    /// Sends one request and reads the whole answer.
    async fn send(&self, ask: Ask<'_>) -> Result<Answer, SendError> {
        let mut req = Request::builder()
            .method(ask.method)
            .uri(self.url.uri(ask.path))
            .header(header::ACCEPT, ask.accept)
            .header(
                header::USER_AGENT,
                concat!("openai-proxy-check/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(ct) = ask.content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(ask.body))
            .map_err(|e| SendError::Failed(format!("cannot build the request: {e}")))?;
        let start = Instant::now();
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| self.request_error(&e))?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    SendError::Failed(if e.is::<LengthLimitError>() {
                        format!(
                            "the response is larger than {}",
                            human_size(MAX_RESPONSE_BYTES)
                        )
                    } else {
                        format!("the response broke off: {e}")
                    })
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: self.out.redact_body(body),
                elapsed: Duration::ZERO,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(SendError::Failed(format!(
                "no complete answer within {} (--timeout)",
                format_duration(self.timeout)
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(mut a)) => {
                a.elapsed = start.elapsed();
                Ok(a)
            }
        }
    }

    fn request_error(&self, err: &hyper_util::client::legacy::Error) -> SendError {
        let mut kind = None;
        let mut innermost = err.to_string();
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            innermost = e.to_string();
            if let Some(io) = e.downcast_ref::<io::Error>() {
                kind.get_or_insert(io.kind());
            }
            cur = e.source();
        }
        if !err.is_connect() {
            return SendError::Failed(format!("the request failed: {innermost}"));
        }
        let reason = match kind {
            Some(io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
            Some(io::ErrorKind::TimedOut) => "timed out".to_string(),
            _ => innermost,
        };
        SendError::Connect(format!(
            "cannot connect to the proxy at {}: {reason} — is it running? \
             (openai-proxy status / --url)",
            self.url
        ))
    }

    /// Sends `ask` and judges the answer: skipped when the proxy has no route, failed unless
    /// the status is 200 and `judge` accepts the body.
    async fn check(
        &self,
        name: CheckName,
        ask: Ask<'_>,
        judge: impl FnOnce(&Answer) -> Result<String, String>,
    ) -> anyhow::Result<Report> {
        let path = ask.path;
        let answer = match self.send(ask).await {
            Ok(a) => a,
            Err(SendError::Connect(msg)) => return Err(anyhow!(msg)),
            Err(SendError::Failed(msg)) => {
                return Ok(Report {
                    name,
                    verdict: Verdict::Fail(msg),
                    answer: None,
                })
            }
        };
        let verdict = if answer.is_no_route() {
            Verdict::Skip {
                reason: format!("the proxy has no route for {path}"),
                no_route: true,
            }
        } else if answer.status != StatusCode::OK {
            Verdict::Fail(format!("HTTP {}: {}", answer.status, answer.error_text()))
        } else {
            match judge(&answer) {
                Ok(detail) => Verdict::Pass(detail),
                Err(problem) => Verdict::Fail(problem),
            }
        };
        Ok(Report {
            name,
            verdict,
            answer: Some(answer),
        })
    }

    async fn health(&self) -> anyhow::Result<Report> {
        self.check(CheckName::Health, Ask::get("/health"), |a| {
            match a.json()?["status"].as_str() {
                Some("ok") => Ok("ok".into()),
                _ => Err(format!(
                    "expected {{\"status\":\"ok\"}}, got {}",
                    snippet(&String::from_utf8_lossy(&a.body), 80)
                )),
            }
        })
        .await
    }

    async fn models(&self) -> anyhow::Result<(Report, ModelList)> {
        let mut ids = Vec::new();
        let report = self
            .check(CheckName::Models, Ask::get("/v1/models"), |a| {
                let v = a.json()?;
                let data = v["data"]
                    .as_array()
                    .ok_or("the JSON has no \"data\" array of models")?;
                ids = data
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect();
                let mut detail = match data.len() {
                    1 => "1 model".to_string(),
                    n => format!("{n} models"),
                };
                if !ids.is_empty() {
                    let shown: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
                    let more = if ids.len() > 3 { ", …" } else { "" };
                    let _ = write!(detail, ": {}{more}", shown.join(", "));
                }
                Ok(detail)
            })
            .await?;
        let list = match &report.verdict {
            Verdict::Pass(_) => Ok(ids),
            Verdict::Fail(why) => Err(format!("/v1/models failed ({})", snippet(why, 80))),
            Verdict::Skip { reason, .. } => Err(reason.clone()),
        };
        Ok((report, list))
    }

    async fn chat(&self, name: CheckName, model: &str, guessed: bool) -> anyhow::Result<Report> {
        let stream = name == CheckName::ChatStream;
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": CHAT_PROMPT}],
        });
        if stream {
            body["stream"] = Value::Bool(true);
        }
        let ask = Ask::post_json("/v1/chat/completions", "application/json", &body);
        let mut report = self
            .check(name, ask, |a| {
                let said = if stream {
                    stream_content(a)?
                } else {
                    let v = a.json()?;
                    let content = v["choices"][0]["message"]["content"]
                        .as_str()
                        .ok_or("the JSON has no choices[0].message.content")?;
                    format!("\"{}\"", snippet(content, 60))
                };
                Ok(format!("model {model}: {said}"))
            })
            .await?;
        if let (Verdict::Fail(why), true) = (&mut report.verdict, guessed) {
            let _ = write!(
                why,
                " (model \"{model}\" is the first that /v1/models lists; name yours with \
                 --chat-model)"
            );
        }
        Ok(report)
    }

    async fn speech(&self) -> anyhow::Result<Report> {
        let body = json!({
            "model": SPEECH_MODEL,
            "input": SPEECH_TEXT,
            "voice": SPEECH_VOICE,
            "response_format": "mp3",
        });
        let ask = Ask::post_json("/v1/audio/speech", "*/*", &body);
        self.check(CheckName::Speech, ask, |a| {
            let ct = a.content_type();
            let format = audio_format(&a.body);
            let mut problems = Vec::new();
            if !ct.starts_with("audio/") {
                problems.push(format!("content type \"{ct}\" is not audio/*"));
            }
            if a.body.len() < MIN_AUDIO_BYTES {
                problems.push(format!("only {} bytes", a.body.len()));
            }
            if format.is_none() {
                problems.push(format!(
                    "no known audio signature (starts with {})",
                    snippet(
                        &String::from_utf8_lossy(&a.body[..a.body.len().min(16)]),
                        16
                    )
                ));
            }
            match format {
                Some(f) if problems.is_empty() => {
                    Ok(format!("{ct}, {}, {}", human_size(a.body.len()), f.name))
                }
                _ => Err(format!("not audio: {}", problems.join("; "))),
            }
        })
        .await
    }

    async fn transcription(&self, clip: &Clip) -> anyhow::Result<Report> {
        let (content_type, body) = multipart(&clip.file_name, clip.mime, &clip.audio);
        let ask = Ask {
            method: Method::POST,
            path: "/v1/audio/transcriptions",
            accept: "application/json",
            content_type: Some(&content_type),
            body,
        };
        self.check(CheckName::Transcription, ask, |a| {
            let v = a.json()?;
            let text = v["text"]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("the JSON has no non-empty \"text\"")?;
            let verdict = if words(text) == words(clip.text) {
                "the words match"
            } else {
                "the words differ"
            };
            Ok(format!(
                "\"{}\" ({}: {verdict})",
                snippet(text, 60),
                clip.origin
            ))
        })
        .await
    }
}

/// The model for the chat checks when none was named: the first listed. `true`: a guess.
fn pick_model(list: &ModelList) -> Result<(String, bool), String> {
    match list {
        Ok(ids) => ids.first().map(|m| (m.clone(), true)).ok_or_else(|| {
            "no model to chat with: /v1/models lists none; name one with --chat-model".into()
        }),
        Err(why) => Err(format!(
            "no model to chat with: {why}; name one with --chat-model"
        )),
    }
}

/// Reads a chat stream: every `data:` chunk JSON, then `data: [DONE]`. Returns the count and
/// the text the chunks carried.
fn stream_content(a: &Answer) -> Result<String, String> {
    let text = std::str::from_utf8(&a.body).map_err(|_| "the stream is not UTF-8 text")?;
    let mut chunks = 0usize;
    let mut done = false;
    let mut said = String::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|_| format!("chunk {} is not JSON: {}", chunks + 1, snippet(data, 80)))?;
        if !v["error"].is_null() {
            return Err(format!(
                "the stream carried an error: {}",
                snippet(&v["error"].to_string(), 120)
            ));
        }
        chunks += 1;
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            said.push_str(piece);
        }
    }
    if chunks == 0 {
        return Err(format!(
            "no \"data:\" chunks (content type \"{}\"): {}",
            a.content_type(),
            snippet(text, 80)
        ));
    }
    if !done {
        return Err(format!(
            "{chunks} chunks but no \"data: [DONE]\" at the end"
        ));
    }
    Ok(format!(
        "{chunks} chunks, [DONE], \"{}\"",
        snippet(&said, 60)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let u = parse_proxy_url("http://127.0.0.1:2020/v1/").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:2020");
        assert_eq!(u.uri("/health"), "http://127.0.0.1:2020/health");
        let u = parse_proxy_url("localhost:2020").unwrap();
        assert_eq!(u.to_string(), "http://localhost:2020");
        let u = parse_proxy_url("http://[::1]:2020/base/v1").unwrap();
        assert_eq!(u.uri("/v1/models"), "http://[::1]:2020/base/v1/models");
        assert!(parse_proxy_url("https://api.openai.com/v1")
            .unwrap_err()
            .contains("only http://"));
        let e = parse_proxy_url("http://user:secret@host").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(parse_proxy_url("http://h/?q=1").is_err());
    }

    #[test]
    fn audio_signatures() {
        assert_eq!(audio_format(SAMPLE_CLIP).map(|f| f.name), Some("MP3"));
        assert_eq!(audio_format(b"ID3\x04rest").map(|f| f.name), Some("MP3"));
        assert_eq!(
            audio_format(&[0xFF, 0xF1, 0x50]).map(|f| f.name),
            Some("AAC")
        );
        assert_eq!(
            audio_format(b"RIFF\0\0\0\0WAVEfmt ").map(|f| f.name),
            Some("WAV")
        );
        assert_eq!(audio_format(b"OggS\0").map(|f| f.name), Some("Ogg"));
        assert_eq!(audio_format(b"fLaC").map(|f| f.name), Some("FLAC"));
        assert_eq!(
            audio_format(b"\0\0\0\x20ftypM4A ").map(|f| f.name),
            Some("MP4")
        );
        assert_eq!(audio_format(b"<html>"), None);
        assert_eq!(audio_format(b"{\"error\":1}"), None);
        assert_eq!(audio_format(b""), None);
    }

    #[test]
    fn words_ignore_case_and_punctuation() {
        assert_eq!(words("Huge manatees."), ["huge", "manatees"]);
        assert_eq!(words(" huge, MANATEES!"), words(SAMPLE_CLIP_TEXT));
        assert_eq!(words("Don't stop"), ["dont", "stop"]);
        assert_ne!(words("huge manatee"), words(SAMPLE_CLIP_TEXT));
    }

    #[test]
    fn multipart_boundary_never_occurs_in_the_audio() {
        let audio = b"--openai-proxy-check-5f0c9e2a7b in the data".to_vec();
        let (ct, body) = multipart("a.mp3", "audio/mpeg", &audio);
        let boundary = ct.split("boundary=").nth(1).unwrap();
        assert_eq!(boundary, "openai-proxy-check-5f0c9e2a7bx");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n"));
        assert!(text.contains("name=\"model\"\r\n\r\nwhisper-1\r\n"));
    }

    #[test]
    fn excerpts() {
        assert_eq!(snippet("a\nb  ", 10), "a b");
        assert_eq!(snippet("abcdef", 3), "abc…");
        assert_eq!(body_excerpt(b""), "(empty body)");
        assert_eq!(body_excerpt(&[0xFF, 0xFE, 0]), "(3 B of binary data)");
        let long = "é".repeat(BODY_EXCERPT_CHARS + 5);
        assert!(body_excerpt(long.as_bytes()).ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(human_size(2048), "2.0 KiB");
    }

    #[test]
    fn the_key_is_redacted() {
        let out = Output {
            verbose: true,
            headers: true,
            secret: Some("sk-abc".into()),
        };
        assert_eq!(out.redact("Bearer sk-abc!"), "Bearer [redacted]!");
        assert_eq!(out.redact("nothing"), "nothing");
        let body = Bytes::from_static(b"{\"a\":\"sk-abc\",\"b\":\"sk-abcsk-abc\"}");
        assert_eq!(
            out.redact_body(body),
            &b"{\"a\":\"[redacted]\",\"b\":\"[redacted][redacted]\"}"[..]
        );
        let clean = Bytes::from_static(b"sk-ab c");
        assert_eq!(out.redact_body(clean.clone()), clean);
    }
}
