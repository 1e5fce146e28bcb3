//! The repository the task works on, and the commands it runs there: with the cargo that runs
//! the task, and with cargo's bin directory on PATH, where `cargo install` puts the tools.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

pub struct Project {
    /// The repository's top directory (the workspace root).
    pub root: PathBuf,
    /// Cargo's target directory (`cargo metadata`'s `target_directory`).
    pub target: PathBuf,
    /// The cargo that runs this task (`$CARGO`), for the cargo commands the task runs.
    cargo: OsString,
    /// `$PATH` for every command, with cargo's bin directory added if it was not on it.
    path: OsString,
}

impl Project {
    /// The repository this xtask was built from, and cargo's target directory for it.
    pub fn find() -> Result<Project> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .ok_or_else(|| Error::new("xtask/ has no parent directory"))?
            .to_path_buf();
        std::env::set_current_dir(&root)
            .map_err(|e| Error::new(format!("cannot change to {}: {e}", root.display())))?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let path = path_with_cargo_bin();
        let mut project = Project {
            root,
            target: PathBuf::new(),
            cargo,
            path,
        };
        project.target = project.target_dir()?;
        Ok(project)
    }

    /// A command for `program`, run in the repository with this task's PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).env("PATH", &self.path);
        cmd
    }

    /// `cargo ARGS...`, with the cargo that runs this task.
    pub fn cargo(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(&self.cargo);
        cmd.args(args);
        cmd
    }

    /// Whether `program` is found on this task's PATH, or in the sbin directories (which a
    /// user's PATH may lack), or is a path that exists.
    pub fn has_program(&self, program: &str) -> bool {
        if program.contains('/') {
            return Path::new(program).is_file();
        }
        std::env::split_paths(&self.path)
            .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
            .any(|dir| dir.join(program).is_file())
    }

    /// The virtual environment the tests take their Python from (tests/support/tools.rs
    /// looks for it at the same place).
    pub fn venv(&self) -> PathBuf {
        self.target.join("venv")
    }

    fn target_dir(&self) -> Result<PathBuf> {
        let out = self
            .cargo(&[
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::new(format!("cannot run cargo metadata: {e}")))?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "cargo metadata failed ({})",
                out.status
            )));
        }
        let json = String::from_utf8_lossy(&out.stdout);
        json_string_field(&json, "target_directory")
            .map(PathBuf::from)
            .ok_or_else(|| Error::new("cargo metadata printed no target_directory"))
    }
}

/// `$PATH`, with cargo's bin directory (`$CARGO_HOME/bin`, by default `~/.cargo/bin`) at the
/// end if it is not on it: `cargo install` puts cargo-deb there, and the tests look for it
/// on PATH.
fn path_with_cargo_bin() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let Some(bin) = cargo_home.map(|h| h.join("bin")) else {
        return path;
    };
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if dirs.contains(&bin) {
        return path;
    }
    dirs.push(bin);
    std::env::join_paths(dirs).unwrap_or(path)
}

/// The string value of the last `"name":"..."` in `json`: enough for cargo metadata's
/// top-level `target_directory`, which comes after the packages.
fn json_string_field(json: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = json.rfind(&key)? + key.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_target_directory_from_cargo_metadata() {
        let json = r#"{"packages":[{"name":"x","targets":[{"src_path":"/a/b"}]}],"target_directory":"/work/a \"q\"\\b/target","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/work/a \"q\"\\b/target")
        );
        assert_eq!(json_string_field(json, "workspace_root"), None);
    }
}
