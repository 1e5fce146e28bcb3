//! Failures become OpenAI-shaped JSON errors with the right status, or a visibly broken
//! stream; never a hang and never a clean end that hides a failure.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::support::client::{self, body_bytes, full, json, raw, raw_status, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::{dead_addr, default_routes, start_proxy, tls::test_ca};

fn one_backend(url: &str, extra: &str) -> String {
    format!(
        "[server]\nmax_body_size = \"64KiB\"\n[backends.b]\nurl = \"{url}\"\n{extra}\n\
         [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
    )
}

async fn error_of(res: Response<hyper::body::Incoming>) -> (u16, serde_json::Value) {
    let status = res.status().as_u16();
    assert_eq!(res.headers()["content-type"], "application/json");
    (status, json(res).await)
}

#[tokio::test]
async fn backend_down_is_502_naming_the_backend() {
    let url = format!("http://{}", dead_addr());
    let proxy = start_proxy(&one_backend(&url, "")).await;
    let res = send(
        Request::post(proxy.url("/v1/chat/completions"))
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(
        res.headers()["x-backend"],
        "b",
        "names the backend that failed"
    );
    let (status, v) = error_of(res).await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["code"], "backend_unreachable");
    assert_eq!(v["error"]["type"], "proxy_error");
    assert_eq!(
        v["error"]["message"],
        format!("backend 'b' ({url}) refused the connection")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn slow_response_headers_are_504_after_response_timeout() {
    let slow = Mock::start(handler(|req| async move {
        mock::collect(req).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(mock::full("too late"))
    }))
    .await;
    let proxy = start_proxy(&one_backend(&slow.url(), "response_timeout = \"300ms\"")).await;
    let t = Instant::now();
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let took = t.elapsed();
    let (status, v) = error_of(res).await;
    assert_eq!(status, 504);
    assert_eq!(v["error"]["code"], "backend_timeout");
    assert!(v["error"]["message"].as_str().unwrap().contains("300ms"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    proxy.stop().await;
}

/// A backend that sends headers and part of a body, then resets the connection.
async fn resetting_backend(chunked: bool) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head: &[u8] = if chunked {
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
                      e\r\ndata: partial\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 1000\r\n\r\npartial"
                };
                let _ = s.write_all(head).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                // SO_LINGER 0: close with RST.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn backend_reset_mid_stream_is_an_error_for_the_client() {
    for chunked in [true, false] {
        let addr = resetting_backend(chunked).await;
        let proxy = start_proxy(&one_backend(&format!("http://{addr}"), "")).await;
        let res = send(
            Request::post(proxy.url("/v1/chat/completions"))
                .body(full("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200, "headers were already sent");
        let mut body = res.into_body();
        let mut got = Vec::new();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or(b"")),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // Exactly what the backend sent before the reset, no more and no less.
        let sent: &[u8] = if chunked {
            b"data: partial\n"
        } else {
            b"partial"
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(sent),
            "chunked={chunked}"
        );
        assert!(
            error.is_some(),
            "chunked={chunked}: the client saw a clean end of a broken stream"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn bodies_over_max_body_size_are_413() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    // Content-Length above the limit: refused before anything is forwarded.
    let res = send(
        Request::post(proxy.url("/v1/audio/transcriptions"))
            .body(full(vec![b'x'; 64 * 1024 + 1]))
            .unwrap(),
    )
    .await;
    let (status, v) = error_of(res).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    assert!(m.requests().is_empty());

    // Exactly at the limit is fine.
    let res = send(
        Request::post(proxy.url("/v1/audio/transcriptions"))
            .body(full(vec![b'x'; 64 * 1024]))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;

    // Chunked: cut off as soon as it passes the limit.
    let (tx, req_body) = client::streamed();
    let req = Request::post(proxy.url("/v1/audio/transcriptions"))
        .body(req_body)
        .unwrap();
    let pending = tokio::spawn(client::client().request(req));
    let feeder = tokio::spawn(async move {
        for _ in 0..1000 {
            if tx.send(Ok(Bytes::from(vec![b'y'; 8192]))).await.is_err() {
                break;
            }
        }
    });
    let res = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("413 without waiting for the whole body")
        .unwrap()
        .unwrap();
    let (status, v) = error_of(res).await;
    assert_eq!(status, 413);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body_size"));
    feeder.abort();
    let seen = m.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].body.is_empty(),
        "the backend's read of the cut-off upload must fail"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn unsafe_paths_are_400_and_never_forwarded() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    for path in [
        "/v1/chat/completions/../../x",
        "/v1/chat/completions/%2e%2e/%2e%2e/x",
        "/v1/chat%2Fcompletions",
        "/v1/files/a%2fb",
        "/v1/%5C..%5Cx",
        "/v1/bad%zz",
    ] {
        let reply = raw(
            proxy.addr,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(raw_status(&reply), 400, "{path}: {reply}");
        assert!(reply.contains("\"code\":\"invalid_path\""), "{reply}");
    }
    let reply = raw(
        proxy.addr,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(raw_status(&reply), 405, "{reply}");
    assert!(m.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn tls_without_the_right_ca_is_502_naming_the_certificate_problem() {
    let ca = test_ca();
    let openai = Mock::echo_tls("openai", ca.server.clone()).await;
    let m = Mock::echo("m").await;
    let proxy = start_proxy(&default_routes(
        &m.url(),
        &m.url(),
        &m.url(),
        &openai.url(),
        "",
    ))
    .await;
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let (status, v) = error_of(res).await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["code"], "backend_tls_error", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("certificate") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert!(msg.contains(&openai.url()), "{msg}");
    assert!(openai.requests().is_empty());
    proxy.stop().await;

    // tls_insecure = true accepts it (opt-in).
    let proxy = start_proxy(&default_routes(
        &m.url(),
        &m.url(),
        &m.url(),
        &openai.url(),
        "tls_insecure = true",
    ))
    .await;
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    proxy.stop().await;
}
