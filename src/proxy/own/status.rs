//! The proxy's own page, `/`: the routes (made once per config) and each backend's servers
//! with their health (as they are when it is asked for). With `Accept: application/json` the
//! same as JSON, which `check-endpoints` reads to report each server.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::ResponseBody;
use crate::config::format_duration;
use crate::proxy::own::catalog::Catalog;
use crate::proxy::{Proxy, Target};
use crate::routing::routes::Router;
use crate::upstream::health::Health;

impl Proxy {
    /// `GET /`: text, or JSON when the client asks for it.
    pub(crate) async fn status(&self, request: &HeaderMap) -> Response<ResponseBody> {
        let json = request
            .get(header::ACCEPT)
            .is_some_and(|v| v.as_bytes().windows(16).any(|w| w == b"application/json"));
        let (content_type, body) = if json {
            (
                "application/json",
                Bytes::from(self.status_json().to_string()),
            )
        } else {
            let mut text = self.status_page.to_vec();
            text.extend_from_slice(self.servers_text().as_bytes());
            text.extend_from_slice(if self.lasting.metrics.is_some() {
                b"\nMetrics: GET /metrics on the metrics listener (metrics.listen, or the socket named metrics)\n"
            } else {
                b"\nMetrics: off (no [metrics] listen)\n"
            });
            let on_demand = self.on_demand.describe().await;
            if !on_demand.is_empty() {
                text.push(b'\n');
                text.extend_from_slice(on_demand.as_bytes());
            }
            ("text/plain; charset=utf-8", Bytes::from(text))
        };
        let mut res = Response::new(ResponseBody::full(body));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        *res.status_mut() = StatusCode::OK;
        res
    }

    /// Each backend's servers and their health.
    fn servers_text(&self) -> String {
        let mut s = String::from("\nServers:\n");
        for b in &self.backends {
            let h = &b.config.health;
            let checks = match &h.path {
                Some(p) => format!(
                    "health checks: GET {p} every {}",
                    format_duration(h.interval)
                ),
                None => "no health checks".to_string(),
            };
            let _ = writeln!(s, "  {} ({checks}):", b.config.name);
            for server in b.servers.iter() {
                let health = server.state.report();
                let _ = write!(s, "    {}  {}", server.url.url, health.describe());
                if b.counts_load() {
                    let _ = write!(s, ", {} in flight", server.state.in_flight());
                }
                s.push('\n');
            }
        }
        s
    }

    /// The status as JSON: version, routes, backends with their servers' health.
    pub fn status_json(&self) -> serde_json::Value {
        let routes: Vec<_> = self
            .router
            .routes()
            .iter()
            .map(|r| {
                json!({
                    "path": r.prefix,
                    "backend": r.target.backend.config.name,
                    "fallback": r.target.fallback.as_ref().map(|f| f.config.name.clone()),
                })
            })
            .collect();
        let backends: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                let servers: Vec<_> = b
                    .servers
                    .iter()
                    .map(|server| {
                        let health = server.state.report();
                        let state = match &health {
                            Health::Up => "up",
                            Health::Out { .. } => "out",
                            Health::Down { .. } => "down",
                        };
                        json!({
                            "url": server.url.url,
                            "state": state,
                            "detail": health.describe(),
                            "in_flight": server.state.in_flight(),
                        })
                    })
                    .collect();
                json!({
                    "name": b.config.name,
                    "health_path": b.config.health.path,
                    "servers": servers,
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "routes": routes,
            "backends": backends,
        })
    }
}

/// `https`: the listeners speak TLS.
// Why one piece: the `/` page's text, section after section, as it reads.
pub(crate) fn page(router: &Router<Target>, catalog: &Catalog, https: bool) -> Bytes {
    use std::fmt::Write;
    let mut s = format!(
        "openai-proxy {}\n\nPoint OpenAI clients here: OPENAI_BASE_URL={}://<this address>/v1\n\n\
         Routes (longest matching prefix first, then in file order; the first that takes the \
         request's model wins):\n",
        env!("CARGO_PKG_VERSION"),
        if https { "https" } else { "http" }
    );
    let width = router
        .routes()
        .iter()
        .map(|r| r.prefix.len())
        .max()
        .unwrap_or(0);
    for r in router.routes() {
        let b = &r.target.backend.config;
        let _ = write!(s, "  {:width$}  -> {} ({})", r.prefix, b.name, b.url());
        if let Some(rw) = &r.rewrite {
            let _ = write!(s, ", rewritten to {rw}");
        }
        let _ = write!(s, ", auth: {}", b.auth.describe());
        if let Some(fb) = &r.target.fallback {
            let _ = write!(
                s,
                ", falls back to {}{}",
                fb.config.name,
                if r.target.fallback_on_5xx {
                    " (also on 5xx)"
                } else {
                    ""
                }
            );
        }
        match &r.models {
            Some(set) => {
                let _ = writeln!(s, ", models: {}", set.patterns().join(", "));
            }
            None => s.push('\n'),
        }
    }
    let mut aliases = String::new();
    let mut shown: Vec<&str> = Vec::new();
    for r in router.routes() {
        let b = &r.target.backend.config;
        if shown.contains(&b.name.as_str()) {
            continue;
        }
        shown.push(&b.name);
        for (from, to) in &b.aliases {
            let _ = writeln!(aliases, "  {from} -> {to} on {}", b.name);
        }
    }
    if !aliases.is_empty() {
        s.push_str("\nAliases (the model a client names -> what its backend gets):\n");
        s.push_str(&aliases);
    }
    let names: Vec<&str> = catalog
        .members()
        .map(|m| m.backend.config.name.as_str())
        .collect();
    let _ = writeln!(
        s,
        "\nModel list: GET /v1/models{}; GET /v1/models?backend=NAME for one of: {}",
        if catalog.is_merged() {
            " merges the lists of these backends"
        } else {
            " goes by path like any request"
        },
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    s.push_str(
        "WebSockets (Upgrade: websocket, e.g. GET /v1/realtime?model=...) go by path like any \
         request and are joined to one server of their backend when it answers 101.\n",
    );
    s.push_str("Health check: /health\n");
    Bytes::from(s)
}
