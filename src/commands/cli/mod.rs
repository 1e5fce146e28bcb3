//! The command line (clap derive), and nothing else: `main` turns what it parses into the
//! plain values each command takes. The same definitions generate the man page and the shell
//! completions, so `--help`, `man openai-proxy` and completions always agree.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands::init;
use crate::commands::on_demand;
use crate::commands::wait_ready;

mod check_endpoints;
mod clients;
mod container;
mod models;
pub use self::check_endpoints::CheckEndpointsArgs;
pub use self::clients::{ClientAddArgs, ClientCommand, ClientNameArgs};
pub use self::container::{
    ContainerArgs, ContainerCommand, ContainerEnableArgs, ContainerLogsArgs, ContainerRunArgs,
    ContainerScopeArgs,
};
pub use self::models::{ModelNameArgs, ModelsAction, ModelsArgs, UnloadArgs};
use crate::config::{parse_duration, ListenAddr};

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

const CHECK_ENDPOINTS_LONG_ABOUT: &str = "\
Send real requests through a running proxy and report truthfully what each route does.

Talks to the proxy the way an OpenAI client does and runs these checks, in this order:

  health         GET /health answers 200 {\"status\":\"ok\"}; then each server of a pool (and
                 of a backend with health_path) as the proxy sees it (GET / as JSON), one
                 line each, NAME[I]: ✓ when it is in, ✗ when it is out, with the reason
  models         GET /v1/models answers a JSON list with a \"data\" array (the count is shown)
  chat           POST /v1/chat/completions answers JSON with choices[0].message.content
  chat-stream    the same with \"stream\": true answers server-sent events: at least one
                 JSON \"data:\" chunk, then \"data: [DONE]\"
  speech         POST /v1/audio/speech (model tts-1, voice alloy, mp3) answers audio: an
                 audio/* content type, at least 1 KiB, and the magic bytes of a known format
                 (MP3, WAV, Ogg, FLAC, AAC, MP4, WebM)
  transcription  POST /v1/audio/transcriptions (multipart, model whisper-1) with the audio the
                 speech check got back, or, when that check did not pass or did not run, a
                 clip built into the binary (\"huge manatees\"); answers JSON with a non-empty
                 \"text\", which is compared word by word with what was spoken

  model          for each --model NAME, after the others: the request that NAME's route
                 serves reaches the backend the config sends NAME to, with a well-formed
                 answer

A check passes only when the status is 200 and the body is well formed and of the right kind.
Each line shows ✓ or ✗, the check, the backend that answered (the X-Backend response header),
the status and the time taken, then what was found; a summary line counts the passed, failed
and skipped checks. A check is skipped, with the reason, when it cannot run: the proxy has no
route for its path (it answers 404 no_route), or there is no model to chat with. The chat checks
use --chat-model, or else the first model that the chat route's own backend lists
(GET /v1/models?backend=NAME, the backend found in the config).

The proxy is found at --url, else $OPENAI_BASE_URL (a trailing /v1 is removed), else the first
IP:PORT in server.listen of the config (see --config), else its first unix: socket. $OPENAI_API_KEY, when set, is sent as
\"Authorization: Bearer KEY\" and never printed: it is redacted from bodies and headers too.

Exit status: 0 when no check failed and none was skipped (checks skipped for lack of a route do
not count unless named with --only); 1 otherwise, or when the proxy cannot be reached; 2 usage
error; 78 when the config needed to find the proxy is invalid.";

const ENABLE_BACKEND_LONG_ABOUT: &str = "\
Have systemd start a model server at the first request and stop it when idle.

Writes a drop-in (UNIT.d/openai-proxy.conf) for each instance of the on-demand templates
(contrib/systemd/on-demand/, installed by the packages) to /etc/systemd/system/, with --user to
~/.config/systemd/user/:

  openai-proxy-backend@NAME.socket   ListenStream=127.0.0.1:PORT
  openai-proxy-backend@NAME.service  the server's port, the idle time
  openai-proxy-server@NAME.service   ExecStart= the server, Conflicts=

then reloads the service manager, enables openai-proxy-backend@NAME.socket and (re)starts it.
systemd listens on 127.0.0.1:PORT; the first connection starts the server, and is passed on
once the server answers HTTP (openai-proxy wait-ready); systemd-socket-proxyd forwards the
connections and exits after --idle without one, and the server stops with it. Point the
proxy's backend at it, as it prints: [backends.NAME] url = \"http://127.0.0.1:PORT\" with
on_demand = true, or, with --conflicts, a swap_group shared with the OTHER backends.

Running it again for the same NAME replaces the drop-ins and restarts the socket (stopping a
running server).";

const MODELS_LONG_ABOUT: &str = "\
List the models of a running proxy with their state, requests and tokens; load or unload one.

Without a subcommand, prints a table: each model of GET /models (every backend's models, its
aliases), its backend, its state (loaded, loading or unloaded: an on-demand backend's from the
service manager, any other's from its health), and the requests and tokens (prompt/completion)
since counting began (the proxy's start, or the first start with [usage] file), from GET /usage
(- when the proxy does not count them).

models load NAME and models unload NAME [--force] start or stop the server of an on-demand
backend (one made with enable-backend, on_demand = true in the config) through the proxy
(POST /models/load, /models/unload); unload waits for the model's requests in flight first.

The proxy is found as check-endpoints finds it (--url, $OPENAI_BASE_URL, the config's
server.listen). $OPENAI_API_KEY, when set, is sent as \"Authorization: Bearer KEY\" (the client
token, when the proxy requires one) and never printed.

Exit status: 0 success; 1 when the proxy cannot be reached or refuses (the model is unknown or
not on demand, the service manager failed); 2 usage error; 78 when the config needed to find
the proxy is invalid.";

const COMPLETIONS_LONG_ABOUT: &str = "\
Print a shell completion script to stdout.

The packages install the bash, zsh and fish scripts already. To install one by hand, write it
where the shell looks for it:

  bash  ~/.local/share/bash-completion/completions/openai-proxy
  zsh   _openai-proxy in a directory of $fpath (e.g. ~/.zfunc/_openai-proxy)
  fish  ~/.config/fish/completions/openai-proxy.fish

For example: openai-proxy completions fish > ~/.config/fish/completions/openai-proxy.fish";

#[derive(Debug, Parser)]
#[command(
    name = "openai-proxy",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
/// The command line: options before the command, and the command (none: `serve`).
pub struct Cli {
    /// Use this config file instead of looking one up.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    /// What to do; without one, the proxy serves.
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in the foreground (the default).
    ///
    /// Serves until SIGTERM or SIGINT, then stops accepting connections, lets requests in
    /// flight finish (up to server.shutdown_timeout) and exits 0.
    Serve(ServeArgs),

    /// Validate the config exactly as `serve` would, without starting anything.
    ///
    /// Reads the config (PATH, or the one the lookup order finds), validates every key, and
    /// checks that key files, key environment variables, systemd credentials and CA files exist
    /// and are readable (keys are never printed). Prints "Configuration is valid" and exits 0,
    /// or prints every problem as FILE:LINE:COL: KEY: MESSAGE on stderr and exits 78. Suitable
    /// for ExecStartPre= in a systemd unit.
    CheckConfig(CheckConfigArgs),

    /// Test each route of a running proxy with real requests, and report truthfully.
    #[command(long_about = CHECK_ENDPOINTS_LONG_ABOUT)]
    CheckEndpoints(CheckEndpointsArgs),

    /// Write the example config where the service looks for it, and look for local services.
    ///
    /// Writes the documented example config (the built-in default) to
    /// /etc/openai-proxy/config.toml, with --user to ~/.config/openai-proxy/config.toml
    /// ($XDG_CONFIG_HOME/openai-proxy/config.toml), or to --config PATH. An existing file is
    /// never replaced without --force (which keeps the old one as config.toml.bak). Then it
    /// asks the ports the config expects whether Ollama (11434), whisper.cpp (2022) and
    /// Kokoro-FastAPI (8880) answer, says which did, and prints the command to run next
    /// (enable, then check-endpoints).
    Init(InitArgs),

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

    /// Have systemd start a model server at the first request and stop it when idle.
    #[command(long_about = ENABLE_BACKEND_LONG_ABOUT)]
    EnableBackend(EnableBackendArgs),

    /// Undo enable-backend: stop the backend's server and socket, remove its drop-ins.
    ///
    /// Disables and stops openai-proxy-backend@NAME.socket, stops its forwarder and server,
    /// removes the three drop-ins enable-backend wrote (and their directories when nothing
    /// else is in them), and reloads the service manager.
    DisableBackend(DisableBackendArgs),

    /// List the models of a running proxy with their state, requests and tokens; load or
    /// unload one.
    #[command(long_about = MODELS_LONG_ABOUT)]
    Models(ModelsArgs),

    /// Make, list and remove named client tokens (client add|list|remove), as htpasswd does
    /// for a web server's users.
    ///
    /// A client's token is printed once and only its hash stored: in server.client_tokens_file,
    /// else as token_hash in its [clients.NAME] table, which also holds its scope and limits.
    #[command(subcommand)]
    Client(ClientCommand),

    /// Wait until a server answers HTTP at URL (ExecStartPost= of an on-demand model server).
    ///
    /// Asks GET URL every 100 ms and exits 0 as soon as the answer has a status below 500.
    /// A refused or reset connection, no answer within 5 s, or a 5xx status (llama-server
    /// answers 503 while it loads its model) mean not yet. Exits 1 when --timeout passes
    /// first, or when the process --pid names has exited. The on-demand server units run it,
    /// so that systemd counts a server as started, and forwards the first request to it, only
    /// once it can answer.
    WaitReady(WaitReadyArgs),

    /// Print a shell completion script to stdout.
    #[command(long_about = COMPLETIONS_LONG_ABOUT)]
    Completions(CompletionsArgs),

    /// Print the man page openai-proxy(1) to stdout (`generate man`), made from this command
    /// line's own definitions, as the packages ship it.
    Generate(GenerateArgs),

    /// Run the proxy in a Podman container instead of as a service (start, stop, status, logs,
    /// enable, disable).
    ///
    /// The container (named openai-proxy) uses the host's network, so it listens where the
    /// config says (127.0.0.1:2020 by default) and reaches backends on the host's loopback. The
    /// directory of the config file the lookup order finds (or --config) is mounted read-only
    /// at the same path and named by $OPENAI_PROXY_CONFIG; without a config file the built-in
    /// default is used. The proxy runs as an unprivileged user (65532) inside the container, so
    /// the config must be readable by others.
    ///
    /// Build the image first, from the source tree: podman build --format docker -t
    /// openai-proxy -f contrib/container/Containerfile .
    #[command(subcommand)]
    Container(ContainerCommand),
}

/// `generate WHAT`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// What to generate.
    #[arg(value_enum, value_name = "WHAT")]
    pub what: Generated,
}

/// What `generate` can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// The man page openai-proxy(1), in roff.
    Man,
}

/// `completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `enable-backend NAME ...`.
#[derive(Debug, Clone, Args)]
pub struct EnableBackendArgs {
    /// The backend's name, as in the proxy's config ([backends.NAME]).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The server's command line, e.g. "llama-server -m /models/qwen.gguf --port $PORT".
    ///
    /// Split into words as a shell would (quotes, no expansions); a program without a '/' is
    /// looked up in $PATH now. It must listen on 127.0.0.1 at the port systemd gives it in
    /// $PORT (write $PORT as a word of its own, or ${PORT} inside one: --port=${PORT}).
    #[arg(long, value_name = "COMMAND")]
    pub exec: String,

    /// Where systemd listens for the proxy: the port of the backend's url in the proxy's
    /// config.
    #[arg(long, value_name = "N")]
    pub port: u16,

    /// Where the server listens (127.0.0.1, $PORT in --exec). Default: --port + 10000.
    #[arg(long, value_name = "M")]
    pub server_port: Option<u16>,

    /// Stop the server after this long without a connection (systemd-socket-proxyd
    /// --exit-idle-time).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
    pub idle: Duration,

    /// Never run this backend's server at the same time as OTHER's (one GPU); repeat for
    /// several.
    ///
    /// Starting one stops the other first (Conflicts= with an ordering). In the proxy's
    /// config, give the backends the same swap_group, so that the proxy lets the requests in
    /// flight on one finish before it starts the other.
    #[arg(long, value_name = "OTHER")]
    pub conflicts: Vec<String>,

    /// The path wait-ready asks for to know the server is up (default /).
    #[arg(long, value_name = "PATH")]
    pub ready_path: Option<String>,

    /// The backend and the service manager's scope.
    #[command(flatten)]
    pub common: BackendUnitArgs,
}

/// `disable-backend NAME`.
#[derive(Debug, Clone, Args)]
pub struct DisableBackendArgs {
    /// The backend's name, as given to enable-backend.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The backend and the service manager's scope.
    #[command(flatten)]
    pub common: BackendUnitArgs,
}

/// Options shared by `enable-backend` and `disable-backend`.
#[derive(Debug, Clone, Default, Args)]
pub struct BackendUnitArgs {
    /// Use the per-user service manager and ~/.config/systemd/user/ instead of the system
    /// ones.
    #[arg(long)]
    pub user: bool,

    /// Print the files and commands, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Print each systemctl command before running it.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

impl From<&EnableBackendArgs> for on_demand::Enable {
    fn from(a: &EnableBackendArgs) -> Self {
        on_demand::Enable {
            name: a.name.clone(),
            exec: a.exec.clone(),
            port: a.port,
            server_port: a.server_port,
            idle: a.idle,
            conflicts: a.conflicts.clone(),
            ready_path: a.ready_path.clone(),
            user: a.common.user,
            dry_run: a.common.dry_run,
            verbose: a.common.verbose,
        }
    }
}

impl From<&DisableBackendArgs> for on_demand::Disable {
    fn from(a: &DisableBackendArgs) -> Self {
        on_demand::Disable {
            name: a.name.clone(),
            user: a.common.user,
            dry_run: a.common.dry_run,
            verbose: a.common.verbose,
        }
    }
}

/// `wait-ready URL`.
#[derive(Debug, Clone, Args)]
pub struct WaitReadyArgs {
    /// What to ask: http://HOST:PORT/PATH.
    #[arg(value_name = "URL")]
    pub url: wait_ready::Target,

    /// Give up after this long (exit status 1).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Give up (exit status 1) as soon as this process is gone: the server's, $MAINPID in
    /// ExecStartPost=, so that a server that fails to start is not waited for.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
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

/// `init`.
#[derive(Debug, Clone, Default, Args)]
pub struct InitArgs {
    /// Write the per-user config (~/.config/openai-proxy/config.toml) for the user service,
    /// instead of /etc/openai-proxy/config.toml.
    #[arg(long)]
    pub user: bool,

    /// Replace an existing config file (the old one is kept beside it as config.toml.bak).
    #[arg(long)]
    pub force: bool,
}

impl From<&InitArgs> for init::Options {
    fn from(a: &InitArgs) -> Self {
        init::Options {
            user: a.user,
            force: a.force,
            probe_ports: Vec::new(),
        }
    }
}

/// `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Listen on ADDR instead of server.listen; repeat for several.
    ///
    /// ADDR is IP:PORT (127.0.0.1:2020, [::1]:2020) or unix:/path/to/socket.
    #[arg(long, short = 'l', value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,
}

/// `check-config`.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckConfigArgs {
    /// Also print the resolved configuration.
    ///
    /// Shows which config file was chosen and why (the lookup order), the listen addresses,
    /// server limits, the named clients with their scope and limits (never a token or a hash),
    /// logging, and a table of every route: backend, backend URL, rewrite, auth policy (strip,
    /// forward, or inject from env/file/credential) and the connect, response and idle
    /// time-outs.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// The config file to check; the same as --config PATH.
    ///
    /// Without it (and without --config), the file the lookup order finds is checked, which
    /// is the one `serve` would use.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}
