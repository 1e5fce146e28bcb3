//! HTTP/2 gets HTTP/1.1's time-outs and limits: idle connections (nothing sent, only the
//! preface, idle after a response) closed after `server.header_read_timeout`, many of them
//! locking nobody out, at most 100 header fields (431), GOAWAY on a graceful stop; and
//! `server.max_connections_per_ip`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::support::bin::command;
use crate::support::mock::{full, handler, Mock};
use crate::support::tls::{connect_h2, test_ca, TestCa};
use crate::support::{routes_to, start_proxy, TestProxy};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: with the preface, the client's side of the handshake.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

/// A proxy over TLS (h2 and http/1.1 by ALPN) with `header_read_timeout = "500ms"`, then
/// `server` lines, routing to `backend`; and the CA its certificate is signed by.
async fn tls_proxy(dir: &Path, server: &str, backend: &str) -> (TestProxy, TestCa) {
    let ca = test_ca();
    let (cert, key) = (dir.join("proxy.pem"), dir.join("proxy.key"));
    std::fs::write(&cert, &ca.cert_pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    let cfg = format!(
        "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\nheader_read_timeout = \"500ms\"\n\
         {server}\n{}",
        routes_to(backend)
    );
    (start_proxy(&cfg).await, ca)
}

/// Reads until the proxy closes the connection (at most 5 s); the frames it sent (type,
/// payload) and when it closed.
async fn frames_until_closed(
    tls: &mut TlsStream<tokio::net::TcpStream>,
) -> (Vec<(u8, Vec<u8>)>, Instant) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("connection still open after 5 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    (parse_frames(&bytes), Instant::now())
}

/// The complete frames (type, payload) in `bytes`, as a server sends them.
fn parse_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        frames.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// Asserts `took` is header_read_timeout (500 ms) plus at most the close grace (1 s), with
/// margins.
fn assert_closed_after_the_time_out(took: Duration, what: &str) {
    assert!(
        took >= Duration::from_millis(400),
        "{what}: closed after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "{what}: closed after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_without_a_request_are_closed_after_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, ca) = tls_proxy(dir.path(), "", "http://127.0.0.1:9").await;
    for (what, send) in [
        ("nothing after TLS", &b""[..]),
        ("only the preface", PREFACE),
        ("preface and SETTINGS", &[PREFACE, SETTINGS].concat()[..]),
        // HEADERS (type 1) of stream 1 without END_HEADERS: a request never completed.
        (
            "HEADERS without END_HEADERS",
            &[PREFACE, SETTINGS, &[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]].concat()[..],
        ),
    ] {
        let mut tls = connect_h2(proxy.addr, &ca).await;
        let t = Instant::now();
        tls.write_all(send).await.unwrap();
        let (frames, closed) = frames_until_closed(&mut tls).await;
        assert_closed_after_the_time_out(closed - t, what);
        if send.len() > PREFACE.len() {
            // The handshake completed: the proxy said goodbye and announced its stream cap.
            assert!(frames.iter().any(|f| f.0 == GOAWAY), "{what}: no GOAWAY");
            let settings = &frames.iter().find(|f| f.0 == 4).expect("SETTINGS").1;
            let cap = settings
                .chunks(6)
                .find(|p| p[..2] == [0, 3])
                .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
            assert_eq!(cap, Some(100), "{what}: SETTINGS_MAX_CONCURRENT_STREAMS");
        }
    }
    assert_eq!(proxy.state.requests.get(), 0);
    proxy.stop().await;
}

/// An HTTP/2 client (hyper's) on a TLS connection to `proxy`; the connection's task ends when
/// the proxy closes it.
async fn h2_client(
    proxy: &TestProxy,
    ca: &TestCa,
) -> (
    hyper::client::conn::http2::SendRequest<crate::support::mock::MockBody>,
    tokio::task::JoinHandle<()>,
) {
    let tls = connect_h2(proxy.addr, ca).await;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// A chat request to `proxy` (routed to its backend).
fn chat(proxy: &TestProxy) -> Request<crate::support::mock::MockBody> {
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    Request::post(url)
        .header("content-type", "application/json")
        .body(full("{}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_after_header_read_timeout_but_a_slow_answer_is_not() {
    let dir = tempfile::tempdir().unwrap();
    // A backend taking a second (twice the time-out) to answer.
    let slow = Mock::start(handler(|_| async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        http::Response::new(full("slow"))
    }))
    .await;
    let (proxy, ca) = tls_proxy(dir.path(), "", &slow.url()).await;
    let (mut send, conn) = h2_client(&proxy, &ca).await;
    let res = send.send_request(chat(&proxy)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "slow");
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("idle HTTP/2 connection still open after 5 s")
        .unwrap();
    assert_closed_after_the_time_out(t.elapsed(), "idle after one response");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_idle_h2_connections_are_closed_and_lock_nobody_out() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Mock::echo("b").await;
    let (proxy, ca) = tls_proxy(dir.path(), "", &backend.url()).await;
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut tls = connect_h2(proxy.addr, &ca).await;
        let send = match i % 3 {
            0 => Vec::new(),
            1 => PREFACE.to_vec(),
            _ => [PREFACE, SETTINGS].concat(),
        };
        tls.write_all(&send).await.unwrap();
        idle.push(tls);
    }
    let t = Instant::now();
    let waiting = idle
        .into_iter()
        .map(|mut tls| tokio::spawn(async move { frames_until_closed(&mut tls).await.1 }));
    for w in waiting.collect::<Vec<_>>() {
        assert_closed_after_the_time_out(w.await.unwrap() - t, "one of 50 idle connections");
    }
    assert_eq!(proxy.state.open_connections.load(Ordering::SeqCst), 0);
    // A legitimate client is served at once.
    let t = Instant::now();
    let (mut send, _conn) = h2_client(&proxy, &ca).await;
    let res = send.send_request(chat(&proxy)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_header_fields_over_h2_get_431_json() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Mock::echo("b").await;
    let (proxy, ca) = tls_proxy(dir.path(), "", &backend.url()).await;
    let (mut send, _conn) = h2_client(&proxy, &ca).await;
    for (fields, status) in [
        (100, StatusCode::OK),
        (101, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        (500, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        // The proxy's own answer: a backend would see the X-Forwarded-* headers too.
        let url = format!("https://localhost:{}/health", proxy.addr.port());
        let mut req = Request::get(url).body(full("")).unwrap();
        for i in 0..fields {
            req.headers_mut().append(
                format!("x-field-{i}").parse::<http::HeaderName>().unwrap(),
                "v".parse().unwrap(),
            );
        }
        send.ready().await.unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), status, "{fields} fields");
        if status != StatusCode::OK {
            assert_eq!(res.headers()["content-type"], "application/json");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "headers_too_large", "{v}");
        }
    }
    assert_eq!(
        proxy.state.requests.get(),
        1,
        "the refused ones reach no further"
    );
    proxy.stop().await;
}

/// Reads frames until a GOAWAY, for at most `limit`; what came before it.
async fn frames_until_goaway(
    tls: &mut TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Vec<(u8, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let frames = parse_frames(&bytes);
        if frames.iter().any(|f| f.0 == GOAWAY) {
            return frames;
        }
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no GOAWAY within {limit:?}: {frames:?}"))
            .unwrap_or(0);
        assert!(n > 0, "closed without a GOAWAY: {frames:?}");
        bytes.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_sends_goaway_and_drains_h2_connections() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Mock::start(handler(|_| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        http::Response::new(full("slow"))
    }))
    .await;
    let (proxy, ca) = tls_proxy(dir.path(), "", &slow.url()).await;
    // A connection with a request in flight, and one with none.
    let (mut send, conn) = h2_client(&proxy, &ca).await;
    let answer = tokio::spawn(send.send_request(chat(&proxy)));
    let mut idle = connect_h2(proxy.addr, &ca).await;
    idle.write_all(&[PREFACE, SETTINGS].concat()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop = tokio::spawn(proxy.stop());
    // Well before header_read_timeout (500 ms) could have closed it.
    frames_until_goaway(&mut idle, Duration::from_millis(300)).await;
    drop(idle);
    // The request in flight is answered, then its connection is closed.
    let res = answer.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "slow");
    tokio::time::timeout(Duration::from_secs(2), conn)
        .await
        .expect("HTTP/2 connection still open 2 s after the stop")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), stop)
        .await
        .expect("the stop took over 2 s")
        .unwrap();
}

