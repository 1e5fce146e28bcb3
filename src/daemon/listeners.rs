//! Listening sockets: inherited from the service manager (systemd socket activation, launchd)
//! or bound from `server.listen` (or `serve --listen`); TCP or Unix, several at once.
//!
//! Sockets are plain std sockets here and become tokio ones inside [`crate::serve`], so they
//! can be taken before the runtime (and its threads) exists, as inheriting them requires.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::ListenAddr;
use crate::serve::StdListener;

/// Pending connections the kernel queues for us.
const BACKLOG: i32 = 1024;

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

/// The name of the inherited socket that serves `/metrics` (`FileDescriptorName=metrics`).
pub(crate) const METRICS_SOCKET: &str = "metrics";

/// Takes the socket named [`METRICS_SOCKET`] out of the inherited ones (the others serve the
/// proxy). It must be TCP.
pub(crate) fn metrics_socket(
    inherited: Vec<Inherited>,
) -> anyhow::Result<(Option<std::net::TcpListener>, Vec<Inherited>)> {
    let mut metrics = None;
    let mut rest = Vec::with_capacity(inherited.len());
    for i in inherited {
        if i.name != METRICS_SOCKET {
            rest.push(i);
            continue;
        }
        match i.listener {
            StdListener::Tcp(l) if metrics.is_none() => {
                tracing::info!(
                    "using socket \"{METRICS_SOCKET}\" from the service manager for /metrics"
                );
                metrics = Some(l);
            }
            StdListener::Tcp(_) => anyhow::bail!(
                "the service manager passed more than one socket named \"{METRICS_SOCKET}\""
            ),
            StdListener::Unix { .. } => anyhow::bail!(
                "the socket named \"{METRICS_SOCKET}\" must be TCP (Prometheus scrapes over TCP)"
            ),
        }
    }
    Ok((metrics, rest))
}

/// Binds `[metrics] listen`.
pub(crate) fn bind_metrics(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    bind_tcp(addr).with_context(|| format!("cannot listen on {addr} for metrics (metrics.listen)"))
}

/// An inherited socket and the name the service manager gave it.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub listener: StdListener,
    pub name: String,
}

/// Takes the listening sockets passed by systemd (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`) or launchd (the `http` and `metrics` sockets), if any. Sockets of any
/// name serve the proxy, except the one named `metrics` ([`metrics_socket`]); an inherited
/// descriptor that is not a listening stream socket is an error.
///
/// # Safety
/// Reads and then removes the `LISTEN_*` environment variables, so it must run before any
/// other thread exists (before the tokio runtime is built).
pub(crate) unsafe fn inherited() -> anyhow::Result<Vec<Inherited>> {
    let mut out = Vec::new();
    // SAFETY: the caller guarantees no other thread exists yet.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }
        .context("invalid LISTEN_FDS/LISTEN_PID from the service manager")?;
    for (fd, name) in fds {
        // SAFETY: systemd passed us this descriptor to own; nothing else in the process uses it.
        let listener =
            unsafe { adopt(fd) }.with_context(|| format!("inherited socket {fd} (\"{name}\")"))?;
        out.push(Inherited { listener, name });
    }
    #[cfg(target_os = "macos")]
    if out.is_empty() {
        for name in [crate::daemon::launchd::SOCKET_NAME, METRICS_SOCKET] {
            for fd in crate::daemon::launchd::activate_socket(name)? {
                // SAFETY: launchd handed this descriptor to us to own.
                let listener = unsafe { adopt(fd) }
                    .with_context(|| format!("launchd socket {fd} (\"{name}\")"))?;
                out.push(Inherited {
                    listener,
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Takes ownership of a descriptor and checks that it is a listening stream socket.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
unsafe fn adopt(fd: RawFd) -> anyhow::Result<StdListener> {
    // SAFETY: per the function's contract.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if socket.r#type()? != Type::STREAM {
        anyhow::bail!("not a stream socket (use ListenStream=, not ListenDatagram=)");
    }
    if !socket.is_listener()? {
        anyhow::bail!("not a listening socket (Accept=yes is not supported)");
    }
    let local = socket.local_addr()?;
    if local.as_socket().is_some() {
        Ok(StdListener::Tcp(socket.into()))
    } else if local.is_unix() {
        Ok(StdListener::Unix {
            listener: UnixListener::from(OwnedFd::from(socket)),
            cleanup: None,
        })
    } else {
        anyhow::bail!("unsupported address family (only TCP and Unix sockets)")
    }
}
