//! `server.workers`: several event loops serve the same listening sockets; a reload reaches
//! every one, a stop drains every one, idle exit watches them all, and the access log keeps
//! every line of every worker.

use std::time::Duration;

use http::Request;
use openai_proxy::{Config, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::activation::{config_file, free_port, NotifySocket};
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;
use crate::support::{start_proxy_with_workers, TestProxy};

/// A proxy served by the test's runtime (worker 0) and one more worker thread.
async fn two_workers(routes: &str) -> TestProxy {
    let config = Config::from_toml(&format!("[server]\nworkers = 2\n{routes}")).unwrap();
    start_proxy_with_workers(config, 1).await
}

fn routed_to(name: &str, url: &str) -> String {
    format!("[backends.{name}]\nurl = \"{url}\"\n[[route]]\npath = \"/v1\"\nbackend = \"{name}\"\n")
}

/// `GET /v1/models` on a new connection; the backend that answered.
async fn backend_of(url: &str) -> String {
    let res = send(Request::get(url).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    let name = res.headers()["x-backend"].to_str().unwrap().to_string();
    body_bytes(res).await;
    name
}

/// Sends requests on new connections until every worker has served one more than in
/// `before` (at most 500); each must be answered by `expected`.
async fn until_every_worker_served(p: &TestProxy, before: &[u64], expected: &str) {
    for _ in 0..500 {
        assert_eq!(backend_of(&p.url("/v1/models")).await, expected);
        let now = p.state.requests.per_worker();
        if now.iter().zip(before).all(|(n, b)| n > b) {
            return;
        }
    }
    panic!(
        "500 connections did not reach every worker: {:?} (before: {before:?})",
        p.state.requests.per_worker()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_and_a_reload_reaches_both() {
    let (a, b) = (Mock::echo("a").await, Mock::echo("b").await);
    let p = two_workers(&routed_to("a", &a.url())).await;
    assert_eq!(p.state.requests.per_worker().len(), 2);
    until_every_worker_served(&p, &[0, 0], "a").await;

    let config = Config::from_toml(&format!(
        "[server]\nworkers = 2\n{}",
        routed_to("b", &b.url())
    ));
    p.state.replace(Proxy::new(config.unwrap()).unwrap());
    let before = p.state.requests.per_worker();
    until_every_worker_served(&p, &before, "b").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_drains_the_streams_of_every_worker() {
    let sse = Mock::sse(5, Duration::from_millis(300)).await;
    let p = two_workers(&routed_to("ollama", &sse.url())).await;
    // Streams on new connections until both workers carry one.
    let mut streams = Vec::new();
    while p.state.requests.per_worker().contains(&0) {
        assert!(streams.len() < 200, "no stream reached one of the workers");
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await
        .unwrap();
        let mut first = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first))
            .await
            .expect("the stream started")
            .unwrap();
        first.truncate(n);
        streams.push(tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
            [first, rest].concat()
        }));
    }
    let addr = p.addr;
    let stopping = tokio::spawn(p.stop());
    // New connections are refused once every worker has closed its listener.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after the stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in streams {
        let text = String::from_utf8_lossy(&s.await.unwrap()).into_owned();
        assert!(
            text.contains("data: 4") && text.ends_with("0\r\n\r\n"),
            "a stream was cut by the stop: {text:?}"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("both workers drained")
        .unwrap();
}

/// The worker threads of a running proxy.
fn worker_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("worker-"))
        .count()
}

#[test]
fn idle_exit_with_several_workers() {
    use crate::support::activation::Activated;
    use std::io::{Read, Write};
    let port = free_port();
    let (_d, cfg) = config_file(&format!(
        "[server]\nworkers = 3\nidle_exit = \"500ms\"\n{}",
        routed_to("b", "http://127.0.0.1:9")
    ));
    let notify = NotifySocket::new(false);
    let mut act = Activated::start(&[format!("127.0.0.1:{port}")], &notify, &cfg);
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        conns.push(c);
    }
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(worker_threads(act.child.id() as i32), 2, "workers 1 and 2");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        act.child.try_wait().unwrap().is_none(),
        "exited with connections open"
    );
    conns.truncate(1);
    act.assert_idle_exit_after(&notify, Duration::from_millis(1000), || drop(conns));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_written_just_before_sigterm_are_in_the_log() {
    let m = Mock::echo("m").await;
    let (_d, cfg) = config_file(&format!(
        "[server]\nworkers = 2\n[log]\ntarget = \"stderr\"\naccess_log = true\n{}",
        routed_to("m", &m.url())
    ));
    let mut proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    const N: usize = 40;
    let requests: Vec<_> = (0..N)
        .map(|i| {
            let url = format!("{base}/v1/models");
            tokio::spawn(async move {
                let res = send(
                    Request::get(url)
                        .header("x-request-id", format!("before-term-{i}"))
                        .body(full(""))
                        .unwrap(),
                )
                .await;
                assert_eq!(res.status(), 200);
                body_bytes(res).await;
            })
        })
        .collect();
    for r in requests {
        r.await.unwrap();
    }
    proc.signal(libc::SIGTERM);
    let log = tokio::task::spawn_blocking(move || {
        assert_eq!(
            proc.wait_exit(Duration::from_secs(10))
                .and_then(|s| s.code()),
            Some(0)
        );
        // The last line the proxy writes, once the log reader has got that far.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !proc.log_text().ends_with("INFO stopped") {
            assert!(
                std::time::Instant::now() < deadline,
                "no \"stopped\" at the end:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        proc.log_text()
    })
    .await
    .unwrap();
    for i in 0..N {
        assert_eq!(
            log.matches(&format!("request_id=\"before-term-{i}\""))
                .count(),
            1,
            "line {i} missing or repeated:\n{log}"
        );
    }
}
