//! The `container` commands' command line.

use clap::{Args, Subcommand};

use crate::commands::container::{self, DEFAULT_IMAGE};

/// `container ...`: the proxy under Podman.
#[derive(Debug, Clone, Subcommand)]
pub enum ContainerCommand {
    /// Start the container in the background (replacing a running one of the same name).
    Start(ContainerRunArgs),

    /// Stop the container (and remove it: start creates it afresh).
    Stop(ContainerArgs),

    /// Show the container's state and what /health answers.
    ///
    /// Exits 0 when /health answers 200, 3 when the proxy is not serving.
    Status(ContainerArgs),

    /// Show the container's log (the proxy logs to stderr).
    Logs(ContainerLogsArgs),

    /// Install a Podman quadlet and start the container now and at every boot (or login).
    ///
    /// Writes openai-proxy.container to /etc/containers/systemd/ (with --user:
    /// ~/.config/containers/systemd/), reloads systemd, whose quadlet generator turns it into
    /// openai-proxy.service, and starts that service. Needs Podman 4.5 or later. The generated
    /// openai-proxy.service stands in for the package's unit of the same name, so do not also
    /// enable openai-proxy.socket for the same service manager.
    Enable(ContainerEnableArgs),

    /// Stop the quadlet's service and remove the quadlet that enable installed.
    Disable(ContainerScopeArgs),
}

/// Options shared by the `container` commands.
#[derive(Debug, Clone, Default, Args)]
pub struct ContainerArgs {
    /// Print each podman and systemctl command before running it.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// `container start|stop|status`.
#[derive(Debug, Clone, Args)]
pub struct ContainerRunArgs {
    /// The image to run.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// What every container command takes.
    #[command(flatten)]
    pub common: ContainerArgs,
}

/// `container logs`.
#[derive(Debug, Clone, Args)]
pub struct ContainerLogsArgs {
    /// Keep printing new log lines as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// What every container command takes.
    #[command(flatten)]
    pub common: ContainerArgs,
}

/// `container enable|disable`.
#[derive(Debug, Clone, Args)]
pub struct ContainerEnableArgs {
    /// The image the quadlet runs.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Whose service: the user's or the system's.
    #[command(flatten)]
    pub scope: ContainerScopeArgs,
}

/// `--user` and what every container command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ContainerScopeArgs {
    /// Use the per-user service manager and ~/.config/containers/systemd/ (rootless Podman)
    /// instead of the system ones.
    #[arg(long)]
    pub user: bool,

    /// What every container command takes.
    #[command(flatten)]
    pub common: ContainerArgs,
}

impl ContainerCommand {
    /// The command as plain values.
    pub fn request(&self) -> container::Request {
        use container::Action as A;
        let (action, image, user, verbose) = match self {
            ContainerCommand::Start(a) => (A::Start, a.image.as_str(), false, a.common.verbose),
            ContainerCommand::Stop(a) => (A::Stop, DEFAULT_IMAGE, false, a.verbose),
            ContainerCommand::Status(a) => (A::Status, DEFAULT_IMAGE, false, a.verbose),
            ContainerCommand::Logs(a) => (
                A::Logs { follow: a.follow },
                DEFAULT_IMAGE,
                false,
                a.common.verbose,
            ),
            ContainerCommand::Enable(a) => (
                A::Enable,
                a.image.as_str(),
                a.scope.user,
                a.scope.common.verbose,
            ),
            ContainerCommand::Disable(a) => (A::Disable, DEFAULT_IMAGE, a.user, a.common.verbose),
        };
        container::Request {
            action,
            image: image.to_string(),
            user,
            verbose,
        }
    }
}
