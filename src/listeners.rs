//! Listening sockets: bound from `server.listen` (or `serve --listen`), TCP or Unix.
//!
//! Sockets are plain std sockets here and become tokio ones inside [`crate::server::run`], so
//! they can be made before the runtime exists.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenAddr;

/// Pending connections the kernel queues for us.
const BACKLOG: i32 = 1024;

/// A listening socket, not yet registered with tokio.
#[derive(Debug)]
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix {
        listener: UnixListener,
        /// Set when we created the socket file, so it is removed when we stop.
        cleanup: Option<PathBuf>,
    },
}

impl StdListener {
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

/// Binds every address; fails with a message naming the address that could not be bound.
pub fn bind(addrs: &[ListenAddr]) -> anyhow::Result<Vec<StdListener>> {
    addrs
        .iter()
        .map(|a| match a {
            ListenAddr::Tcp(sa) => bind_tcp(*sa)
                .map(StdListener::Tcp)
                .with_context(|| format!("cannot listen on {sa}")),
            ListenAddr::Unix(path) => bind_unix(path)
                .map(|listener| StdListener::Unix {
                    listener,
                    cleanup: Some(path.clone()),
                })
                .with_context(|| format!("cannot listen on unix:{}", path.display())),
        })
        .collect()
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // [::]:2020 means IPv6 only; list 0.0.0.0:2020 as well for both.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // A socket file left by a process that is gone can be replaced; a live one, or a
            // file that is not a socket, cannot.
            if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "the path exists and is not a socket",
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}
