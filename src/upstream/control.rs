//! Loading and unloading an on-demand backend's model: `systemctl [--user] start|stop` of the
//! units [`super::units`] found for it, in the service manager the proxy belongs to
//! ([`Scope::of_this_process`](super::units::Scope::of_this_process)), off the async threads.
//!
//! Loading starts the service the backend's socket triggers (the recipe's
//! `openai-proxy-backend@NAME.service`, `systemd-socket-proxyd`): it binds to the server and is
//! ordered after it, so the start returns once the server has come up (`wait-ready`); the
//! server itself, `StopWhenUnneeded=yes`, would stop again at once if it were started alone.
//! Then, as with a first request, the forwarder's idle time stops it when nothing uses it.
//! Unloading stops the server; its forwarder stops with it and the socket keeps listening, so
//! the next request loads the model again.

use std::time::Duration;

use super::units::{run_within, OnDemand, RunError, Scope};

/// How long `systemctl stop` may take (the recipe's server has `TimeoutStopSec=30s`).
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do with a model's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Load,
    Unload,
}

impl Action {
    /// `load` or `unload`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Load => "load",
            Action::Unload => "unload",
        }
    }

    /// The systemctl verb.
    fn verb(self) -> &'static str {
        match self {
            Action::Load => "start",
            Action::Unload => "stop",
        }
    }

    /// The unit it acts on: see the module's comment.
    pub(crate) fn unit(self, found: &OnDemand) -> &str {
        match self {
            Action::Load => &found.forwarder,
            Action::Unload => &found.server,
        }
    }
}

/// How a start or stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: the server runs (load) or is stopped (unload).
    Done,
    /// Not done within the limit: systemd goes on with it (a model still loading).
    Pending,
}

/// `systemctl [--user] start|stop UNIT`, waiting at most `limit` for it; the job goes on in the
/// service manager after that. An error is a short message (no more of systemctl's stderr
/// than its first line, cut short).
pub(crate) async fn run(
    scope: Scope,
    action: Action,
    found: &OnDemand,
    limit: Duration,
) -> Result<Outcome, String> {
    let unit = action.unit(found).to_string();
    let verb = action.verb();
    let done = tokio::task::spawn_blocking(move || {
        let mut cmd = scope.systemctl();
        cmd.arg(verb).arg("--").arg(&unit);
        run_within(cmd, limit)
    })
    .await
    .map_err(|e| format!("the systemctl task failed: {e}"))?;
    match done {
        Ok(_) => Ok(Outcome::Done),
        Err(RunError::TimedOut) => Ok(Outcome::Pending),
        Err(e) => Err(e.to_string()),
    }
}
