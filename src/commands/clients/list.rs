//! `client list`, and the words it (and `check-config -v`) has for a client's scope and
//! limits: never a token or a hash.

use std::fmt::Write as _;
use std::path::Path;

use super::Outline;
use crate::config;
use crate::config::clients::ClientConfig;

/// What `client list` and `check-config -v` say about a client's scope and limits.
pub(crate) fn scope_and_limits(c: &ClientConfig) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut parts = Vec::new();
    for (what, v) in [
        ("models", &c.models),
        ("routes", &c.routes),
        ("server key", &c.backends_with_server_key),
    ] {
        if let Some(v) = v {
            parts.push(format!("{what}: {}", list(v)));
        }
    }
    let l = &c.limits;
    let limits: Vec<String> = [
        l.max_concurrent.map(|n| format!("max {n} at once")),
        l.requests_per_minute
            .map(|n| format!("{n} requests/minute")),
        l.tokens_per_minute.map(|n| format!("{n} tokens/minute")),
        l.tokens_per_day.map(|n| format!("{n} tokens/day")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !limits.is_empty() {
        parts.push(limits.join(", "));
    }
    if parts.is_empty() {
        "no limits".to_string()
    } else {
        parts.join("  ")
    }
}

/// `client list`: one line per client, its name, where its token's hash is, its scope and
/// limits; never a token or a hash.
pub(super) fn list(flag: Option<&Path>, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let config = config::load(flag)?;
    let outline = config
        .source
        .path
        .as_deref()
        .and_then(|p| config::read_small_file(p).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| toml::from_str::<Outline>(&t).ok())
        .unwrap_or_default();
    if config.clients.is_empty() {
        out.write_all(b"No named clients (`openai-proxy client add NAME` makes one).\n")?;
        return Ok(());
    }
    let rows: Vec<(String, &str, String)> = config
        .clients
        .iter()
        .map(|c| {
            let in_config = outline
                .table(&c.name)
                .is_some_and(|(_, t)| t.contains_key("token_hash"));
            let place = if in_config { "config" } else { "tokens file" };
            (c.name.to_string(), place, scope_and_limits(c))
        })
        .collect();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (name, place, words) in rows {
        let _ = writeln!(text, "{name:<width$}  {place:<11}  {words}");
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::clients::Limits;

    #[test]
    fn scope_and_limits_in_words() {
        let c = ClientConfig {
            models: Some(vec!["llama*".into()]),
            backends_with_server_key: Some(vec![]),
            limits: Limits {
                max_concurrent: Some(2),
                tokens_per_day: Some(10000),
                ..Limits::default()
            },
            ..ClientConfig::unlimited("guest".into())
        };
        assert_eq!(
            scope_and_limits(&c),
            "models: llama*  server key: none  max 2 at once, 10000 tokens/day"
        );
        let open = ClientConfig::unlimited("x".into());
        assert_eq!(scope_and_limits(&open), "no limits");
    }
}
