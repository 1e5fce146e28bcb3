//! `[server]`, `[log]` and `[metrics]`.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::super::browsers::{HostRule, OriginRule};
use super::super::diagnostics::{quote, Issues};
use super::super::raw::{RawLog, RawMetrics, RawServer, RawUsage, RawWorkers};
use super::super::units::format_size;
use super::super::{
    defaults, ListenAddr, LogConfig, LogTarget, MetricsConfig, ServerConfig, UsageConfig,
    WorkerCount,
};
use super::keys::{read_tokens, tls_files};
use super::{span, value, NOT_SECRETS};
use crate::config::tokens::ClientTokens;

/// Bounds of `server.max_header_size`: below 1 KiB ordinary requests would not fit; above
/// 256 KiB hyper's own read buffer would end the header block first.
const MIN_HEADER_SIZE: u64 = 1 << 10;
const MAX_HEADER_SIZE: u64 = 256 << 10;

// Why one piece: the `[server]` table's keys, checked one after the other in the man page's
// order, each a few lines adding to the same issue list; split, every part would take all of
// them.
pub(super) fn validate_server(raw: RawServer, issues: &mut Issues<'_>) -> ServerConfig {
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
        None | Some(RawWorkers::Auto) => WorkerCount::Auto,
        Some(RawWorkers::Count(n)) => match usize::try_from(n) {
            Ok(n) if (1..=WorkerCount::MAX).contains(&n) => WorkerCount::Count(n),
            _ => {
                issues.add(
                    "server.workers",
                    span(&raw.workers),
                    format!(
                        "must be \"auto\" or between 1 and {} (worker threads)",
                        WorkerCount::MAX
                    ),
                );
                WorkerCount::Auto
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
        shutdown_delay: shutdown_delay(&raw, issues),
        watch_config: raw.watch_config.unwrap_or(false),
        max_json_peek: max_json_peek(&raw, issues),
        tls: tls_files(&raw, issues),
        max_replay_body: max_replay_body(&raw, issues),
        max_connections_per_ip: max_connections_per_ip(&raw, issues),
        workers,
    }
}

/// Longest `server.shutdown_delay`: a load balancer takes seconds to stop sending.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(300);

fn shutdown_delay(raw: &RawServer, issues: &mut Issues<'_>) -> Duration {
    let delay = value(&raw.shutdown_delay).map_or(defaults::SHUTDOWN_DELAY, |d| d.0);
    if delay > MAX_SHUTDOWN_DELAY {
        issues.add(
            "server.shutdown_delay",
            span(&raw.shutdown_delay),
            "must be at most 5m (a few seconds lets a load balancer stop sending)",
        );
        return defaults::SHUTDOWN_DELAY;
    }
    delay
}

/// Upper bound of `server.max_connections_per_ip`: more than any file limit allows.
const MAX_CONNECTIONS_PER_IP: u32 = 1 << 20;

fn max_connections_per_ip(raw: &RawServer, issues: &mut Issues<'_>) -> u32 {
    let Some(n) = value(&raw.max_connections_per_ip) else {
        return defaults::MAX_CONNECTIONS_PER_IP;
    };
    match u32::try_from(n) {
        Ok(n) if n <= MAX_CONNECTIONS_PER_IP => n,
        _ => {
            issues.add(
                "server.max_connections_per_ip",
                span(&raw.max_connections_per_ip),
                format!(
                    "must be between 0 (no cap) and {MAX_CONNECTIONS_PER_IP} (open connections \
                     from one client address)"
                ),
            );
            defaults::MAX_CONNECTIONS_PER_IP
        }
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

/// Most of a body kept for a replay: every request in flight may hold this much.
const MAX_REPLAY_BODY: u64 = 64 << 20;

fn max_replay_body(raw: &RawServer, issues: &mut Issues<'_>) -> u64 {
    let keep = value(&raw.max_replay_body).map_or(defaults::MAX_REPLAY_BODY, |s| s.0);
    if keep > MAX_REPLAY_BODY {
        issues.add(
            "server.max_replay_body",
            span(&raw.max_replay_body),
            format!(
                "must be at most {} (every request in flight to a pool or a route with a \
                 fallback may keep this much of its body)",
                format_size(MAX_REPLAY_BODY)
            ),
        );
    }
    keep
}

pub(super) fn validate_log(raw: RawLog) -> LogConfig {
    LogConfig {
        level: raw.level.map_or(tracing::Level::INFO, Into::into),
        target: raw.target.unwrap_or(LogTarget::Auto),
        access_log: raw.access_log.unwrap_or(true),
    }
}

pub(super) fn validate_metrics(raw: &RawMetrics, issues: &mut Issues<'_>) -> MetricsConfig {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|l| match l.get_ref().parse::<ListenAddr>() {
            Ok(ListenAddr::Tcp(a)) => Some(a),
            Ok(ListenAddr::Unix(_)) => {
                issues.add(
                    "metrics.listen",
                    Some(l.span()),
                    "Prometheus scrapes over TCP: give \"IP:PORT\", e.g. \"127.0.0.1:9102\"",
                );
                None
            }
            Err(e) => {
                issues.add("metrics.listen", Some(l.span()), e);
                None
            }
        });
    MetricsConfig { listen }
}

pub(super) fn validate_usage(raw: RawUsage, issues: &mut Issues<'_>) -> UsageConfig {
    let file = raw.file.and_then(|f| {
        let span = f.span();
        let path = f.into_inner();
        if path.is_absolute() && path.file_name().is_some() {
            Some(path)
        } else {
            issues.add(
                "usage.file",
                Some(span),
                "give an absolute path to a file, e.g. \"/var/lib/openai-proxy/usage.json\" \
                 (with systemd: StateDirectory=openai-proxy)",
            );
            None
        }
    });
    UsageConfig { file }
}
