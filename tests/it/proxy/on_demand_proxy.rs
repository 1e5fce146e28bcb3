//! The proxy's side of backends on demand, against in-process mock servers: `start_timeout`
//! (a refused backend waits for its server, or gets 504 naming it), swap groups (a request for
//! another member waits until the streams in flight on the one in use have finished; requests
//! for that one go at once), and idle pooled connections to an on-demand server closed one to
//! two seconds after they went idle.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::support::activation::config_file;
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, channel_body, collect, handler, Handler, Mock, Seen};
use crate::support::{dead_addr, start_proxy, start_proxy_with_workers};

fn config(url: &str, extra: &str) -> String {
    format!(
        "[backends.local]\nurl = \"{url}\"\n{extra}\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\n"
    )
}

/// Answers every request with `{"model": NAME, "bytes": N}` and keeps what it received.
fn named(name: &'static str, seen: Arc<Mutex<Vec<(Instant, Seen)>>>) -> Handler {
    handler(move |req| {
        let seen = seen.clone();
        async move {
            let s = collect(req).await;
            let reply = serde_json::json!({"model": name, "bytes": s.body.len()});
            seen.lock().unwrap().push((Instant::now(), s));
            Response::builder()
                .header("content-type", "application/json")
                .body(mock::full(reply.to_string()))
                .unwrap()
        }
    })
}

async fn post(url: String, body: &'static str) -> (u16, serde_json::Value, Instant) {
    let res = send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap(),
    )
    .await;
    let status = res.status().as_u16();
    let v = json(res).await;
    (status, v, Instant::now())
}

#[tokio::test]
async fn without_start_timeout_a_stopped_backend_is_502_at_once() {
    let proxy = start_proxy(&config(
        &format!("http://{}", dead_addr()),
        "on_demand = true",
    ))
    .await;
    let start = Instant::now();
    let (status, v, _) = post(proxy.url("/v1/chat/completions"), "{}").await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "backend_unreachable", "{v}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn with_start_timeout_a_request_waits_for_the_server_and_its_body_goes_once() {
    let addr = dead_addr();
    let proxy = start_proxy(&config(
        &format!("http://{addr}"),
        "start_timeout = \"20s\"",
    ))
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = named("local", seen.clone());
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Mock::start_on(addr, h).await
    });
    let body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
    let start = Instant::now();
    let (status, v, _) = post(proxy.url("/v1/chat/completions"), body).await;
    let took = start.elapsed();
    let _server = late.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "local");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].1.body[..], body.as_bytes());
}

#[tokio::test]
async fn with_start_timeout_connections_reset_before_an_answer_are_tried_again() {
    // Like systemd's socket while the server fails to come up: each connection is accepted,
    // then closed without an answer, for the first 600 ms.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = named("local", seen.clone());
    let start = Instant::now();
    let server = tokio::spawn(async move {
        let mut resets = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            if start.elapsed() < Duration::from_millis(600) {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                drop(stream);
                resets += 1;
                continue;
            }
            let h = h.clone();
            let svc = service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            return resets;
        }
        resets
    });
    let proxy = start_proxy(&config(
        &format!("http://{addr}"),
        "start_timeout = \"20s\"",
    ))
    .await;
    let body = "{\"model\":\"m\",\"input\":\"the same body every time\"}";
    let (status, v, _) = post(proxy.url("/v1/chat/completions"), body).await;
    assert_eq!(status, 200, "{v}");
    assert!(start.elapsed() >= Duration::from_millis(600));
    proxy.stop().await;
    let resets = server.await.unwrap();
    assert!(resets >= 2, "{resets}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].1.body[..], body.as_bytes());
}

#[tokio::test]
async fn a_server_that_does_not_come_up_in_time_gets_504_naming_the_backend() {
    let addr = dead_addr();
    let proxy = start_proxy(&config(&format!("http://{addr}"), "start_timeout = \"1s\"")).await;
    let start = Instant::now();
    let (status, v, _) = post(proxy.url("/v1/chat/completions"), "{}").await;
    let took = start.elapsed();
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "backend_start_timeout", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "backend 'local' (http://{addr}) did not come up within 1s (start_timeout): \
             refused the connection"
        )
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test]
async fn the_access_log_shows_the_wait() {
    let addr = dead_addr();
    let (_dir, cfg) = config_file(&config(
        &format!("http://{addr}"),
        "start_timeout = \"20s\"",
    ));
    let proc = Proc::start(&cfg, &[]);
    let h = named("local", Arc::default());
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Mock::start_on(addr, h).await
    });
    let res = send(
        Request::post(format!("http://{}/v1/chat/completions", proc.addr))
            .header("x-request-id", "wait-1")
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    let _server = late.await.unwrap();
    let log = proc.stop().await;
    let line = log
        .lines()
        .find(|l| l.contains("request_id=\"wait-1\""))
        .unwrap_or_else(|| panic!("no access line: {log}"));
    let waited: f64 = line
        .split(" wait_ms=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no wait_ms: {line}"))
        .parse()
        .unwrap();
    assert!(waited >= 600.0, "{line}");
    assert!(line.contains(" status=200 "), "{line}");
}

