//! `serve`: load the config, set up logging and listeners, run the server, and react to
//! signals (SIGTERM/SIGINT: stop accepting and drain).

use std::path::Path;

use anyhow::Context as _;

use crate::cli::ServeArgs;
use crate::config::{self, AuthPolicy, Config};
use crate::listeners;
use crate::logging;
use crate::proxy::Proxy;
use crate::server::{self, State};

/// Runs the proxy in the foreground until SIGTERM or SIGINT.
pub fn serve(config_flag: Option<&Path>, args: &ServeArgs) -> anyhow::Result<()> {
    let mut config = config::load(config_flag)?;
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    logging::init(&config.log);
    let listeners = listeners::bind(&config.server.listen)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        announce(&config, &listeners);
        let state = State::new(Proxy::new(config)?);
        server::run(listeners, state, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Logs what is about to run: config, addresses, and anything risky.
fn announce(config: &Config, listeners: &[listeners::StdListener]) {
    tracing::info!(
        "openai-proxy {} using {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.source.display_name(),
        config.source.origin
    );
    for b in &config.backends {
        if b.tls_insecure {
            tracing::warn!(
                "backend '{}' ({}) has tls_insecure = true: its certificate is NOT verified",
                b.name,
                b.url
            );
        }
        if let AuthPolicy::Inject { source, .. } = &b.auth {
            tracing::info!("backend '{}' gets the key from {source}", b.name);
        }
    }
    for l in listeners {
        tracing::info!("listening on {}", l.describe());
    }
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: no longer accepting connections; finishing requests in flight");
    })
}
