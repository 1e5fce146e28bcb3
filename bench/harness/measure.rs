//! One measurement each: wrk runs, SSE streams, uploads, held connections, cold starts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use crate::configs::Upstreams;
use crate::http::{chat_request, find, get_request, mono_ns, Conn, CHAT_BODY};
use crate::procs::{pin, Env, Proc, Subject};
use crate::sys::free_addr;

/// The latency percentiles wrk reports and the chart shows.
pub const PERCENTILES: [f64; 6] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99];

/// One wrk run.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub requests: f64,
    pub rps: f64,
    /// Latency at each of [`PERCENTILES`], in microseconds.
    pub pct_us: Vec<f64>,
    pub errors: u64,
}

pub fn write_wrk_script(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let pcts: Vec<String> = PERCENTILES.iter().map(|p| p.to_string()).collect();
    let script = format!(
        r#"wrk.method = "POST"
wrk.body = '{CHAT_BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["User-Agent"] = "bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d errors=%d", summary.requests,
    summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
  for _, p in ipairs({{{}}}) do
    io.write(string.format(" %d", latency:percentile(p)))
  end
  io.write("\n")
end
"#,
        pcts.join(", ")
    );
    let path = dir.join("chat.lua");
    std::fs::write(&path, script)?;
    Ok(path)
}

/// `wrk -t1 -cN -dS` with the chat request against `addr`, on the load CPUs.
pub fn wrk(
    env: &Env,
    script: &Path,
    addr: SocketAddr,
    conns: u32,
    secs: u32,
) -> anyhow::Result<WrkRun> {
    wrk_url(env, script, &format!("http://{addr}"), conns, secs, &[])
}

