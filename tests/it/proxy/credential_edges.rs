//! Credentials and the guard at their edges: key subprotocols in every form and on every
//! request, a client token sent both as `Authorization` and as a subprotocol, key-like query
//! names, `Sec-Fetch-Site` in another case, two `Origin`s, an HTTP/2 `Host` that is not its
//! `:authority`, and WebSocket sessions whose client token a reload removed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::Message;

use crate::support::activation::{config_file, start_notified};
use crate::support::client::ask;
use crate::support::mock::{full, Mock, Seen};
use crate::support::tls::{connect_h2, test_ca};
use crate::support::ws::{connect, Client, WsEcho};
use crate::support::{default_routes, routes_to, start_proxy};

const TOKEN_A: &str = "tok-a-0123456789abcdef0123456789";
const TOKEN_B: &str = "tok-b-fedcba9876543210fedcba9876";

/// Every header value and the target a backend received, as bytes, for searching.
fn everything(seen: &[Seen]) -> Vec<u8> {
    let mut all = Vec::new();
    for s in seen {
        all.extend_from_slice(s.uri.to_string().as_bytes());
        for (name, v) in &s.headers {
            all.extend_from_slice(name.as_str().as_bytes());
            all.extend_from_slice(v.as_bytes());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_subprotocols_reach_no_local_backend_in_any_form_on_any_request() {
    let local = Mock::echo("local").await;
    let proxy = start_proxy(&routes_to(&local.url())).await;
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let cases: [(&str, String, &[u8]); 5] = [
        (
            "a non-ASCII neighbour",
            format!("GET /v1/realtime HTTP/1.1\r\nHost: localhost\r\n{upgrade}"),
            b"r\xc3\xa9altime, openai-insecure-api-key.sk-SECRET-1",
        ),
        (
            "another letter case",
            format!("GET /v1/realtime HTTP/1.1\r\nHost: localhost\r\n{upgrade}"),
            b"realtime, OpenAI-Insecure-API-Key.sk-SECRET-2",
        ),
        (
            "HTTP/1.0",
            format!("GET /v1/realtime HTTP/1.0\r\nHost: localhost\r\n{upgrade}"),
            b"realtime, openai-insecure-api-key.sk-SECRET-3",
        ),
        (
            "no Connection: upgrade",
            "GET /v1/realtime HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n".into(),
            b"realtime, openai-insecure-api-key.sk-SECRET-4",
        ),
        (
            "a POST",
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n".into(),
            b"realtime, openai-insecure-api-key.sk-SECRET-5",
        ),
    ];
    for (i, (case, head, protocols)) in cases.iter().enumerate() {
        let mut request = head.as_bytes().to_vec();
        request.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        request.extend_from_slice(protocols);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        if head.starts_with("POST") {
            request.extend_from_slice(b"{}");
        }
        let reply = ask(proxy.addr, &request).await;
        // (An HTTP/1.0 request gets an HTTP/1.0 status line.)
        let ok = ["HTTP/1.1 200 ", "HTTP/1.0 200 "];
        assert!(
            ok.iter().any(|s| reply.text.starts_with(s)),
            "{case}: {}",
            reply.text
        );
        let seen = local.requests();
        assert_eq!(seen.len(), i + 1, "{case}");
        let got = everything(&seen[i..]);
        assert!(!contains(&got, "SECRET"), "{case}: {:?}", seen[i].headers);
        // What can be read entry by entry keeps its other entries.
        let kept = seen[i].header("sec-websocket-protocol");
        let expected = (i > 0).then_some("realtime");
        assert_eq!(kept, expected, "{case}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sent_as_authorization_and_as_a_subprotocol_reaches_no_forwarding_backend() {
    let openai = Mock::echo("openai").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN_A}\n")).unwrap();
    let url = openai.url();
    let proxy = start_proxy(&format!(
        "[server]\nclient_tokens_file = {tokens:?}\n{}",
        default_routes(&url, &url, &url, &url, "forward_client_auth = true")
    ))
    .await;
    for (method, path, upgrade) in [
        (
            "GET",
            "/v1/realtime",
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        ),
        ("POST", "/v1/embeddings", "Content-Length: 0\r\n"),
    ] {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN_A}\r\n\
             Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.{TOKEN_A}, \
             openai-insecure-api-key.sk-client-key\r\n{upgrade}Connection: close\r\n\r\n"
        );
        let reply = ask(proxy.addr, request.as_bytes()).await;
        assert_eq!(reply.status(), Some(200), "{method}: {}", reply.text);
    }
    let seen = openai.requests();
    assert_eq!(seen.len(), 2);
    assert!(!contains(&everything(&seen), TOKEN_A), "{seen:?}");
    for s in &seen {
        // The client's own key for a forwarding backend goes on; its token does not.
        assert_eq!(
            s.header("sec-websocket-protocol"),
            Some("realtime, openai-insecure-api-key.sk-client-key")
        );
        assert_eq!(s.header("authorization"), None);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_like_query_names_reach_no_local_backend() {
    let local = Mock::echo("local").await;
    let proxy = start_proxy(&routes_to(&local.url())).await;
    let query = "+key=q-SECRET-1&api.key=q-SECRET-2&key[]=q-SECRET-3&key%00=q-SECRET-4\
                 &API%20Key=q-SECRET-5&apikey=q-SECRET-6&limit=5";
    let request = format!(
        "POST /v1/chat/completions?{query} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let reply = ask(proxy.addr, request.as_bytes()).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    let seen = local.requests();
    assert_eq!(seen[0].uri.query(), Some("limit=5"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_fetch_site_in_any_case_and_two_origins_are_refused() {
    let local = Mock::echo("local").await;
    let proxy = start_proxy(&format!(
        "[server]\ncors_origins = [\"http://localhost:3000\"]\n{}",
        routes_to(&local.url())
    ))
    .await;
    for extra in [
        "Sec-Fetch-Site: Cross-Site\r\n",
        "Sec-Fetch-Site: SAME-SITE\r\n",
        "Origin: http://localhost:3000\r\nOrigin: https://evil.example\r\n",
        "Origin: http://localhost:3000\r\nOrigin: http://localhost:3000\r\n",
    ] {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n{extra}\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let reply = ask(proxy.addr, request.as_bytes()).await;
        assert_eq!(reply.status(), Some(403), "{extra}: {}", reply.text);
        assert!(
            reply.text.contains("\"origin_not_allowed\""),
            "{}",
            reply.text
        );
    }
    // Still served: one allowed Origin.
    let reply = ask(
        proxy.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n\
          Origin: http://localhost:3000\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    assert_eq!(local.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_host_that_is_not_the_authority_is_refused() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &ca.cert_pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    let local = Mock::echo("local").await;
    let proxy = start_proxy(&format!(
        "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n{}",
        routes_to(&local.url())
    ))
    .await;
    let tls = connect_h2(proxy.addr, &ca).await;
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let authority = format!(
        "https://127.0.0.1:{}/v1/chat/completions",
        proxy.addr.port()
    );
    let mut statuses = Vec::new();
    for host in [Some("rebound.example"), Some("127.0.0.1:1"), None] {
        let mut req = Request::post(&authority).body(full("{}")).unwrap();
        if let Some(h) = host {
            req.headers_mut().insert("host", h.parse().unwrap());
        }
        let res = tx.send_request(req).await.unwrap();
        statuses.push(res.status().as_u16());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if host.is_some() {
            assert!(
                String::from_utf8_lossy(&body).contains("invalid_host"),
                "{body:?}"
            );
        }
    }
    assert_eq!(statuses, [400, 400, 200]);
    assert_eq!(local.requests().len(), 1);
    proxy.stop().await;
}

/// The next message that is not a ping or pong within 5 s; `None` when the session ended.
async fn next(ws: &mut Client) -> Option<Message> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(m)) => return Some(m),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("neither a message nor the end within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_a_token_ends_its_websocket_sessions_only() {
    let echo = WsEcho::start().await;
    let tokens = dir_tokens(&[TOKEN_A, TOKEN_B]);
    let (_cdir, cfg) = config_file(&format!(
        "[server]\nclient_tokens_file = {:?}\n{}",
        tokens.1,
        routes_to(&echo.url())
    ));
    let (proc, notify) = start_notified(&cfg);
    let bearer = format!("Bearer {TOKEN_A}");
    let (mut a, _) = connect(proc.addr, "/v1/realtime", &[("authorization", &bearer)])
        .await
        .unwrap();
    let protocol = format!("realtime, openai-insecure-api-key.{TOKEN_B}");
    let (mut b, _) = connect(
        proc.addr,
        "/v1/realtime",
        &[("sec-websocket-protocol", &protocol)],
    )
    .await
    .unwrap();
    for ws in [&mut a, &mut b] {
        ws.send(Message::text("before")).await.unwrap();
        assert_eq!(next(ws).await, Some(Message::text("before")));
    }

    std::fs::write(&tokens.1, format!("{TOKEN_B}\n")).unwrap();
    proc.signal(libc::SIGHUP);
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(!ready.contains("FAILED"), "{ready}");
    // Ended at once (the bound: 5 s for a loaded machine); the kept token's session goes on.
    assert_eq!(next(&mut a).await, None);
    b.send(Message::text("after")).await.unwrap();
    assert_eq!(next(&mut b).await, Some(Message::text("after")));
    b.close(None).await.unwrap();
    let log = proc.stop().await;
    assert!(
        log.contains("a reload no longer accepts its client token"),
        "{log}"
    );
    assert!(!log.contains(TOKEN_A) && !log.contains(TOKEN_B), "{log}");
}

/// A tokens file only its owner may read, in a directory of its own.
fn dir_tokens(tokens: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, tokens.join("\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}
