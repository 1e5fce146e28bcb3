//! Where the config comes from: `--config PATH`, `$OPENAI_PROXY_CONFIG`, the user's
//! `$XDG_CONFIG_HOME/openai-proxy/config.toml` (when not root),
//! `/etc/openai-proxy/config.toml`, then the example config compiled into the binary.

use std::fmt;
use std::path::{Path, PathBuf};

/// The commented example config, which is also what runs when no config file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/openai-proxy.toml");

/// The system-wide config file.
pub(crate) const SYSTEM_PATH: &str = "/etc/openai-proxy/config.toml";

/// Environment variable naming a config file (second in the lookup order).
pub(crate) const CONFIG_ENV: &str = "OPENAI_PROXY_CONFIG";

/// Why a particular config was chosen; `check-config -v` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--config PATH` on the command line.
    Flag,
    /// `$OPENAI_PROXY_CONFIG`.
    Env,
    /// `$XDG_CONFIG_HOME/openai-proxy/config.toml` (or `~/.config/...`), for non-root users.
    User,
    /// `/etc/openai-proxy/config.toml`.
    System,
    /// No file found: the example config compiled into the binary.
    Embedded,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => "--config",
            Origin::Env => "$OPENAI_PROXY_CONFIG",
            Origin::User => "user config ($XDG_CONFIG_HOME)",
            Origin::System => "system config",
            Origin::Embedded => "no config file found; embedded default",
        })
    }
}

/// Where the config came from: a file, or the embedded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub origin: Origin,
}

impl Source {
    /// How the file is named in messages.
    pub fn display_name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<embedded default>".to_string(),
        }
    }
}

/// Finds the config by the lookup order. An explicitly named file (flag or environment) is
/// used whether or not it exists (reading it then says what is wrong); the others are used
/// only when present.
pub(crate) fn locate(flag: Option<&Path>) -> Source {
    let found = |path: PathBuf, origin| Source {
        path: Some(path),
        origin,
    };
    if let Some(p) = flag {
        return found(p.to_path_buf(), Origin::Flag);
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return found(PathBuf::from(p), Origin::Env);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if let Some(p) = user_config_path().filter(|p| p.is_file()) {
            return found(p, Origin::User);
        }
    }
    let system = PathBuf::from(SYSTEM_PATH);
    if system.is_file() {
        return found(system, Origin::System);
    }
    Source {
        path: None,
        origin: Origin::Embedded,
    }
}

/// `$XDG_CONFIG_HOME/openai-proxy/config.toml`, or `~/.config/openai-proxy/config.toml`.
pub(crate) fn user_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("openai-proxy").join("config.toml"))
}
