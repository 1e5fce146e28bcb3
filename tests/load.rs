//! Heavy tests, in their own test binary so that cargo runs them after the others and not
//! beside them, and one at a time (they share the two cores with nothing else): 1000
//! slow-header connections, 10 000 malformed requests, a minute of `wrk` load with reloads
//! and a graceful stop, a pool losing a server under load ([`load_pool`]), and a 1 GiB answer
//! ([`load_answer`]).

// The crate-wide lints are for the library: a test or benchmark crate's items are its own.
#![allow(unreachable_pub, missing_docs)]

// The heavy tests use only part of the shared harness.
#[allow(dead_code)]
mod support;

mod load_answer;
mod load_pool;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::activation::config_file;
use support::bin::{command, Proc};
use support::client::{body_bytes, full, send};
use support::mock::Mock;

/// Runs `test` on its own runtime, never at the same time as another heavy test.
fn heavy<F: Future<Output = ()>>(test: F) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Raises this process's soft limit on open files to at least `want` (or the hard limit).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on an owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

fn one_backend(url: &str, server: &str) -> String {
    format!(
        "[server]\n{server}\n[backends.b]\nurl = \"{url}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Slow clients

/// 1000 connections trickling their headers byte by byte do not keep a normal client from
/// being served within 1 s, and each is closed once `header_read_timeout` has passed. Runs the
/// real binary with a soft open-files limit of 512, so it also shows that the proxy raises its
/// own limit (otherwise it could not accept 1000 connections).
#[test]
fn slowloris_does_not_starve_normal_clients_and_is_cut_off() {
    heavy(slowloris_does_not_starve_normal_clients_and_is_cut_off_run());
}

async fn slowloris_does_not_starve_normal_clients_and_is_cut_off_run() {
    const SLOW: usize = 1000;
    raise_nofile(4 * SLOW as u64);
    let m = Mock::echo("b").await;
    let (_dir, cfg) = config_file(&one_backend(
        &m.url(),
        "header_read_timeout = \"2s\"\n[log]\naccess_log = false",
    ));
    let mut cmd = command();
    cmd.arg("--config")
        .arg(&cfg)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    // SAFETY: setrlimit is async-signal-safe; runs in the child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 512.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let proc = Proc::spawn(cmd);
    let addr = proc.addr;

    let start = Instant::now();
    let closed = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        let closed = closed.clone();
        slow.push(tokio::spawn(async move {
            let opened = Instant::now();
            let mut buf = [0u8; 256];
            // One more header byte every 200 ms, never finishing; stop at the first sign of
            // the server closing (a read of 0 or an error), at most 20 s.
            for _ in 0..100 {
                tokio::select! {
                    r = s.read(&mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) { break; }
                    }
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if s.write_all(b"a").await.is_err() { break; }
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
            opened.elapsed()
        }));
    }
    let all_open = start.elapsed();

    // While all of them are open and trickling, a normal client is served promptly.
    for path in ["/health", "/v1/models"] {
        let t = Instant::now();
        let res = send(
            Request::get(format!("http://{addr}{path}"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200);
        body_bytes(res).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{path} took {took:?} with {SLOW} slow clients"
        );
    }
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "slow clients were closed before header_read_timeout (opening them took {all_open:?})"
    );

    let mut lifetimes = Vec::with_capacity(SLOW);
    for t in slow {
        lifetimes.push(t.await.unwrap());
    }
    let shortest = lifetimes.iter().min().copied().unwrap_or_default();
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    assert!(
        shortest >= Duration::from_millis(1500),
        "a slow client was closed after {shortest:?}, before header_read_timeout (2s)"
    );
    assert!(
        longest < Duration::from_secs(10),
        "a slow client was still open after {longest:?} (header_read_timeout 2s)"
    );
    let log = proc.log_text();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(m.requests().len() == 1, "only the normal client's request");
}

// ---------------------------------------------------------------------------------------------
// Malformed and random requests

/// xorshift64*: deterministic, so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const TEMPLATES: &[&str] = &[
    "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"stream\":true}",
    "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    "PUT /v1/files/a%20b?x=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "DELETE /v1/models/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk-x\r\nX-Request-ID: abc\r\n\r\n",
];

const TOKENS: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    ":",
    " ",
    "\t",
    "%",
    "%2e%2e/",
    "../",
    "//",
    "\\",
    "\0",
    "\u{ff}",
    "?",
    "#",
    "HTTP/1.1",
    "HTTP/2.0",
    "HTTP/0.9",
    "chunked",
    "Transfer-Encoding: chunked\r\n",
    "Content-Length: 18446744073709551616\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 5\r\n",
    "ffffffffffffffff\r\n",
    "0\r\n\r\n",
    "Host: \r\n",
    "\u{1F600}",
    "Connection: close, te\r\n",
    "Expect: 100-continue\r\n",
    "*",
    "CONNECT ",
    "http://a/",
];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut b = TEMPLATES[rng.below(TEMPLATES.len())].as_bytes().to_vec();
    if rng.chance(3) {
        // Pure noise.
        let n = rng.below(300);
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    for _ in 0..=rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 => {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
            1 => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            2 | 3 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            4 => {
                let end = (at + rng.below(32)).min(b.len());
                let dup = b[at..end].to_vec();
                b.splice(at..at, dup);
            }
            5 => b.truncate(at),
            _ => {
                if rng.chance(5) {
                    let n = 1 + rng.below(80_000);
                    b.splice(at..at, std::iter::repeat(b'A').take(n));
                }
            }
        }
    }
    b
}