/// [`wrk`] against `base` (`http://ADDR` or `https://ADDR`), with `extra` arguments.
pub fn wrk_url(
    env: &Env,
    script: &Path,
    base: &str,
    conns: u32,
    secs: u32,
    extra: &[&str],
) -> anyhow::Result<WrkRun> {
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .args(extra)
        .arg("-s")
        .arg(script)
        .arg(format!("{base}/v1/chat/completions"));
    pin(&mut cmd, &env.load_cpus);
    let out = cmd.output().context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no result from wrk:\n{text}"))?;
    let mut fields = line.split_whitespace();
    let mut kv = |name: &str| -> anyhow::Result<f64> {
        fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("wrk output lacks {name}: {line}"))
    };
    let requests = kv("requests=")?;
    let duration_us = kv("duration_us=")?;
    let errors = kv("errors=")? as u64;
    let pct_us = fields
        .map(|f| f.parse::<f64>().context("bad percentile"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(pct_us.len() == PERCENTILES.len(), "wrk gave {line}");
    Ok(WrkRun {
        requests,
        rps: requests / (duration_us / 1e6),
        pct_us,
        errors,
    })
}

/// One SSE stream: time to the first event, and each event's delay from being written by the
/// backend to being read here.
#[derive(Debug, Default)]
pub struct SseRun {
    pub first_us: f64,
    pub delays_us: Vec<f64>,
}

fn event_stamp(event: &[u8]) -> Option<u64> {
    let i = find(event, b"\"t\":")? + 4;
    let digits: Vec<u8> = event[i..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

pub fn sse_stream(conn: &mut Conn, events: u64, gap_ms: u64) -> anyhow::Result<SseRun> {
    let req = chat_request(&format!("/v1/chat/completions?n={events}&gap_ms={gap_ms}"));
    let t0 = mono_ns();
    conn.send(&req)?;
    let head = conn.read_head()?.context("no SSE response")?;
    ensure!(head.first == "200", "SSE request answered {}", head.first);
    ensure!(head.chunked, "SSE response is not chunked");
    let mut run = SseRun::default();
    let mut text = Vec::new();
    let mut done = false;
    conn.read_chunked(|data| {
        let now = mono_ns();
        text.extend_from_slice(data);
        while let Some(i) = find(&text, b"\n\n") {
            let event: Vec<u8> = text.drain(..i + 2).collect();
            if let Some(t) = event_stamp(&event) {
                if run.delays_us.is_empty() {
                    run.first_us = (now - t0) as f64 / 1e3;
                }
                run.delays_us.push(now.saturating_sub(t) as f64 / 1e3);
            } else if find(&event, b"[DONE]").is_some() {
                done = true;
            }
        }
    })?;
    ensure!(
        done && run.delays_us.len() as u64 == events,
        "SSE stream incomplete: {} of {events} events",
        run.delays_us.len()
    );
    Ok(run)
}

/// Streams `bytes` to `/v1/audio/transcriptions`; returns bytes per second, from the first
/// byte sent to the response.
///
/// With `multipart`, the body (still `bytes` long in all, so it stays within the proxy's
/// default `max_body_size` of 1 GiB) is a `multipart/form-data` upload whose `model` field
/// comes first, as the SDKs send it (routing by model reads that field).
pub fn upload(addr: SocketAddr, bytes: u64, multipart: bool) -> anyhow::Result<f64> {
    let mut conn = Conn::connect(addr)?;
    let (ctype, open, close) = if multipart {
        (
            "multipart/form-data; boundary=bench-b0undary",
            "--bench-b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
             --bench-b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
             Content-Type: audio/wav\r\n\r\n",
            "\r\n--bench-b0undary--\r\n",
        )
    } else {
        ("application/octet-stream", "", "")
    };
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-bench\r\n\
         Content-Type: {ctype}\r\nContent-Length: {bytes}\r\n\r\n{open}"
    );
    let block: Vec<u8> = (0..1u32 << 20).map(|i| ((i * 31) >> 3) as u8).collect();
    let t0 = Instant::now();
    conn.send(head.as_bytes())?;
    let mut left = bytes - (open.len() + close.len()) as u64;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        conn.stream
            .write_all(&block[..n])
            .context("upload interrupted")?;
        left -= n as u64;
    }
    conn.stream
        .write_all(close.as_bytes())
        .context("upload interrupted")?;
    let (status, body) = conn.read_response()?;
    let secs = t0.elapsed().as_secs_f64();
    ensure!(
        status == 200 && find(&body, format!("\"bytes\":{bytes}}}").as_bytes()).is_some(),
        "upload answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(bytes as f64 / secs)
}

/// Opens `n` keep-alive connections, each with one finished chat request, and keeps them.
pub fn hold_connections(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Conn>> {
    let req = chat_request("/v1/chat/completions");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("connection {i} of {n} to {addr}"))?;
        let mut c = Conn::with_buffer(stream, 2048);
        let (status, _) = c.roundtrip(&req)?;
        ensure!(status == 200, "connection {i}: status {status}");
        conns.push(c);
    }
    Ok(conns)
}

/// How the cold start is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColdMode {
    /// Socket activation, falling back to `spawn` when the proxy ignores inherited sockets.
    Auto,
    /// `systemd-socket-activate -l ADDR PROXY`: from connect() to the first byte of the
    /// `/health` response, with the proxy not running before the connect.
    Activate,
    /// From spawning the process to the first byte of a `/health` response (polling connect).
    Spawn,
}

impl ColdMode {
    /// A few words for the table.
    pub fn short(self) -> &'static str {
        match self {
            ColdMode::Auto | ColdMode::Activate => "socket-activated, connect → first byte",
            ColdMode::Spawn => "spawn → first /health byte",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ColdMode::Auto | ColdMode::Activate => {
                "socket-activated (systemd-socket-activate): connect() to first /health response byte"
            }
            ColdMode::Spawn => {
                "process spawn to first /health response byte (polling connect every 100 µs)"
            }
        }
    }
}

