//! Warnings about who can reach the proxy: listening beyond loopback without client tokens or
//! without TLS, every web page or every name let through, and a backend forwarding the
//! client's `Authorization` when that holds the proxy's token. Said at start and on reload.

use crate::config::{AuthPolicy, Config, HostRule, OriginRule};
use crate::serve::StdListener;

/// The TCP listeners reachable beyond loopback, for the warnings about exposure.
pub(super) fn exposed(listeners: &[StdListener]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| match l {
            StdListener::Tcp(t) => t
                .local_addr()
                .ok()
                .filter(|a| !a.ip().to_canonical().is_loopback()),
            StdListener::Unix { .. } => None,
        })
        .map(|a| a.to_string())
        .collect()
}

/// Warns when the proxy listens beyond loopback without asking clients for a token, and when
/// a backend forwards the client's `Authorization`, which then carries the proxy's token.
pub(super) fn warn_about_exposure(config: &Config, exposed: &[String]) {
    for w in exposure_warnings(config, exposed) {
        tracing::warn!("{w}");
    }
    let tokens = &config.server.client_tokens;
    if tokens.enabled() {
        tracing::info!(
            "clients must send one of {} tokens from {}",
            tokens.len(),
            tokens
                .file
                .as_deref()
                .map_or_else(|| "?".into(), |p| p.display().to_string())
        );
        for b in &config.backends {
            if b.auth == AuthPolicy::Forward {
                tracing::warn!(
                    "backend '{}' has forward_client_auth = true, but with client tokens the \
                     client's Authorization header holds the proxy's token and is removed; \
                     give the backend its key with api_key_file",
                    b.name
                );
            }
        }
    }
}

/// The warnings for listening beyond loopback (`exposed`: those addresses) without client
/// tokens, and for letting every web page (`"*"` in `server.cors_origins`) or every name
/// (`"*"` in `server.allowed_hosts`) through.
fn exposure_warnings(config: &Config, exposed: &[String]) -> Vec<String> {
    let mut w = Vec::new();
    if !exposed.is_empty() && !config.server.client_tokens.enabled() {
        w.push(format!(
            "listening on {} beyond loopback without server.client_tokens_file: anyone who \
             can reach it can use every backend and any key the proxy injects",
            exposed.join(", ")
        ));
    }
    if !exposed.is_empty() && config.server.tls.is_none() {
        w.push(format!(
            "listening on {} beyond loopback without TLS (server.tls_cert, server.tls_key): \
             requests, answers and any client token or key in them cross the network in \
             clear text",
            exposed.join(", ")
        ));
    }
    if config.server.cors_origins.contains(&OriginRule::Any) {
        w.push(
            "server.cors_origins contains \"*\": every web page you visit can use the proxy, \
             and any key it injects; list the origins of your web clients instead"
                .to_string(),
        );
    }
    if config.server.allowed_hosts.contains(&HostRule::Any) {
        w.push(
            "server.allowed_hosts contains \"*\": a web page can rebind its own DNS name to \
             this machine and use the proxy (DNS rebinding); list the names instead"
                .to_string(),
        );
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_without_tokens_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "a-client-token-0123456789\n").unwrap();
        let routes = "[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";
        let open = Config::from_toml(routes).unwrap();
        let guarded = Config::from_toml(&format!(
            "[server]\nclient_tokens_file = {tokens:?}\n{routes}"
        ))
        .unwrap();
        let exposed = ["0.0.0.0:2020".to_string(), "[::]:2020".to_string()];
        let w = exposure_warnings(&open, &exposed);
        assert_eq!(w.len(), 2);
        assert!(
            w[0].starts_with("listening on 0.0.0.0:2020, [::]:2020 beyond loopback without server.client_tokens_file"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("listening on 0.0.0.0:2020, [::]:2020 beyond loopback without TLS"),
            "{w:?}"
        );
        assert!(exposure_warnings(&open, &[]).is_empty());
        let w = exposure_warnings(&guarded, &exposed);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("without TLS"), "{w:?}");
        let any = Config::from_toml(&format!(
            "[server]\ncors_origins = [\"*\"]\nallowed_hosts = [\"*\"]\n{routes}"
        ))
        .unwrap();
        let w = exposure_warnings(&any, &[]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("server.cors_origins contains \"*\""),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("server.allowed_hosts contains \"*\""),
            "{w:?}"
        );
    }
}
