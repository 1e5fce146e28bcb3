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

use crate::config::{AuthPolicy, Config, ListenAddr};
use crate::daemon::exposure::{exposed, warn_about_exposure};
use crate::daemon::listeners;
use crate::daemon::notify::{Notifier, NotifyState};
use crate::daemon::reload::{self, Loader, Reload, Reloader};
use crate::daemon::status::{spawn_reporting, Status};
use crate::daemon::workers::{self, Workers};
use crate::daemon::{usage_file, watch_config};
use crate::observe::logging;
use crate::proxy::Proxy;
use crate::serve::StdListener;
use crate::serve::{self, Acceptor, Shared};
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
    lasting.configure(&config, true);
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
    let lasting = state.lasting();
    let saving = usage_file::spawn_saving(&lasting);
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    let watching = watch_config::spawn(&state, changed_tx);

    let reload = Arc::new(Reload {
        reloader,
        state: state.clone(),
        notifier: notifier.clone(),
        status: status.clone(),
        exposed,
    });
    let shutdown = async {
        let idle_exit = (activated && !idle_exit.is_zero()).then_some(idle_exit);
        let why = until_stop(&mut signals, &mut changed, &reload, &state, idle_exit).await;
        lasting.stopping.store(true, Ordering::Relaxed);
        notifier.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&format!("Stopping ({why})")),
        ]);
        let delay = state.proxy().config.server.shutdown_delay;
        if !delay.is_zero() && why != IDLE_EXIT {
            tracing::info!(
                "{why}: /ready answers 503; still accepting connections for {}                  (server.shutdown_delay)",
                crate::config::format_duration(delay)
            );
            // A second signal cuts it short.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = signals.term.recv() => {}
                _ = signals.int.recv() => {}
            }
        }
        if let Some(task) = &scraping {
            task.abort();
        }
        tracing::info!("{why}: no longer accepting connections; finishing requests in flight");
        workers.stop();
    };
    let result = server.run(shutdown).await;
    let result = result.and(workers.join().await);
    background.abort();
    saving.abort();
    watching.abort();
    usage_file::save(&lasting).await;
    tracing::info!("stopped");
    result
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
/// Why a socket-activated proxy stops when idle (no delay before closing then).
const IDLE_EXIT: &str = "idle_exit: no connection";

/// Serves until SIGTERM, SIGINT or `idle_exit`, reloading on SIGHUP and when `changed` says
/// the config's files changed (`server.watch_config`); one reload at a time, one more after it
/// when asked meanwhile.
async fn until_stop(
    signals: &mut Signals,
    changed: &mut mpsc::Receiver<()>,
    reload: &Arc<Reload>,
    state: &Shared,
    idle_exit: Option<Duration>,
) -> &'static str {
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut reloading: Option<JoinHandle<()>> = None;
    let mut again = false;
    let why = loop {
        tokio::select! {
            _ = async {
                tokio::select! {
                    _ = signals.hup.recv() => {}
                    Some(()) = changed.recv() => {}
                }
            } => {
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
                break IDLE_EXIT
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
