//! Bodies stream both ways: SSE events arrive as they are produced, uploads reach the backend
//! while the client is still sending, nothing is held in memory.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::support::bin::Proc;
use crate::support::client::{self, body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock, MockFuture};
use crate::support::sse::{self, Events};
use crate::support::{pattern, pattern_byte, routes_to, start_proxy};

const EVENTS: usize = 5;

fn event(i: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}}}}]}}\n\n"
    )
}

/// An Ollama-like backend streaming `EVENTS` events `gap` apart, noting when each was sent.
async fn sse_backend(gap: Duration, sent: Arc<Mutex<Vec<std::time::Instant>>>) -> Mock {
    let events = Events {
        events: (0..EVENTS).map(event).collect(),
        gap,
        headers: vec![("cache-control", "no-cache")],
        done: true,
    };
    sse::backend(events, sent).await
}

#[tokio::test]
async fn sse_events_arrive_before_the_next_is_sent() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let ollama = sse_backend(Duration::from_millis(200), sent.clone()).await;
    let proxy = start_proxy(&routes_to(&ollama.url())).await;
    // As both official SDKs send it: Accept: application/json, "stream": true in the body.
    let res = send(
        Request::post(proxy.url("/v1/chat/completions"))
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(full(
                r#"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events: Vec<String> = (0..EVENTS).map(event).collect();
    let (text, arrived) = sse::read_timed(res.into_body(), &events).await;
    assert_eq!(text, events.concat() + "data: [DONE]\n\n");
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), EVENTS);
    sse::assert_each_arrived_before_the_next_was_sent(&arrived, &sent, "the proxy");
    proxy.stop().await;
}

/// multipart/form-data as the SDKs send it.
fn multipart(boundary: &str, file_name: &str, file: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    write!(
        b,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: audio/mpeg\r\n\r\n"
    )
    .unwrap();
    b.extend_from_slice(file);
    write!(b, "\r\n--{boundary}--\r\n").unwrap();
    b
}

#[tokio::test]
async fn chunked_multipart_uploads_arrive_intact() {
    let whisper = Mock::echo("whisper").await;
    let proxy = start_proxy(&routes_to(&whisper.url())).await;
    let mp3 = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/huge-manatees.mp3"
    ))
    .unwrap();
    assert!(mp3.len() > 60_000);
    let body = multipart("----openai-proxy-test", "huge-manatees.mp3", &mp3);

    // Chunked, no Content-Length, in uneven pieces (the Node SDK's way).
    let (tx, req_body) = client::streamed();
    let req = Request::post(proxy.url("/v1/audio/transcriptions"))
        .header(
            "content-type",
            "multipart/form-data; boundary=----openai-proxy-test",
        )
        .body(req_body)
        .unwrap();
    let pending = tokio::spawn(client::client().request(req));
    for piece in body.chunks(7_777) {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    drop(tx);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    body_bytes(res).await;

    // And with a Content-Length, in one piece (the Python SDK's way).
    let res = send(
        Request::post(proxy.url("/v1/audio/transcriptions"))
            .header(
                "content-type",
                "multipart/form-data; boundary=----openai-proxy-test",
            )
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;

    let seen = whisper.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.body.len(), body.len());
        assert!(s.body == body, "multipart body changed on the way");
        assert_eq!(
            s.header("content-type"),
            Some("multipart/form-data; boundary=----openai-proxy-test")
        );
    }
    assert_eq!(seen[0].header("content-length"), None);
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        seen[1].header("content-length"),
        Some(body.len().to_string().as_str())
    );
    proxy.stop().await;
}

const UPLOAD: u64 = 200_000_000;
const FIRST: usize = 1 << 20;

