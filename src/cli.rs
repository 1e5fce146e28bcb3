//! The command line (clap derive). The same definitions generate the man page and the shell
//! completions, so `--help`, `man openai-proxy` and completions always agree.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ListenAddr;

const ABOUT: &str = "Route OpenAI-API requests to self-hosted services";

const LONG_ABOUT: &str = "\
Route OpenAI-API requests to self-hosted services.

Point any OpenAI client at the proxy (OPENAI_BASE_URL=http://127.0.0.1:2020/v1) and each request
goes where its path says: with the default config /v1/audio/transcriptions to a whisper.cpp
server, /v1/chat/completions to Ollama, /v1/audio/speech and /v1/audio/voices to Kokoro-FastAPI,
and every other /v1 path to https://api.openai.com. Bodies stream both ways, untouched.

Without a subcommand, openai-proxy runs `serve`.";

const AFTER_HELP: &str = "\
Config lookup order: --config PATH, $OPENAI_PROXY_CONFIG, $XDG_CONFIG_HOME/openai-proxy/config.toml
(when not root), /etc/openai-proxy/config.toml, then the built-in default.

Exit status: 0 success, 1 runtime failure, 2 usage error, 78 configuration error.";

#[derive(Debug, Parser)]
#[command(
    name = "openai-proxy",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Use this config file instead of looking one up.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in the foreground (the default).
    ///
    /// Serves until SIGTERM or SIGINT, then stops accepting connections, lets requests in
    /// flight finish (up to server.shutdown_timeout) and exits 0.
    Serve(ServeArgs),

    /// Start serving through the service manager.
    ///
    /// systemd: starts openai-proxy.socket; the service itself starts on the first connection.
    /// macOS: `brew services start`, or `launchctl bootstrap` of the openai-proxy plist.
    Start(ManageArgs),

    /// Stop the service and its socket.
    Stop(ManageArgs),

    /// Restart the service (systemd keeps the socket open, so no connection is refused).
    Restart(ManageArgs),

    /// Make the running service re-read its configuration (SIGHUP) without dropping a request.
    ///
    /// Does nothing when the service is not running: the configuration is read when it starts.
    Reload(ManageArgs),

    /// Show the service manager's view of the service and what /health answers.
    ///
    /// Exits 0 when /health answers 200, 3 when the proxy is not serving. With socket
    /// activation, asking /health starts the service if it was not running.
    Status(ManageArgs),

    /// Start serving now and at every boot (systemd: enable --now openai-proxy.socket).
    Enable(ManageArgs),

    /// Stop serving and no longer start at boot.
    Disable(ManageArgs),
}

/// Options of the service-manager commands.
#[derive(Debug, Clone, Default, Args)]
pub struct ManageArgs {
    /// Use the per-user service manager (systemctl --user; a LaunchAgent on macOS) instead of
    /// the system one.
    #[arg(long)]
    pub user: bool,

    /// Print each service-manager command before running it.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Listen on ADDR instead of server.listen; repeat for several.
    ///
    /// ADDR is IP:PORT (127.0.0.1:2020, [::1]:2020) or unix:/path/to/socket.
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,
}
