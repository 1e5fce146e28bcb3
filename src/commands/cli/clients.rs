//! The `client` command's command line.

use clap::{Args, Subcommand};

use crate::commands::clients::{self, parse_name};

const ADD_LONG_ABOUT: &str = "\
Make a client token: print it once, store only its hash, with the client's scope and limits.

Makes a random token (op- and 64 hex digits, from the system's random numbers) and prints it
on stdout, alone, once: TOKEN=$(openai-proxy client add NAME) keeps it. Only its SHA-256 hash
is stored: with server.client_tokens_file, the line NAME sha256:HEX is appended to that file
(made with mode 0600 when it does not exist), and a [clients.NAME] table with the options given
(if any) to the config file; without a tokens file, a [clients.NAME] table with token_hash and
the options. The files are edited as text, every other byte kept, and replaced whole (a new file
beside the old one, with its mode and owner, renamed over it).

Nothing is written when the name is taken (a tokens-file line or a [clients.NAME] table), when
there is no config file (the built-in default: run init first), when the config does not load,
or when it would not with the new client (e.g. --server-key-for names no backend). Reload the
proxy to apply the change (openai-proxy reload).";

const LIST_LONG_ABOUT: &str = "\
List the named clients, with where each token's hash is and the client's scope and limits.

One line per client: its name, where its token is (tokens file, or config for a token_hash), and
its scope and limits in words (models, routes, the backends whose server-side key it may use,
requests at once, requests and tokens a minute, tokens a day), or no limits. Never a token or a
hash.";

const REMOVE_LONG_ABOUT: &str = "\
Remove a client: its lines in the tokens file and its [clients.NAME] table.

Every other byte of both files is kept; they are replaced whole, as add does, after the result
is checked to load. Removing the last token of the proxy is refused (the proxy would then let
every request in). Reload the proxy to apply the change (openai-proxy reload).";

/// `client add|list|remove`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Make a client token: print it once, store only its hash, with the client's scope and
    /// limits.
    #[command(long_about = ADD_LONG_ABOUT)]
    Add(ClientAddArgs),

    /// List the named clients, with where each token's hash is and the client's scope and
    /// limits.
    #[command(long_about = LIST_LONG_ABOUT)]
    List,

    /// Remove a client: its lines in the tokens file and its [clients.NAME] table.
    #[command(long_about = REMOVE_LONG_ABOUT)]
    Remove(ClientNameArgs),
}

/// `client add NAME [OPTIONS]`.
#[derive(Debug, Clone, Args)]
pub struct ClientAddArgs {
    /// The client's name: letters, digits, '-', '_', '.' and '@', at most 64. The access log,
    /// the usage totals and the metrics show it, never the token.
    #[arg(value_name = "NAME", value_parser = parse_name)]
    pub name: String,

    /// Let it ask only for these models: a name, or a glob with '*' (repeat for several).
    /// Default: every model.
    #[arg(long, value_name = "GLOB")]
    pub models: Vec<String>,

    /// Let it use only the paths under these prefixes, e.g. /v1/chat (repeat for several).
    /// Default: every path.
    #[arg(long, value_name = "PREFIX")]
    pub routes: Vec<String>,

    /// Let it use the server-side key (api_key_*) of this backend only (repeat for several).
    /// Default: of every backend.
    #[arg(long, value_name = "BACKEND", conflicts_with = "no_server_key")]
    pub server_key_for: Vec<String>,

    /// Let it use no backend's server-side key (backends_with_server_key = []).
    #[arg(long)]
    pub no_server_key: bool,

    /// Requests it may have in flight at once (a stream until it ends).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: Option<u32>,

    /// Requests it may make a minute.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub requests_per_minute: Option<u32>,

    /// Tokens (prompt and completion) it may use a minute.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tokens_per_minute: Option<u64>,

    /// Tokens (prompt and completion) it may use a day (UTC).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tokens_per_day: Option<u64>,
}

/// `client remove NAME`.
#[derive(Debug, Clone, Args)]
pub struct ClientNameArgs {
    /// The client's name, as `client list` shows it.
    #[arg(value_name = "NAME")]
    pub name: String,
}

impl ClientCommand {
    /// The request, as plain values.
    pub fn request(&self) -> clients::Request {
        match self {
            ClientCommand::List => clients::Request::List,
            ClientCommand::Remove(a) => clients::Request::Remove(a.name.clone()),
            ClientCommand::Add(a) => clients::Request::Add(clients::NewClient {
                name: a.name.clone(),
                models: a.models.clone(),
                routes: a.routes.clone(),
                server_key_for: if a.no_server_key {
                    Some(Vec::new())
                } else if a.server_key_for.is_empty() {
                    None
                } else {
                    Some(a.server_key_for.clone())
                },
                max_concurrent: a.max_concurrent,
                requests_per_minute: a.requests_per_minute,
                tokens_per_minute: a.tokens_per_minute,
                tokens_per_day: a.tokens_per_day,
            }),
        }
    }
}