/// A whisper-like backend that checks the upload byte by byte as it streams in and reports
/// how much it has received so far.
async fn counting_backend(progress: watch::Sender<u64>) -> Mock {
    let progress = Arc::new(progress);
    Mock::start(handler(move |req| {
        let progress = progress.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            let mut intact = true;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    intact &= data
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == pattern_byte(n + i as u64));
                    n += data.len() as u64;
                    progress.send_replace(n);
                }
            }
            let reply = serde_json::json!({"bytes": n, "intact": intact});
            Response::new(mock::full(reply.to_string()))
        }) as MockFuture
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_through_with_flat_memory() {
    let (progress_tx, mut progress) = watch::channel(0u64);
    let whisper = counting_backend(progress_tx).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        routes_to(&whisper.url()) + "[log]\naccess_log = false\n",
    )
    .unwrap();
    let proc = Proc::start(&cfg, &[]);

    let (tx, req_body) = client::streamed();
    let req = Request::post(format!("http://{}/v1/audio/transcriptions", proc.addr))
        .header("content-type", "application/octet-stream")
        .body(req_body)
        .unwrap();
    let pending = tokio::spawn(client::client().request(req));
    tx.send(Ok(Bytes::from(pattern(0, FIRST)))).await.unwrap();
    // The backend must see data while the client has sent only the first MiB.
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|&n| n >= FIRST as u64),
    )
    .await
    .expect("the backend received nothing while the client was still sending: the proxy buffers")
    .unwrap();
    let mut off = FIRST as u64;
    const CHUNK: u64 = 256 * 1024;
    while off < UPLOAD {
        let len = CHUNK.min(UPLOAD - off);
        tx.send(Ok(Bytes::from(pattern(off, len as usize))))
            .await
            .unwrap();
        off += len;
    }
    drop(tx);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    let v = json(res).await;
    assert_eq!(v["bytes"], UPLOAD);
    assert_eq!(v["intact"], true);
    let peak = proc.peak_rss_kib();
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} KiB for a {UPLOAD}-byte upload: bodies must not be buffered"
    );
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_backend_connection() {
    let (closed_tx, closed_rx) = oneshot::channel::<Instant>();
    let closed_tx = Arc::new(Mutex::new(Some(closed_tx)));
    let ollama = Mock::start(handler(move |req| {
        let closed_tx = closed_tx.clone();
        async move {
            mock::collect(req).await;
            let (tx, body) = mock::channel_body();
            tokio::spawn(async move {
                // Endless tokens, until the body is dropped (the connection closed).
                for i in 0..600 {
                    tokio::select! {
                        _ = tx.closed() => break,
                        r = tx.send(Ok(Bytes::from(event(i)))) => if r.is_err() { break },
                    }
                    tokio::select! {
                        _ = tx.closed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                if let Some(t) = closed_tx.lock().unwrap().take() {
                    let _ = t.send(Instant::now());
                }
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        }
    }))
    .await;
    let proxy = start_proxy(&routes_to(&ollama.url())).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 15\r\n\r\n{\"stream\":true}",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("tok1") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("stream started")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let gone = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the backend never saw its connection close")
        .unwrap();
    assert!(
        closed.duration_since(gone) < Duration::from_secs(1),
        "backend saw the close {:?} after the client left",
        closed.duration_since(gone)
    );
    proxy.stop().await;
}

/// Sends on drop: tells the test when the backend's handler was abandoned.
struct DropSignal(Option<oneshot::Sender<Instant>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

#[tokio::test]
async fn client_disconnect_before_response_headers_cancels_the_backend_request() {
    let (dropped_tx, dropped_rx) = oneshot::channel::<Instant>();
    let dropped_tx = Arc::new(Mutex::new(Some(dropped_tx)));
    let ollama = Mock::start(handler(move |req| {
        let guard = DropSignal(dropped_tx.lock().unwrap().take());
        async move {
            mock::collect(req).await;
            // A long prompt: no headers for a long time.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(guard);
            Response::new(mock::full("late"))
        }
    }))
    .await;
    let proxy = start_proxy(&routes_to(&ollama.url())).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let gone = Instant::now();
    let dropped = tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("the backend kept working for a client that left")
        .unwrap();
    assert!(dropped.duration_since(gone) < Duration::from_secs(1));
    proxy.stop().await;
}
