//! `serve`: the daemon's life from start to exit, and what the service manager hears of it.
//!
//! 1. Before any thread exists: take the notify socket, watchdog settings and inherited
//!    listening sockets from the environment (and clear them).
//! 2. Load the config (exit 78 when it is wrong), set up logging, bind `server.listen` unless
//!    sockets were inherited, build the routes and backends, then send `READY=1`.
//! 3. Serve. SIGHUP re-reads the config off the serving thread (`reload`) and swaps it in
//!    atomically (`RELOADING=1`, then `READY=1`); a config that fails to load (or takes too
//!    long) is logged with file:line and shown in `STATUS=`, and the old one keeps running.
//!    Requests go on being served meanwhile. `WATCHDOG=1` goes out at half of
//!    `WATCHDOG_USEC`.
//! 4. SIGTERM/SIGINT, or `server.idle_exit` without connections when socket-activated:
//!    `STOPPING=1`, stop accepting, drain, exit 0.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{AuthPolicy, Config, HostRule, ListenAddr, OriginRule};
use crate::daemon::listeners;
use crate::daemon::notify::{Notifier, NotifyState};
use crate::daemon::reload::{self, Loader, Reloader};
use crate::daemon::workers::{self, Workers};
use crate::observe::logging;
use crate::proxy::Proxy;
use crate::serve::StdListener;
use crate::serve::{self, Acceptor, Shared};
use crate::sync;
use crate::upstream::lasting::Lasting;

/// Runs the proxy in the foreground until SIGTERM or SIGINT (or idle exit). `listen`, when
/// not empty, replaces `server.listen` (at start and on every reload).
pub fn serve(config_flag: Option<&Path>, listen: &[ListenAddr]) -> anyhow::Result<()> {
    // SAFETY: `serve` runs on the main thread before any other thread is started; these read
    // and clear environment variables.
    let notifier = unsafe { Notifier::from_env() };
    // SAFETY: as above (still the only thread); the inherited descriptors are this process's
    // and nothing else has taken them.
    let inherited = unsafe { listeners::inherited() }?;
    let loader = Loader {
        flag: config_flag.map(Path::to_path_buf),
        listen: listen.to_vec(),
    };
    let config = loader.load()?;
    let problems = logging::init(&config.log);
    for p in problems {
        tracing::warn!("{p}");
    }
    raise_fd_limit();
    let (metrics, inherited) = listeners::metrics_socket(inherited)?;
    let metrics = match (metrics, config.metrics.listen) {
        (Some(l), _) => Some(l),
        (None, Some(addr)) => Some(listeners::bind_metrics(addr)?),
        (None, None) => None,
    };
    let activated = !inherited.is_empty();
    let listeners: Vec<StdListener> = if activated {
        for i in &inherited {
            tracing::info!(
                "using socket \"{}\" from the service manager: {}",
                i.name,
                i.listener.describe()
            );
        }
        tracing::info!("server.listen is not used: the service manager passed sockets");
        inherited.into_iter().map(|i| i.listener).collect()
    } else {
        listeners::bind(&config.server.listen)?
    };
    // The main thread is worker 0; `server.workers` - 1 more threads each run their own
    // single-threaded loop (see `workers`).
    let runtime = workers::runtime()?;
    let lasting = Lasting::new(metrics.is_some().then(|| config.server.workers.resolve()));
    let result = runtime.block_on(run(
        Reloader::new(loader, lasting.clone()),
        Sockets {
            listeners,
            activated,
            metrics,
        },
        Proxy::with(config, &lasting)?,
        notifier,
    ));
    logging::flush();
    result
}

/// The sockets the proxy serves on.
struct Sockets {
    listeners: Vec<StdListener>,
    /// Inherited from the service manager (not bound from the config).
    activated: bool,
    /// `/metrics`, when metrics are on.
    metrics: Option<std::net::TcpListener>,
}

