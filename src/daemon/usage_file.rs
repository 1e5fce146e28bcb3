//! `[usage] file`: the ledger's totals (and the clients' days) written every few seconds while they change, and once
//! more when the daemon stops; each write runs on a blocking thread, never a serving one.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::observe::ledger::file::SAVE_EVERY;
use crate::upstream::lasting::Lasting;

/// Writes the totals every [`SAVE_EVERY`] (when `[usage] file` is set and they changed) until
/// aborted.
pub(super) fn spawn_saving(lasting: &Arc<Lasting>) -> JoinHandle<()> {
    let lasting = lasting.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(SAVE_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            save(&lasting).await;
        }
    })
}

/// Writes the totals now (when they changed), off the serving threads.
pub(super) async fn save(lasting: &Arc<Lasting>) {
    if !lasting.ledger.keeps_file() {
        return;
    }
    let lasting = lasting.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || lasting.save()).await {
        tracing::warn!("[usage] file: the write failed: {e}");
    }
}
