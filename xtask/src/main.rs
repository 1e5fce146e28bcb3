//! `cargo xtask TASK`: the project's own tasks, written in Rust so that they need nothing but
//! cargo (the alias is in `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the README's test command. It sets up what the tests need
//!   ([`setup`]), then runs what CI runs ([`checks`]): fmt, clippy, the release build, the tests.
//! - `cargo xtask setup`: the set-up alone.
//!
//! One job per file: `packages.rs` knows the Debian packages the tests need and installs them,
//! `setup.rs` puts everything else in place, `checks.rs` runs the checks, `step.rs` prints each
//! step with its time, and `project.rs` finds the repository and runs commands in it.

/// `println!` that does not panic when stdout is closed (`cargo xtask help | head -1`): what
/// the task prints is for a person; what it does goes on.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod checks;
mod npm;
mod packages;
mod project;
mod setup;
mod step;

use std::fmt;
use std::process::ExitCode;

use project::Project;
use step::Steps;

const USAGE: &str = "\
usage: cargo xtask test [--no-setup] [-- ARGS...]
       cargo xtask setup
       cargo xtask help

test    Sets up what the tests need (as `setup` does), then runs what CI runs:
        cargo fmt --all -- --check
        cargo clippy --workspace --all-targets -- -D warnings
        cargo build --release --locked     (the packaging tests package this binary)
        cargo test --workspace [ARGS...]   (e.g. `-- sdk` runs the tests named *sdk*)
        --no-setup skips the set-up (nothing is installed or checked).
setup   Installs what the tests need and is missing:
        - Debian packages (systemd, lintian, rpm, wrk, haproxy, ...) with apt-get: as root,
          or through `sudo -n`; otherwise it names them and the command that installs them;
        - cargo-deb and cargo-generate-rpm (cargo install --locked);
        - rustfmt and clippy (rustup component add), if they are missing;
        - a Python virtual environment in TARGET/venv with the packages of
          tests/requirements.txt (the OpenAI and Anthropic Python SDKs, prometheus_client),
          which the tests use;
        - Claude Code and Codex CLI from npm, at pinned versions, in TARGET/npm.
        What is already there is left alone, so a second run takes seconds.
Run it as root (CI does): several tests install the package, run a systemd user manager or
mount in a private namespace, and fail as another user, saying so.";

/// A failure, said in words for the person who ran the task.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T = ()> = std::result::Result<T, Error>;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Task {
    Test {
        setup: bool,
        cargo_test_args: Vec<String>,
    },
    Setup,
    Help,
}

fn parse(args: &[String]) -> Result<Task> {
    let Some((task, rest)) = args.split_first() else {
        return Err(Error::new(format!("which task?\n\n{USAGE}")));
    };
    match task.as_str() {
        "test" => {
            let mut setup = true;
            let mut rest = rest.iter();
            let mut cargo_test_args = Vec::new();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--no-setup" => setup = false,
                    "--" => {
                        cargo_test_args.extend(rest.by_ref().cloned());
                    }
                    "-h" | "--help" => return Ok(Task::Help),
                    other => {
                        return Err(Error::new(format!(
                            "test: unknown argument {other:?} (arguments for cargo test go \
                             after `--`)\n\n{USAGE}"
                        )))
                    }
                }
            }
            Ok(Task::Test {
                setup,
                cargo_test_args,
            })
        }
        "setup" => match rest.first() {
            None => Ok(Task::Setup),
            Some(a) if a == "-h" || a == "--help" => Ok(Task::Help),
            Some(other) => Err(Error::new(format!(
                "setup: unknown argument {other:?}\n\n{USAGE}"
            ))),
        },
        "help" | "-h" | "--help" => Ok(Task::Help),
        other => Err(Error::new(format!("unknown task {other:?}\n\n{USAGE}"))),
    }
}

fn run(task: Task) -> Result {
    if task == Task::Help {
        say!("{USAGE}");
        return Ok(());
    }
    let project = Project::find()?;
    let mut steps = Steps::new();
    let result = match task {
        Task::Setup => setup::run(&project, &mut steps),
        Task::Test {
            setup,
            cargo_test_args,
        } => {
            let ready = if setup {
                setup::run(&project, &mut steps)
            } else {
                say!("(--no-setup: nothing is installed or checked before the checks)");
                Ok(())
            };
            ready.and_then(|()| checks::run(&project, &mut steps, &cargo_test_args))
        }
        Task::Help => Ok(()),
    };
    steps.summary(result.is_ok());
    result
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("cargo xtask: an argument is not UTF-8: {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let task = match parse(&args) {
        Ok(task) => task,
        Err(e) => {
            eprintln!("cargo xtask: {e}");
            return ExitCode::from(2);
        }
    };
    match run(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ncargo xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_takes_no_setup_and_passes_what_follows_dashes_to_cargo_test() {
        assert_eq!(
            parse(&args(&["test"])).unwrap(),
            Task::Test {
                setup: true,
                cargo_test_args: vec![]
            }
        );
        assert_eq!(
            parse(&args(&[
                "test",
                "--no-setup",
                "--",
                "sdk",
                "--",
                "--nocapture"
            ]))
            .unwrap(),
            Task::Test {
                setup: false,
                cargo_test_args: args(&["sdk", "--", "--nocapture"])
            }
        );
        assert_eq!(parse(&args(&["setup"])).unwrap(), Task::Setup);
        assert_eq!(parse(&args(&["help"])).unwrap(), Task::Help);
        assert_eq!(parse(&args(&["test", "--help"])).unwrap(), Task::Help);
    }

    #[test]
    fn unknown_tasks_and_arguments_are_errors_that_show_the_usage() {
        for bad in [
            &[][..],
            &["tset"],
            &["test", "sdk"],
            &["setup", "--no-setup"],
        ] {
            let e = parse(&args(bad)).unwrap_err().to_string();
            assert!(e.contains("usage: cargo xtask test"), "{bad:?}: {e}");
        }
        let e = parse(&args(&["test", "sdk"])).unwrap_err().to_string();
        assert!(e.contains("after `--`"), "{e}");
    }
}
