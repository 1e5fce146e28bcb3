//! From the file as written ([`RawConfig`]) to a [`Config`] the proxy can run: every value
//! checked, defaults filled in, key files read, every problem collected (not only the first).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::browsers::{HostRule, OriginRule};
use super::diagnostics::{cut, quote, Issues};
use super::files::{self, MAX_SECRET_FILE};
use super::raw::{RawBackend, RawConfig, RawLog, RawRoute, RawServer, RawWorkers};
use super::units::format_size;
use super::{
    defaults, AuthPolicy, BackendConfig, Config, KeySource, ListenAddr, LogConfig, LogTarget,
    RouteConfig, Secret, ServerConfig, Source, Workers,
};
use crate::router::normalize_path;
use crate::tokens::ClientTokens;

/// Bounds of `server.max_header_size`: below 1 KiB ordinary requests would not fit; above
/// 256 KiB hyper's own read buffer would end the header block first.
const MIN_HEADER_SIZE: u64 = 1 << 10;
const MAX_HEADER_SIZE: u64 = 256 << 10;

/// The span of an optional spanned value.
fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// The value of an optional spanned value.
fn value<T: Clone>(v: &Option<Spanned<T>>) -> Option<T> {
    v.as_ref().map(|s| s.get_ref().clone())
}

pub fn validate(raw: RawConfig, source: Source, issues: &mut Issues<'_>) -> Config {
    let server = validate_server(raw.server, issues);
    let log = validate_log(raw.log);
    let mut backends = Vec::new();
    for (name, b) in raw.backends {
        if let Some(b) = validate_backend(&name, b, issues) {
            backends.push(b);
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    let mut routes = Vec::new();
    let mut seen = HashMap::new();
    for (i, r) in raw.route.into_iter().enumerate() {
        if let Some(r) = validate_route(i, r, &names, &mut seen, issues) {
            routes.push(r);
        }
    }
    if routes.is_empty() && issues.count() == 0 {
        issues.add(
            "route",
            None,
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

fn validate_server(raw: RawServer, issues: &mut Issues<'_>) -> ServerConfig {
    let mut listen = Vec::new();
    match &raw.listen {
        None => listen.push(ListenAddr::Tcp(
            defaults::LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 2020))),
        )),
        Some(list) => {
            if list.get_ref().is_empty() {
                issues.add(
                    "server.listen",
                    Some(list.span()),
                    "must name at least one address, e.g. [\"127.0.0.1:2020\"]",
                );
            }
            for (i, s) in list.get_ref().iter().enumerate() {
                let key = format!("server.listen[{i}]");
                match s.get_ref().parse::<ListenAddr>() {
                    Ok(a) if listen.contains(&a) => issues.add(
                        key,
                        Some(s.span()),
                        format!("{} is listed twice", quote(s.get_ref())),
                    ),
                    Ok(a) => listen.push(a),
                    Err(e) => issues.add(key, Some(s.span()), e),
                }
            }
        }
    }
    let max_body_size = value(&raw.max_body_size).map_or(defaults::MAX_BODY_SIZE, |s| s.0);
    if max_body_size == 0 {
        issues.add(
            "server.max_body_size",
            span(&raw.max_body_size),
            "must be greater than zero",
        );
    }
    let header_read_timeout =
        value(&raw.header_read_timeout).map_or(defaults::HEADER_READ_TIMEOUT, |d| d.0);
    if header_read_timeout.is_zero() {
        issues.add(
            "server.header_read_timeout",
            span(&raw.header_read_timeout),
            "must be greater than zero (it guards against clients that never finish their headers)",
        );
    }
    let max_header_size = value(&raw.max_header_size).map_or(defaults::MAX_HEADER_SIZE, |s| s.0);
    if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&max_header_size) {
        issues.add(
            "server.max_header_size",
            span(&raw.max_header_size),
            format!(
                "must be between {} and {} (the request line and all headers together)",
                format_size(MIN_HEADER_SIZE),
                format_size(MAX_HEADER_SIZE)
            ),
        );
    }
    let client_tokens = match &raw.client_tokens_file {
        None => ClientTokens::default(),
        Some(path) => match read_tokens(path.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                issues.add("server.client_tokens_file", Some(path.span()), e);
                ClientTokens::default()
            }
        },
    };
    let workers = match value(&raw.workers) {
        None | Some(RawWorkers::Auto) => Workers::Auto,
        Some(RawWorkers::Count(n)) => match usize::try_from(n) {
            Ok(n) if (1..=Workers::MAX).contains(&n) => Workers::Count(n),
            _ => {
                issues.add(
                    "server.workers",
                    span(&raw.workers),
                    format!(
                        "must be \"auto\" or between 1 and {} (worker threads)",
                        Workers::MAX
                    ),
                );
                Workers::Auto
            }
        },
    };
    let allowed_hosts = rules::<HostRule>("server.allowed_hosts", &raw.allowed_hosts, issues);
    let cors_origins = rules::<OriginRule>("server.cors_origins", &raw.cors_origins, issues);
    let secret_headers = secret_headers(&raw.secret_headers, issues);
    ServerConfig {
        listen,
        max_body_size,
        header_read_timeout,
        max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
        client_tokens,
        allowed_hosts,
        cors_origins,
        secret_headers,
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(defaults::SHUTDOWN_TIMEOUT, |d| d.0),
        idle_exit: raw.idle_exit.map_or(defaults::IDLE_EXIT, |d| d.0),
        max_json_peek: max_json_peek(&raw, issues),
        workers,
    }
}

