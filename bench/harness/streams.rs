//! Many long streams at once: the case an LLM gateway lives on. A backend (`bench-harness
//! stream-backend`) answers each chat request with an SSE stream of stamped events, one every
//! `gap` ms; the client here opens `n` such streams through the target at once and records
//! each event's delay (arrival minus the backend's stamp, one `CLOCK_MONOTONIC`), the streams
//! that failed, and when all were open. Both run on a single-threaded tokio runtime, so ten
//! thousand connections cost the load CPU little.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::{chat_request, find, mono_ns};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")
}

// ---------------------------------------------------------------------------------------------
// The backend

/// Serves streams on `listener` until killed.
pub fn serve(listener: TcpListener) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (s, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = stream_to(s).await;
            });
        }
    })
}

fn query(target: &str, name: &str, default: u64) -> u64 {
    target
        .split_once('?')
        .and_then(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse().ok())
        })
        .unwrap_or(default)
}

/// One request (`/health`, or a chat request answered with `n` events `gap_ms` apart), then
/// the connection closes.
async fn stream_to(mut s: TcpStream) -> anyhow::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the request head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed inside the request body");
        have += n;
    }
    if target.starts_with("/health") {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            .await?;
        return Ok(());
    }
    let n = query(&target, "n", 30);
    let gap = Duration::from_millis(query(&target, "gap_ms", 1000));
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n",
    )
    .await?;
    let mut ticks = tokio::time::interval(gap);
    let mut out = Vec::with_capacity(256);
    for i in 0..n {
        ticks.tick().await;
        let event = format!(
            "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\"tok{i} \"}}}}],\"t\":{}}}\n\n",
            mono_ns()
        );
        out.clear();
        out.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\r\n");
        s.write_all(&out).await?;
    }
    s.write_all(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The client

/// What `n` streams through one target saw.
#[derive(Debug, Default)]
pub struct StreamsRun {
    /// The delay of every event sent once all streams were open (the steady state, not the
    /// ramp-up), µs.
    pub delays_us: Vec<f64>,
    /// Streams that failed to connect, were answered with an error, or ended early.
    pub errors: usize,
}

/// Progress the measuring thread watches while the streams run.
#[derive(Default)]
pub struct Progress {
    /// Streams that have received their first event and not yet ended.
    pub open: AtomicUsize,
    /// Streams that are over (completed or failed).
    pub over: AtomicUsize,
    /// When the last stream got its first event (`CLOCK_MONOTONIC` ns; 0 until then).
    pub all_open_ns: std::sync::atomic::AtomicU64,
}

/// Opens `n` streams of `events` events `gap_ms` apart through `addr`, evenly over the first
/// gap, and waits for them all to end.
pub fn run_clients(
    addr: SocketAddr,
    n: usize,
    events: u64,
    gap_ms: u64,
    progress: Arc<Progress>,
) -> anyhow::Result<StreamsRun> {
    let delays: Arc<Mutex<Vec<(u64, f64)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(n * events as usize)));
    let errors = Arc::new(AtomicUsize::new(0));
    runtime()?.block_on(async {
        let mut tasks = Vec::with_capacity(n);
        let req: Arc<[u8]> =
            chat_request(&format!("/v1/chat/completions?n={events}&gap_ms={gap_ms}")).into();
        // Opened evenly over one gap (every 10 ms a batch), so that the streams' events are
        // spread over each gap as independent streams' would be, not sent in one burst.
        let batch = (n as u64 * 10).div_ceil(gap_ms.max(10)).max(1) as usize;
        let mut next = tokio::time::Instant::now();
        for i in 0..n {
            if i > 0 && i % batch == 0 {
                next += Duration::from_millis(10);
                tokio::time::sleep_until(next).await;
            }
            let (req, delays, errors, progress) = (
                req.clone(),
                delays.clone(),
                errors.clone(),
                progress.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::with_capacity(events as usize);
                let ok = one_stream(addr, &req, events, &mut mine, &progress, n).await;
                if !matches!(ok, Ok(true)) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                progress.over.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut d) = delays.lock() {
                    d.extend(mine);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let all = std::mem::take(&mut *delays.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let from = progress.all_open_ns.load(Ordering::Relaxed);
    let delays_us = all
        .into_iter()
        .filter(|&(stamp, _)| from == 0 || stamp >= from)
        .map(|(_, d)| d)
        .collect();
    Ok(StreamsRun {
        delays_us,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// One stream; `Ok(true)` when every event and the end arrived.
async fn one_stream(
    addr: SocketAddr,
    req: &[u8],
    events: u64,
    delays: &mut Vec<(u64, f64)>,
    progress: &Progress,
    streams: usize,
) -> anyhow::Result<bool> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Small buffers: ten thousand of them on the load side.
    let _ = socket.set_recv_buffer_size(16 << 10);
    let mut s = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .context("connect timed out")??;
    let _ = s.set_nodelay(true);
    s.write_all(req).await?;
    let mut pending: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    let mut head_seen = false;
    let mut got = 0u64;
    let mut counted_open = false;
    let limit = Duration::from_secs(60 + events * 2);
    let result = tokio::time::timeout(limit, async {
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, anyhow::Error>(false);
            }
            let now = mono_ns();
            pending.extend_from_slice(&chunk[..n]);
            if !head_seen {
                let Some(i) = find(&pending, b"\r\n\r\n") else {
                    continue;
                };
                if !pending.starts_with(b"HTTP/1.1 200") {
                    return Ok(false);
                }
                head_seen = true;
                pending.drain(..i + 4);
            }
            // Stamps, in order; the chunk framing around them does not matter here.
            while let Some(i) = find(&pending, b"\"t\":") {
                let digits: Vec<u8> = pending[i + 4..]
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_digit)
                    .collect();
                if i + 4 + digits.len() >= pending.len() {
                    break; // the number may go on in the next read
                }
                let stamp: u64 = std::str::from_utf8(&digits)?.parse()?;
                delays.push((stamp, now.saturating_sub(stamp) as f64 / 1e3));
                got += 1;
                if !counted_open {
                    counted_open = true;
                    if progress.open.fetch_add(1, Ordering::Relaxed) + 1 == streams {
                        progress.all_open_ns.store(now, Ordering::Relaxed);
                    }
                }
                pending.drain(..i + 4 + digits.len());
            }
            if find(&pending, b"[DONE]").is_some() {
                return Ok(got == events);
            }
            if pending.len() > 4096 {
                let keep = pending.len() - 64;
                pending.drain(..keep);
            }
        }
    })
    .await;
    if counted_open {
        progress.open.fetch_sub(1, Ordering::Relaxed);
    }
    match result {
        Ok(r) => r,
        Err(_) => Ok(false),
    }
}
