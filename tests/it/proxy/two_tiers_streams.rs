//! Through both tiers (edge, then node, then the model server; all the real binary, see
//! `two_tiers.rs`): a 1 GiB upload reaches the server whole while it is being sent, events
//! arrive as they are generated, and a WebSocket carries messages both ways.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::two_tiers::{chat, chat_node, start_edge, start_node, CLIENT_TOKEN, NODE_TOKEN};
use crate::support::client::{self, json, send};
use crate::support::mock::{self, handler, Mock, MockFuture};
use crate::support::pattern;
use crate::support::sse::{self, Events};
use crate::support::ws::{connect, WsEcho};

/// The upload: 1 GiB, the proxies' default `max_body_size`.
const UPLOAD: u64 = 1 << 30;
/// The test pattern repeats every 128 KiB (`pattern_byte` mixes `i * 31` and `i >> 9`, both
/// as bytes), so one block of it, sent again and again, is the whole pattern.
const BLOCK: usize = 1 << 20;

/// A transcription server that compares the upload with the pattern as it streams in and
/// reports how much it has received so far.
async fn checking_server(progress: watch::Sender<u64>) -> Mock {
    let progress = Arc::new(progress);
    let block = Bytes::from(pattern(0, BLOCK));
    Mock::start(handler(move |req| {
        let (progress, block) = (progress.clone(), block.clone());
        Box::pin(async move {
            let mut body = req.into_body();
            let (mut n, mut intact) = (0u64, true);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                n += data.len() as u64;
                // Compare piece by piece against the block at the running offset.
                let mut off = (n - data.len() as u64) as usize % BLOCK;
                while !data.is_empty() {
                    let len = data.len().min(BLOCK - off);
                    intact &= data[..len] == block[off..off + len];
                    data = data.slice(len..);
                    off = 0;
                }
                progress.send_replace(n);
            }
            Response::new(mock::full(
                serde_json::json!({"bytes": n, "intact": intact}).to_string(),
            ))
        }) as MockFuture
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_through_both_tiers_intact() {
    let (progress_tx, mut progress) = watch::channel(0u64);
    let whisper = checking_server(progress_tx).await;
    let cloud = Mock::echo("cloud").await;
    let dir = tempfile::tempdir().unwrap();
    let node_cfg = format!(
        "[backends.whisper]\nurl = \"{}\"\n[[route]]\npath = \"/v1/audio/transcriptions\"\n\
         backend = \"whisper\"\n",
        whisper.url()
    );
    let node1 = start_node(dir.path(), 1, &node_cfg);
    let node2 = start_node(dir.path(), 2, &node_cfg);
    let edge = start_edge(dir.path(), [node1.addr, node2.addr], &cloud.url());

    let started = Instant::now();
    let (tx, body) = client::streamed();
    let req = Request::post(format!("http://{}/v1/audio/transcriptions", edge.addr))
        .header("authorization", format!("Bearer {CLIENT_TOKEN}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(client::client().request(req));
    let block = Bytes::from(pattern(0, BLOCK));
    tx.send(Ok(block.clone())).await.unwrap();
    // The server sees data while the client has sent one block: no hop holds the body.
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|&n| n >= BLOCK as u64 / 2),
    )
    .await
    .expect("the server got nothing while the client was still sending: a hop buffers")
    .unwrap();
    for _ in 1..UPLOAD / BLOCK as u64 {
        tx.send(Ok(block.clone())).await.unwrap();
    }
    drop(tx);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "node1");
    let v = json(res).await;
    eprintln!("1 GiB through edge and node in {:?}", started.elapsed());
    assert_eq!(v["bytes"], UPLOAD);
    assert_eq!(v["intact"], true);
    for p in [&edge, &node1] {
        let peak = p.peak_rss_kib();
        assert!(
            peak < 64 * 1024,
            "peak RSS {peak} KiB for a 1 GiB upload: a hop buffers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_generated_and_websockets_carry_messages_both_ways() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut events = Events::numbered(5, Duration::from_millis(300));
    events.done = false;
    let ollama = sse::backend(events, sent.clone()).await;
    let realtime = WsEcho::start().await;
    let cloud = Mock::echo("cloud").await;
    let dir = tempfile::tempdir().unwrap();
    let node1 = start_node(
        dir.path(),
        1,
        &format!(
            "[backends.gpu]\nurl = \"{}\"\n[backends.realtime]\nurl = \"{}\"\n\
             [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"gpu\"\nmodels = [\"model-a\"]\n\
             [[route]]\npath = \"/v1/realtime\"\nbackend = \"realtime\"\n",
            ollama.url(),
            realtime.url()
        ),
    );
    let node2 = start_node(dir.path(), 2, &chat_node(&cloud.url(), "\"model-b\""));
    let edge = start_edge(dir.path(), [node1.addr, node2.addr], &cloud.url());

    // Each event reaches the client before the next one is generated, 300 ms apart.
    let res = send(chat(&edge, "model-a", &[])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let numbered: Vec<String> = (0..5).map(|i| format!("data: {i}\n\n")).collect();
    let (text, arrived) = sse::read_timed(res.into_body(), &numbered).await;
    assert_eq!(text, numbered.concat());
    let sent = sent.lock().unwrap().clone();
    sse::assert_each_arrived_before_the_next_was_sent(&arrived, &sent, "the edge or the node");
    for w in arrived.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(100),
            "events bunched: {arrived:?}"
        );
    }

    // A WebSocket: edge, node, server, and back.
    let (mut ws, res) = connect(
        edge.addr,
        "/v1/realtime?model=m",
        &[("authorization", &format!("Bearer {CLIENT_TOKEN}"))],
    )
    .await
    .unwrap();
    assert_eq!(res.headers()["x-backend"], "node1");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    for m in [
        Message::text("to the gpu and back"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(m.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, m);
    }
    ws.close(None).await.unwrap();
    let up = realtime.upgrades();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].uri.path(), "/v1/realtime");
    assert_eq!(up[0].header("x-request-id"), Some(id.as_str()));
    assert!(up[0].header("authorization").is_none());
    for (k, v) in &up[0].headers {
        let v = v.as_bytes();
        for secret in [CLIENT_TOKEN, NODE_TOKEN] {
            assert!(
                !v.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{k}"
            );
        }
    }
}