/// Bounds of `server.max_json_peek`: below 1 KiB a model after a short system prompt would
/// be missed; above 64 MiB one request could hold that much memory while it is read.
const MIN_JSON_PEEK: u64 = 1 << 10;
const MAX_JSON_PEEK: u64 = 64 << 20;

fn max_json_peek(raw: &RawServer, issues: &mut Issues<'_>) -> u64 {
    let peek = value(&raw.max_json_peek).map_or(defaults::MAX_JSON_PEEK, |s| s.0);
    if !(MIN_JSON_PEEK..=MAX_JSON_PEEK).contains(&peek) {
        issues.add(
            "server.max_json_peek",
            span(&raw.max_json_peek),
            format!(
                "must be between {} and {} (how much of a body is read to find its \"model\")",
                format_size(MIN_JSON_PEEK),
                format_size(MAX_JSON_PEEK)
            ),
        );
    }
    peek
}

/// A list of rules (`server.allowed_hosts`, `server.cors_origins`), each parsed with its
/// `FromStr`, whose message follows the quoted value.
fn rules<T: std::str::FromStr<Err = String>>(
    key: &str,
    raw: &Option<Vec<Spanned<String>>>,
    issues: &mut Issues<'_>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, s) in raw.iter().flatten().enumerate() {
        match s.get_ref().parse() {
            Ok(rule) => out.push(rule),
            Err(e) => issues.add(
                format!("{key}[{i}]"),
                Some(s.span()),
                format!("{}: {e}", quote(s.get_ref())),
            ),
        }
    }
    out
}