async fn run(
    reloader: Reloader,
    sockets: Sockets,
    proxy: Proxy,
    notifier: Notifier,
) -> anyhow::Result<()> {
    let Sockets {
        listeners,
        activated,
        metrics,
    } = sockets;
    let config = proxy.config.clone();
    let config = &*config;
    let mut signals = Signals::new()?;
    announce(config, &listeners);
    let exposed = exposed(&listeners);
    warn_about_exposure(config, &exposed);
    let addresses = listeners
        .iter()
        .map(StdListener::describe)
        .collect::<Vec<_>>()
        .join(", ");
    let idle_exit = config.server.idle_exit;
    if !idle_exit.is_zero() && !activated {
        tracing::info!(
            "server.idle_exit applies only when socket-activated; not exiting when idle"
        );
    }
    let worker_count = config.server.workers.resolve();
    let state = Shared::new(proxy);
    state.cache_on_this_worker();
    let scraping = metrics.map(|l| serve_metrics(l, &state));
    let workers = Workers::spawn(worker_count - 1, &listeners, &state)?;
    tracing::debug!("serving with {worker_count} worker thread(s)");
    let server = Acceptor::new(listeners, state.clone())?;
    let status = Arc::new(Status {
        state: state.clone(),
        addresses,
        reload_error: Mutex::new(None),
    });
    let notifier = Arc::new(notifier);
    notifier.send(&[NotifyState::Ready, NotifyState::Status(&status.line())]);
    let background = spawn_reporting(&notifier, &status);

    let reload = Arc::new(Reload {
        reloader,
        state: state.clone(),
        notifier: notifier.clone(),
        status: status.clone(),
        exposed,
    });
    let shutdown = async {
        let idle_exit = (activated && !idle_exit.is_zero()).then_some(idle_exit);
        let why = until_stop(&mut signals, &reload, &state, idle_exit).await;
        notifier.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!("Stopping ({why})")),
        ]);
        if let Some(task) = &scraping {
            task.abort();
        }
        tracing::info!("{why}: no longer accepting connections; finishing requests in flight");
        workers.stop();
    };
    let result = server.run(shutdown).await;
    let result = result.and(workers.join().await);
    background.abort();
    tracing::info!("stopped");
    result
}

/// The TCP listeners reachable beyond loopback, for the warnings about exposure.
fn exposed(listeners: &[StdListener]) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| match l {
            StdListener::Tcp(t) => t
                .local_addr()
                .ok()
                .filter(|a| !a.ip().to_canonical().is_loopback()),
            StdListener::Unix { .. } => None,
        })
        .map(|a| a.to_string())
        .collect()
}

/// Serves `/metrics` on `listener` until aborted, warning when anyone beyond loopback can
/// read it without a token.
fn serve_metrics(
    listener: std::net::TcpListener,
    state: &Arc<Shared>,
) -> JoinHandle<anyhow::Result<()>> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    tracing::info!("metrics: http://{addr}/metrics");
    let open = !matches!(listener.local_addr(), Ok(a) if a.ip().to_canonical().is_loopback());
    if open && !state.proxy().config.server.client_tokens.enabled() {
        tracing::warn!(
            "the metrics listener {addr} is reachable beyond loopback and \
             server.client_tokens_file is not set: anyone who can reach it can read \
             the routes, backends and servers"
        );
    }
    let (state, never) = (state.clone(), std::future::pending());
    tokio::spawn(serve::serve_metrics(listener, state, never))
}

/// Reloads on SIGHUP (one at a time, in a task of its own; a SIGHUP meanwhile makes one more
/// after it) until SIGTERM, SIGINT, or `idle_exit` without a connection; says which.
async fn until_stop(
    signals: &mut Signals,
    reload: &Arc<Reload>,
    state: &Shared,
    idle_exit: Option<Duration>,
) -> &'static str {
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut reloading: Option<JoinHandle<()>> = None;
    let mut again = false;
    let why = loop {
        tokio::select! {
            _ = signals.hup.recv() => {
                if reloading.is_some() {
                    again = true;
                } else {
                    reloading = Some(reload.clone().spawn(done_tx.clone()));
                }
            }
            Some(()) = done_rx.recv() => {
                reloading = std::mem::take(&mut again)
                    .then(|| reload.clone().spawn(done_tx.clone()));
            }
            _ = signals.term.recv() => break "SIGTERM",
            _ = signals.int.recv() => break "SIGINT",
            () = idle(state, idle_exit.unwrap_or_default()), if idle_exit.is_some() => {
                break "idle_exit: no connection"
            }
        }
    };
    // A reload still running must not report READY after STOPPING.
    if let Some(task) = reloading {
        task.abort();
    }
    why
}

struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }
}

/// The one-line summary the service manager shows (`systemctl status`).
struct Status {
    state: Arc<Shared>,
    addresses: String,
    /// Set while the last reload failed: the old config is still serving.
    reload_error: Mutex<Option<String>>,
}

impl Status {
    fn line(&self) -> String {
        let routes = self.state.proxy().config.routes.len();
        let requests = self.state.requests.get();
        let base = format!(
            "Serving {routes} routes on {}; {requests} requests",
            self.addresses
        );
        match sync::lock(&self.reload_error).clone() {
            Some(e) => format!("{base}; reload FAILED, previous config kept: {e}"),
            None => base,
        }
    }
}

/// Sends `WATCHDOG=1` at half the watchdog interval, and refreshes `STATUS=` when the request
/// count changed (at most every 10 s; nothing at all while idle).
fn spawn_reporting(notifier: &Arc<Notifier>, status: &Arc<Status>) -> JoinHandle<()> {
    let notifier = notifier.clone();
    let status = status.clone();
    tokio::spawn(async move {
        if !notifier.is_active() {
            return;
        }
        const STATUS_EVERY: Duration = Duration::from_secs(10);
        let tick = notifier
            .watchdog_interval
            .map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_requests = status.state.requests.get();
        let mut last_status = tokio::time::Instant::now();
        loop {
            interval.tick().await;
            if notifier.watchdog_interval.is_some() {
                notifier.send(&[NotifyState::Watchdog]);
            }
            let requests = status.state.requests.get();
            if requests != last_requests && last_status.elapsed() >= STATUS_EVERY {
                last_requests = requests;
                last_status = tokio::time::Instant::now();
                notifier.send(&[NotifyState::Status(&status.line())]);
            }
        }
    })
}

/// What a reload needs, shared with its task.
struct Reload {
    reloader: Reloader,
    state: Arc<Shared>,
    notifier: Arc<Notifier>,
    status: Arc<Status>,
    /// The addresses listened on beyond loopback.
    exposed: Vec<String>,
}

