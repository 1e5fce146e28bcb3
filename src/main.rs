//! The `openai-proxy` binary: parse the command line, run, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 usage, 78 configuration error).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use openai_proxy::check;
use openai_proxy::cli::{Cli, Command, ManageArgs, ServeArgs};
use openai_proxy::config::ConfigError;
use openai_proxy::container;
use openai_proxy::docs;
use openai_proxy::lifecycle;
use openai_proxy::manage::{self, Action};

/// EX_CONFIG from sysexits.h: what service managers and scripts expect for a bad config.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    let manage = |action, args: &ManageArgs| {
        manage::run(action, args.user, args.verbose, config).map(ExitCode::from)
    };
    let result = match &cli.command {
        None => lifecycle::serve(config, &ServeArgs::default()).map(|()| ExitCode::SUCCESS),
        Some(Command::Serve(args)) => lifecycle::serve(config, args).map(|()| ExitCode::SUCCESS),
        Some(Command::CheckConfig(args)) => {
            let path = match (args.path.as_deref(), config) {
                (Some(p), Some(c)) if p != c => Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "check-config PATH and --config name different files; give one",
                    )
                    .exit(),
                (p, c) => p.or(c),
            };
            check::check_config(path, args.verbose).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::CheckEndpoints(args)) => check::check_endpoints(config, args).map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Some(Command::Start(a)) => manage(Action::Start, a),
        Some(Command::Stop(a)) => manage(Action::Stop, a),
        Some(Command::Restart(a)) => manage(Action::Restart, a),
        Some(Command::Reload(a)) => manage(Action::Reload, a),
        Some(Command::Status(a)) => manage(Action::Status, a),
        Some(Command::Enable(a)) => manage(Action::Enable, a),
        Some(Command::Disable(a)) => manage(Action::Disable, a),
        Some(Command::Completions(a)) => std::io::stdout()
            .write_all(&docs::completion(a.shell))
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
        Some(Command::Container(c)) => container::dispatch(c, config).map(ExitCode::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                for line in ce.to_string().lines() {
                    eprintln!("openai-proxy: {line}");
                }
                ExitCode::from(EXIT_CONFIG)
            } else {
                eprintln!("openai-proxy: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
