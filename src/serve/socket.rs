//! A listening socket before tokio has it: what [`crate::serve::run`] takes (bound by the
//! daemon, inherited from the service manager, or bound by a test).

use std::io;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// A listening socket, not yet registered with tokio.
#[derive(Debug)]
pub enum StdListener {
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A Unix socket.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Set when we created the socket file, so it is removed when we stop.
        cleanup: Option<PathBuf>,
    },
}

impl StdListener {
    /// Another descriptor for the same socket, for another worker to accept from. The copy
    /// never removes the socket file.
    pub fn try_clone(&self) -> io::Result<StdListener> {
        Ok(match self {
            StdListener::Tcp(l) => StdListener::Tcp(l.try_clone()?),
            StdListener::Unix { listener, .. } => StdListener::Unix {
                listener: listener.try_clone()?,
                cleanup: None,
            },
        })
    }

    /// What the socket is bound to (for logs and tests).
    pub fn describe(&self) -> String {
        match self {
            StdListener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| a.to_string()),
            StdListener::Unix { listener, .. } => listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:(unnamed)".into()),
        }
    }
}
