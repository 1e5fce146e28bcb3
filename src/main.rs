//! The `openai-proxy` binary: parse the command line, hand plain values to the command, and
//! map the outcome to an exit status (0 ok, 1 runtime failure, 2 usage, 78 configuration
//! error). A closed stdout (`openai-proxy status | head -1`) ends a command quietly; it is
//! handled here, once.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use openai_proxy::cli::{Cli, Command, Generated, ManageArgs};
use openai_proxy::commands::manage::{self, Action};
use openai_proxy::commands::{
    check_config, check_endpoints, clients, container, generate, init, models, on_demand,
    wait_ready,
};
use openai_proxy::{serve, ConfigError};

/// EX_CONFIG from sysexits.h: what service managers and scripts expect for a bad config.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let mut stderr = std::io::stderr().lock();
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                for line in ce.to_string().lines() {
                    let _ = writeln!(stderr, "openai-proxy: {line}");
                }
                ExitCode::from(EXIT_CONFIG)
            } else {
                let _ = writeln!(stderr, "openai-proxy: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_deref();
    let mut stdout = std::io::stdout();
    let code = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    let manage = |action, args: &ManageArgs| {
        manage::run(
            action,
            args.user,
            args.verbose,
            config,
            &mut std::io::stdout(),
        )
        .map(ExitCode::from)
    };
    let Some(command) = &cli.command else {
        return serve(config, &[]).map(|()| ExitCode::SUCCESS);
    };
    match command {
        Command::Serve(args) => serve(config, &args.listen).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig(args) => {
            let path = match (args.path.as_deref(), config) {
                (Some(p), Some(c)) if p != c => Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "check-config PATH and --config name different files; give one",
                    )
                    .exit(),
                (p, c) => p.or(c),
            };
            check_config::run(path, args.verbose, &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::CheckEndpoints(args) => {
            check_endpoints::run(config, &args.into(), Box::new(stdout)).map(code)
        }
        Command::Init(args) => {
            init::run(config, &args.into(), &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::Completions(a) => {
            stdout.write_all(&generate::completion(a.shell, Cli::command()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(a) => {
            match a.what {
                Generated::Man => stdout.write_all(&generate::man_page(Cli::command()))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::EnableBackend(a) => {
            on_demand::enable(&a.into(), &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::DisableBackend(a) => {
            on_demand::disable(&a.into(), &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::Models(a) => {
            models::run(config, &a.into(), &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::Client(c) => {
            clients::run(config, &c.request(), &mut stdout, &mut std::io::stderr())
                .map(|()| ExitCode::SUCCESS)
        }
        Command::WaitReady(a) => {
            wait_ready::run(&a.url, a.timeout, a.pid, &mut stdout).map(|()| ExitCode::SUCCESS)
        }
        Command::Container(c) => {
            container::run(&c.request(), config, &mut stdout).map(ExitCode::from)
        }
        Command::Start(a) => manage(Action::Start, a),
        Command::Stop(a) => manage(Action::Stop, a),
        Command::Restart(a) => manage(Action::Restart, a),
        Command::Reload(a) => manage(Action::Reload, a),
        Command::Status(a) => manage(Action::Status, a),
        Command::Enable(a) => manage(Action::Enable, a),
        Command::Disable(a) => manage(Action::Disable, a),
    }
}

/// Whether the command failed because stdout was closed under it (a reader like `head` went
/// away): not an error worth a message.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
