//! A two-server pool with an OpenAI fallback under load, one server killed midway and started
//! again: no request fails before its response began, the killed server gets traffic again
//! once it is back, and the metrics show it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::support::activation::{config_file, start_notified};
use crate::support::client::full;
use crate::support::mock::{self, Handler, Mock};
use crate::support::prom::{metrics_addr, scrape};
use crate::{heavy, raise_nofile, sse_response};

/// Concurrent clients.
const CLIENTS: usize = 64;
/// Server a is killed this long after the load started, started again after `DOWN`, and the
/// load goes on until `TOTAL`.
const KILL_AT: Duration = Duration::from_secs(4);
const DOWN: Duration = Duration::from_secs(5);
const TOTAL: Duration = Duration::from_secs(15);

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    ok: AtomicUsize,
    /// Cut after the response headers came: a stream the killed server was sending.
    cut_while_streaming: AtomicUsize,
    /// Failed before any of the response came: what the pool must prevent.
    failed: Mutex<Vec<String>>,
}

/// A server of the pool, counting its requests: plain JSON, or (for `"stream":true`) five
/// events 40 ms apart.
fn server(name: &'static str, hits: Arc<AtomicUsize>) -> Handler {
    mock::handler(move |req| {
        hits.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = mock::collect(req).await.body;
            if !body.windows(13).any(|w| w == b"\"stream\":true") {
                return http::Response::builder()
                    .header("content-type", "application/json")
                    .header("x-mock", name)
                    .body(mock::full("{\"choices\":[]}"))
                    .unwrap();
            }
            sse_response(5, Duration::from_millis(40))
        }
    })
}

/// One client: requests one after another, every other one streamed, until `stop`.
async fn client(c: usize, base: String, stop: Arc<AtomicBool>, out: Arc<Outcomes>) {
    let client = crate::support::client::client();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let stream = (c + n) % 2 == 0;
        let body = if stream {
            "{\"model\":\"llama3\",\"stream\":true}"
        } else {
            "{\"model\":\"llama3\"}"
        };
        let req = Request::post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let res = match client.request(req).await {
            Ok(res) => res,
            Err(e) => {
                out.failed.lock().unwrap().push(format!("client {c}: {e}"));
                continue;
            }
        };
        let status = res.status();
        let backend = res
            .headers()
            .get("x-backend")
            .map(|v| v.to_str().unwrap_or("?").to_string());
        match res.into_body().collect().await {
            Ok(b) if status == 200 => {
                let b = b.to_bytes();
                if stream && !b.ends_with(b"data: [DONE]\n\n") {
                    out.cut_while_streaming.fetch_add(1, Ordering::Relaxed);
                } else {
                    out.ok.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(b) => out.failed.lock().unwrap().push(format!(
                "client {c}: {status} from {backend:?}: {}",
                String::from_utf8_lossy(&b.to_bytes())
            )),
            Err(_) if status == 200 => {
                out.cut_while_streaming.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => out
                .failed
                .lock()
                .unwrap()
                .push(format!("client {c}: {status}, body broke off: {e}")),
        }
    }
}

#[test]
fn a_pool_server_killed_and_started_again_under_load_fails_no_request() {
    heavy(pool_run());
}

async fn pool_run() {
    raise_nofile(4096);
    let (hits_a, hits_b, hits_openai) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let a = Mock::start(server("a", hits_a.clone())).await;
    let b = Mock::start(server("b", hits_b.clone())).await;
    let openai = Mock::start(server("openai", hits_openai.clone())).await;
    let (_dir, cfg) = config_file(&format!(
        "[log]\naccess_log = false\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [backends.local]\nurls = [\"{}\", \"{}\"]\n\
         health_backoff = \"200ms\"\nhealth_backoff_max = \"1s\"\n\
         [backends.openai]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"local\"\nfallback = \"openai\"\n",
        a.url(),
        b.url(),
        openai.url()
    ));
    let (proc, _notify) = start_notified(&cfg);
    let base = format!("http://{}", proc.addr);
    let metrics = metrics_addr(&proc).await;

    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Outcomes::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, base.clone(), stop.clone(), out.clone())))
        .collect();
    let start = Instant::now();
    tokio::time::sleep_until(start + KILL_AT).await;
    let addr_a = a.addr;
    let before_kill = hits_a.load(Ordering::Relaxed);
    a.kill();
    drop(a);
    tokio::time::sleep_until(start + KILL_AT + DOWN).await;
    let down_a = hits_a.load(Ordering::Relaxed);
    let _a = Mock::start_on(addr_a, server("a", hits_a.clone())).await;
    tokio::time::sleep_until(start + TOTAL).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let after_a = hits_a.load(Ordering::Relaxed) - down_a;
    let failed = out.failed.lock().unwrap().clone();
    let ok = out.ok.load(Ordering::Relaxed);
    let cut = out.cut_while_streaming.load(Ordering::Relaxed);
    eprintln!(
        "pool under load: {ok} complete, {cut} streams cut by the kill, {} failed before their \
         response; a {before_kill} before the kill, {after_a} after its restart; b {}; \
         fallback {}",
        failed.len(),
        hits_b.load(Ordering::Relaxed),
        hits_openai.load(Ordering::Relaxed),
    );
    assert!(
        failed.is_empty(),
        "{} requests failed before their response began: {:?}\nthe proxy's log ends:\n{}",
        failed.len(),
        &failed[..failed.len().min(10)],
        tail(&proc.log_text(), 40)
    );
    assert!(ok >= 1000, "too few requests to mean anything: {ok}");
    assert!(before_kill > 0, "a had traffic before the kill");
    assert!(after_a > 0, "a gets traffic again once it is back");

    // The metrics: a was taken out, is up again, nothing answered 5xx, and every request is
    // counted once (a response is counted when the proxy is done with it, a moment after the
    // client has it all).
    let server_a = format!("http://{addr_a}");
    let labels = [("backend", "local"), ("server", server_a.as_str())];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(metrics, false).await;
        let answered = |backend: &str, class: &str| {
            m.value(
                "openai_proxy_requests_total",
                &[
                    ("route", "/v1/chat/completions"),
                    ("backend", backend),
                    ("status_class", class),
                ],
            )
        };
        assert_eq!(answered("local", "5xx") + answered("openai", "5xx"), 0.0);
        let counted = answered("local", "2xx") + answered("openai", "2xx");
        assert!(
            counted <= (ok + cut) as f64,
            "{counted} counted, {} sent",
            ok + cut
        );
        if counted == (ok + cut) as f64 {
            assert!(m.value("openai_proxy_server_taken_out_total", &labels) >= 1.0);
            assert_eq!(m.value("openai_proxy_server_up", &labels), 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} requests counted, {} answered",
            ok + cut
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = proc.stop().await;
    assert!(!log.contains("panicked"), "{log}");
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
