//! What a failed request to a server means: the error the client gets (naming the backend and
//! the server, never a key), and what the proxy may do next: try another server, fall back,
//! or neither.

use std::error::Error as StdError;
use std::io;

use crate::body::BodyError;
use crate::config::BackendConfig;
use crate::error::ProxyError;
use crate::upstream::pool::UpstreamError;

/// A failed attempt, by what may follow it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The client's own body failed (too large, stalled, broken): answer it, try nothing else.
    Client(ProxyError),
    /// No connection (refused, unreachable, not accepted in time, TLS): nothing was sent; the
    /// server is out, another may take the request.
    Connect(ProxyError),
    /// The connection was closed or reset before any answer: the request may have been read.
    Closed(ProxyError),
    /// Anything else before an answer (a malformed response): not the server's health.
    Other(ProxyError),
}

impl Failure {
    pub(crate) fn error(&self) -> &ProxyError {
        match self {
            Failure::Client(e) | Failure::Connect(e) | Failure::Closed(e) | Failure::Other(e) => e,
        }
    }

    /// Why it failed, in the words of the metrics' `reason` label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Closed(_) => "reset",
            other => reason(other.error()),
        }
    }

    pub(crate) fn into_error(self) -> ProxyError {
        match self {
            Failure::Client(e) | Failure::Connect(e) | Failure::Closed(e) | Failure::Other(e) => e,
        }
    }
}

/// Turns a client error into what the user needs to know (whose fault, which backend and
/// server) and what it allows next. `connect`: it happened while connecting (nothing was
/// sent); `url`: the server's.
pub(crate) fn classify(
    err: &(dyn StdError + 'static),
    connect: bool,
    bc: &BackendConfig,
    url: &str,
) -> Failure {
    let backend = bc.name.clone();
    let url = url.to_string();
    let mut io_kind = None;
    let mut tls = None;
    let mut innermost = err.to_string();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return Failure::Client(ProxyError::from(b));
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            tls = Some(t.to_string());
        }
        innermost = e.to_string();
        // An io::Error's `source()` skips the error it wraps (hyper-rustls wraps twice), so
        // descend through `get_ref()` instead.
        cur = match e.downcast_ref::<io::Error>() {
            Some(io) => {
                if io.kind() != io::ErrorKind::Other {
                    io_kind.get_or_insert(io.kind());
                }
                match io.get_ref() {
                    Some(inner) => Some(inner as &(dyn StdError + 'static)),
                    None => e.source(),
                }
            }
            None => e.source(),
        };
    }
    if let Some(detail) = tls {
        let hint = if detail.contains("UnknownIssuer") {
            " (for a private CA, set ca_file)"
        } else {
            ""
        };
        return Failure::Connect(ProxyError::Tls {
            backend,
            url,
            detail: format!("{detail}{hint}"),
        });
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => {
            Failure::Connect(ProxyError::Refused { backend, url })
        }
        Some(io::ErrorKind::TimedOut) if connect => Failure::Connect(ProxyError::ConnectTimeout {
            backend,
            url,
            after: bc.connect_timeout,
        }),
        _ if connect => Failure::Connect(ProxyError::Unreachable {
            backend,
            url,
            detail: innermost,
        }),
        _ => {
            let e = ProxyError::BackendFailed {
                backend,
                url,
                detail: innermost,
            };
            if closed_early(err) {
                Failure::Closed(e)
            } else {
                Failure::Other(e)
            }
        }
    }
}

/// Whether a request failed because its connection was closed under it before any response:
/// what a pooled keep-alive connection does when the backend closed it just as it was reused
/// (the pool itself resends only when it notices before writing anything), and what a server
/// that stops does to the requests it was reading.
pub(crate) fn is_stale(err: &UpstreamError) -> bool {
    !err.is_connect() && closed_early(err)
}

/// Whether the connection was closed under the request (reset, aborted, ended early).
fn closed_early(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        cur = e.source();
    }
    false
}

/// A failure in a few words, for a server's health (`refused the connection`,
/// `cannot connect: ...`).
pub(crate) fn describe(err: &UpstreamError) -> String {
    let mut io_kind = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = cur {
        innermost = e.to_string();
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() != io::ErrorKind::Other {
                io_kind.get_or_insert(io.kind());
            }
        }
        cur = e.source();
    }
    match io_kind {
        Some(io::ErrorKind::ConnectionRefused) => "refused the connection".into(),
        Some(io::ErrorKind::TimedOut) if err.is_connect() => {
            "did not accept the connection in time".into()
        }
        _ if is_stale(err) => "closed the connection before answering".into(),
        _ => innermost,
    }
}

/// A short reason for the metrics' and the access log's `fallback` (a fixed set of words).
pub(crate) fn reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::Refused { .. } => "refused",
        ProxyError::Unreachable { .. } => "unreachable",
        ProxyError::ConnectTimeout { .. } => "connect_timeout",
        ProxyError::Tls { .. } => "tls",
        ProxyError::ResponseTimeout { .. } => "response_timeout",
        ProxyError::NoServer { .. } => "no_server",
        ProxyError::BackendBusy { .. } => "backend_busy",
        _ => "failed",
    }
}
