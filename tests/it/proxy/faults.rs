//! Backend faults: resets, stalls, garbage, full accept queues and stale pooled connections
//! end in a 502/504 JSON error or a visibly cut stream within the configured time-outs, and
//! the proxy keeps serving. (Refused connections, resets mid-body and slow response headers
//! are in `errors.rs`.)

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::Mock;
use crate::support::{start_proxy, TestProxy};

/// A backend speaking raw TCP: `serve` runs for every accepted connection.
async fn tcp_backend<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// Reads one request head (up to the blank line) from `s`.
async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

fn reset(s: TcpStream) {
    // SO_LINGER 0: close with RST.
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// A proxy with one backend at `addr` and a healthy one for checking it still serves.
async fn proxy_for(addr: SocketAddr, extra: &str) -> (TestProxy, Mock) {
    let good = Mock::echo("good").await;
    let proxy = start_proxy(&format!(
        "[backends.bad]\nurl = \"http://{addr}\"\n{extra}\n[backends.good]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"bad\"\n[[route]]\npath = \"/good\"\nbackend = \"good\"\n",
        good.url()
    ))
    .await;
    (proxy, good)
}

async fn assert_still_serving(proxy: &TestProxy) {
    for path in ["/health", "/good/x"] {
        let res = send(Request::get(proxy.url(path)).body(full("")).unwrap()).await;
        assert_eq!(res.status(), 200, "{path}");
        body_bytes(res).await;
    }
}

/// Sends `POST /v1/chat/completions` and returns the JSON error, its status and how long it
/// took.
async fn error_of(proxy: &TestProxy) -> (u16, serde_json::Value, Duration) {
    let t = Instant::now();
    let res = send(
        Request::post(proxy.url("/v1/chat/completions"))
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    let status = res.status().as_u16();
    if res
        .headers()
        .get("content-type")
        .map_or(true, |v| v != "application/json")
    {
        let head = format!("{status} {:?}", res.headers());
        panic!("not a JSON error: {head} {:?}", body_bytes(res).await);
    }
    (status, json(res).await, t.elapsed())
}

#[tokio::test]
async fn reset_or_closed_before_response_headers_is_502() {
    for rst in [true, false] {
        let (addr, _) = tcp_backend(move |mut s| async move {
            read_head(&mut s).await;
            if rst {
                reset(s);
            }
        })
        .await;
        let (proxy, _good) = proxy_for(addr, "").await;
        let (status, v, took) = error_of(&proxy).await;
        assert_eq!(status, 502, "rst {rst}: {v}");
        assert_eq!(v["error"]["code"], "backend_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("backend 'bad' (http://{addr})")),
            "{v}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_still_serving(&proxy).await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn garbage_instead_of_http_is_502() {
    // Something else listening on the port, a line of noise, and noise without end.
    for reply in [
        &b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"[..],
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"HTTP/1.1 999999 What\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ] {
        let (addr, _) = tcp_backend(move |mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(reply).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        let (proxy, _good) = proxy_for(addr, "response_timeout = \"10s\"").await;
        let (status, v, took) = error_of(&proxy).await;
        assert_eq!(status, 502, "{:?}: {v}", String::from_utf8_lossy(reply));
        assert_eq!(v["error"]["code"], "backend_error", "{v}");
        assert!(
            took < Duration::from_secs(3),
            "{took:?}: waited for the garbage to end"
        );
        assert_still_serving(&proxy).await;
        proxy.stop().await;
    }
}

#[tokio::test]
async fn endless_response_headers_are_cut_off_with_502() {
    // 64 MiB of header bytes that never end: the proxy's client gives up after its buffer
    // limit instead of holding them all.
    let (addr, _) = tcp_backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nX-Endless: ").await;
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..1024 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
        }
    })
    .await;
    let (proxy, _good) = proxy_for(addr, "").await;
    let (status, v, took) = error_of(&proxy).await;
    assert_eq!(status, 502, "{v}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn stall_mid_stream_cuts_the_stream_after_idle_timeout() {
    // Headers and one event, then silence with the connection open.
    let closed = Arc::new(tokio::sync::Notify::new());
    let backend_saw_close = closed.clone();
    let (addr, _) = tcp_backend(move |mut s| {
        let closed = backend_saw_close.clone();
        async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
                      c\r\ndata: first\n\r\n",
                )
                .await;
            // Wait for the proxy to give up on us (EOF), at most 20 s.
            let mut buf = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
            closed.notify_one();
        }
    })
    .await;
    let (proxy, _good) = proxy_for(addr, "idle_timeout = \"500ms\"").await;
    let res = send(
        Request::post(proxy.url("/v1/chat/completions"))
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(
        first.data_ref().map(|d| &d[..]),
        Some(&b"data: first\n"[..])
    );
    let t = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the stream must be cut, not hang");
    let took = t.elapsed();
    assert!(
        matches!(next, Some(Err(_))),
        "a stalled stream must end with an error, not cleanly: {next:?}"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "cut after {took:?} (idle_timeout 500ms)"
    );
    // The backend's connection is closed too, so it stops generating.
    tokio::time::timeout(Duration::from_secs(5), closed.notified())
        .await
        .expect("the backend connection was not closed");
    assert_still_serving(&proxy).await;
    proxy.stop().await;
}

/// A backend that sends its response headers and dies before any of the body (a server
/// killed, or crashed while working on the prompt): the client gets those headers, then the
/// cut, as for any stream cut later. Its connection is not dropped without an answer, which
/// a client would take for a request that never arrived.
#[tokio::test]
async fn headers_then_a_dead_backend_reach_the_client_as_a_cut_stream() {
    let (addr, _) = tcp_backend(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .await;
        reset(s);
    })
    .await;
    let (proxy, _good) = proxy_for(addr, "").await;
    for round in 0..20 {
        let req = Request::post(proxy.url("/v1/chat/completions"))
            .body(full("{}"))
            .unwrap();
        let res = crate::support::client::client()
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("round {round}: no response headers: {e:?}"));
        assert_eq!(res.status(), 200, "round {round}");
        let end = res.into_body().collect().await;
        assert!(end.is_err(), "round {round}: the cut must show: {end:?}");
    }
    assert_still_serving(&proxy).await;
    proxy.stop().await;
}

#[tokio::test]
async fn full_accept_queue_is_504_after_connect_timeout() {
    // A listener that never accepts, with its queue filled: new connections hang in SYN.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        // Some of these hang themselves; that is the point.
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let (proxy, _good) = proxy_for(addr, "connect_timeout = \"500ms\"").await;
    let (status, v, took) = error_of(&proxy).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "backend_timeout", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("500ms"),
        "{v}"
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_still_serving(&proxy).await;
    proxy.stop().await;
    drop(fillers);
    drop(sock);
}

/// A backend that answers one request per connection as keep-alive, then closes the
/// connection after `linger` (FIN, or RST when `rst`), as servers with short keep-alive
/// time-outs do.
async fn closing_backend(linger: Duration, rst: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    tcp_backend(move |mut s| async move {
        let head = read_head(&mut s).await;
        if head.is_empty() {
            return;
        }
        // Bodies here are small and sent with the head or right after it.
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                  Keep-Alive: timeout=1\r\n\r\n{}",
            )
            .await;
        tokio::time::sleep(linger).await;
        if rst {
            reset(s);
        }
    })
    .await
}

