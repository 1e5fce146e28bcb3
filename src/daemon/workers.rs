//! Worker threads: `server.workers` event loops, each a single-threaded tokio runtime on its
//! own thread, all accepting from the same listening sockets (duplicated descriptors, inherited
//! ones included), the way nginx and HAProxy use every core.
//!
//! One loop per thread keeps what made the single-threaded proxy cheap per request (no work
//! stealing, no cross-thread wake-ups: a connection, its request and its backend connection
//! stay on the thread that accepted it) and adds cores. What all workers share lives in
//! [`crate::serve::Shared`] (the live config, counters); what a connection needs stays on its
//! worker (its task, its pooled backend connections, its access-log buffer).
//!
//! The main thread is worker 0: it also runs the lifecycle (signals, readiness, reload). The
//! others are started by [`Workers::spawn`] and stopped with it.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::observe::logging;
use crate::serve::StdListener;
use crate::serve::{Acceptor, Shared};
use crate::sync;

/// A runtime for one worker: single-threaded, with the access log flushed whenever the loop
/// runs out of work (so a line is written as soon as nothing else is waiting, in one `write`
/// with the other lines finished in the same turn).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    logging::batch_on_this_thread();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(logging::flush_idle)
        .build()
        .context("cannot start the async runtime")
}

/// Workers 1..N: their threads and the switch that stops them.
pub struct Workers {
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `count` workers (numbered from 1) serving duplicates of `listeners`; returns
    /// once every one of them has registered its listeners, or with the first failure.
    pub fn spawn(
        count: usize,
        listeners: &[StdListener],
        state: &Arc<Shared>,
    ) -> anyhow::Result<Workers> {
        let (stop, _) = watch::channel(false);
        let mut workers = Workers {
            threads: Vec::with_capacity(count),
            stop,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        for i in 1..=count {
            let own = listeners
                .iter()
                .map(StdListener::try_clone)
                .collect::<std::io::Result<Vec<_>>>()
                .context("cannot share a listening socket with a worker")?;
            let state = state.clone();
            let ready = ready_tx.clone();
            let mut stop = workers.stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    sync::set_index(i);
                    let result = runtime().and_then(|rt| {
                        rt.block_on(async {
                            state.cache_on_this_worker();
                            let server = match Acceptor::new(own, state) {
                                Ok(s) => s,
                                Err(e) => {
                                    let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
                                    return Err(e);
                                }
                            };
                            let _ = ready.send(Ok(()));
                            server
                                .run(async move {
                                    let _ = stop.wait_for(|s| *s).await;
                                })
                                .await
                        })
                    });
                    logging::flush();
                    result
                })
                .context("cannot start a worker thread")?;
            workers.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    workers.stop();
                    return Err(e.context("a worker failed to start"));
                }
                Err(_) => {
                    workers.stop();
                    anyhow::bail!("a worker thread ended while starting");
                }
            }
        }
        Ok(workers)
    }

    /// Tells every worker to stop accepting and drain (as `server.shutdown_timeout` allows).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for every worker to finish draining.
    pub async fn join(mut self) -> anyhow::Result<()> {
        let threads = std::mem::take(&mut self.threads);
        tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for t in threads {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => result = Err(e),
                    Err(_) => result = Err(anyhow::anyhow!("a worker thread panicked")),
                }
            }
            result
        })
        .await
        .context("cannot wait for the workers")?
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
