//! `status` and `container status`: what the service manager (or podman) says, then what
//! `/health` answers. The exit status follows `/health`: 0 when it answers 200,
//! [`EXIT_NOT_RUNNING`] otherwise.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::client::{self, ProxyUrl};
use super::process::{self, Argv};
use crate::config::{self, ListenAddr};

/// Exit status of `status` when the proxy is not serving (LSB: "program is not running").
pub const EXIT_NOT_RUNNING: u8 = 3;

/// How long `/health` may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs each query, prints what `render` makes of its output and then `more`, then asks
/// `/health` at the address the first query reported, else at the config's listen address.
pub(super) fn run(
    out: &mut dyn Write,
    queries: &[Argv],
    verbose: bool,
    config_flag: Option<&Path>,
    more: &str,
    render: impl Fn(&Output) -> (String, Option<ListenAddr>),
) -> anyhow::Result<u8> {
    let mut address = None;
    for q in queries {
        let (text, found) = render(&process::capture(q, verbose)?);
        out.write_all(text.as_bytes())?;
        address = address.or(found);
    }
    out.write_all(more.as_bytes())?;
    let url = match address {
        // HTTPS when the config has a certificate (a config that does not load: plain).
        Some(a) => ProxyUrl::listening_on(&a)
            .with_https(config::load(config_flag).is_ok_and(|c| c.server.tls.is_some())),
        None => ProxyUrl::from_config(&config::load(config_flag)?)?,
    };
    report_health(out, &url)
}

/// Asks `url` for `/health`, prints the outcome, and returns the exit status.
fn report_health(out: &mut dyn Write, url: &ProxyUrl) -> anyhow::Result<u8> {
    let at = url.address();
    let (line, code) = match client::health(url, HEALTH_TIMEOUT) {
        Ok((200, took)) => (
            format!(
                "health: {at} /health → 200 OK ({:.1} ms)",
                took.as_secs_f64() * 1e3
            ),
            0,
        ),
        Ok((status, _)) => (
            format!("health: {at} /health → {status}: not serving"),
            EXIT_NOT_RUNNING,
        ),
        Err(e) => (
            format!("health: {at} /health → {e:#}: not serving"),
            EXIT_NOT_RUNNING,
        ),
    };
    writeln!(out, "{line}")?;
    Ok(code)
}
