//! Plain-HTTP backends: requests go out in origin form (`GET /path HTTP/1.1`, as a server
//! expects it), and one keep-alive connection carries request after request, whether the
//! responses had a length or were chunked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::client::{body_bytes, full, send};
use crate::support::start_proxy;

/// A backend answering `{}` to every request on keep-alive connections (chunked when the path
/// has `/chunked`); records each request line, and counts connections accepted and closed by
/// the proxy.
struct RawBackend {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

async fn raw_backend() -> RawBackend {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (seen, acc, clo) = (lines.clone(), accepted.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let (seen, clo) = (seen.clone(), clo.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        let answer: &[u8] = if line.contains("/chunked") {
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
                        };
                        seen.lock().unwrap().push(line);
                        let _ = s.write_all(answer).await;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            clo.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    RawBackend {
        addr,
        lines,
        accepted,
        closed,
    }
}

fn routes(addr: std::net::SocketAddr) -> String {
    format!("[backends.b]\nurl = \"http://{addr}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n")
}

async fn get_ok(proxy: &crate::support::TestProxy, path: &str) {
    let res = send(Request::get(proxy.url(path)).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200, "{path}");
    assert_eq!(body_bytes(res).await, "{}");
}

#[tokio::test]
async fn requests_go_out_in_origin_form_on_one_reused_connection() {
    let backend = raw_backend().await;
    let proxy = start_proxy(&routes(backend.addr)).await;
    for path in [
        "/v1/models",
        "/v1/models?limit=2",
        "//v1/./files",
        "/v1/chunked",
        "/v1/chunked",
        "/v1/models",
    ] {
        get_ok(&proxy, path).await;
    }
    assert_eq!(
        *backend.lines.lock().unwrap(),
        [
            "GET /v1/models HTTP/1.1",
            "GET /v1/models?limit=2 HTTP/1.1",
            "GET /v1/files HTTP/1.1",
            "GET /v1/chunked HTTP/1.1",
            "GET /v1/chunked HTTP/1.1",
            "GET /v1/models HTTP/1.1",
        ]
    );
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
    proxy.stop().await;
}

/// A reload lets the replaced configuration's pooled connections go at once, not after the
/// idle time-out: reloading often must not pile up backend connections.
#[tokio::test]
async fn a_reload_closes_the_replaced_pools_idle_connections() {
    let backend = raw_backend().await;
    let proxy = start_proxy(&routes(backend.addr)).await;
    get_ok(&proxy, "/v1/models").await;
    assert_eq!(
        backend.closed.load(Ordering::SeqCst),
        0,
        "pooled, still open"
    );
    let config = openai_proxy::Config::from_toml(&routes(backend.addr)).unwrap();
    proxy
        .state
        .replace(openai_proxy::Proxy::new(config).unwrap());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while backend.closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old pool's connection is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    get_ok(&proxy, "/v1/models").await;
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        2,
        "the new pool's own connection"
    );
    proxy.stop().await;
}
