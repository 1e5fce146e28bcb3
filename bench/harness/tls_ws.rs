//! The WebSocket and HTTPS cases (issue 17).
//!
//! - `websocket`: a WebSocket echo server in this process; one session per subject and round,
//!   small text messages sent one at a time, each timed until its echo is back; the p50 of a
//!   subject minus the p50 of the same session straight to the echo server ("direct") is the
//!   latency the proxy adds per message. The session goes through the `/v1/audio/speech`
//!   route, whose backend is the echo server in both proxies' configs.
//! - `tls`: both proxies terminate TLS with the same certificate (openai-proxy with
//!   `server.tls_cert`/`tls_key`, HAProxy with `bind ... ssl crt`); wrk measures HTTPS
//!   requests/s on keep-alive connections, and requests/s with `Connection: close`, where
//!   every request costs a new TCP connection and a full TLS handshake.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::configs::{self, Upstreams};
use crate::measure;
use crate::phases::{targets, Job};
use crate::procs::{self, Proc, SubjectKind};
use crate::report::{percentile, Metric, Results, DIRECT};
use crate::rotated;

/// Starts a WebSocket echo server on a thread of its own; returns its address.
fn start_echo() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("ws-echo".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                use futures_util::{SinkExt, StreamExt};
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                            return;
                        };
                        while let Some(Ok(m)) = ws.next().await {
                            if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        })?;
    Ok(addr)
}

/// One session to `addr`: `n` messages one at a time (after `warm` unmeasured ones); the
/// round trip of each, in microseconds.
fn session(addr: SocketAddr, warm: usize, n: usize) -> anyhow::Result<Vec<f64>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}/v1/audio/speech/ws");
    let (mut ws, res) = tungstenite::client::client(url.as_str(), stream)
        .with_context(|| format!("WebSocket handshake with {addr}"))?;
    ensure!(res.status() == 101, "{addr} answered {}", res.status());
    let msg = "{\"type\":\"input_audio_buffer.append\",\"audio\":\"AAAA\"}";
    let mut rtts = Vec::with_capacity(n);
    for i in 0..warm + n {
        let t = Instant::now();
        ws.send(Message::text(msg))?;
        loop {
            match ws.read()? {
                Message::Text(t) if t.as_str() == msg => break,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => anyhow::bail!("unexpected message from {addr}: {other:?}"),
            }
        }
        if i >= warm {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(rtts)
}

pub fn websocket(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let echo = start_echo()?;
    let up = Upstreams {
        ollama: job.up.ollama,
        backend: echo,
        pool: job.up.pool,
    };
    let mut running = procs::start_subjects(job.env, job.subjects, up, "ws")?;
    let all = targets(echo, &running);
    let (warm, n) = if job.smoke { (10, 50) } else { (500, 5000) };
    for round in 0..job.s.rounds {
        let mut p50 = Vec::new();
        for t in rotated(&all, round) {
            let rtts = session(t.addr, warm, n).with_context(|| format!("through {}", t.name))?;
            p50.push((t.name.clone(), percentile(&rtts, 50.0)));
        }
        let direct = p50
            .iter()
            .find(|(name, _)| name == DIRECT)
            .map(|(_, v)| *v)
            .context("no direct run")?;
        for (name, v) in p50.iter().filter(|(name, _)| name != DIRECT) {
            r.push(Metric::WsAddedP50, name, v - direct);
        }
        crate::phases::check_alive(&mut running)?;
    }
    Ok(())
}

/// A certificate for 127.0.0.1 and localhost: (cert.pem, key.pem, cert+key for HAProxy).
fn certificate(dir: &Path) -> anyhow::Result<(String, String, String)> {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = rcgen::generate_simple_self_signed(names)?;
    let (c, k) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let paths = ["tls-cert.pem", "tls-key.pem", "tls-haproxy.pem"].map(|f| dir.join(f));
    std::fs::write(&paths[0], &c)?;
    std::fs::write(&paths[1], &k)?;
    std::fs::write(&paths[2], format!("{c}{k}"))?;
    Ok(paths.map(|p| p.display().to_string()).into())
}

/// Waits until `addr` accepts connections (a TLS listener: no plain `/health`).
fn wait_listening(proc: &mut Proc, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        proc.check_alive()?;
        ensure!(Instant::now() < deadline, "{addr} never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn tls(job: &Job, r: &mut Results) -> anyhow::Result<()> {
    let env = job.env;
    let (cert, key, combined) = certificate(&env.dir)?;
    let mut running = Vec::new();
    for s in job.subjects {
        let addr = crate::sys::free_addr()?;
        let config = match &s.kind {
            SubjectKind::Haproxy { .. } => {
                let bind = format!("{addr} ssl crt {combined} alpn h2,http/1.1");
                let path = env.dir.join(format!("{}-tls.cfg", s.name));
                std::fs::write(&path, configs::haproxy_config(&bind, job.up, None))?;
                path
            }
            SubjectKind::Proxy { .. } => {
                let path = env.write_config(s, "tls", Some(addr), job.up)?;
                let text = std::fs::read_to_string(&path)?;
                ensure!(
                    text.matches("\n[server]\n").count() == 1,
                    "no [server] table"
                );
                let text = text.replace(
                    "\n[server]\n",
                    &format!("\n[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n"),
                );
                std::fs::write(&path, text)?;
                path
            }
        };
        let mut proc = env.spawn_with(s, "tls", &config)?;
        wait_listening(&mut proc, addr)?;
        running.push((s.name.clone(), addr, proc));
    }
    let script = measure::write_wrk_script(&env.dir)?;
    for round in 0..job.s.rounds {
        let order: Vec<usize> = (0..running.len()).collect();
        for i in rotated(&order, round) {
            let (name, addr, _) = &running[i];
            let base = format!("https://{addr}");
            let keep = measure::wrk_url(env, &script, &base, 64, job.s.duration, &[])
                .with_context(|| format!("wrk over HTTPS through {name}"))?;
            r.push(Metric::HttpsRps, name, keep.rps);
            let close = ["-H", "Connection: close"];
            let fresh = measure::wrk_url(env, &script, &base, 16, job.s.duration, &close)
                .with_context(|| format!("wrk, a TLS handshake per request, through {name}"))?;
            r.push(Metric::TlsHandshakeRps, name, fresh.rps);
            for (what, w) in [("keep-alive", &keep), ("new connections", &fresh)] {
                if w.errors > 0 {
                    r.warnings.push(format!(
                        "round {round}, HTTPS {what}, {name}: {} failed requests",
                        w.errors
                    ));
                }
            }
        }
        for (_, _, proc) in &mut running {
            proc.check_alive()?;
        }
    }
    Ok(())
}
