//! Steps, each announced, timed and listed again at the end; and the commands they run, each
//! shown before it runs and checked after.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The steps taken so far and how long each took.
pub struct Steps {
    started: Instant,
    done: Vec<(String, Duration, bool)>,
    closing: Option<String>,
}

impl Steps {
    pub fn new() -> Steps {
        Steps {
            started: Instant::now(),
            done: Vec::new(),
            closing: None,
        }
    }

    /// Runs one step: prints its title, then what it did and how long it took.
    pub fn run<T>(&mut self, title: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        say!("\n==> {title}");
        let start = Instant::now();
        let result = step();
        let took = start.elapsed();
        let verdict = if result.is_ok() { "done" } else { "FAILED" };
        say!("<== {title}: {verdict} in {}", duration(took));
        self.done.push((title.to_string(), took, result.is_ok()));
        result
    }

    /// A line for the end of the summary (the test counts).
    pub fn closing_line(&mut self, line: String) {
        self.closing = Some(line);
    }

    /// Every step with its time, the total, and the closing line.
    pub fn summary(&self, ok: bool) {
        if self.done.is_empty() {
            return;
        }
        say!("\n==> summary");
        for (title, took, passed) in &self.done {
            let mark = if *passed { "ok    " } else { "FAILED" };
            say!("  {mark} {:>10}  {title}", duration(*took));
        }
        let verdict = if ok { "all passed" } else { "failed" };
        say!(
            "  {verdict} in {} ({} steps)",
            duration(self.started.elapsed()),
            self.done.len()
        );
        if let Some(line) = &self.closing {
            say!("{line}");
        }
    }
}

/// `1.2 s`, `3 min 04 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// The command as a person would type it (program and arguments; no environment). The cargo
/// that runs the task (`$CARGO`, a long path) is shown as `cargo`.
pub fn shown(cmd: &Command) -> String {
    let cargo = std::env::var_os("CARGO");
    let program = if cargo.as_deref() == Some(cmd.get_program()) {
        std::ffi::OsStr::new("cargo")
    } else {
        cmd.get_program()
    };
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with the task's own stdin, stdout and stderr; an error unless it exits 0.
pub fn run(cmd: &mut Command) -> Result {
    let line = shown(cmd);
    say!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| Error::new(format!("cannot run `{line}`: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::new(format!("`{line}` failed ({status})")))
    }
}

/// Whether `cmd` runs and exits 0, with its output discarded: a question, not a step.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(duration(Duration::from_millis(1234)), "1.2 s");
        assert_eq!(duration(Duration::from_secs(184)), "3 min 04 s");
    }

    #[test]
    fn commands_are_shown_quoted_where_a_shell_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "", "a b", "it's"]);
        assert_eq!(shown(&cmd), r"cargo test '' 'a b' 'it'\''s'");
    }
}