/// Sends `GET /health` on `s` and returns the status line.
async fn health(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("no answer within 2 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().unwrap_or_default().to_string()
}

async fn wait_for_open(proxy: &TestProxy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.state.open_connections.load(Ordering::SeqCst) != n {
        assert!(Instant::now() < deadline, "never {n} connections open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Over the cap, a connection is closed right after accept; that needs a client address that
// is not loopback, so it is proved in src/serve/per_ip.rs (`admit`), the decision `accept_loop`
// follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_clients_are_not_capped_by_max_connections_per_ip() {
    let backend = Mock::echo("b").await;
    let cfg = format!(
        "[server]\nmax_connections_per_ip = 1\n{}",
        routes_to(&backend.url())
    );
    let proxy = start_proxy(&cfg).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    wait_for_open(&proxy, 3).await;
    for s in &mut open {
        assert_eq!(health(s).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(proxy.state.refused_connections(), 0);
    proxy.stop().await;
}

#[test]
fn a_bad_max_connections_per_ip_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    for bad in ["-1", "\"many\"", "2000000"] {
        std::fs::write(
            &file,
            format!(
                "[server]\nmax_connections_per_ip = {bad}\n[backends.b]\nurl = \"http://127.0.0.1:9\"\n\
                 [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
            ),
        )
        .unwrap();
        let out = command()
            .args(["check-config", file.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{bad}: {err}");
        let at = format!("{}:2:", file.display());
        assert!(err.contains(&at), "{bad}: no {at} in: {err}");
        assert!(
            err.contains("server.max_connections_per_ip"),
            "{bad}: {err}"
        );
        let why = if bad.starts_with('"') {
            "expected i64"
        } else {
            "between 0 (no cap) and"
        };
        assert!(err.contains(why), "{bad}: {err}");
    }
}
