//! SIGTERM: stop accepting, let the stream in flight finish, exit 0.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::bin::Proc;
use crate::support::mock::Mock;
use crate::support::routes_to;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_stream_in_flight_and_refuses_new_connections() {
    let ollama = Mock::sse(5, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, routes_to(&ollama.url())).unwrap();
    let mut proc = Proc::start(&cfg, &[]);
    let addr = proc.addr;

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut buf = [0u8; 4096];
    // Headers and the first event may arrive in separate reads.
    while !String::from_utf8_lossy(&got.lock().unwrap()).contains("data: 0") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the stream started")
            .unwrap();
        assert!(n > 0, "connection closed before the first event");
        got.lock().unwrap().extend_from_slice(&buf[..n]);
    }

    proc.signal(libc::SIGTERM);
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "still accepting connections after SIGTERM");

    // The stream in flight runs to its end.
    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        rest
    });
    let rest = reader.await.unwrap();
    let all = [got.lock().unwrap().clone(), rest].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("data: 4") && text.contains("data: [DONE]"),
        "{text}"
    );
    assert!(
        text.ends_with("0\r\n\r\n"),
        "the chunked stream ended cleanly: {text:?}"
    );

    let status = tokio::task::spawn_blocking(move || {
        let st = proc.wait_exit(Duration::from_secs(10));
        (st, proc.log_text())
    })
    .await
    .unwrap();
    assert_eq!(
        status.0.and_then(|s| s.code()),
        Some(0),
        "log:\n{}",
        status.1
    );
}
