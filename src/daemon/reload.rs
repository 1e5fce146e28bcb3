//! Reading the config for a reload without stopping the proxy.
//!
//! The main thread serves requests too (it is worker 0, see `workers`), so a reload that
//! waited there for a file (a FIFO, a stuck network file system, a slow disk) would stop its
//! share of the requests. The config is read, checked and
//! turned into a new [`Proxy`] on a blocking thread instead, and given up after
//! [`RELOAD_LIMIT`]: the old config keeps serving and the reason is logged. A reload that was
//! given up may still be stuck in its read; no other one starts until it has ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, AuthPolicy, Config, ConfigError, KeySource, ListenAddr};
use crate::proxy::Proxy;
use crate::upstream::lasting::Lasting;

/// How long a reload may take to read and check the config and build the new routes.
pub(crate) const RELOAD_LIMIT: Duration = Duration::from_secs(10);

/// How the config is (re)loaded: the same lookup and overrides at start and on every reload.
pub(crate) struct Loader {
    pub flag: Option<PathBuf>,
    /// `serve --listen`: replaces `server.listen` when not empty.
    pub listen: Vec<ListenAddr>,
}

impl Loader {
    pub(crate) fn load(&self) -> Result<Config, ConfigError> {
        let mut config = config::load(self.flag.as_deref())?;
        if !self.listen.is_empty() {
            config.server.listen = self.listen.clone();
        }
        Ok(config)
    }
}

/// A config read, checked and built, ready to be swapped in.
pub(crate) struct Prepared {
    pub proxy: Proxy,
    /// About the files it names (found off the serving thread too: `stat` can block).
    pub warnings: Vec<String>,
}

/// Prepares reloads, one at a time.
pub(crate) struct Reloader {
    loader: Arc<Loader>,
    /// What the new configuration keeps of the old (health, metrics).
    lasting: Arc<Lasting>,
    /// A reload job is running (possibly one given up, still stuck in a read).
    busy: Arc<AtomicBool>,
}

impl Reloader {
    pub(crate) fn new(loader: Loader, lasting: Arc<Lasting>) -> Reloader {
        Reloader {
            loader: Arc::new(loader),
            lasting,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reads the config and builds its [`Proxy`] off the serving thread, within
    /// [`RELOAD_LIMIT`].
    pub(crate) async fn prepare(&self) -> anyhow::Result<Prepared> {
        let (loader, lasting) = (self.loader.clone(), self.lasting.clone());
        off_thread(&self.busy, RELOAD_LIMIT, move || {
            let config = loader.load()?;
            let warnings = file_warnings(&config);
            Ok(Prepared {
                proxy: Proxy::with(config, &lasting)?,
                warnings,
            })
        })
        .await
    }
}

/// Clears the busy flag when the job ends, however it ends.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Runs `job` on a blocking thread and waits for it at most `limit`, unless a job started
/// before is still running.
async fn off_thread<T: Send + 'static>(
    busy: &Arc<AtomicBool>,
    limit: Duration,
    job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    if busy.swap(true, Ordering::SeqCst) {
        anyhow::bail!(
            "an earlier reload is still reading its files (it took longer than {}); not \
             starting another until it has ended",
            config::format_duration(limit)
        );
    }
    let guard = Busy(busy.clone());
    let handle = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        job()
    });
    match tokio::time::timeout(limit, handle).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(anyhow::anyhow!("the reload failed: {e}")),
        Err(_) => anyhow::bail!(
            "reading and checking the configuration took longer than {} (is a file it names \
             on a file system that does not answer?)",
            config::format_duration(limit)
        ),
    }
}

/// Warnings about key and token files that users other than the service's own may read.
pub(crate) fn file_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for b in &config.backends {
        let file = match &b.auth {
            AuthPolicy::Inject {
                source: KeySource::File(p) | KeySource::Credential(_, p),
                ..
            } => p,
            _ => continue,
        };
        if let Some(mode) = config::readable_by_others(file) {
            out.push(format!(
                "key file {} of backend '{}' is readable by other users (mode {mode:o}); \
                 run `chmod o-rwx {}`",
                file.display(),
                b.name,
                file.display()
            ));
        }
    }
    if let Some(tls) = &config.server.tls {
        if let Some(mode) = config::readable_by_others(&tls.key_file) {
            out.push(format!(
                "TLS key file {} (server.tls_key) is readable by other users (mode {mode:o}); \
                 run `chmod o-rwx {}`",
                tls.key_file.display(),
                tls.key_file.display()
            ));
        }
    }
    if let Some(file) = &config.server.client_tokens.file {
        if let Some(mode) = config::readable_by_others(file) {
            out.push(format!(
                "client tokens file {} is readable by other users (mode {mode:o}); \
                 run `chmod o-rwx {}`",
                file.display(),
                file.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// The serving thread's runtime: one thread.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Counts 10 ms ticks on the runtime's one thread, as requests would be served there.
    fn ticker() -> Arc<AtomicUsize> {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        ticks
    }

    #[test]
    fn a_slow_reload_does_not_stop_the_serving_thread() {
        runtime().block_on(async {
            let busy = Arc::new(AtomicBool::new(false));
            let ticks = ticker();
            let slow = || {
                std::thread::sleep(Duration::from_millis(600));
                Ok(42)
            };
            let v = off_thread(&busy, Duration::from_secs(5), slow)
                .await
                .unwrap();
            assert_eq!(v, 42);
            // 60 ticks if the thread had nothing else to do; a blocked thread: none.
            let n = ticks.load(Ordering::SeqCst);
            assert!(n >= 20, "the serving thread ticked {n} times in 600 ms");
            assert!(!busy.load(Ordering::SeqCst));
        });
    }

    #[test]
    fn a_reload_over_the_limit_is_given_up_and_blocks_the_next_until_it_ends() {
        runtime().block_on(async {
            let busy = Arc::new(AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let stuck = move || {
                // Stuck until the test lets it go, like a read on a file system that hangs.
                let _ = rx.recv();
                Ok(())
            };
            let start = tokio::time::Instant::now();
            let e = off_thread(&busy, Duration::from_millis(300), stuck)
                .await
                .unwrap_err();
            assert!(start.elapsed() < Duration::from_secs(3));
            assert!(e.to_string().contains("took longer than 300ms"), "{e}");
            let e = off_thread(&busy, Duration::from_millis(300), || Ok(()))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("still reading"), "{e}");
            tx.send(()).unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while busy.load(Ordering::SeqCst) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the job never ended"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            off_thread(&busy, Duration::from_secs(5), || Ok(()))
                .await
                .unwrap();
        });
    }
}