/// Headers the proxy needs to forward a request: never removed as secrets.
const NOT_SECRETS: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// `server.secret_headers`: valid header names, lowercase, each once.
fn secret_headers(
    raw: &Option<Vec<Spanned<String>>>,
    issues: &mut Issues<'_>,
) -> Vec<http::HeaderName> {
    let mut out: Vec<http::HeaderName> = Vec::new();
    for (i, s) in raw.iter().flatten().enumerate() {
        let key = format!("server.secret_headers[{i}]");
        match http::HeaderName::from_bytes(s.get_ref().trim().as_bytes()) {
            Ok(name) if NOT_SECRETS.contains(&name.as_str()) => issues.add(
                key,
                Some(s.span()),
                format!(
                    "{} cannot be a secret: the proxy needs it to forward the request",
                    quote(s.get_ref())
                ),
            ),
            Ok(name) => {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            Err(_) => issues.add(
                key,
                Some(s.span()),
                format!("{} is not a valid header name", quote(s.get_ref())),
            ),
        }
    }
    out
}

/// Reads `server.client_tokens_file`. Messages name the file and line, never a token.
fn read_tokens(path: &Path) -> Result<ClientTokens, String> {
    const WHAT: &str = "client tokens file";
    let text = files::read_text(path, MAX_SECRET_FILE).map_err(|e| e.about(WHAT, path))?;
    let mut tokens = ClientTokens::parse(&text)
        .map_err(|e| format!("{WHAT} {}: {e}", cut(&path.to_string_lossy())))?;
    tokens.file = Some(path.to_path_buf());
    Ok(tokens)
}

fn validate_log(raw: RawLog) -> LogConfig {
    LogConfig {
        level: raw.level.map_or(tracing::Level::INFO, Into::into),
        target: raw.target.unwrap_or(LogTarget::Auto),
        access_log: raw.access_log.unwrap_or(true),
    }
}

/// Whether `name` can name a backend (and a credential): letters, digits, `-` and `_`, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate_backend(
    name: &Spanned<String>,
    raw: RawBackend,
    issues: &mut Issues<'_>,
) -> Option<BackendConfig> {
    let before = issues.count();
    let key = |k: &str| format!("backends.{}.{k}", cut(name.get_ref()));
    if !valid_name(name.get_ref()) {
        issues.add(
            format!("backends.{}", cut(name.get_ref())),
            Some(name.span()),
            "backend names may use only letters, digits, '-' and '_' (at most 64)",
        );
    }
    let parsed = match &raw.url {
        None => {
            issues.add(
                key("url"),
                Some(name.span()),
                "missing: every backend needs url = \"http://HOST:PORT\" or \"https://...\"",
            );
            None
        }
        Some(url) => match parse_backend_url(url.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                issues.add(key("url"), Some(url.span()), e);
                None
            }
        },
    };
    let auth = validate_auth(name.get_ref(), &raw, issues);
    if let (Some(flag), Some(AuthPolicy::Forward)) = (&raw.strip_query_keys, &auth) {
        issues.add(
            key("strip_query_keys"),
            Some(flag.span()),
            "only applies to backends that do not take the client's credentials \
             (this one has forward_client_auth = true, so its query parameters pass unchanged)",
        );
    }
    let mut ca_certs = Vec::new();
    if let Some(path) = &raw.ca_file {
        match read_ca_file(path.get_ref()) {
            Ok(c) => ca_certs = c,
            Err(e) => issues.add(key("ca_file"), Some(path.span()), e),
        }
    }
    let tls_insecure = value(&raw.tls_insecure).unwrap_or(false);
    if let Some((scheme, _, _)) = &parsed {
        if *scheme != Scheme::HTTPS {
            if let Some(ca) = &raw.ca_file {
                issues.add(
                    key("ca_file"),
                    Some(ca.span()),
                    "only applies to https:// backends",
                );
            }
            if tls_insecure {
                issues.add(
                    key("tls_insecure"),
                    span(&raw.tls_insecure),
                    "only applies to https:// backends",
                );
            }
        }
    }
    let mut timeout = |k: &str, raw: &Option<Spanned<super::units::Dur>>, default| {
        let d = value(raw).map_or(default, |d| d.0);
        if d.is_zero() {
            issues.add(key(k), span(raw), "must be greater than zero");
        }
        d
    };
    let connect_timeout = timeout(
        "connect_timeout",
        &raw.connect_timeout,
        defaults::CONNECT_TIMEOUT,
    );
    let response_timeout = timeout(
        "response_timeout",
        &raw.response_timeout,
        defaults::RESPONSE_TIMEOUT,
    );
    let idle_timeout = timeout("idle_timeout", &raw.idle_timeout, defaults::IDLE_TIMEOUT);
    let aliases = validate_aliases(&key("aliases"), raw.aliases.as_ref(), issues);
    let (scheme, authority, base_path) = parsed?;
    if issues.count() != before {
        return None;
    }
    Some(BackendConfig {
        name: name.get_ref().clone(),
        url: format!("{scheme}://{authority}{base_path}"),
        scheme,
        authority,
        base_path,
        auth: auth?,
        strip_query_keys: value(&raw.strip_query_keys).unwrap_or(true),
        ca_certs,
        ca_file: value(&raw.ca_file),
        tls_insecure,
        connect_timeout,
        response_timeout,
        idle_timeout,
        list_models: raw.list_models.unwrap_or(true),
        aliases,
    })
}

/// Longest model name or pattern accepted (OpenAI's longest ids are under 100 characters).
const MAX_MODEL_NAME: usize = 256;

/// What is wrong with a model name or pattern, if anything.
fn check_model_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("an empty {what} matches no request"));
    }
    if name.len() > MAX_MODEL_NAME {
        return Err(format!(
            "{what} {} is longer than {MAX_MODEL_NAME} bytes",
            quote(name)
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "{what} {} contains a control character",
            quote(name)
        ));
    }
    Ok(())
}

