//! `init`: from nothing to a working config in one command. Writes the documented example
//! config (the built-in default) where the service looks for it, never over an existing file
//! unless asked, asks the default local ports whether the usual services answer, and says
//! what to run next.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};

use super::client::{parse_proxy_url, Client, SendError, Trust};
use crate::config::{user_config_path, EMBEDDED_DEFAULT, SYSTEM_PATH};

/// How long a local service may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The local services `init` looks for, and the ports the example config expects them on.
const SERVICES: [(&str, &str, u16, &str); 3] = [
    ("ollama", "Ollama", 11434, "/api/version"),
    ("whisper", "whisper.cpp", 2022, "/"),
    ("kokoro", "Kokoro-FastAPI", 8880, "/health"),
];

/// What `init` does (the command line, as plain values).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write the per-user config instead of the system one.
    pub user: bool,
    /// Replace an existing file (the old one is kept as `*.bak`).
    pub force: bool,
    /// Ports to probe instead of the ones the config expects, by service name (`ollama`,
    /// `whisper`, `kokoro`): for callers of the library, such as the tests, which cannot take
    /// the default ports. The command line never sets it.
    #[doc(hidden)]
    pub probe_ports: Vec<(&'static str, u16)>,
}

/// The port to probe for each service.
fn ports(o: &Options) -> Vec<(&'static str, &'static str, u16, &'static str)> {
    SERVICES
        .iter()
        .map(|&(name, label, default, path)| {
            let port = o
                .probe_ports
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(default, |&(_, p)| p);
            (name, label, port, path)
        })
        .collect()
}

/// Runs `init`, printing to `out`. `config_flag` (`--config PATH`) names the file to write.
pub fn run(
    config_flag: Option<&Path>,
    o: &Options,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let target = match (config_flag, o.user) {
        (Some(p), _) => p.to_path_buf(),
        (None, true) => user_config_path().ok_or_else(|| {
            anyhow!("neither $XDG_CONFIG_HOME nor $HOME is set: name the file with --config PATH")
        })?,
        (None, false) => PathBuf::from(SYSTEM_PATH),
    };
    let backup = write_config(&target, o)?;
    let mut text = format!(
        "Wrote {} (the documented example config; `man openai-proxy.toml` explains every key).\n",
        target.display()
    );
    if let Some(b) = backup {
        let _ = writeln!(text, "The file it replaced is kept as {}.", b.display());
    }
    text.push_str("Local services on the ports the config expects:\n");
    let found = probe_all(o)?;
    for (label, port, result) in &found {
        let mark = if result.is_ok() { "✓" } else { "-" };
        let what = match result {
            Ok(status) => format!("answered (HTTP {status})"),
            Err(why) => why.clone(),
        };
        let _ = writeln!(text, "  {mark} {label:<15} 127.0.0.1:{port:<6} {what}");
    }
    if found.iter().any(|(_, _, r)| r.is_err()) {
        text.push_str(
            "Requests for a service that is not running get 502 (naming it) until it runs; \
             edit the config to point elsewhere.\n",
        );
    }
    text.push_str(&next_steps(config_flag, o.user));
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// What to run next: start the service (or reload it, if it already runs), then check it.
fn next_steps(config_flag: Option<&Path>, user: bool) -> String {
    let (start, reload) = match (config_flag, user) {
        (Some(p), _) => (
            format!("openai-proxy --config {} serve", p.display()),
            "(it serves 127.0.0.1:2020 in the foreground)".to_string(),
        ),
        (None, true) => (
            "openai-proxy enable --user".to_string(),
            "(serves 127.0.0.1:2020 now and at every login; if it already runs: \
             openai-proxy reload --user)"
                .to_string(),
        ),
        (None, false) => (
            "sudo openai-proxy enable".to_string(),
            "(serves 127.0.0.1:2020 now and at every boot; if it already runs: \
             sudo openai-proxy reload)"
                .to_string(),
        ),
    };
    format!(
        "Next: {start}   {reload}\nThen: openai-proxy check-endpoints   (a real request through \
         every route)\n"
    )
}

/// Writes the example config to `target` (its folder made if needed), replacing a file there
/// only with `force`, and then keeping the old one as `*.bak`, which it returns. The new file
/// appears whole or not at all (written beside it, then renamed).
fn write_config(target: &Path, o: &Options) -> anyhow::Result<Option<PathBuf>> {
    let hint = |e: std::io::Error| {
        let mut msg = format!("cannot write {}: {e}", target.display());
        if e.kind() == std::io::ErrorKind::PermissionDenied && !o.user {
            msg.push_str("; run it as root (sudo openai-proxy init), or use --user");
        }
        anyhow!(msg)
    };
    let exists = target.symlink_metadata().is_ok();
    if exists && !o.force {
        bail!(
            "{} already exists and was left as it is; `openai-proxy init --force{}` replaces it \
             (keeping the old one as {})",
            target.display(),
            if o.user { " --user" } else { "" },
            bak(target).display()
        );
    }
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(hint)?;
    }
    let tmp = target.with_file_name(format!(
        ".{}.init-{}",
        target
            .file_name()
            .map_or("config".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(EMBEDDED_DEFAULT.as_bytes())?;
        f.sync_all()?;
        // The mode asked for, whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(hint(e));
    }
    let backup = if exists {
        let b = bak(target);
        std::fs::rename(target, &b)
            .with_context(|| format!("cannot keep the old config as {}", b.display()))?;
        Some(b)
    } else {
        None
    };
    std::fs::rename(&tmp, target).map_err(hint)?;
    Ok(backup)
}

fn bak(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

/// One service as the probe found it: its name, port, and HTTP status or why there was none.
type Probed = (&'static str, u16, Result<u16, String>);

/// Asks each service's port, all at once.
fn probe_all(o: &Options) -> anyhow::Result<Vec<Probed>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (_, label, port, path) in ports(o) {
            tasks.push((label, port, tokio::spawn(probe(port, path))));
        }
        let mut found = Vec::new();
        for (label, port, task) in tasks {
            let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
            found.push((label, port, result));
        }
        Ok(found)
    })
}

async fn probe(port: u16, path: &'static str) -> Result<u16, String> {
    let url = parse_proxy_url(&format!("http://127.0.0.1:{port}"))?;
    let client =
        Client::new(url, PROBE_TIMEOUT, Trust::Roots(Vec::new())).map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        match client.send(req).await {
            Ok(res) => {
                let status = res.status().as_u16();
                let _ = res.into_body().collect().await;
                Ok(status)
            }
            Err(SendError::Connect(why)) => Err(format!("nothing listening ({why})")),
            Err(SendError::Failed(why)) => Err(why),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 2s".into()))
}
