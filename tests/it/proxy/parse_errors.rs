//! Requests hyper's parser refuses before the proxy sees them still get OpenAI-shaped JSON, on
//! the wire, with the right status and the connection closed; and nothing else a client
//! receives is changed by that.

use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::support::client::{ask, assert_status, Exchange};
use crate::support::mock::{self, handler, Mock};
use crate::support::start_proxy;

fn config(url: &str, server: &str) -> String {
    format!("[server]\n{server}\n[backends.b]\nurl = \"{url}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n")
}

/// The last response of a reply: a JSON error with `code`, its length right, its connection
/// closed.
fn assert_json_error(r: &Exchange, code: &str, what: &str) {
    assert!(r.closed, "{what}: the connection must be closed");
    let last = r.text.rsplit("HTTP/1.").next().unwrap_or_default();
    let (head, body) = last
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no head in {:?}", r.text));
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{what}: {head}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{what}: {head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
        "{what}: {head}"
    );
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body:?}"));
    assert_eq!(v["error"]["code"], code, "{what}: {body}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{what}");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.len() > 20),
        "{what}: {body}"
    );
}

fn request(head: &str) -> Vec<u8> {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n{head}\r\n{{}}").into_bytes()
}

#[tokio::test]
async fn each_class_of_unparsable_request_gets_json_and_a_closed_connection() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&config(&m.url(), "")).await;
    let big = "a".repeat(70 * 1024);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "obs-fold",
            request("Content-Length: 2\r\nX-A: 1\r\n folded\r\n"),
            400,
            "invalid_request",
        ),
        (
            "conflicting Content-Length",
            request("Content-Length: 2\r\nContent-Length: 20\r\n"),
            400,
            "invalid_request",
        ),
        (
            "invalid Content-Length",
            request("Content-Length: 2x\r\n"),
            400,
            "invalid_request",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            request("Transfer-Encoding: chunked, identity\r\n"),
            400,
            "invalid_request",
        ),
        (
            "NUL in a header value",
            request("Content-Length: 2\r\nX-A: a\0b\r\n"),
            400,
            "invalid_request",
        ),
        (
            "space in a header name",
            request("Content-Length: 2\r\nX A: 1\r\n"),
            400,
            "invalid_request",
        ),
        (
            "bad request line",
            b"GET /v1/models HTTP/1.1 extra\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "bad version",
            b"GET /v1/models HTTP/9.9\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "header block too large",
            request(&format!("X-Big: {big}\r\n")),
            431,
            "headers_too_large",
        ),
        ("too many headers", request(&many), 431, "headers_too_large"),
    ];
    for (what, bytes, status, code) in cases {
        let r = ask(proxy.addr, &bytes).await;
        assert_status(&r, status);
        assert_eq!(r.responses(), 1, "{what}: {}", r.text);
        assert_json_error(&r, code, what);
    }
    assert!(m.requests().is_empty(), "{:?}", m.requests());
    proxy.stop().await;

    // A request target hyper will not take (over 64 KiB, in a head the limit allows): 414.
    let proxy = start_proxy(&config(&m.url(), "max_header_size = \"256KiB\"")).await;
    let long = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = ask(proxy.addr, long.as_bytes()).await;
    assert_status(&r, 414);
    assert_json_error(&r, "uri_too_long", "request target over 64 KiB");
    assert!(m.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn after_good_requests_on_the_connection_and_after_http_1_0() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&config(&m.url(), "")).await;
    // Two good pipelined requests, then a bad one: the good answers come intact, then JSON.
    let good = "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let r = ask(
        proxy.addr,
        format!("{good}{good}GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX: a\0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.responses(), 3, "{}", r.text);
    assert_eq!(r.text.matches("\"backend\":\"b\"").count(), 2, "{}", r.text);
    assert_json_error(&r, "invalid_request", "after two good requests");
    assert_eq!(m.requests().len(), 2);
    // An HTTP/2 client (prior knowledge) cannot read an HTTP/1 answer: hyper gives it none,
    // and the connection is closed, not left hanging.
    let r = ask(proxy.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(r.closed && r.text.is_empty(), "{:?}", r.text);
    // After an HTTP/1.0 keep-alive request hyper answers in HTTP/1.0: JSON all the same.
    let r = ask(
        proxy.addr,
        b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\nX: a\0\r\n\r\n",
    )
    .await;
    assert!(
        r.text.contains("HTTP/1.0 400 Bad Request\r\n"),
        "{}",
        r.text
    );
    assert_json_error(&r, "invalid_request", "after HTTP/1.0");
    proxy.stop().await;
}

/// What hyper itself would answer a bad request with, byte for byte.
const HYPERS_ANSWER: &str =
    "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Sat, 28 Nov 2026 10:00:00 GMT\r\n\r\n";

#[tokio::test]
async fn a_body_that_ends_like_hypers_answer_comes_through_unchanged() {
    // A backend whose body ends with exactly those bytes, sent last on their own (so that the
    // proxy writes them alone), with a Content-Length or chunked: the proxy must not take
    // them for its own parser's answer while the connection goes on.
    let m = Mock::start(handler(|req| async move {
        let chunked = req.uri().path().ends_with("chunked");
        mock::collect(req).await;
        let (tx, body) = mock::channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"first "))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx
                .send(Ok(Bytes::from_static(HYPERS_ANSWER.as_bytes())))
                .await;
        });
        let mut res = Response::builder();
        if !chunked {
            res = res.header("content-length", 6 + HYPERS_ANSWER.len());
        }
        res.body(body).unwrap()
    }))
    .await;
    let proxy = start_proxy(&config(&m.url(), "")).await;
    for path in ["/v1/plain", "/v1/chunked"] {
        let client = crate::support::client::client();
        for round in 0..2 {
            let res = client
                .get(format!("http://{}{path}", proxy.addr).parse().unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let body = tokio::time::timeout(
                Duration::from_secs(10),
                crate::support::client::body_bytes(res),
            )
            .await
            .unwrap_or_else(|_| panic!("{path} round {round}: the body never ended"));
            assert_eq!(
                body,
                format!("first {HYPERS_ANSWER}").as_bytes(),
                "{path} round {round}"
            );
        }
    }
    // Each client kept its one connection for both rounds: nothing was closed.
    assert_eq!(
        proxy
            .state
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    proxy.stop().await;
}
