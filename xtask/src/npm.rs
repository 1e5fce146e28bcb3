//! The command-line clients the tests run through the proxy, from npm: Claude Code and Codex
//! CLI (tests/it/proxy/anthropic_clients.rs, codex.rs), at pinned versions in TARGET/npm
//! (tests/support/tools.rs looks for them there). Each ships a native program in a
//! per-platform package; Node.js and npm (Debian packages, packages.rs) install them, and Codex
//! starts through Node.

use std::fs;
use std::path::{Path, PathBuf};

use crate::project::Project;
use crate::step;
use crate::{Error, Result};

/// The packages, their versions, and the program each brings.
pub const PACKAGES: &[(&str, &str, &str)] = &[
    ("@anthropic-ai/claude-code", "2.1.337", "claude"),
    ("@openai/codex", "0.171.0", "codex"),
];

/// TARGET/npm.
pub fn dir(project: &Project) -> PathBuf {
    project.target.join("npm")
}

/// Whether `package` is installed in `dir` at `version` (its package.json says so).
fn has_version(dir: &Path, package: &str, version: &str) -> bool {
    let manifest = dir.join("node_modules").join(package).join("package.json");
    fs::read_to_string(manifest).is_ok_and(|text| {
        let text: String = text.split_whitespace().collect();
        text.contains(&format!("\"version\":\"{version}\""))
    })
}

/// Installs the packages that are missing or at another version, then runs each program's
/// `--version` to see it works (Claude Code's postinstall puts its native program in place).
pub fn install(project: &Project) -> Result {
    let dir = dir(project);
    let wanted: Vec<String> = PACKAGES
        .iter()
        .filter(|(package, version, _)| !has_version(&dir, package, version))
        .map(|(package, version, _)| format!("{package}@{version}"))
        .collect();
    if wanted.is_empty() {
        say!("{} has them at their versions", dir.display());
    } else {
        if !project.has_program("npm") {
            return Err(Error::new(
                "npm is not installed (Debian: apt-get install nodejs npm)",
            ));
        }
        fs::create_dir_all(&dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        step::run(
            project
                .command("npm")
                .args(["install", "--no-audit", "--no-fund", "--save-exact"])
                .arg("--prefix")
                .arg(&dir)
                .args(&wanted),
        )?;
    }
    for (package, version, program) in PACKAGES {
        let bin = dir.join("node_modules/.bin").join(program);
        let out = project
            .command(&bin)
            .arg("--version")
            .output()
            .map_err(|e| Error::new(format!("cannot run {}: {e}", bin.display())))?;
        let said = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !said.contains(version) {
            return Err(Error::new(format!(
                "{} --version (npm package {package}@{version}) said: {}{}",
                bin.display(),
                said.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        say!("{program} {version}");
    }
    Ok(())
}
