//! Each route reaches its backend with the request intact, and the response comes back intact.

use std::io::Write;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::{default_routes, routes_to, start_proxy, tls::test_ca};

#[tokio::test]
async fn default_routes_reach_their_backends_intact() {
    let ca = test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_pem.as_bytes()).unwrap();
    let whisper = Mock::echo("whisper").await;
    let ollama = Mock::echo("ollama").await;
    let kokoro = Mock::echo("kokoro").await;
    let openai = Mock::echo_tls("openai", ca.server.clone()).await;
    let cfg = default_routes(
        &whisper.url(),
        &ollama.url(),
        &kokoro.url(),
        &openai.url(),
        &format!("ca_file = {:?}\nforward_client_auth = true", ca_file.path()),
    );
    let proxy = start_proxy(&cfg).await;

    let cases: [(Method, &str, &Mock, &str); 6] = [
        (
            Method::POST,
            "/v1/audio/transcriptions?language=en&x=%20y",
            &whisper,
            "whisper",
        ),
        (Method::POST, "/v1/chat/completions?a=1", &ollama, "ollama"),
        (Method::POST, "/v1/audio/speech", &kokoro, "kokoro"),
        (Method::GET, "/v1/audio/voices", &kokoro, "kokoro"),
        (Method::GET, "/v1/models?limit=2", &openai, "openai"),
        (Method::DELETE, "/v1/files/file-123", &openai, "openai"),
    ];
    for (i, (method, path_q, mock, name)) in cases.iter().enumerate() {
        let before = mock.requests().len();
        let body: Vec<u8> = format!("body-{i}-")
            .into_bytes()
            .into_iter()
            .chain((0..=255u8).rev())
            .collect();
        let rid = format!("test-rid-{i}");
        let req = Request::builder()
            .method(method.clone())
            .uri(proxy.url(path_q))
            .header("content-type", "application/octet-stream")
            .header("x-custom", format!("value-{i}"))
            .header("x-request-id", &rid)
            .header("connection", "x-hop")
            .header("x-hop", "must not be forwarded")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic c2VjcmV0")
            .body(full(body.clone()))
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.status(), StatusCode::OK, "{path_q}");
        let h = res.headers().clone();
        assert_eq!(h["x-backend"], *name, "{path_q}");
        assert_eq!(h["x-request-id"], rid.as_str(), "{path_q}");
        assert_eq!(
            h["x-mock"], *name,
            "{path_q}: backend's own headers come back"
        );
        let echo = json(res).await;
        assert_eq!(echo["backend"], *name);

        let seen = mock.requests();
        assert_eq!(
            seen.len(),
            before + 1,
            "{path_q}: exactly one request reached {name}"
        );
        let s = &seen[before];
        let (path, query) = path_q
            .split_once('?')
            .map_or((*path_q, None), |(p, q)| (p, Some(q)));
        assert_eq!(s.method, *method);
        assert_eq!(s.uri.path(), path);
        assert_eq!(s.uri.query(), query);
        assert_eq!(s.body, Bytes::from(body), "{path_q}: body byte for byte");
        assert_eq!(s.header("x-custom"), Some(format!("value-{i}").as_str()));
        assert_eq!(s.header("content-type"), Some("application/octet-stream"));
        assert_eq!(s.header("x-request-id"), Some(rid.as_str()));
        for hop in ["x-hop", "keep-alive", "proxy-authorization", "connection"] {
            assert_eq!(
                s.header(hop),
                None,
                "{path_q}: hop-by-hop {hop} was forwarded"
            );
        }
        if s.version != Version::HTTP_2 {
            assert_eq!(s.header("host"), Some(mock.addr.to_string().as_str()));
        } else {
            assert_eq!(
                s.uri.authority().map(|a| a.as_str()),
                Some(mock.addr.to_string().as_str())
            );
        }
        assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(s.header("x-forwarded-proto"), Some("http"));
        assert_eq!(
            s.header("x-forwarded-host"),
            Some(proxy.addr.to_string().as_str())
        );
    }
    // HTTPS upstreams speak HTTP/2 when the server offers it (ALPN).
    assert!(openai
        .requests()
        .iter()
        .all(|s| s.version == Version::HTTP_2));
    assert!(ollama
        .requests()
        .iter()
        .all(|s| s.version == Version::HTTP_11));
    proxy.stop().await;
}

