//! The bench backend: the streaming cases nginx cannot play.
//!
//! - `POST /v1/chat/completions?n=N&gap_ms=G`: an Ollama-like SSE stream of `N` events `G` ms
//!   apart (defaults 100 and 10), then `data: [DONE]`. Each event carries `"t":NS`, the
//!   `CLOCK_MONOTONIC` time it was written, so a client on the same machine can tell how long
//!   each event took to reach it.
//! - `POST /v1/audio/transcriptions`: reads and discards the body (any size), then answers
//!   `{"text":"bench","bytes":N}` — a whisper.cpp stand-in for upload throughput.
//! - `GET /health`: 200.
//!
//! One blocking thread per connection: a handful of connections at a time, and no runtime
//! competing with the proxies for CPU.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::http::{mono_ns, Conn};

pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        thread::spawn(move || {
            if let Err(e) = connection(stream) {
                eprintln!("bench backend: {e:#}");
            }
        });
    }
    Ok(())
}

fn query_param(target: &str, name: &str) -> Option<u64> {
    let (_, q) = target.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn connection(stream: TcpStream) -> anyhow::Result<()> {
    let mut conn = Conn::with_buffer(stream, 1 << 20);
    while let Some(head) = conn.read_head()? {
        let target = head.second.clone();
        let path = target.split('?').next().unwrap_or_default();
        let mut received = 0u64;
        if head.chunked {
            conn.read_chunked(|d| received += d.len() as u64)?;
        } else if let Some(len) = head.content_length {
            conn.read_exact_body(len, None)?;
            received = len;
        }
        if path == "/v1/chat/completions" {
            let n = query_param(&target, "n").unwrap_or(100);
            let gap = Duration::from_millis(query_param(&target, "gap_ms").unwrap_or(10));
            sse(&mut conn.stream, n, gap)?;
        } else if path == "/v1/audio/transcriptions" || path == "/inference" {
            let body = format!("{{\"text\":\"bench\",\"bytes\":{received}}}");
            respond(&mut conn.stream, 200, "application/json", &body)?;
        } else if path == "/health" {
            respond(
                &mut conn.stream,
                200,
                "application/json",
                "{\"status\":\"ok\"}\n",
            )?;
        } else {
            respond(&mut conn.stream, 404, "application/json", "{}")?;
        }
        if head.close {
            break;
        }
    }
    Ok(())
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> anyhow::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes())?;
    Ok(())
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn sse(s: &mut TcpStream, n: u64, gap: Duration) -> anyhow::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )?;
    let mut out = Vec::with_capacity(512);
    for i in 0..n {
        if i > 0 {
            thread::sleep(gap);
        }
        let event = format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"model\":\"llama3.2\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}],\"t\":{}}}\n\n",
            mono_ns()
        );
        out.clear();
        chunk(&mut out, event.as_bytes());
        s.write_all(&out)?;
    }
    out.clear();
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&out)?;
    Ok(())
}