/// 10 000 mutated and random requests, each on its own connection, some with the client's
/// write side closed after sending: each malformed one is answered with a 4xx or the
/// connection is closed, never a hang; the real binary never panics and keeps serving. Some
/// mutations leave a request the proxy may serve (a byte more in a body, say): those may get a
/// 200 (the echo backend, /health), and a request with `Expect: 100-continue` a 100 Continue;
/// nothing else, no 3xx and no 5xx.
#[test]
fn ten_thousand_malformed_requests_get_4xx_or_closed() {
    heavy(ten_thousand_malformed_requests_get_4xx_or_closed_run());
}

async fn ten_thousand_malformed_requests_get_4xx_or_closed_run() {
    const N: usize = 10_000;
    const PARALLEL: usize = 128;
    raise_nofile(4096);
    let m = Mock::echo("b").await;
    let (_dir, cfg) = config_file(&format!(
        "[server]\nheader_read_timeout = \"1s\"\n[log]\naccess_log = false\nlevel = \"debug\"\n\
         [backends.b]\nurl = \"{}\"\nidle_timeout = \"1s\"\nresponse_timeout = \"5s\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        m.url()
    ));
    let proc = Proc::start(&cfg, &[]);
    let addr = proc.addr;
    let started = Instant::now();
    let seeds = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..PARALLEL {
        let seeds = seeds.clone();
        workers.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            let mut statuses = [0usize; 6];
            loop {
                let seed = seeds.fetch_add(1, Ordering::SeqCst);
                if seed >= N {
                    break;
                }
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (seed as u64 + 1).wrapping_mul(0x1000_0000_01B3));
                let req = mutate(&mut rng);
                let half_close = rng.chance(50);
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    bad.push(format!("seed {seed}: connect failed"));
                    continue;
                };
                let _ = s.write_all(&req).await;
                if half_close {
                    let _ = s.shutdown().await;
                }
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                head.extend_from_slice(&buf[..n]);
                                if head.windows(2).any(|w| w == b"\r\n") {
                                    return;
                                }
                            }
                        }
                    }
                })
                .await;
                if outcome.is_err() {
                    bad.push(format!("seed {seed}: no answer and not closed within 10 s"));
                    continue;
                }
                let line = String::from_utf8_lossy(&head);
                let line = line.lines().next().unwrap_or("");
                if line.is_empty() {
                    statuses[0] += 1; // closed without a response
                    continue;
                }
                match line
                    .strip_prefix("HTTP/1.1 ")
                    .or_else(|| line.strip_prefix("HTTP/1.0 "))
                    .and_then(|s| s.get(..3))
                    .and_then(|s| s.parse::<u16>().ok())
                {
                    Some(400..=499) => statuses[4] += 1,
                    Some(100) if asks_to_continue(&req) => statuses[1] += 1,
                    Some(200) => statuses[2] += 1,
                    _ => bad.push(format!(
                        "seed {seed}: {line:?} for {:?}",
                        String::from_utf8_lossy(&req[..req.len().min(200)])
                    )),
                }
            }
            (bad, statuses)
        }));
    }
    let mut bad = Vec::new();
    let mut statuses = [0usize; 6];
    for w in workers {
        let (b, s) = w.await.unwrap();
        bad.extend(b);
        for i in 0..6 {
            statuses[i] += s[i];
        }
    }
    let took = started.elapsed();
    eprintln!(
        "{N} malformed requests in {took:?}: closed {}, 100 {}, 200 {}, 4xx {}",
        statuses[0], statuses[1], statuses[2], statuses[4]
    );
    assert!(
        bad.is_empty(),
        "{} bad outcomes: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(statuses[4] > N / 10, "too few 4xx: {statuses:?}");
    // Still serving, and nothing panicked.
    let res = send(
        Request::get(format!("http://{addr}/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    let log = proc.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Load, reloads and a graceful stop

/// `wrk`'s summary of one run.
#[derive(Debug)]
struct Wrk {
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    output: String,
}

/// Runs `wrk` against `base` for `secs` seconds at 256 connections, alternating a plain JSON
/// request and a streamed (SSE) chat completion.
fn wrk(base: &str, secs: u64, script: &std::path::Path) -> Wrk {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c256",
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(base)
        .output()
        .expect("cannot run wrk");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {output}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number_after = |prefix: &str| -> u64 {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map_or(0, |rest| {
                rest.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
    };
    let requests = output
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let socket_errors = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map_or(0, |rest| {
            rest.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    Wrk {
        requests,
        non_2xx: number_after("Non-2xx or 3xx responses:"),
        socket_errors,
        output,
    }
}

const WRK_SCRIPT: &str = r#"
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("POST", "/v1/chat/completions",
      {["Content-Type"] = "application/json"}, '{"model":"m","stream":true}')
  end
  return wrk.format("GET", "/v1/models")
end
"#;

fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Request ids the backends saw while `on`.
#[derive(Default)]
struct Recorder {
    on: std::sync::atomic::AtomicBool,
    ids: Mutex<std::collections::HashSet<String>>,
}

impl Recorder {
    fn note(&self, req: &http::Request<hyper::body::Incoming>) {
        if self.on.load(Ordering::Relaxed) {
            if let Some(id) = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
            {
                self.ids.lock().unwrap().insert(id.to_string());
            }
        }
    }
}

/// A backend answering `{"object":"list"}`, named by its `x-mock` header.
async fn plain_backend(name: &'static str, rec: Arc<Recorder>, hits: Arc<AtomicUsize>) -> Mock {
    Mock::start(support::mock::handler(move |req| {
        rec.note(&req);
        hits.fetch_add(1, Ordering::Relaxed);
        async move {
            support::mock::collect(req).await;
            http::Response::builder()
                .header("content-type", "application/json")
                .header("x-mock", name)
                .body(support::mock::full("{\"object\":\"list\",\"data\":[]}"))
                .unwrap()
        }
    }))
    .await
}

/// A backend streaming server-sent events: `events` events `gap` apart, then `[DONE]`.
async fn sse_backend(events: usize, gap: Duration, rec: Arc<Recorder>) -> Mock {
    Mock::start(support::mock::handler(move |req| {
        rec.note(&req);
        async move {
            support::mock::collect(req).await;
            sse_response(events, gap)
        }
    }))
    .await
}

/// Server-sent events: `events` events `gap` apart, then `[DONE]`.
fn sse_response(events: usize, gap: Duration) -> http::Response<support::mock::MockBody> {
    let (tx, body) = support::mock::channel_body();
    tokio::spawn(async move {
        for i in 0..events {
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let ev = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n");
            if tx.send(Ok(bytes::Bytes::from(ev))).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")))
            .await;
    });
    http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn load_config(plain: &str, sse: &str, slow: &str) -> String {
    format!(
        "[log]\naccess_log = false\n\
         [backends.plain]\nurl = \"{plain}\"\n[backends.sse]\nurl = \"{sse}\"\n[backends.slow]\nurl = \"{slow}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"plain\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"sse\"\n\
         [[route]]\npath = \"/slow\"\nbackend = \"slow\"\n"
    )
}

/// 30 s of warm-up, then 60 s of `wrk` at 256 connections mixing plain and SSE requests, with
/// 10 reloads (SIGHUP) spread over the minute that switch the plain route between two
/// backends: no non-2xx response, no socket error, and resident memory after the minute
/// within 10 % of what it was after the warm-up (both measured at rest, after a reload). Then SIGTERM while 64 clients keep sending plain
/// and slow streamed requests: every request that reached a backend completes at its client,
/// and the proxy exits 0.
#[test]
fn a_minute_of_wrk_with_reloads_then_a_graceful_stop() {
    support::tools::require("wrk", "wrk");
    heavy(load_run());
}

async fn load_run() {
    raise_nofile(4096);
    let rec = Arc::new(Recorder::default());
    let (hits_a, hits_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = plain_backend("a", rec.clone(), hits_a.clone()).await;
    let b = plain_backend("b", rec.clone(), hits_b.clone()).await;
    let sse = sse_backend(5, Duration::ZERO, rec.clone()).await;
    let slow = sse_backend(5, Duration::from_millis(100), rec.clone()).await;
    let (dir, cfg) = config_file(&load_config(&a.url(), &sse.url(), &slow.url()));
    let script = dir.path().join("mix.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let (mut proc, notify) = support::activation::start_notified(&cfg);
    let base = format!("http://{}", proc.addr);
    let pid = proc.child.id() as i32;

    // `wrk` for `secs` seconds with `reloads` reloads 5 s apart, each switching the plain
    // route to the other backend. Then, at rest, one more reload (which lets the replaced
    // configuration go and hands freed memory back), and the resident memory once that has
    // settled: the memory the proxy really keeps, without the ups and downs of connections
    // and buffers coming and going under load or the allocator's spare pages.
    let phase = |secs: u64, reloads: usize, notify: support::activation::NotifySocket| {
        let (b2, s2) = (base.clone(), script.clone());
        let load = tokio::task::spawn_blocking(move || wrk(&b2, secs, &s2));
        let (cfg2, a_url, b_url, sse_url, slow_url) =
            (cfg.clone(), a.url(), b.url(), sse.url(), slow.url());
        let reloading = tokio::task::spawn_blocking(move || {
            for i in 0..reloads {
                std::thread::sleep(Duration::from_secs(5));
                let plain = if i % 2 == 0 { &b_url } else { &a_url };
                std::fs::write(&cfg2, load_config(plain, &sse_url, &slow_url)).unwrap();
                // SAFETY: kill(2) on the child we started.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                notify.wait_for("RELOADING=1", Duration::from_secs(20));
                let ready = notify.wait_for("READY=1", Duration::from_secs(20));
                assert!(!ready.contains("FAILED"), "reload {i}: {ready}");
            }
            notify
        });
        async move {
            let load = load.await.unwrap();
            let notify = reloading.await.unwrap();
            let (notify, rss) = tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_secs(1));
                // SAFETY: kill(2) on the child we started.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                notify.wait_for("RELOADING=1", Duration::from_secs(20));
                notify.wait_for("READY=1", Duration::from_secs(20));
                std::thread::sleep(Duration::from_secs(3));
                let mut samples: Vec<u64> = (0..5)
                    .map(|_| {
                        std::thread::sleep(Duration::from_millis(300));
                        vm_rss_kib(pid)
                    })
                    .collect();
                samples.sort_unstable();
                (notify, samples[2])
            })
            .await
            .unwrap();
            (load, notify, rss)
        }
    };

    // Warm-up: the same load and reloads, until memory use has settled.
    let (warm, notify, rss_warm) = phase(30, 5, notify).await;
    assert_eq!(
        (warm.non_2xx, warm.socket_errors),
        (0, 0),
        "{}",
        warm.output
    );

    // A minute under load, reloading every 5 s.
    let (load, notify, rss_end) = phase(60, 10, notify).await;
    eprintln!(
        "wrk 60 s x 256 connections: {} requests, {} non-2xx, {} socket errors; \
         plain a {} / b {}; RSS at rest after the warm-up {rss_warm} KiB, after the minute {rss_end} KiB\n{}",
        load.requests,
        load.non_2xx,
        load.socket_errors,
        hits_a.load(Ordering::Relaxed),
        hits_b.load(Ordering::Relaxed),
        load.output
    );
    assert_eq!(load.non_2xx, 0, "{}", load.output);
    assert_eq!(load.socket_errors, 0, "{}", load.output);
    assert!(
        load.requests >= 1000,
        "too few requests to mean anything: {load:?}"
    );
    assert!(
        hits_b.load(Ordering::Relaxed) > 0,
        "the reloads switched backends"
    );
    assert!(
        rss_end * 10 <= rss_warm * 11,
        "RSS grew from {rss_warm} KiB after warm-up to {rss_end} KiB"
    );

    // Graceful stop under load.
    rec.on.store(true, Ordering::SeqCst);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let completed = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..64 {
        let (base, stop, completed, counter) = (
            base.clone(),
            stop.clone(),
            completed.clone(),
            counter.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = support::client::client();
            while !stop.load(Ordering::Relaxed) {
                let id = format!("stop-{c}-{}", counter.fetch_add(1, Ordering::Relaxed));
                let path = if c % 4 == 0 {
                    "/slow/stream"
                } else {
                    "/v1/models"
                };
                let req = Request::post(format!("{base}{path}"))
                    .header("x-request-id", &id)
                    .body(full("{}"))
                    .unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        use http_body_util::BodyExt;
                        if let Ok(body) = res.into_body().collect().await {
                            let body = body.to_bytes();
                            if path == "/v1/models" || body.ends_with(b"data: [DONE]\n\n") {
                                completed.lock().unwrap().insert(id);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.is_connect() => {
                        // The listener is closed: the proxy is stopping.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proc.signal(libc::SIGTERM);
    let t = Instant::now();
    let (status, log) = tokio::task::spawn_blocking(move || {
        let status = proc.wait_exit(Duration::from_secs(40));
        (status, proc.log_text())
    })
    .await
    .unwrap();
    let stopped_after = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}: {log}"
    );
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    // Only this phase's requests (wrk's last ones may still be on their way to a backend).
    let seen: std::collections::HashSet<String> = rec
        .ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| id.starts_with("stop-"))
        .cloned()
        .collect();
    let completed = completed.lock().unwrap().clone();
    let lost: Vec<_> = seen.difference(&completed).collect();
    eprintln!(
        "graceful stop after {stopped_after:?}: {} requests reached a backend, all completed: {}",
        seen.len(),
        lost.is_empty()
    );
    assert!(
        seen.len() > 64,
        "too little traffic during the stop: {}",
        seen.len()
    );
    assert!(
        lost.is_empty(),
        "{} requests reached a backend but did not complete at the client: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Whether `needle` occurs in `haystack`.
/// Whether a request's head has an `Expect: 100-continue` line as an HTTP parser reads it
/// (the name in any case, whitespace around the value), whatever the mutations did elsewhere.
fn asks_to_continue(req: &[u8]) -> bool {
    let head = req
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(req, |end| &req[..end]);
    head.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.split_first_chunk::<7>().is_some_and(|(name, rest)| {
            name.eq_ignore_ascii_case(b"expect:")
                && rest.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        })
    })
}
