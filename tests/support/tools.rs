//! What some tests need beyond Rust: programs from Debian packages, cargo's package builders,
//! root, and Python with the OpenAI SDK. A test that lacks one fails at once, saying what is
//! missing and the one command that sets everything up: `cargo xtask test` (xtask/), which
//! installs all of it and then runs every test. The tests that need nothing run anywhere.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The command that installs what the tests need and runs them (the README's test command).
pub const SETUP: &str = "cargo xtask test";

/// Whether `program` is on PATH (or, given as a path, exists).
pub fn installed(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Fails the test unless `program` is installed, naming the Debian package that has it.
pub fn require(program: &str, package: &str) {
    assert!(
        installed(program),
        "`{program}` is not installed; this test needs it (Debian package {package}). \
         `{SETUP}` installs everything the tests need, then runs them"
    );
}

/// Fails the test unless `tool` (a cargo subcommand, from crates.io) is installed.
#[allow(dead_code)] // for the machine binary's tests (tests/machine/) only
pub fn require_cargo_tool(tool: &str) {
    assert!(
        installed(tool),
        "`{tool}` is not installed; this test needs it (cargo install --locked {tool}). \
         `{SETUP}` installs everything the tests need, then runs them"
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the test unless it runs as root; `what` says what the test does that needs it.
#[allow(dead_code)] // for the machine binary's tests (tests/machine/) only
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "this test {what}: it needs root. Run the tests as root with `{SETUP}`, which also \
         installs what they need"
    );
}

/// The Python the tests run: the virtual environment `cargo xtask test` makes, with the
/// packages of tests/requirements.txt (it names it in $OPENAI_PROXY_TEST_PYTHON; a plain
/// `cargo test` finds it in TARGET/venv), else the system's python3.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENAI_PROXY_TEST_PYTHON") {
        return p.into();
    }
    match target().map(|t| t.join("venv/bin/python3")) {
        Some(p) if p.is_file() => p,
        _ => "python3".into(),
    }
}

/// Cargo's target directory (the binary under test is in TARGET/debug/).
fn target() -> Option<PathBuf> {
    Path::new(super::bin::exe())
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// The program `name` of an npm package `cargo xtask setup` installs into TARGET/npm
/// (xtask/src/npm.rs): Claude Code's `claude`, Codex CLI's `codex`. Fails the test when it
/// is not there.
pub fn npm_program(name: &str, package: &str) -> PathBuf {
    let bin = target()
        .map(|t| t.join("npm/node_modules/.bin").join(name))
        .filter(|p| p.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed in TARGET/npm; this test needs it (npm package \
             {package}, with Node.js). `{SETUP}` installs everything the tests need, then runs \
             them"
        )
    })
}

/// Runs `cmd` (stdin empty, output captured) to its end, killing it and failing the test if
/// it takes longer than `limit`.
pub async fn run_bounded(
    mut cmd: tokio::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let what = format!("{:?}", cmd.as_std().get_program());
    let child = cmd
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // On time-out the child is dropped, which kills it.
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The variables the SDKs and CLIs take their endpoint and credentials from.
pub const CLIENT_VARS: &[&str] = &[
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "CODEX_API_KEY",
    "CODEX_HOME",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_MODEL",
    "CLAUDE_CONFIG_DIR",
];

/// Runs `tests/SCRIPT ARGS...` with [`python`] and `envs`, and returns the JSON it prints and
/// what it wrote on stderr; fails the test when the script fails.
pub async fn run_python<K, V>(
    script: &str,
    args: &[&str],
    envs: impl IntoIterator<Item = (K, V)>,
) -> (serde_json::Value, String)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args);
    // Only what the test says reaches the SDKs, whatever the environment of `cargo test`.
    for var in CLIENT_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(envs);
    let out = run_bounded(cmd, std::time::Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stderr}");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (json, stderr)
}

/// Fails the test unless [`python`] can import `module` (from tests/requirements.txt).
pub fn require_python_module(module: &str) {
    let python = python();
    let found = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{} cannot import {module}; this test needs it (tests/requirements.txt, in the \
         virtual environment TARGET/venv). `{SETUP}` makes it, then runs the tests",
        python.display()
    );
}

/// Fails the test unless tests/tools/systemd-user-sandbox can run a real `systemd --user`
/// here (root, systemd) for scripts that use curl.
#[allow(dead_code)] // for the machine binary's tests (tests/machine/) only
pub fn require_user_manager() {
    require_root("runs a systemd user manager (tests/tools/systemd-user-sandbox)");
    require("/usr/lib/systemd/systemd", "systemd");
    require("systemctl", "systemd");
    require("unshare", "util-linux");
    require("curl", "curl");
    require_run_systemd();
}

/// Fails the test unless /run/systemd exists (systemd makes it): the test mounts over it in a
/// private mount namespace.
#[allow(dead_code)] // for the machine binary's tests (tests/machine/) only
pub fn require_run_systemd() {
    assert!(
        Path::new("/run/systemd").is_dir(),
        "/run/systemd does not exist; this test mounts over it in a private mount namespace \
         (Debian package systemd makes it). `{SETUP}` installs everything the tests need, then \
         runs them"
    );
}
