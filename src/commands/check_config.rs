//! `check-config`: validate a config exactly as `serve` does, without starting anything.
//!
//! It runs the code `serve` runs at start-up (`config::load`, then building every backend's
//! client), so a config it accepts is one `serve` accepts; `-v` shows what the config
//! resolves to and why that file was chosen.

use crate::routing::api::Api;
use std::fmt::Write as _;
use std::path::Path;

use super::clients::scope_and_limits;
use crate::config::{self, format_duration, format_size, BackendConfig, Config, Origin};
use crate::proxy::Proxy;

/// Validates the config as `serve` does and prints `Configuration is valid` (with `verbose`,
/// after the resolved table). A [`config::ConfigError`] comes back inside the error, which
/// `main` prints line by line and turns into exit status 78.
pub fn run(flag: Option<&Path>, verbose: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
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
    out.write_all(text.as_bytes())?;
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
    let mut s = describe_server(c);
    s.push_str(&describe_access(c));
    s.push_str(&describe_sessions_and_logs(c));
    s.push_str(&describe_routes(c));
    s.push_str(&describe_backends(c));
    s
}

/// The file, the listeners, the limits.
fn describe_server(c: &Config) -> String {
    let mut s = String::new();
    let listen: Vec<String> = c.server.listen.iter().map(|l| l.to_string()).collect();
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
         shutdown_timeout {}, shutdown_delay {}, idle_exit {}, max_json_peek {}, \
         max_replay_body {}, workers {}, max_connections_per_ip {}, watch_config {}",
        format_size(c.server.max_body_size),
        format_size(c.server.max_header_size as u64),
        format_duration(c.server.header_read_timeout),
        format_duration(c.server.shutdown_timeout),
        format_duration(c.server.shutdown_delay),
        format_duration(c.server.idle_exit),
        format_size(c.server.max_json_peek),
        format_size(c.server.max_replay_body),
        c.server.workers,
        match c.server.max_connections_per_ip {
            0 => "off".to_string(),
            n => n.to_string(),
        },
        if c.server.watch_config { "on" } else { "off" },
    );
    s
}

/// Who may use the proxy: client tokens, Host names, web pages, HTTPS.
fn describe_access(c: &Config) -> String {
    let mut s = String::new();
    let tokens = &c.server.client_tokens;
    let _ = match &tokens.file {
        Some(f) if tokens.enabled() => writeln!(
            s,
            "Clients:     need one of {} tokens from {} (Authorization: Bearer)",
            tokens.len(),
            f.display()
        ),
        None if tokens.enabled() => writeln!(
            s,
            "Clients:     need one of {} tokens (token_hash of [clients.NAME]; Authorization: \
             Bearer)",
            tokens.len()
        ),
        _ => writeln!(s, "Clients:     no token needed (no client_tokens_file)"),
    };
    let named = tokens.names();
    if !named.is_empty() {
        let _ = writeln!(s, "  named:     {}", named.join(", "));
    }
    // Their scope and limits, in the words of `client list` (never a token or a hash).
    for client in &c.clients {
        let _ = writeln!(s, "  {}: {}", client.name, scope_and_limits(client));
    }
    let names: Vec<String> = c
        .server
        .allowed_hosts
        .iter()
        .map(|h| h.to_string())
        .collect();
    let _ = writeln!(
        s,
        "Hosts:       localhost, *.localhost, IP addresses, this machine's name{}{} \
         (another Host gets 403)",
        if names.is_empty() { "" } else { ", " },
        names.join(", ")
    );
    let origins: Vec<String> = c
        .server
        .cors_origins
        .iter()
        .map(|o| o.to_string())
        .collect();
    let _ = if origins.is_empty() {
        writeln!(s, "Web pages:   none may use the proxy (no cors_origins)")
    } else {
        writeln!(s, "Web pages:   from {} (CORS)", origins.join(", "))
    };
    let _ = match &c.server.tls {
        Some(t) => writeln!(
            s,
            "HTTPS:       on the TCP listeners (HTTP/2 and HTTP/1.1 by ALPN), certificate {}, \
             key {}",
            t.cert_file.display(),
            t.key_file.display()
        ),
        None => writeln!(s, "HTTPS:       off: plain HTTP (no tls_cert, tls_key)"),
    };
    s
}

