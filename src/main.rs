//! The `openai-proxy` binary: parse the command line, run, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 usage, 78 configuration error).

use std::process::ExitCode;

use clap::Parser;
use openai_proxy::cli::{Cli, Command, ServeArgs};
use openai_proxy::config::ConfigError;
use openai_proxy::lifecycle;

/// EX_CONFIG from sysexits.h: what service managers and scripts expect for a bad config.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => lifecycle::serve(cli.config.as_deref(), &ServeArgs::default()),
        Some(Command::Serve(args)) => lifecycle::serve(cli.config.as_deref(), args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
