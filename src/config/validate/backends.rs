//! `[backends.NAME]`: its server or pool of servers, time-outs, TLS, health, aliases, the
//! APIs it speaks.

use std::collections::BTreeMap;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use toml::Spanned;

use super::super::diagnostics::{cut, quote, Issues};
use super::super::raw::RawBackend;
use super::super::units::{format_duration, Dur};
use super::super::{defaults, AuthPolicy, BackendConfig, HealthConfig, ServerUrl};
use super::keys::{read_ca_file, validate_auth};
use super::{check_model_name, span, valid_name, value};
use crate::routing::api::{Api, Apis};
use crate::routing::routes::normalize_path;

/// Most servers in a pool: more is a config mistake (and every server is a label value).
pub(super) const MAX_POOL: usize = 64;

// Why one piece: a `[backends.NAME]` table's keys, checked one after the other in the man
// page's order, each a few lines adding to the same issue list and the same backend.
pub(super) fn validate_backend(
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
    let servers = servers(name, &raw, issues);
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
    if let Some((list, _)) = &servers {
        if !list.iter().any(ServerUrl::is_https) {
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
    let mut timeout = |k: &str, raw: &Option<Spanned<Dur>>, default| {
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
    let websocket_idle_timeout = timeout(
        "websocket_idle_timeout",
        &raw.websocket_idle_timeout,
        defaults::WEBSOCKET_IDLE_TIMEOUT,
    );
    let queue_timeout = timeout("queue_timeout", &raw.queue_timeout, defaults::QUEUE_TIMEOUT);
    let demand = on_demand(
        &key,
        &raw,
        servers.as_ref().map(|(l, _)| l.as_slice()),
        issues,
    );
    let health = health(&key, &raw, issues);
    let max_concurrent = super::clients::positive(
        &key("max_concurrent"),
        &raw.max_concurrent,
        i64::from(u32::MAX),
        issues,
    )
    .and_then(|n| u32::try_from(n).ok());
    if let (None, Some(q)) = (max_concurrent, &raw.queue_timeout) {
        issues.add(
            key("queue_timeout"),
            Some(q.span()),
            "only applies with max_concurrent (requests beyond it wait up to this long)",
        );
    }
    let aliases = validate_aliases(&key("aliases"), raw.aliases.as_ref(), issues);
    let api = validate_api(&key("api"), raw.api.as_ref(), issues);
    let (servers, base_path) = servers?;
    if issues.count() != before {
        return None;
    }
    Some(BackendConfig {
        name: name.get_ref().clone(),
        servers,
        base_path,
        auth: auth?,
        strip_query_keys: value(&raw.strip_query_keys).unwrap_or(true),
        ca_certs,
        ca_file: value(&raw.ca_file),
        tls_insecure,
        connect_timeout,
        response_timeout,
        idle_timeout,
        websocket_idle_timeout,
        list_models: value(&raw.list_models).unwrap_or(!demand.on),
        // Filled in from the routes when not written (see `validate`).
        api,
        on_demand: demand.on,
        start_timeout: demand.start_timeout,
        swap_group: demand.swap_group,
        max_concurrent,
        queue_timeout,
        aliases,
        health,
    })
}

/// `on_demand`, `start_timeout` and `swap_group`.
struct OnDemand {
    on: bool,
    start_timeout: Option<Duration>,
    swap_group: Option<String>,
}

/// A backend's `on_demand`, `start_timeout` and `swap_group`.
// Why one piece: the three keys depend on one another and on the servers, so they are
// checked together and each message can name the key it conflicts with.
fn on_demand(
    key: &dyn Fn(&str) -> String,
    raw: &RawBackend,
    servers: Option<&[ServerUrl]>,
    issues: &mut Issues<'_>,
) -> OnDemand {
    let start_timeout = value(&raw.start_timeout).map(|d| d.0);
    if start_timeout.is_some_and(|d| d.is_zero()) {
        issues.add(
            key("start_timeout"),
            span(&raw.start_timeout),
            "must be greater than zero (leave it out for no wait)",
        );
    }
    let swap_group = value(&raw.swap_group);
    if let Some(g) = &raw.swap_group {
        if !valid_name(g.get_ref()) {
            issues.add(
                key("swap_group"),
                Some(g.span()),
                format!(
                    "{}: swap group names may use only letters, digits, '-' and '_' (at most 64)",
                    quote(g.get_ref())
                ),
            );
        }
    }
    let implied = [
        ("start_timeout", raw.start_timeout.is_some()),
        ("swap_group", swap_group.is_some()),
    ];
    let on = match &raw.on_demand {
        Some(flag) if !*flag.get_ref() => {
            if let Some((k, _)) = implied.iter().find(|(_, set)| *set) {
                issues.add(
                    key("on_demand"),
                    Some(flag.span()),
                    format!("cannot be false with {k}: {k} is for servers started on demand"),
                );
            }
            false
        }
        Some(_) => true,
        None => implied.iter().any(|(_, set)| *set),
    };
    let first = raw
        .on_demand
        .as_ref()
        .map(|f| ("on_demand", f.span()))
        .or_else(|| {
            raw.start_timeout
                .as_ref()
                .map(|f| ("start_timeout", f.span()))
        })
        .or_else(|| raw.swap_group.as_ref().map(|f| ("swap_group", f.span())));
    if let (true, Some(list), Some((k, at))) = (on, servers, first.clone()) {
        if list.iter().any(ServerUrl::is_https) {
            issues.add(
                key(k),
                Some(at),
                "only applies to http:// backends: a server started on demand runs on this \
                 machine, behind a socket unit (see BACKENDS ON DEMAND in openai-proxy.toml(5))",
            );
        }
    }
    if raw.urls.is_some() {
        for (k, f) in [
            (
                "start_timeout",
                raw.start_timeout.as_ref().map(|f| f.span()),
            ),
            ("swap_group", raw.swap_group.as_ref().map(|f| f.span())),
        ] {
            if let Some(at) = f {
                issues.add(
                    key(k),
                    Some(at),
                    "applies to a backend with one server (url), not to a pool (urls)",
                );
            }
        }
    }
    if let (true, Some(path)) = (on, &raw.health_path) {
        issues.add(
            key("health_path"),
            Some(path.span()),
            "cannot be set on a backend started on demand: its checks would start the server \
             and keep it from ever being idle",
        );
    }
    if let (Some(flag), Some(_)) = (&raw.list_models, &swap_group) {
        if *flag.get_ref() {
            issues.add(
                key("list_models"),
                Some(flag.span()),
                "cannot be true in a swap group: asking every member for its models would \
                 start them all, one after the other",
            );
        }
    }
    OnDemand {
        on,
        start_timeout,
        swap_group,
    }
}

/// `url`, or the pool of `urls` (exactly one of them), and the base path they share.
// Why one piece: which of `url` and `urls` was given, each URL, and the base path they must
// share are checked over the same list, a few lines each.
fn servers(
    name: &Spanned<String>,
    raw: &RawBackend,
    issues: &mut Issues<'_>,
) -> Option<(Vec<ServerUrl>, String)> {
    let key = |k: &str| format!("backends.{}.{k}", cut(name.get_ref()));
    let list: Vec<(&Spanned<String>, String)> = match (&raw.url, &raw.urls) {
        (Some(_), Some(urls)) => {
            issues.add(
                key("urls"),
                Some(urls.span()),
                "set url (one server) or urls (a pool), not both",
            );
            return None;
        }
        (None, None) => {
            issues.add(
                key("url"),
                Some(name.span()),
                "missing: every backend needs url = \"http://HOST:PORT\" or \"https://...\" \
                 (or urls = [...] for a pool of servers)",
            );
            return None;
        }
        (Some(url), None) => vec![(url, key("url"))],
        (None, Some(urls)) => {
            if urls.get_ref().is_empty() || urls.get_ref().len() > MAX_POOL {
                issues.add(
                    key("urls"),
                    Some(urls.span()),
                    format!("must list from 1 to {MAX_POOL} URLs, e.g. [\"http://gpu1:11434\", \"http://gpu2:11434\"]"),
                );
                return None;
            }
            let at = |i: usize| key(&format!("urls[{i}]"));
            urls.get_ref()
                .iter()
                .enumerate()
                .map(|(i, u)| (u, at(i)))
                .collect()
        }
    };
    let mut servers: Vec<ServerUrl> = Vec::with_capacity(list.len());
    let mut base: Option<String> = None;
    let mut ok = true;
    for (url, k) in list {
        let (scheme, authority, path) = match parse_backend_url(url.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                issues.add(k, Some(url.span()), e);
                ok = false;
                continue;
            }
        };
        let server = ServerUrl {
            url: format!("{scheme}://{authority}{path}"),
            scheme,
            authority,
        };
        if servers.iter().any(|s| s.url == server.url) {
            issues.add(
                k,
                Some(url.span()),
                format!("{} is listed twice", quote(url.get_ref())),
            );
            ok = false;
            continue;
        }
        match &base {
            Some(b) if *b != path => {
                issues.add(
                    k,
                    Some(url.span()),
                    format!(
                        "the servers of a pool serve the same API: every URL needs the same \
                         base path ({} here, {} in the first)",
                        quote(&path),
                        quote(b)
                    ),
                );
                ok = false;
            }
            _ => base = Some(path),
        }
        servers.push(server);
    }
    ok.then(|| (servers, base.unwrap_or_default()))
}

/// Shortest interval between active checks.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// `health_path`, `health_interval`, `health_backoff`, `health_backoff_max`.
fn health(key: &dyn Fn(&str) -> String, raw: &RawBackend, issues: &mut Issues<'_>) -> HealthConfig {
    let path = raw.health_path.as_ref().and_then(|p| {
        let text = p.get_ref();
        let fine = text.starts_with('/')
            && http::uri::PathAndQuery::try_from(text.as_str()).is_ok()
            && !text.contains('#');
        if fine {
            Some(text.clone())
        } else {
            issues.add(
                key("health_path"),
                Some(p.span()),
                format!(
                    "{} is not a path: write e.g. \"/api/version\" (Ollama) or \"/health\"",
                    quote(text)
                ),
            );
            None
        }
    });
    let interval = value(&raw.health_interval).map_or(defaults::HEALTH_INTERVAL, |d| d.0);
    if interval < MIN_HEALTH_INTERVAL {
        issues.add(
            key("health_interval"),
            span(&raw.health_interval),
            "must be at least 100ms",
        );
    }
    let backoff = value(&raw.health_backoff).map_or(defaults::HEALTH_BACKOFF, |d| d.0);
    if backoff.is_zero() {
        issues.add(
            key("health_backoff"),
            span(&raw.health_backoff),
            "must be greater than zero",
        );
    }
    let backoff_max = value(&raw.health_backoff_max).map_or(defaults::HEALTH_BACKOFF_MAX, |d| d.0);
    if backoff_max < backoff {
        issues.add(
            key("health_backoff_max"),
            span(&raw.health_backoff_max).or_else(|| span(&raw.health_backoff)),
            format!(
                "must be at least health_backoff ({})",
                format_duration(backoff)
            ),
        );
    }
    HealthConfig {
        path,
        interval,
        backoff,
        backoff_max,
    }
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

/// `api = ["openai", "ollama", "anthropic"]`: one or more, each once. Empty when not written.
fn validate_api(
    key: &str,
    raw: Option<&Spanned<Vec<Spanned<String>>>>,
    issues: &mut Issues<'_>,
) -> Apis {
    let mut set = Apis::default();
    let Some(list) = raw else {
        return set;
    };
    if list.get_ref().is_empty() {
        issues.add(
            key,
            Some(list.span()),
            "lists no API: write one or more of \"openai\", \"ollama\", \"anthropic\"",
        );
    }
    for name in list.get_ref() {
        match Api::parse(name.get_ref()) {
            Some(api) if set.contains(api) => {
                issues.add(key, Some(name.span()), format!("{api} is listed twice"));
            }
            Some(api) => set.insert(api),
            None => issues.add(
                key,
                Some(name.span()),
                format!(
                    "unknown API {}: write \"openai\", \"ollama\" or \"anthropic\"",
                    quote(name.get_ref())
                ),
            ),
        }
    }
    set
}
