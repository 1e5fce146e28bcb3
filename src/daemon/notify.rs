//! Telling the service manager what the daemon is doing (`sd_notify(3)`): READY, RELOADING,
//! STOPPING, STATUS and WATCHDOG messages to `$NOTIFY_SOCKET`. Without a service manager every
//! call is a silent no-op.
//!
//! The sd-notify crate supplies the message format and the watchdog settings; the sending is
//! done here so that abstract socket addresses (`@name`, which the crate cannot reach) work too.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub(super) use sd_notify::NotifyState;

/// A connection to the service manager's notification socket, if there is one.
#[derive(Debug, Default)]
pub(super) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`: how often to send `WATCHDOG=1`, when the watchdog is on.
    pub watchdog_interval: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes them so that
    /// no child process could mistake itself for the service.
    ///
    /// # Safety
    /// Changes the environment: call before any other thread exists.
    pub(super) unsafe fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        // SAFETY: the caller guarantees no other thread exists yet.
        let watchdog = unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            sd_notify::watchdog_enabled_and_unset_env()
        };
        let target = socket.and_then(|s| {
            let addr = address(s.as_encoded_bytes())?;
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier {
            target,
            watchdog_interval: watchdog.map(|d| d / 2).filter(|d| !d.is_zero()),
        }
    }

    /// Whether a service manager listens.
    pub(super) fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message with the given states; failures are logged, never fatal.
    pub(super) fn send(&self, states: &[NotifyState<'_>]) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = socket.send_to_addr(msg.as_bytes(), addr) {
            tracing::debug!("sd_notify failed: {e}");
        }
    }
}

/// `/path/to/socket`, or `@name` for an abstract socket (Linux).
fn address(raw: &[u8]) -> Option<SocketAddr> {
    match raw.split_first() {
        Some((b'@', name)) => abstract_address(name),
        Some((b'/', _)) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(raw)).ok()
        }
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name).ok()
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> Option<SocketAddr> {
    None
}
