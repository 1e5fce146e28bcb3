//! WebSockets through the proxy (the Realtime API's shape): messages both ways, large ones,
//! closing from either side, keys by the backend's auth policy, refused upgrades, down
//! backends, idle time-out, graceful stop, the access line, and the turn of a swap group.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::bin::Proc;
use crate::support::client::{ask, assert_status};
use crate::support::mock::{full, handler, Mock};
use crate::support::tls::test_ca;
use crate::support::ws::{connect, Client, WsEcho, CLOSE_PLEASE};
use crate::support::{dead_addr, routes_to, start_proxy};

const REALTIME: &str = "/v1/realtime?model=gpt-4o-realtime-preview";

/// The next message that is not a ping or pong, within 10 s.
async fn next(ws: &mut Client) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no message within 10 s"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// Waits up to `limit` for the backend to report a session's end; returns when it came.
async fn session_end(echo: &mut WsEcho, limit: Duration) -> Instant {
    tokio::time::timeout(limit, echo.ended.recv())
        .await
        .unwrap_or_else(|_| panic!("the backend's session did not end within {limit:?}"))
        .expect("backend gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_binary_and_a_10_mb_message_round_trip() {
    let echo = WsEcho::start().await;
    let proxy = start_proxy(&routes_to(&echo.url())).await;
    let (mut ws, res) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    assert_eq!(res.status(), 101);
    assert_eq!(res.headers()["x-backend"], "openai");

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hello")));
    let bytes: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::binary(bytes)));
    let big = crate::support::pattern(0, 10 << 20);
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Binary(b)) => assert!(b[..] == big[..], "the 10 MB message changed"),
        other => panic!("expected the 10 MB message back, got {other:?}"),
    }
    // Many small messages in a row keep their order.
    for i in 0..100 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(next(&mut ws).await, Some(Message::text(format!("m{i}"))));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_either_side_ends_both() {
    let mut echo = WsEcho::start().await;
    let proxy = start_proxy(&routes_to(&echo.url())).await;

    // The client closes: it gets the backend's close back, then the end.
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("x")));
    ws.close(None).await.unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Some(Message::Close(_)) | None
    ));
    assert_eq!(next(&mut ws).await, None);
    session_end(&mut echo, Duration::from_secs(5)).await;

    // The backend closes: the client gets its close frame, then the end.
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    ws.send(Message::text(CLOSE_PLEASE)).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.reason.as_str(), "asked to"),
        other => panic!("expected the backend's close frame, got {other:?}"),
    }
    assert_eq!(next(&mut ws).await, None);
    session_end(&mut echo, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_closes_the_backend_side_within_a_second() {
    let mut echo = WsEcho::start().await;
    let proxy = start_proxy(&routes_to(&echo.url())).await;
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("x")));
    // Gone without a close frame: the TCP connection just closes.
    let gone = Instant::now();
    drop(ws);
    let ended = session_end(&mut echo, Duration::from_secs(1)).await;
    assert!(ended.duration_since(gone) < Duration::from_secs(1));
}

/// A client's request in the Realtime API's shape, with its key both as `Authorization` and
/// as a browser's subprotocol.
const CLIENT_KEY: &str = "sk-client-realtime-secret";