impl Reload {
    /// Runs [`Reload::run`] in a task; `done` hears when it is over.
    fn spawn(self: Arc<Self>, done: mpsc::Sender<()>) -> JoinHandle<()> {
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
            state.replace(prepared.proxy);
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

/// Resolves once no connection has been open for `after`.
async fn idle(state: &Shared, after: Duration) {
    loop {
        while state.open_connections.load(Ordering::SeqCst) > 0 {
            let closed = state.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if state.open_connections.load(Ordering::SeqCst) == 0 {
                break;
            }
            closed.await;
        }
        let accepted = state.accepted.load(Ordering::SeqCst);
        tokio::time::sleep(after).await;
        if state.accepted.load(Ordering::SeqCst) == accepted
            && state.open_connections.load(Ordering::SeqCst) == 0
        {
            return;
        }
    }
}

/// Logs what is about to run: config, addresses, and anything risky.
fn announce(config: &Config, listeners: &[StdListener]) {
    tracing::info!(
        "openai-proxy {} using {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.source.display_name(),
        config.source.origin
    );
    for b in &config.backends {
        if b.tls_insecure {
            tracing::warn!(
                "backend '{}' ({}) has tls_insecure = true: its certificate is NOT verified",
                b.name,
                b.url()
            );
        }
        if let AuthPolicy::Inject { source, .. } = &b.auth {
            tracing::info!("backend '{}' gets the key from {source}", b.name);
        }
    }
    for w in reload::file_warnings(config) {
        tracing::warn!("{w}");
    }
    for l in listeners {
        tracing::info!("listening on {}", l.describe());
    }
    if let Some(tls) = &config.server.tls {
        tracing::info!(
            "HTTPS (HTTP/2 and HTTP/1.1) on the TCP listeners with the certificate of {}",
            tls.cert_file.display()
        );
    }
}

/// Warns when the proxy listens beyond loopback without asking clients for a token, and when
/// a backend forwards the client's `Authorization`, which then carries the proxy's token.
fn warn_about_exposure(config: &Config, exposed: &[String]) {
    for w in exposure_warnings(config, exposed) {
        tracing::warn!("{w}");
    }
    let tokens = &config.server.client_tokens;
    if tokens.enabled() {
        tracing::info!(
            "clients must send one of {} tokens from {}",
            tokens.len(),
            tokens
                .file
                .as_deref()
                .map_or_else(|| "?".into(), |p| p.display().to_string())
        );
        for b in &config.backends {
            if b.auth == AuthPolicy::Forward {
                tracing::warn!(
                    "backend '{}' has forward_client_auth = true, but with client tokens the \
                     client's Authorization header holds the proxy's token and is removed; \
                     give the backend its key with api_key_file",
                    b.name
                );
            }
        }
    }
}

/// The warnings for listening beyond loopback (`exposed`: those addresses) without client
/// tokens, and for letting every web page (`"*"` in `server.cors_origins`) or every name
/// (`"*"` in `server.allowed_hosts`) through.
fn exposure_warnings(config: &Config, exposed: &[String]) -> Vec<String> {
    let mut w = Vec::new();
    if !exposed.is_empty() && !config.server.client_tokens.enabled() {
        w.push(format!(
            "listening on {} beyond loopback without server.client_tokens_file: anyone who \
             can reach it can use every backend and any key the proxy injects",
            exposed.join(", ")
        ));
    }
    if !exposed.is_empty() && config.server.tls.is_none() {
        w.push(format!(
            "listening on {} beyond loopback without TLS (server.tls_cert, server.tls_key): \
             requests, answers and any client token or key in them cross the network in \
             clear text",
            exposed.join(", ")
        ));
    }
    if config.server.cors_origins.contains(&OriginRule::Any) {
        w.push(
            "server.cors_origins contains \"*\": every web page you visit can use the proxy, \
             and any key it injects; list the origins of your web clients instead"
                .to_string(),
        );
    }
    if config.server.allowed_hosts.contains(&HostRule::Any) {
        w.push(
            "server.allowed_hosts contains \"*\": a web page can rebind its own DNS name to \
             this machine and use the proxy (DNS rebinding); list the names instead"
                .to_string(),
        );
    }
    w
}

/// Raises the soft limit on open files to the hard limit: every connection costs a descriptor
/// (two when proxied), and the usual soft limit of 1024 would refuse connections long before
/// the machine runs out of anything.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!("raised the open-files limit from {old} to {}", lim.rlim_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_without_tokens_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "a-client-token-0123456789\n").unwrap();
        let routes = "[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";
        let open = Config::from_toml(routes).unwrap();
        let guarded = Config::from_toml(&format!(
            "[server]\nclient_tokens_file = {tokens:?}\n{routes}"
        ))
        .unwrap();
        let exposed = ["0.0.0.0:2020".to_string(), "[::]:2020".to_string()];
        let w = exposure_warnings(&open, &exposed);
        assert_eq!(w.len(), 2);
        assert!(
            w[0].starts_with("listening on 0.0.0.0:2020, [::]:2020 beyond loopback without server.client_tokens_file"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("listening on 0.0.0.0:2020, [::]:2020 beyond loopback without TLS"),
            "{w:?}"
        );
        assert!(exposure_warnings(&open, &[]).is_empty());
        let w = exposure_warnings(&guarded, &exposed);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("without TLS"), "{w:?}");
        let any = Config::from_toml(&format!(
            "[server]\ncors_origins = [\"*\"]\nallowed_hosts = [\"*\"]\n{routes}"
        ))
        .unwrap();
        let w = exposure_warnings(&any, &[]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("server.cors_origins contains \"*\""),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("server.allowed_hosts contains \"*\""),
            "{w:?}"
        );
    }
}
