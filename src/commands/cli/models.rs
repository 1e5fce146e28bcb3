//! The `models` command's command line.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::parse_timeout;
use crate::commands::client::{parse_proxy_url, ProxyUrl};
use crate::commands::models;

/// `models [load|unload NAME]`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    /// Load or unload a model; without one, list the models.
    #[command(subcommand)]
    pub action: Option<ModelsAction>,

    /// The proxy's base URL, e.g. http://127.0.0.1:2020 (a trailing /v1 is removed).
    ///
    /// Default: $OPENAI_BASE_URL, else the first IP:PORT in the config's server.listen, else
    /// its first unix: socket (as check-endpoints finds it).
    #[arg(long, value_name = "URL", value_parser = parse_proxy_url, global = true)]
    pub url: Option<ProxyUrl>,

    /// How long to wait for the proxy's answer: a load waits for the model's server to come
    /// up, an unload for the requests in flight to end (e.g. "30s", "10m").
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10m",
        value_parser = parse_timeout,
        global = true
    )]
    pub timeout: Duration,
}

/// `models load NAME`, `models unload NAME [--force]`.
#[derive(Debug, Clone, Subcommand)]
pub enum ModelsAction {
    /// Start the server of an on-demand model now (POST /models/load).
    ///
    /// Returns once the service manager has started it (the model is loaded), or says that it
    /// is still loading when the backend's start_timeout passes first.
    Load(ModelNameArgs),

    /// Stop the server of an on-demand model (POST /models/unload).
    ///
    /// Waits for the model's requests in flight, streams included, to end first (at most the
    /// proxy's server.shutdown_timeout), unless --force.
    Unload(UnloadArgs),
}

/// `models load NAME`.
#[derive(Debug, Clone, Args)]
pub struct ModelNameArgs {
    /// The model, as clients name it (a route's model, an alias, or a model a backend lists).
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `models unload NAME [--force]`.
#[derive(Debug, Clone, Args)]
pub struct UnloadArgs {
    /// The model, as clients name it (a route's model, an alias, or a model a backend lists).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Stop it at once, cutting the requests in flight.
    #[arg(long)]
    pub force: bool,
}

impl From<&ModelsArgs> for models::Options {
    fn from(a: &ModelsArgs) -> Self {
        models::Options {
            url: a.url.clone(),
            timeout: a.timeout,
            action: match &a.action {
                None => models::Request::List,
                Some(ModelsAction::Load(l)) => models::Request::Load(l.name.clone()),
                Some(ModelsAction::Unload(u)) => models::Request::Unload {
                    model: u.name.clone(),
                    force: u.force,
                },
            },
        }
    }
}