fn realtime_headers() -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {CLIENT_KEY}")),
        ("openai-beta", "realtime=v1".into()),
        (
            "sec-websocket-protocol",
            format!("realtime, openai-insecure-api-key.{CLIENT_KEY}, openai-beta.realtime-v1"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_reaches_an_openai_like_tls_backend_and_no_local_one_nor_any_log() {
    let ca = test_ca();
    let openai = WsEcho::start_tls(ca.server.clone()).await;
    let local = WsEcho::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[log]\nlevel = \"trace\"\ntarget = \"stderr\"\n\
             [backends.openai]\nurl = \"{}\"\nforward_client_auth = true\nca_file = {ca_file:?}\n\
             [backends.speaches]\nurl = \"{}\"\n\
             [[route]]\npath = \"/v1/realtime/transcription\"\nbackend = \"speaches\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
            openai.url(),
            local.url()
        ),
    )
    .unwrap();
    let proc = Proc::start(&cfg, &[]);
    let headers = realtime_headers();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (path, backend) in [
        (REALTIME, "openai"),
        (
            "/v1/realtime/transcription?intent=transcription",
            "speaches",
        ),
    ] {
        let (mut ws, res) = connect(proc.addr, path, &headers).await.unwrap();
        assert_eq!(res.headers()["x-backend"], backend);
        assert_eq!(res.headers()["sec-websocket-protocol"], "realtime");
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text("ping")));
        ws.close(None).await.unwrap();
        while next(&mut ws).await.is_some() {}
    }

    let seen = openai.upgrades();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.uri.path(), "/v1/realtime");
    assert_eq!(up.uri.query(), Some("model=gpt-4o-realtime-preview"));
    assert_eq!(
        up.header("authorization"),
        Some(&*format!("Bearer {CLIENT_KEY}"))
    );
    assert_eq!(up.header("openai-beta"), Some("realtime=v1"));
    assert!(up
        .header("sec-websocket-protocol")
        .unwrap()
        .contains(&format!("openai-insecure-api-key.{CLIENT_KEY}")));
    assert_eq!(up.header("host"), Some(&*openai.addr.to_string()));

    let seen = local.upgrades();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.uri.query(), Some("intent=transcription"));
    assert_eq!(up.header("authorization"), None);
    assert_eq!(up.header("openai-beta"), Some("realtime=v1"));
    assert_eq!(
        up.header("sec-websocket-protocol"),
        Some("realtime, openai-beta.realtime-v1")
    );
    for (name, value) in &up.headers {
        assert!(
            !value
                .as_bytes()
                .windows(CLIENT_KEY.len())
                .any(|w| w == CLIENT_KEY.as_bytes()),
            "the local backend got the key in {name}"
        );
    }

    let log = proc.stop().await;
    assert!(
        !log.contains(CLIENT_KEY),
        "the key appeared in the log:\n{log}"
    );
    let sessions: Vec<&str> = log.lines().filter(|l| l.contains("status=101")).collect();
    assert_eq!(sessions.len(), 2, "one access line per session:\n{log}");
    for line in sessions {
        assert!(line.contains("method=GET"), "{line}");
        assert!(line.contains("outcome=\"ok\""), "{line}");
        // The messages and close frames, masked from the client (4 + 6 bytes for "ping" and
        // 6 for the close), unmasked from the backend.
        assert!(!line.contains("bytes_in=0 "), "{line}");
        assert!(!line.contains("bytes_out=0 "), "{line}");
        assert!(line.contains("total_ms="), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_comes_back_unchanged_and_a_down_backend_is_a_502() {
    let refusing = Mock::start(handler(|_req| async {
        http::Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(full("{\"error\":{\"message\":\"no such model\"}}"))
            .unwrap()
    }))
    .await;
    let proxy = start_proxy(&routes_to(&refusing.url())).await;
    let upgrade = |host: String| {
        format!(
            "GET {REALTIME} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let r = ask(proxy.addr, upgrade(proxy.addr.to_string()).as_bytes()).await;
    assert_status(&r, 400);
    assert!(
        r.text
            .ends_with("{\"error\":{\"message\":\"no such model\"}}"),
        "{}",
        r.text
    );

    let down = start_proxy(&routes_to(&format!("http://{}", dead_addr()))).await;
    let r = ask(down.addr, upgrade(down.addr.to_string()).as_bytes()).await;
    assert_status(&r, 502);
    assert!(
        r.text.contains("\"code\":\"backend_unreachable\""),
        "{}",
        r.text
    );
    assert!(r.text.contains("x-backend: openai"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_after_websocket_idle_timeout() {
    let mut echo = WsEcho::start().await;
    let proxy = start_proxy(&routes_to(&echo.url()).replace(
        "[backends.openai]\n",
        "[backends.openai]\nwebsocket_idle_timeout = \"600ms\"\n",
    ))
    .await;
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    let start = Instant::now();
    // Traffic keeps it open past the time-out.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(&mut ws).await, Some(Message::text("still here")));
    }
    let busy = Instant::now();
    assert!(busy - start >= Duration::from_millis(1200));
    // Then silence: closed from both sides.
    let ended = session_end(&mut echo, Duration::from_secs(5)).await;
    assert!(
        ended - busy >= Duration::from_millis(500),
        "{:?}",
        ended - busy
    );
    assert_eq!(next(&mut ws).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_lets_sessions_run_for_shutdown_timeout_then_closes_them() {
    let mut echo = WsEcho::start().await;
    let proxy = start_proxy(&format!(
        "[server]\nshutdown_timeout = \"1s\"\n{}",
        routes_to(&echo.url())
    ))
    .await;
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    let addr = proxy.addr;
    let stopping = Instant::now();
    let stopped = tokio::spawn(proxy.stop());
    // New connections are refused, the session goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    ws.send(Message::text("during the stop")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("during the stop")));
    stopped.await.unwrap();
    let ended = session_end(&mut echo, Duration::from_secs(5)).await;
    assert!(
        ended - stopping >= Duration::from_millis(900),
        "{:?}",
        ended - stopping
    );
    assert_eq!(next(&mut ws).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_present_a_client_token_as_a_subprotocol_and_their_origin_is_checked() {
    let echo = WsEcho::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "browser-token-0123456789\n").unwrap();
    let proxy = start_proxy(&format!(
        "[server]\nclient_tokens_file = {tokens:?}\ncors_origins = [\"http://localhost:5173\"]\n{}",
        routes_to(&echo.url())
    ))
    .await;
    let protocols = "realtime, openai-insecure-api-key.browser-token-0123456789";
    let (mut ws, _) = connect(
        proxy.addr,
        REALTIME,
        &[
            ("sec-websocket-protocol", protocols),
            ("origin", "http://localhost:5173"),
        ],
    )
    .await
    .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("hi")));
    let seen = echo.upgrades();
    assert_eq!(seen[0].header("sec-websocket-protocol"), Some("realtime"));

    let refused = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(res) => res.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    let wrong = "realtime, openai-insecure-api-key.not-the-token-0000000";
    let e = connect(proxy.addr, REALTIME, &[("sec-websocket-protocol", wrong)]).await;
    assert_eq!(refused(e.unwrap_err()), 401);
    let e = connect(
        proxy.addr,
        REALTIME,
        &[
            ("sec-websocket-protocol", protocols),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(refused(e.unwrap_err()), 403);
    assert_eq!(echo.upgrades().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_joins_websockets() {
    let echo = WsEcho::start().await;
    let config = openai_proxy::Config::from_toml(&format!(
        "[server]\nworkers = 2\n{}",
        routes_to(&echo.url())
    ))
    .unwrap();
    let proxy = crate::support::start_proxy_with_workers(config, 1).await;
    let mut sessions = 0;
    while proxy.state.requests.per_worker().contains(&0) {
        assert!(sessions < 200, "no session reached one of the workers");
        let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
        ws.send(Message::text(format!("s{sessions}")))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Some(Message::text(format!("s{sessions}")))
        );
        ws.close(None).await.unwrap();
        sessions += 1;
    }
    assert_eq!(echo.upgrades().len(), sessions);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_its_swap_groups_turn_until_it_ends() {
    let mut echo = WsEcho::start().await;
    let chat = Mock::echo("b").await;
    let proxy = start_proxy(&format!(
        "[backends.a]\nurl = \"{}\"\nswap_group = \"gpu\"\n\
         [backends.b]\nurl = \"{}\"\nswap_group = \"gpu\"\nstart_timeout = \"500ms\"\n\
         [[route]]\npath = \"/v1/realtime\"\nbackend = \"a\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"b\"\n",
        echo.url(),
        chat.url()
    ))
    .await;
    let (mut ws, _) = connect(proxy.addr, REALTIME, &[]).await.unwrap();
    ws.send(Message::text("on a")).await.unwrap();
    assert_eq!(next(&mut ws).await, Some(Message::text("on a")));
    let chat_request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 13\r\nConnection: close\r\n\r\n{{\"model\":\"b\"}}",
        proxy.addr
    );
    // While the session is open, b does not get its turn: a swap would end the session.
    let r = ask(proxy.addr, chat_request.as_bytes()).await;
    assert_status(&r, 504);
    assert!(
        r.text.contains("\"code\":\"backend_swap_timeout\""),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("'a' still had 1 request(s) in flight"),
        "{}",
        r.text
    );
    assert!(
        chat.requests().is_empty(),
        "b got a request during the session"
    );
    // Once it has ended, b gets its turn.
    ws.close(None).await.unwrap();
    // The backend's close comes back, then the connection ends.
    assert_eq!(next(&mut ws).await, Some(Message::Close(None)));
    assert_eq!(next(&mut ws).await, None);
    drop(ws);
    session_end(&mut echo, Duration::from_secs(5)).await;
    let r = ask(proxy.addr, chat_request.as_bytes()).await;
    assert_status(&r, 200);
    assert_eq!(chat.requests().len(), 1);
}
