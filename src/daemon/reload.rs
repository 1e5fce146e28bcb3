//! Reloading on SIGHUP: the config read without stopping the proxy, swapped in, and the
//! outcome told to the log and the service manager.
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

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::exposure::warn_about_exposure;
use super::notify::{Notifier, NotifyState};
use super::status::Status;
use crate::config::{self, Config, ConfigError, ListenAddr};
use crate::observe::logging;
use crate::proxy::Proxy;
use crate::serve::Shared;
use crate::sync;
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
        let Some(file) = b.key_file() else {
            continue;
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

/// What a reload needs, shared with its task.
pub(super) struct Reload {
    pub(super) reloader: Reloader,
    pub(super) state: Arc<Shared>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) status: Arc<Status>,
    /// The addresses listened on beyond loopback.
    pub(super) exposed: Vec<String>,
}

impl Reload {
    /// Runs [`Reload::run`] in a task; `done` hears when it is over.
    pub(super) fn spawn(self: Arc<Self>, done: mpsc::Sender<()>) -> JoinHandle<()> {
        tokio::spawn(async move {
            self.run().await;
            let _ = done.send(()).await;
        })
    }

    /// Re-reads the config (off this thread) and swaps it in; on failure keeps the old one
    /// and says so.
    async fn run(&self) {
        let Reload {
            reloader,
            state,
            notifier,
            status,
            exposed,
        } = self;
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        notifier.send(&states);
        tracing::info!("SIGHUP: reloading the configuration");
        let outcome = reloader.prepare().await.map(|prepared| {
            let config = &prepared.proxy.config;
            let old = state.proxy();
            if config.server.listen != old.config.server.listen {
                tracing::warn!("server.listen changed: that takes effect only after a restart");
            }
            if config.server.workers != old.config.server.workers {
                tracing::warn!("server.workers changed: that takes effect only after a restart");
            }
            match (&config.server.tls, &old.config.server.tls) {
                (Some(tls), _) => tracing::info!(
                    "new connections get the certificate of {}",
                    tls.cert_file.display()
                ),
                (None, Some(_)) => {
                    tracing::warn!("TLS turned off: new connections are plain HTTP")
                }
                (None, None) => {}
            }
            if config.log.target != old.config.log.target {
                tracing::warn!("log.target changed: that takes effect only after a restart");
            }
            if config.metrics.listen != old.config.metrics.listen {
                tracing::warn!("metrics.listen changed: that takes effect only after a restart");
            }
            logging::reconfigure(&config.log);
            for w in &prepared.warnings {
                tracing::warn!("{w}");
            }
            warn_about_exposure(config, exposed);
            let routes = config.routes.len();
            let source = config.source.display_name();
            let mut proxy = prepared.proxy;
            proxy.take_over_sessions(&old);
            state.replace(proxy);
            release_when_done(old);
            tracing::info!("reloaded {source}: {routes} routes");
        });
        report_reload(outcome, notifier, status);
    }
}

/// Logs how a reload ended and tells the service manager.
fn report_reload(outcome: anyhow::Result<()>, notifier: &Notifier, status: &Status) {
    let error = match outcome {
        Ok(()) => None,
        Err(e) => {
            let text = format!("{e:#}");
            for line in text.lines() {
                tracing::error!("reload failed, keeping the previous configuration: {line}");
            }
            Some(text.lines().next().unwrap_or_default().to_string())
        }
    };
    if let Some(m) = &status.state.proxy().lasting.metrics {
        m.reloaded(error.is_none());
    }
    *sync::lock(&status.reload_error) = error;
    notifier.send(&[NotifyState::Ready, NotifyState::Status(&status.line())]);
}

/// Lets the replaced configuration go once the last request using it is done, then hands the
/// memory it and its backend connections used back to the OS: glibc's allocator keeps freed
/// memory otherwise, and a proxy reloaded now and then for weeks would only ever grow.
fn release_when_done(old: Arc<Proxy>) {
    tokio::spawn(async move {
        while Arc::strong_count(&old) > 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop(old);
        // Its pooled connections close in their own tasks; give them a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    });
}

/// Returns free heap pages to the OS (glibc only; elsewhere the allocator does it itself).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
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
