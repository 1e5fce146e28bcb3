//! What the service manager shows and watches: the one-line status (`systemctl status`) and
//! the watchdog's keep-alives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::daemon::notify::{Notifier, NotifyState};
use crate::serve::Shared;
use crate::sync;

/// The one-line summary the service manager shows (`systemctl status`).
pub(super) struct Status {
    pub(super) state: Arc<Shared>,
    pub(super) addresses: String,
    /// Set while the last reload failed: the old config is still serving.
    pub(super) reload_error: Mutex<Option<String>>,
}

impl Status {
    pub(super) fn line(&self) -> String {
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
pub(super) fn spawn_reporting(notifier: &Arc<Notifier>, status: &Arc<Status>) -> JoinHandle<()> {
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