#[tokio::test]
async fn request_ids_are_made_when_missing_or_odd() {
    let ollama = Mock::echo("ollama").await;
    let proxy = start_proxy(&routes_to(&ollama.url())).await;
    let mut ids = Vec::new();
    for rid in [None, Some("has spaces in it"), Some(&*"x".repeat(300))] {
        let mut b = Request::post(proxy.url("/v1/chat/completions"));
        if let Some(r) = rid {
            b = b.header("x-request-id", r);
        }
        let res = send(b.body(full("{}")).unwrap()).await;
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "a fresh id replaces {rid:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        body_bytes(res).await;
        ids.push(id);
    }
    let seen: Vec<String> = ollama
        .requests()
        .iter()
        .map(|s| s.header("x-request-id").unwrap().to_string())
        .collect();
    assert_eq!(
        seen, ids,
        "the backend gets the same id the client gets back"
    );
    ids.dedup();
    assert_eq!(ids.len(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn rewrite_and_backend_base_path() {
    let whisper = Mock::echo("whisper").await;
    let other = Mock::echo("other").await;
    let proxy = start_proxy(&format!(
        r#"
[backends.whisper]
url = "{}"
[backends.other]
url = "{}/base/path/"
[[route]]
path = "/v1/audio/transcriptions"
backend = "whisper"
rewrite = "/inference"
[[route]]
path = "/v1"
backend = "other"
"#,
        whisper.url(),
        other.url()
    ))
    .await;
    for (path, expect) in [
        ("/v1/audio/transcriptions", "/inference"),
        ("/v1/audio/transcriptions/sub?q=1", "/inference/sub"),
    ] {
        let res = send(Request::post(proxy.url(path)).body(full("x")).unwrap()).await;
        assert_eq!(res.status(), 200);
        body_bytes(res).await;
        assert_eq!(whisper.requests().last().unwrap().uri.path(), expect);
    }
    let res = send(
        Request::get(proxy.url("/v1/models?x=1"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    let s = other.requests().pop().unwrap();
    assert_eq!(s.uri.path(), "/base/path/v1/models");
    assert_eq!(s.uri.query(), Some("x=1"));
    // Normalized paths are what get routed and forwarded.
    let res = send(
        Request::get(proxy.url("/v1//./audio/%74ranscriptions"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "whisper");
    body_bytes(res).await;
    assert_eq!(whisper.requests().last().unwrap().uri.path(), "/inference");
    proxy.stop().await;
}

#[tokio::test]
async fn response_comes_back_byte_for_byte() {
    let audio: Bytes = (0..200_000u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let payload = audio.clone();
    let kokoro = Mock::start(handler(move |req| {
        let payload = payload.clone();
        async move {
            mock::collect(req).await;
            Response::builder()
                .status(201)
                .header("content-type", "audio/mpeg")
                .header("x-ratelimit-remaining", "42")
                .header("x-request-id", "req_from_backend")
                .header("connection", "x-resp-hop")
                .header("x-resp-hop", "1")
                .body(mock::full(payload))
                .unwrap()
        }
    }))
    .await;
    let proxy = start_proxy(&routes_to(&kokoro.url())).await;
    let res = send(
        Request::post(proxy.url("/v1/audio/speech"))
            .body(full(r#"{"input":"hi"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["content-type"], "audio/mpeg");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "42");
    // The backend's own request id (OpenAI's, which its SDKs show) comes back unchanged.
    assert_eq!(res.headers()["x-request-id"], "req_from_backend");
    assert_eq!(res.headers()["content-length"], "200000");
    assert!(res.headers().get("x-resp-hop").is_none());
    assert_eq!(body_bytes(res).await, audio);
    proxy.stop().await;
}

#[tokio::test]
async fn health_index_and_unknown_paths() {
    std::env::set_var("OPENAI_PROXY_TEST_INDEX_KEY", "sk-index-secret-123");
    let m = Mock::echo("m").await;
    let cfg = default_routes(
        &m.url(),
        &m.url(),
        &m.url(),
        &m.url(),
        "api_key_env = \"OPENAI_PROXY_TEST_INDEX_KEY\"",
    );
    let proxy = start_proxy(&cfg).await;
    let res = send(Request::get(proxy.url("/health")).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["status"], "ok");

    let res = send(Request::get(proxy.url("/")).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    let page = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    for needle in [
        "/v1/chat/completions",
        "ollama",
        "/v1/audio/transcriptions",
        "whisper",
        &m.url(),
    ] {
        assert!(page.contains(needle), "index page lacks {needle}:\n{page}");
    }
    assert!(!page.contains("sk-index-secret-123"));

    for path in ["/nope", "/v2/models", "/v1x"] {
        let res = send(Request::get(proxy.url(path)).body(full("")).unwrap()).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let v = json(res).await;
        assert_eq!(v["error"]["code"], "not_found", "{path}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains(path));
    }
    assert!(m.requests().is_empty(), "nothing reached a backend");
    proxy.stop().await;
}

#[tokio::test]
async fn client_keep_alive_and_pooled_backend_connections() {
    let m = Mock::echo("m").await;
    let proxy = start_proxy(&routes_to(&m.url())).await;
    // Three requests on one client connection, one after the other.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut replies = 0;
    for i in 0..3 {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\n{{{i}}}"
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .unwrap();
        // Read exactly one response: the head, then Content-Length bytes of body.
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut byte)
                .await
                .unwrap();
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut body)
            .await
            .unwrap();
        replies += 1;
    }
    assert_eq!(replies, 3);
    assert_eq!(m.requests().len(), 3);
    assert_eq!(
        m.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sequential requests reuse one pooled backend connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_after_header_read_timeout() {
    let m = Mock::echo("m").await;
    let cfg = format!(
        "[server]\nheader_read_timeout = \"300ms\"\n{}",
        routes_to(&m.url())
    );
    let proxy = start_proxy(&cfg).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let t = tokio::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    // The proxy closes the connection (possibly after a 408) instead of waiting forever.
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::io::AsyncReadExt::read(&mut s, &mut buf).await
        })
        .await
        .expect("connection still open 5 s after header_read_timeout")
        .unwrap_or(0);
        if n == 0 {
            break;
        }
    }
    let took = t.elapsed();
    assert!(took >= std::time::Duration::from_millis(250), "{took:?}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    assert!(m.requests().is_empty());
    proxy.stop().await;
}