/// WebSockets, logs, metrics and the usage totals.
fn describe_sessions_and_logs(c: &Config) -> String {
    let mut s = String::new();
    let target = c.log.target.as_str();
    let idle: Vec<String> = c
        .backends
        .iter()
        .map(|b| format!("{} {}", b.name, format_duration(b.websocket_idle_timeout)))
        .collect();
    let _ = writeln!(
        s,
        "WebSockets:  joined to the route's backend on its 101; closed when idle for \
         (websocket_idle_timeout) {}",
        idle.join(", ")
    );
    let queues: Vec<String> = c
        .backends
        .iter()
        .filter_map(|b| {
            let n = b.max_concurrent?;
            let wait = crate::config::format_duration(b.queue_timeout);
            Some(format!("{} {n} at once (then wait up to {wait})", b.name))
        })
        .collect();
    if !queues.is_empty() {
        let _ = writeln!(s, "Queues:      {}", queues.join(", "));
    }
    let _ = writeln!(
        s,
        "Log:         level {}, target {target}, access_log {}",
        c.log.level.as_str().to_ascii_lowercase(),
        if c.log.access_log { "on" } else { "off" },
    );
    let _ = match c.metrics.listen {
        Some(a) => writeln!(
            s,
            "Metrics:     http://{a}/metrics (unless the service manager passes a socket named \
             metrics)"
        ),
        None => writeln!(
            s,
            "Metrics:     off (no metrics.listen; a socket named metrics passed by the service \
             manager turns them on)"
        ),
    };
    let _ = match &c.usage.file {
        Some(f) => writeln!(
            s,
            "Usage:       totals per model and client kept in {} (read at start)",
            f.display()
        ),
        None => writeln!(
            s,
            "Usage:       totals per model and client in memory (kept across reloads; no \
             usage.file)"
        ),
    };
    s
}

/// The routes, with what each takes and where it falls back.
fn describe_routes(c: &Config) -> String {
    let mut s = String::new();
    s.push_str(
        "\nRoutes (longest matching prefix first, then in file order; the first that takes the \
         request's model wins):\n",
    );
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
            b.url(),
            r.rewrite.clone().unwrap_or_else(|| "-".into()),
            format_duration(b.connect_timeout),
            format_duration(b.response_timeout),
            format_duration(b.idle_timeout),
            b.auth.to_string(),
        ]);
    }
    s.push_str(&table(&rows));
    for (i, r) in c.routes.iter().enumerate() {
        if let Some(models) = &r.models {
            let _ = writeln!(
                s,
                "Route {} (route[{i}]) to {} takes only the models {}",
                r.path,
                r.backend,
                models.join(", ")
            );
        }
    }
    for r in &c.routes {
        if let Some(fb) = &r.fallback {
            let _ = writeln!(
                s,
                "Route {} falls back to {fb} when {} fails before answering{}",
                r.path,
                r.backend,
                if r.fallback_on_5xx {
                    " or answers 5xx"
                } else {
                    ""
                }
            );
        }
    }
    s
}

/// The backends: pools, health checks, on-demand servers, aliases, the APIs beyond OpenAI's,
/// the model list, TLS trust.
fn describe_backends(c: &Config) -> String {
    let mut s = String::new();
    for b in &c.backends {
        let h = &b.health;
        if b.is_pool() {
            let _ = writeln!(
                s,
                "Backend {}: pool of {} servers, fewest requests in flight first; a failed \
                 server is out for {} (doubling up to {})",
                b.name,
                b.servers.len(),
                format_duration(h.backoff),
                format_duration(h.backoff_max)
            );
        }
        if let Some(p) = &h.path {
            let _ = writeln!(
                s,
                "Backend {}: health check GET {p} every {}",
                b.name,
                format_duration(h.interval)
            );
        }
        if b.on_demand {
            let _ = writeln!(s, "{}", on_demand(b));
        }
        for (from, to) in &b.aliases {
            let _ = writeln!(s, "Backend {}: alias {from} -> {to}", b.name);
        }
        if b.api != [Api::OpenAi].into_iter().collect() {
            let _ = writeln!(s, "Backend {}: client APIs {}", b.name, b.api);
        }
    }
    s.push_str(&model_list(c));
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
            let _ = writeln!(s, "Backend {} ({}): no route uses it", b.name, b.url());
        }
    }
    s
}

/// How `GET /v1/models` is answered.
fn model_list(c: &Config) -> String {
    // In the order of their first route, as the list is merged.
    let mut listed: Vec<&str> = Vec::new();
    for r in &c.routes {
        let listing = c.backend(&r.backend).is_some_and(|b| b.list_models);
        if listing && !listed.contains(&r.backend.as_str()) {
            listed.push(&r.backend);
        }
    }
    let how = if c.routes_by_model() {
        format!("merges the lists of {}", listed.join(", "))
    } else {
        "goes by path like any request (no route lists models, no backend has aliases)".to_string()
    };
    format!("Model list:  GET /v1/models {how}\n")
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

/// What the proxy does for a backend started on demand, in one line.
fn on_demand(b: &BackendConfig) -> String {
    let mut line = format!(
        "Backend {}: started on demand (idle connections closed after 1 to 2 s)",
        b.name
    );
    if let Some(t) = b.start_timeout {
        let _ = write!(line, "; waits up to {} for it to start", format_duration(t));
    }
    if let Some(g) = &b.swap_group {
        let _ = write!(
            line,
            "; takes turns in swap group {g} (waiting up to {})",
            format_duration(b.start_wait())
        );
    }
    line
}