/// Sends `n` requests, the `i`th after `gap(i)`, with `make(i)`; returns the
/// failures.
async fn run_sequence(
    n: usize,
    gap: impl Fn(usize) -> Duration,
    make: impl Fn(usize) -> Request<crate::support::mock::MockBody>,
) -> Vec<String> {
    let client = crate::support::client::client();
    let mut failures = Vec::new();
    for i in 0..n {
        tokio::time::sleep(gap(i)).await;
        match client.request(make(i)).await {
            Ok(res) if res.status() == 200 => {
                body_bytes(res).await;
            }
            Ok(res) => {
                let status = res.status();
                let body = body_bytes(res).await;
                failures.push(format!("{i}: {status} {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => failures.push(format!("{i}: {e:?}")),
        }
    }
    failures
}

/// The pool hands out connections the backend has since closed, even at the very moment it
/// closes them: a request without a body never fails because of it. hyper-util resends a
/// request when it notices a dead connection before writing anything
/// (`retry_canceled_requests`); when it notices only after writing, the proxy resends an
/// idempotent request without a body once, on a fresh connection (`proxy::is_stale`). Without
/// that second part, this test fails within a few dozen requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_pooled_connections_never_fail_a_request_without_a_body() {
    for (linger, rst) in [
        (Duration::ZERO, false),
        (Duration::ZERO, true),
        (Duration::from_millis(30), false),
        (Duration::from_millis(30), true),
    ] {
        let (addr, accepted) = closing_backend(linger, rst).await;
        let (proxy, _good) = proxy_for(addr, "").await;
        const N: usize = 60;
        let gap = |i: usize| match i % 3 {
            0 => Duration::ZERO,
            1 => linger,
            _ => linger + Duration::from_millis(5),
        };
        let methods = [http::Method::GET, http::Method::DELETE, http::Method::HEAD];
        let failures = run_sequence(N, gap, |i| {
            Request::builder()
                .method(methods[i % 3].clone())
                .uri(proxy.url("/v1/models"))
                .body(full(""))
                .unwrap()
        })
        .await;
        assert!(
            failures.is_empty(),
            "linger {linger:?} rst {rst}: {} of {N} failed: {failures:#?}",
            failures.len()
        );
        assert!(
            accepted.load(Ordering::SeqCst) >= N,
            "one connection per request"
        );
        proxy.stop().await;
    }
}

/// Requests with a body (streamed, so never held for a resend) are not sent on a pooled
/// connection the backend closed a moment before: the pool notices the close first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_the_backend_are_not_reused() {
    for rst in [false, true] {
        let (addr, accepted) = closing_backend(Duration::from_millis(50), rst).await;
        let (proxy, _good) = proxy_for(addr, "").await;
        const N: usize = 20;
        let failures = run_sequence(
            N,
            |_| Duration::from_millis(250),
            |_| {
                Request::post(proxy.url("/v1/chat/completions"))
                    .body(full("{\"model\":\"x\"}"))
                    .unwrap()
            },
        )
        .await;
        assert!(failures.is_empty(), "rst {rst}: {failures:#?}");
        assert_eq!(accepted.load(Ordering::SeqCst), N);
        proxy.stop().await;
    }
}

/// A reload releases the previous configuration (its routes, clients and pooled connections)
/// once the requests using it are done, so reloading a long-running proxy does not pile up
/// memory or backend connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_release_the_previous_configuration() {
    let m = Mock::echo("b").await;
    let cfg = format!(
        "[backends.b]\nurl = \"{}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        m.url()
    );
    let proxy = start_proxy(&cfg).await;
    let client = crate::support::client::client();
    let get = || async {
        let req = Request::get(proxy.url("/v1/models"))
            .body(full(""))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        body_bytes(res).await;
    };
    let mut old = Vec::new();
    for _ in 0..5 {
        for _ in 0..20 {
            get().await;
        }
        old.push(Arc::downgrade(&proxy.state.proxy()));
        let config = openai_proxy::Config::from_toml(&cfg).unwrap();
        proxy
            .state
            .replace(openai_proxy::Proxy::new(config).unwrap());
    }
    get().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while old.iter().any(|w| w.strong_count() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = old.iter().filter(|w| w.strong_count() > 0).count();
    assert_eq!(
        alive, 0,
        "{alive} of 5 replaced configurations are still alive"
    );
    proxy.stop().await;
}
