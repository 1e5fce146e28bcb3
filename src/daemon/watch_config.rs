//! `server.watch_config`: a reload when the config file, or a file it names (client tokens,
//! API keys, the HTTPS certificate and key), has changed, as SIGHUP does (a bad file fails
//! safe: the old config keeps serving). Made for Kubernetes, where a ConfigMap or Secret
//! update swaps the `..data` symlink of the mounted directory: the path stays, its content
//! changes. Every [`WATCH_EVERY`] the files are read off the serving threads (each at most
//! 1 MiB, never blocking on a FIFO or device) and their contents compared with the last
//! reading; no inotify (a symlink swap replaces the watched inode) and no sidecar (another
//! process to run, secure and keep in step, for what a few reads every two seconds do).

use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{self, Config};
use crate::serve::Shared;

/// How often the files are read.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The files the live config was read from: itself and those it names.
fn watched(config: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config.source.path.iter().cloned().collect();
    files.extend(config.server.client_tokens.file.iter().cloned());
    if let Some(tls) = &config.server.tls {
        files.push(tls.cert_file.clone());
        files.push(tls.key_file.clone());
    }
    files.extend(
        config
            .backends
            .iter()
            .filter_map(|b| b.key_file())
            .map(PathBuf::from),
    );
    files
}

/// A fingerprint of the files' contents (a file that cannot be read counts by its problem).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match config::read_small_file(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.to_string().hash(&mut h),
        }
    }
    h.finish()
}

/// Reads the live config's files every [`WATCH_EVERY`] while `server.watch_config` is on, and
/// sends on `changed` when their contents differ from the last reading.
pub(super) fn spawn(state: &Arc<Shared>, changed: mpsc::Sender<()>) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        let mut interval = tokio::time::interval(WATCH_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let config = state.proxy().config.clone();
            if !config.server.watch_config {
                last = None;
                continue;
            }
            let files = watched(&config);
            let read = tokio::task::spawn_blocking(move || fingerprint(&files));
            // A file system that does not answer: try again next time.
            let Ok(Ok(now)) = tokio::time::timeout(WATCH_EVERY * 5, read).await else {
                continue;
            };
            if last.is_some_and(|l| l != now) {
                tracing::info!(
                    "server.watch_config: the config or a file it names changed; reloading"
                );
                if changed.send(()).await.is_err() {
                    return;
                }
            }
            last = Some(now);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_and_the_files_it_names_are_watched_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "aaaaaaaaaaaaaaaaaaaaaaaa\n").unwrap();
        let cfg = dir.path().join("config.toml");
        let text = format!(
            "[server]\nclient_tokens_file = {tokens:?}\nwatch_config = true\n\
             [backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
        );
        std::fs::write(&cfg, &text).unwrap();
        let config = config::load(Some(&cfg)).unwrap();
        let files = watched(&config);
        assert_eq!(files, [cfg.clone(), tokens.clone()]);
        let first = fingerprint(&files);
        assert_eq!(fingerprint(&files), first, "unchanged files, same reading");
        std::fs::write(&tokens, "bbbbbbbbbbbbbbbbbbbbbbbb\n").unwrap();
        let second = fingerprint(&files);
        assert_ne!(second, first);
        // A ConfigMap's update: the file is a symlink to a new one.
        let new = dir.path().join("config.new");
        std::fs::write(&new, text.replace("/v1", "/v2")).unwrap();
        std::fs::remove_file(&cfg).unwrap();
        std::os::unix::fs::symlink(&new, &cfg).unwrap();
        assert_ne!(fingerprint(&files), second);
    }
}