fn validate_aliases(
    key: &str,
    raw: Option<&BTreeMap<Spanned<String>, Spanned<String>>>,
    issues: &mut Issues<'_>,
) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for (from, to) in raw.into_iter().flatten() {
        let here = format!("{key}.{}", from.get_ref());
        let problem = check_model_name(from.get_ref(), "alias name")
            .map_err(|e| (from.span(), e))
            .and_then(|()| {
                check_model_name(to.get_ref(), "model name").map_err(|e| (to.span(), e))
            });
        match problem {
            Err((at, e)) => issues.add(here, Some(at), e),
            Ok(()) if from.get_ref() == to.get_ref() => issues.add(
                here,
                Some(to.span()),
                format!("{} is an alias of itself; remove it", quote(to.get_ref())),
            ),
            Ok(()) => {
                aliases.insert(from.get_ref().clone(), to.get_ref().clone());
            }
        }
    }
    aliases
}

fn parse_backend_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    let shown = quote(url);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{shown} is not a valid URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        Some(other) => {
            return Err(format!(
                "unsupported scheme {} in {shown}: use http:// or https://",
                quote(other)
            ))
        }
        None => {
            return Err(format!(
                "{shown} has no scheme: write \"http://...\" or \"https://...\""
            ))
        }
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{shown} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "credentials in the URL are not allowed (they would show in logs and on the status \
             page); use api_key_file, api_key_env or api_key_credential"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("{shown} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "{shown} has a query string; a backend URL may carry only a base path"
        ));
    }
    let path = uri.path().trim_end_matches('/');
    if !path.is_empty() && normalize_path(path).map(|p| p != path).unwrap_or(true) {
        return Err(format!(
            "the base path {} is not normalized (no '.', '..', '//' or encoded '/')",
            quote(uri.path())
        ));
    }
    Ok((scheme, authority, path.to_string()))
}

fn validate_auth(name: &str, raw: &RawBackend, issues: &mut Issues<'_>) -> Option<AuthPolicy> {
    let key = |k: &str| format!("backends.{}.{k}", cut(name));
    let given: Vec<(&str, Option<Range<usize>>)> = [
        ("api_key_env", span(&raw.api_key_env)),
        ("api_key_file", span(&raw.api_key_file)),
        ("api_key_credential", span(&raw.api_key_credential)),
    ]
    .into_iter()
    .filter(|(_, s)| s.is_some())
    .collect();
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
        issues.add(
            key(given[1].0),
            given[1].1.clone(),
            format!("set only one of {}", names.join(", ")),
        );
        return None;
    }
    let loaded = if let Some(var) = &raw.api_key_env {
        let var_name = var.get_ref();
        match std::env::var(var_name) {
            Ok(v) => Secret::from_key(&v)
                .map(|k| (k, KeySource::Env(var_name.clone())))
                .map_err(|e| format!("environment variable ${}: {e}", cut(var_name))),
            Err(_) => Err(format!(
                "environment variable ${} is not set",
                cut(var_name)
            )),
        }
        .map_err(|e| ("api_key_env", var.span(), e))
    } else if let Some(file) = &raw.api_key_file {
        read_key_file(file.get_ref())
            .map(|k| (k, KeySource::File(file.get_ref().clone())))
            .map_err(|e| ("api_key_file", file.span(), e))
    } else if let Some(cred) = &raw.api_key_credential {
        load_credential(cred.get_ref()).map_err(|e| ("api_key_credential", cred.span(), e))
    } else {
        return Some(if raw.forward_client_auth.unwrap_or(false) {
            AuthPolicy::Forward
        } else {
            AuthPolicy::Strip
        });
    };
    match loaded {
        Ok((key, source)) => Some(AuthPolicy::Inject { key, source }),
        Err((k, span, msg)) => {
            issues.add(key(k), Some(span), msg);
            None
        }
    }
}