/// Reads the first byte of a `/health` response on `s`, then the rest, and checks it is 200.
fn health_first_byte(s: &mut TcpStream, t0: Instant) -> anyhow::Result<f64> {
    s.write_all(&get_request("/health"))?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).context("no /health response")?;
    let secs = t0.elapsed().as_secs_f64();
    let mut rest = [0u8; 64];
    let n = s.read(&mut rest)?;
    let status_line = [&first[..], &rest[..n]].concat();
    ensure!(
        status_line.starts_with(b"HTTP/1.1 200"),
        "/health answered {}",
        String::from_utf8_lossy(&status_line)
    );
    Ok(secs)
}

/// What one cold start measured.
pub struct Cold {
    /// Connect (or spawn) to the first byte of `/health`.
    pub secs: f64,
    /// Socket-activated: RSS and its anonymous part (bytes) 0.3 s after a proxied chat
    /// request that followed.
    pub after_request: Option<(f64, f64)>,
}

/// RSS and the anonymous part of it (`/proc/PID/smaps_rollup`), in bytes.
fn rss_and_anon(pid: u32) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let kb = |field: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|v| v * 1024.0)
            .with_context(|| format!("no {field} in smaps_rollup"))
    };
    Ok((kb("Rss:")?, kb("Anonymous:")?))
}

/// One cold start of `subject`. `Activate` fails (rather than hangs) when the process does not
/// serve the inherited socket within a few seconds.
pub fn cold_start(
    env: &Env,
    subject: &Subject,
    mode: ColdMode,
    up: Upstreams,
) -> anyhow::Result<Cold> {
    match mode {
        ColdMode::Spawn => {
            let addr = free_addr()?;
            let config = env.write_config(subject, "cold", Some(addr), up)?;
            let t0 = Instant::now();
            let mut proc = env.spawn_with(subject, "cold", &config)?;
            loop {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    return Ok(Cold {
                        secs: health_first_byte(&mut s, t0)?,
                        after_request: None,
                    });
                }
                proc.check_alive()?;
                ensure!(
                    t0.elapsed() < Duration::from_secs(10),
                    "no listener after 10 s"
                );
                thread::sleep(Duration::from_micros(100));
            }
        }
        ColdMode::Activate | ColdMode::Auto => {
            let addr = free_addr()?;
            let config = env.write_config(subject, "cold", None, up)?;
            let inner = env.command(subject, &config);
            let mut cmd = Command::new("systemd-socket-activate");
            cmd.arg("-l").arg(addr.to_string());
            for (k, v) in inner.get_envs() {
                if let Some(v) = v {
                    let mut kv = k.to_os_string();
                    kv.push("=");
                    kv.push(v);
                    cmd.arg("-E").arg(kv);
                }
            }
            cmd.arg(inner.get_program()).args(inner.get_args());
            pin(&mut cmd, &env.proxy_cpus);
            let log = env
                .dir
                .join(format!("cold-{}.log", subject.name.replace('+', "-")));
            let child = cmd
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log)?)
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot run systemd-socket-activate")?;
            let mut child = child;
            let stderr = child.stderr.take().context("no stderr")?;
            let proc = Proc::adopt("systemd-socket-activate", child, log);
            // Drain stderr for the process's whole life (a closed pipe would kill it), and
            // tell us when the socket is listening.
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("Listening on") {
                        let _ = tx.send(());
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(5))
                .context("systemd-socket-activate did not start listening")?;
            let t0 = Instant::now();
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            match health_first_byte(&mut s, t0) {
                Ok(secs) => {
                    // The process systemd-socket-activate became, after its first proxied
                    // request.
                    let mut c = Conn::connect(addr)?;
                    let (status, _) = c.roundtrip(&chat_request("/v1/chat/completions"))?;
                    ensure!(status == 200, "proxied request answered {status}");
                    drop(c);
                    thread::sleep(Duration::from_millis(300));
                    Ok(Cold {
                        secs,
                        after_request: Some(rss_and_anon(proc.pid())?),
                    })
                }
                Err(e) => bail!(
                    "{} did not answer on the inherited socket (does it take LISTEN_FDS?): {e:#}",
                    subject.name
                ),
            }
        }
    }
}
