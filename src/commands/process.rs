//! The commands the tools hand work to (`systemctl`, `launchctl`, `brew`, `podman`): spelled
//! out as argument lists first (what `-v` prints and the tests check), then run.

use std::io::Write as _;
use std::process::{Command, Output};

use anyhow::{bail, Context as _};

/// A command and its arguments.
pub(super) type Argv = Vec<String>;

/// An [`Argv`] from string slices.
pub(super) fn argv(parts: &[&str]) -> Argv {
    parts.iter().map(|s| s.to_string()).collect()
}

/// How a command is shown: its words joined by spaces.
pub(super) fn show(c: &[String]) -> String {
    c.join(" ")
}

/// With `verbose`, prints `+ COMMAND` to stderr, as `sh -x` does.
pub(super) fn trace(what: &str, verbose: bool) {
    if verbose {
        let _ = writeln!(std::io::stderr(), "+ {what}");
    }
}

fn command(c: &[String], verbose: bool) -> anyhow::Result<Command> {
    trace(&show(c), verbose);
    let (program, args) = c.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    Ok(cmd)
}

/// Runs one command with the terminal as its input and output; fails unless it exits 0.
pub(super) fn execute(c: &[String], verbose: bool) -> anyhow::Result<()> {
    let st = command(c, verbose)?
        .status()
        .with_context(|| format!("cannot run `{}`", show(c)))?;
    if !st.success() {
        bail!("`{}` failed ({st})", show(c));
    }
    Ok(())
}

/// Runs one command and returns what it printed, whatever its exit status.
pub(super) fn capture(c: &[String], verbose: bool) -> anyhow::Result<Output> {
    command(c, verbose)?
        .output()
        .with_context(|| format!("cannot run `{}`", show(c)))
}