/// A model server: `{"stream":true}` gets 10 SSE events 150 ms apart, anything else a JSON
/// answer at once; it records when each request arrived, and when a stream ended.
fn model(name: &'static str, log: Arc<Mutex<Vec<(&'static str, Instant)>>>) -> Handler {
    handler(move |req| {
        let log = log.clone();
        async move {
            let s = collect(req).await;
            log.lock().unwrap().push((name, Instant::now()));
            if !s.body.starts_with(b"{\"stream\":true") {
                let reply = serde_json::json!({"model": name});
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(mock::full(reply.to_string()))
                    .unwrap();
            }
            let (tx, body) = channel_body();
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let _ = tx.send(Ok(Bytes::from(format!("data: {i}\n\n")))).await;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
                // Before the body ends (the channel closes with this task).
                log.lock().unwrap().push(("end of stream", Instant::now()));
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
}

/// Backends `a` and `b` in swap group "gpu" (with `a_extra` and `b_extra` in their tables),
/// chat routed to them by model.
fn swap_pair(a: &Mock, a_extra: &str, b: &Mock, b_extra: &str) -> String {
    format!(
        "[backends.a]\nurl = \"{}\"\nswap_group = \"gpu\"\n{a_extra}\n\
         [backends.b]\nurl = \"{}\"\nswap_group = \"gpu\"\n{b_extra}\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"a\"\nmodels = [\"a\"]\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"b\"\nmodels = [\"b\"]\n",
        a.url(),
        b.url()
    )
}

/// A streamed chat request for model `a`, answered (its body still to come).
async fn stream_on_a(url: &str) -> http::Response<hyper::body::Incoming> {
    let res = send(
        Request::post(url)
            .body(full("{\"stream\":true,\"model\":\"a\"}"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test]
async fn a_swap_waits_for_the_stream_in_flight_and_the_member_in_use_goes_at_once() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = Mock::start(model("a", log.clone())).await;
    let b = Mock::start(model("b", log.clone())).await;
    let toml = swap_pair(&a, "start_timeout = \"20s\"", &b, "start_timeout = \"20s\"");
    let config = openai_proxy::Config::from_toml(&toml).unwrap();
    // Two workers: the group is shared by every worker thread.
    let proxy = start_proxy_with_workers(config, 1).await;
    let url = proxy.url("/v1/chat/completions");

    // A 1.5 s stream on a.
    let res = stream_on_a(&url).await;
    let stream = tokio::spawn(async move {
        let mut body = res.into_body();
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.expect("the stream on a was cut").into_data() {
                text.extend_from_slice(&d);
            }
        }
        (String::from_utf8(text).unwrap(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // b waits for it ...
    let for_b = tokio::spawn(post(url.clone(), "{\"model\":\"b\"}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... while a request for a goes at once.
    let (status, v, a_done) = post(url.clone(), "{\"model\":\"a\"}").await;
    assert_eq!((status, v["model"].as_str()), (200, Some("a")));
    let (text, stream_done) = stream.await.unwrap();
    assert!(text.ends_with("data: 9\n\ndata: [DONE]\n\n"), "{text}");
    let (status, v, b_done) = for_b.await.unwrap();
    assert_eq!((status, v["model"].as_str()), (200, Some("b")), "{v}");
    // a's second request was answered while the stream went on (900 ms before its end).
    assert!(a_done < stream_done, "{a_done:?} {stream_done:?}");
    assert!(stream_done <= b_done + Duration::from_millis(100));
    // b's server got its request only once the stream on a had ended.
    let names: Vec<&str> = log.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "a", "end of stream", "b"]);
    proxy.stop().await;
}

#[tokio::test]
async fn a_swap_that_waits_too_long_gets_504_naming_the_busy_member() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = Mock::start(model("a", log.clone())).await;
    let b = Mock::start(model("b", log.clone())).await;
    let toml = swap_pair(&a, "", &b, "start_timeout = \"500ms\"");
    let proxy = start_proxy(&toml).await;
    let url = proxy.url("/v1/chat/completions");
    let res = stream_on_a(&url).await;
    let (status, v, _) = post(url.clone(), "{\"model\":\"b\"}").await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "backend_swap_timeout");
    assert_eq!(
        v["error"]["message"],
        "backend 'b' did not get its turn in swap group 'gpu' within 500ms: 'a' still had 1 \
         request(s) in flight"
    );
    // The stream on a goes on to its end.
    let text = body_bytes(res).await;
    assert!(text.ends_with(b"data: [DONE]\n\n"));
    let names: Vec<&str> = log.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "end of stream"], "b never got a request");
}

/// A backend that records when each connection to it closes.
async fn closing_server() -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let record = closed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(mock::full("{}")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                record.lock().unwrap().push(Instant::now());
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn idle_pooled_connections_to_an_on_demand_server_close_within_two_seconds() {
    for on_demand in [true, false] {
        let (addr, closed) = closing_server().await;
        let proxy = start_proxy(&config(
            &format!("http://{addr}"),
            &format!("on_demand = {on_demand}"),
        ))
        .await;
        let (status, _, done) = post(proxy.url("/v1/chat/completions"), "{}").await;
        assert_eq!(status, 200);
        let deadline = done + Duration::from_secs(5);
        while closed.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed = closed.lock().unwrap().first().copied();
        if on_demand {
            // The pool's reaper closes a connection at the end of the round after the one in
            // which it went idle: one to two rounds of 1 s (`pool::ON_DEMAND_IDLE`), never the
            // 90 s of other backends. 100 ms of margin below, for the moment the connection
            // went back to the pool; 500 ms above, for a busy machine's timers and the close
            // reaching the server: a third round (3 s) fails.
            let at = closed.expect("the idle connection was kept over 5 s") - done;
            assert!(
                at >= Duration::from_millis(900) && at < Duration::from_millis(2500),
                "closed {at:?} after the response, not within two seconds"
            );
        } else {
            assert!(
                closed.is_none(),
                "an ordinary backend's idle connection is kept 90 s"
            );
        }
        proxy.stop().await;
    }
}

#[test]
fn on_demand_mistakes_name_their_key_and_place() {
    let route = "[[route]]\npath = \"/v1\"\nbackend = \"a\"\n";
    let backend =
        |extra: &str| format!("[backends.a]\nurl = \"http://127.0.0.1:9\"\n{extra}\n{route}");
    let cases = [
        (
            backend("start_timeout = \"0s\""),
            "<string>:3:17: backends.a.start_timeout: must be greater than zero",
        ),
        (
            backend("swap_group = \"g p u\""),
            "<string>:3:14: backends.a.swap_group: \"g p u\": swap group names may use only",
        ),
        (
            backend("on_demand = false\nswap_group = \"gpu\""),
            "<string>:3:13: backends.a.on_demand: cannot be false with swap_group",
        ),
        (
            backend("swap_group = \"gpu\"\nlist_models = true"),
            "<string>:4:15: backends.a.list_models: cannot be true in a swap group",
        ),
        (
            backend("on_demand = true\nhealth_path = \"/health\""),
            "<string>:4:15: backends.a.health_path: cannot be set on a backend started on demand",
        ),
        (
            format!("[backends.a]\nurls = [\"http://127.0.0.1:9\", \"http://127.0.0.1:10\"]\nstart_timeout = \"1m\"\n{route}"),
            "<string>:3:17: backends.a.start_timeout: applies to a backend with one server (url)",
        ),
        (
            format!("[backends.a]\nurl = \"https://example.com\"\non_demand = true\n{route}"),
            "<string>:3:13: backends.a.on_demand: only applies to http:// backends",
        ),
    ];
    for (text, want) in cases {
        let err = openai_proxy::Config::from_toml(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "expected `{want}` in:\n{err}");
    }
    // Implied by swap_group: not asked for its models, idle connections closed quickly.
    let c = openai_proxy::Config::from_toml(&backend("swap_group = \"gpu\"")).unwrap();
    let a = &c.backends[0];
    assert!(a.on_demand && !a.list_models && a.start_timeout.is_none());
    assert_eq!(a.swap_group.as_deref(), Some("gpu"));
    let c = openai_proxy::Config::from_toml(&backend("start_timeout = \"2m\"")).unwrap();
    assert_eq!(c.backends[0].start_timeout, Some(Duration::from_secs(120)));
    assert!(c.backends[0].on_demand);
}