/// A key from systemd's `LoadCredential=` (`$CREDENTIALS_DIRECTORY/NAME`).
fn load_credential(name: &str) -> Result<(Secret, KeySource), String> {
    if !valid_name(name) {
        return Err("credential names may use only letters, digits, '-' and '_'".into());
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or(
        "$CREDENTIALS_DIRECTORY is not set (systemd sets it when the unit has LoadCredential=)",
    )?;
    let file = PathBuf::from(dir).join(name);
    let key = read_key_file(&file)?;
    Ok((key, KeySource::Credential(name.to_string(), file)))
}

fn read_key_file(path: &Path) -> Result<Secret, String> {
    const WHAT: &str = "key file";
    let text = files::read_text(path, MAX_SECRET_FILE).map_err(|e| e.about(WHAT, path))?;
    Secret::from_key(&text).map_err(|e| format!("{WHAT} {}: {e}", cut(&path.to_string_lossy())))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = files::read_regular(path, MAX_SECRET_FILE).map_err(|e| e.about("CA file", path))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let shown = cut(&path.to_string_lossy()).into_owned();
    let certs = certs.map_err(|e| format!("CA file {shown} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {shown} contains no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// Routes seen so far by path: `true` when one of them takes every model on it.
type SeenPaths = HashMap<String, bool>;

fn validate_route(
    i: usize,
    raw: Spanned<RawRoute>,
    backends: &[&str],
    seen: &mut SeenPaths,
    issues: &mut Issues<'_>,
) -> Option<RouteConfig> {
    let before = issues.count();
    let here = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("route[{i}].{k}");
    let path = match raw.path {
        None => {
            issues.add(
                format!("route[{i}]"),
                Some(here.clone()),
                "missing path = \"/v1/...\"",
            );
            String::new()
        }
        Some(p) => {
            let takes_all = raw.models.is_none();
            match check_route_path(p.get_ref()) {
                Err(e) => issues.add(key("path"), Some(p.span()), e),
                Ok(()) if seen.get(p.get_ref()) == Some(&true) => issues.add(
                    key("path"),
                    Some(p.span()),
                    format!(
                        "duplicate route path {}: an earlier route on it has no `models`, so it \
                         takes every request and this one would never be used (a path may \
                         appear again only after routes that list `models`)",
                        quote(p.get_ref())
                    ),
                ),
                Ok(()) => {
                    seen.insert(p.get_ref().clone(), takes_all);
                }
            }
            p.into_inner()
        }
    };
    let backend = match raw.backend {
        None => {
            issues.add(
                format!("route[{i}]"),
                Some(here),
                "missing backend = \"NAME\"",
            );
            String::new()
        }
        Some(b) => {
            if !backends.contains(&b.get_ref().as_str()) {
                let known = if backends.is_empty() {
                    "none is defined".to_string()
                } else {
                    format!("defined: {}", cut(&backends.join(", ")))
                };
                issues.add(
                    key("backend"),
                    Some(b.span()),
                    format!("no backend named {} ({known})", quote(b.get_ref())),
                );
            }
            b.into_inner()
        }
    };
    if let Some(r) = &raw.rewrite {
        if let Err(e) = check_route_path(r.get_ref()) {
            issues.add(key("rewrite"), Some(r.span()), e);
        }
    }
    let models = raw.models.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            issues.add(
                key("models"),
                Some(list.span()),
                "an empty list takes no request; list model names or globs such as \
                 \"llama3*\", or remove the key to take every model",
            );
        }
        let mut models = Vec::new();
        for (j, m) in list.get_ref().iter().enumerate() {
            match check_model_name(m.get_ref(), "model name") {
                Ok(()) => models.push(m.get_ref().clone()),
                Err(e) => issues.add(format!("route[{i}].models[{j}]"), Some(m.span()), e),
            }
        }
        models
    });
    (issues.count() == before).then_some(RouteConfig {
        path,
        backend,
        rewrite: value(&raw.rewrite),
        models,
    })
}

fn check_route_path(p: &str) -> Result<(), String> {
    let shown = quote(p);
    if !p.starts_with('/') {
        return Err(format!("{shown} must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(format!(
            "{shown} must not end with '/' (prefixes match whole segments: {} also matches \
             every path below it)",
            quote(p.trim_end_matches('/'))
        ));
    }
    match normalize_path(p) {
        Ok(n) if n == p => {}
        _ => {
            return Err(format!(
                "{shown} is not a normalized path (no '.', '..', '//', '%2F' or needless %-escapes)"
            ))
        }
    }
    if p == "/health" {
        return Err("\"/health\" is the proxy's own health check and cannot be routed".into());
    }
    if p.contains('?') || p.contains('#') {
        return Err(format!("{shown} must be a path only, without '?' or '#'"));
    }
    Ok(())
}
