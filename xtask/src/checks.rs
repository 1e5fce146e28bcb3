//! The checks CI runs, in order: formatting, clippy, the release build the packaging tests
//! package, and the tests, whose counts end the output. Clippy and the tests cover the whole
//! workspace: the proxy and xtask itself. `cargo test --workspace` runs every test binary: the
//! unit tests, `integration` (tests/it/), `machine` (tests/machine/, the tests that need root
//! or change the machine), `load` (tests/load.rs) and xtask's own.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::packages::is_root;
use crate::project::Project;
use crate::step::{self, shown, Steps};
use crate::{Error, Result};

pub fn run(project: &Project, steps: &mut Steps, cargo_test_args: &[String]) -> Result {
    steps.run("cargo fmt --all -- --check", || {
        step::run(&mut project.cargo(&["fmt", "--all", "--", "--check"]))
            .map_err(|e| Error::new(format!("{e}: run `cargo fmt --all`")))
    })?;
    steps.run(
        "cargo clippy --workspace --all-targets -- -D warnings",
        || {
            step::run(&mut project.cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    steps.run("cargo build --release --locked", || {
        step::run(&mut project.cargo(&["build", "--release", "--locked"]))
    })?;

    if !is_root() {
        say!(
            "\nnote: not root. The tests that install the package, run a systemd user manager \
             or mount in a private namespace (the `machine` test binary, tests/machine/) need \
             root, and fail saying so."
        );
    }
    let mut cargo_test = project.cargo(&["test", "--workspace"]);
    cargo_test.args(cargo_test_args);
    let python = project.venv().join("bin").join("python3");
    if python.is_file() {
        cargo_test.env("OPENAI_PROXY_TEST_PYTHON", &python);
    }
    let title = shown(
        std::process::Command::new("cargo")
            .args(["test", "--workspace"])
            .args(cargo_test_args),
    );
    let mut counts = None;
    let result = steps.run(&title, || {
        say!("$ {}", shown(&cargo_test));
        let child = cargo_test
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::new(format!("cannot run cargo test: {e}")))?;
        let status;
        (status, counts) = counted(child)?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::new(format!("cargo test failed ({status})")))
        }
    });
    if let Some(c) = counts {
        // The closing line: how many tests ran, after the summary of the steps.
        steps.closing_line(c.to_string());
    }
    result
}

/// What the test binaries reported, added up.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tests: {} passed, {} failed", self.passed, self.failed)?;
        if self.ignored > 0 {
            write!(f, ", {} skipped", self.ignored)?;
        }
        Ok(())
    }
}

impl Counts {
    /// Adds a libtest summary line: `test result: ok. 12 passed; 0 failed; 1 ignored; ...`.
    fn add(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return false;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
        true
    }
}

/// Copies the child's stdout to ours, line by line, adding up the test summaries; waits for
/// it to exit. A process the tests left behind may hold the output open after cargo exits:
/// the counts are then given up on after a few seconds instead of waiting for it.
fn counted(mut child: Child) -> Result<(std::process::ExitStatus, Option<Counts>)> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::new("cargo test has no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut counts = Counts::default();
        let mut seen = false;
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        let out = std::io::stdout();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let mut out = out.lock();
            let _ = out.write_all(&line);
            let _ = out.flush();
            seen |= counts.add(String::from_utf8_lossy(&line).trim_end());
            line.clear();
        }
        let _ = tx.send(seen.then_some(counts));
    });
    let status = child
        .wait()
        .map_err(|e| Error::new(format!("waiting for cargo test: {e}")))?;
    let counts = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(counts) => counts,
        Err(_) => {
            say!(
                "(cargo test exited, but a process it started still holds its output open: \
                 not waiting for it)"
            );
            None
        }
    };
    Ok((status, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_up_the_summaries_of_every_test_binary() {
        let mut c = Counts::default();
        assert!(c.add(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; \
             finished in 0.01s"
        ));
        assert!(c.add(
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 61.20s"
        ));
        assert!(!c.add("test sdk::official_python_sdk_works_through_the_proxy ... ok"));
        assert_eq!(
            c,
            Counts {
                passed: 17,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(c.to_string(), "tests: 17 passed, 2 failed, 1 skipped");
        let none = Counts {
            passed: 3,
            ..Counts::default()
        };
        assert_eq!(none.to_string(), "tests: 3 passed, 0 failed");
    }
}
