//! Backends with several servers (`urls`): each request goes to the server with the fewest
//! requests in flight; a server that refuses or goes away is left out for a back-off and tried
//! again after it; with every server out, a 502 names them all; active health checks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::{dead_addr, start_proxy};

/// A backend answering 200 with `x-mock: NAME`, counting its requests.
async fn named(name: &'static str, hits: Arc<AtomicUsize>) -> Mock {
    Mock::start(named_handler(name, hits)).await
}

fn named_handler(name: &'static str, hits: Arc<AtomicUsize>) -> mock::Handler {
    handler(move |req| {
        let hits = hits.clone();
        async move {
            mock::collect(req).await;
            hits.fetch_add(1, Ordering::SeqCst);
            http::Response::builder()
                .header("x-mock", name)
                .body(mock::full(name))
                .unwrap()
        }
    })
}

fn pool_config(urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[backends.pool]\nurls = [{}]\n{extra}\n[[route]]\npath = \"/v1\"\nbackend = \"pool\"\n",
        urls.join(", ")
    )
}

/// `POST /v1/chat/completions` with a small body; the status and the server that answered.
async fn ask(url: &str) -> (u16, String) {
    let res = send(
        Request::post(url)
            .header("content-type", "application/json")
            .body(full("{\"model\":\"m\"}"))
            .unwrap(),
    )
    .await;
    let status = res.status().as_u16();
    let by = res
        .headers()
        .get("x-mock")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    body_bytes(res).await;
    (status, by)
}

#[tokio::test]
async fn a_stopped_server_is_left_out_and_taken_back_after_the_backoff() {
    let (hits_a, hits_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = named("a", hits_a.clone()).await;
    let b = named("b", hits_b.clone()).await;
    let proxy = start_proxy(&pool_config(
        &[a.url(), b.url()],
        "health_backoff = \"300ms\"\nhealth_backoff_max = \"300ms\"",
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..10 {
        assert_eq!(ask(&url).await.0, 200);
    }
    assert!(
        hits_a.load(Ordering::SeqCst) >= 4 && hits_b.load(Ordering::SeqCst) >= 4,
        "both servers share the requests: a {hits_a:?}, b {hits_b:?}"
    );

    // Server a stops (its open connections too): every request still succeeds, on b.
    let addr_a = a.addr;
    a.kill();
    let before_b = hits_b.load(Ordering::SeqCst);
    for i in 0..20 {
        assert_eq!(ask(&url).await, (200, "b".to_string()), "request {i}");
    }
    assert_eq!(hits_b.load(Ordering::SeqCst), before_b + 20);

    // Back again: once the back-off has passed, it gets its share again.
    let _a = Mock::start_on(addr_a, named_handler("a", hits_a.clone())).await;
    let before_a = hits_a.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..10 {
        assert_eq!(ask(&url).await.0, 200);
    }
    assert!(
        hits_a.load(Ordering::SeqCst) >= before_a + 3,
        "a gets traffic again after its back-off: {} more",
        hits_a.load(Ordering::SeqCst) - before_a
    );
    proxy.stop().await;
}

/// One server holds its requests; the other answers at once. Sent one after another, each
/// request goes where fewer are in flight: the slow server gets one, the fast one the rest
/// (turn by turn they would share them).
#[tokio::test]
async fn the_server_with_fewer_requests_in_flight_gets_the_next() {
    let release = Arc::new(Notify::new());
    let slow_seen = Arc::new(AtomicUsize::new(0));
    let (r, seen) = (release.clone(), slow_seen.clone());
    let slow = Mock::start(handler(move |req| {
        let (r, seen) = (r.clone(), seen.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            r.notified().await;
            mock::collect(req).await;
            http::Response::builder()
                .header("x-mock", "slow")
                .body(mock::full("slow"))
                .unwrap()
        }
    }))
    .await;
    let fast_hits = Arc::new(AtomicUsize::new(0));
    let fast = named("fast", fast_hits.clone()).await;
    let proxy = start_proxy(&pool_config(&[slow.url(), fast.url()], "")).await;
    let url = proxy.url("/v1/chat/completions");
    let mut held = Vec::new();
    for i in 0..10 {
        let (before_slow, before_fast) = (
            slow_seen.load(Ordering::SeqCst),
            fast_hits.load(Ordering::SeqCst),
        );
        let u = url.clone();
        held.push(tokio::spawn(async move { ask(&u).await }));
        // Until it has reached one of them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while slow_seen.load(Ordering::SeqCst) == before_slow
            && fast_hits.load(Ordering::SeqCst) == before_fast
        {
            assert!(Instant::now() < deadline, "request {i} reached no server");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        slow_seen.load(Ordering::SeqCst),
        1,
        "the slow server got only the first it could"
    );
    assert_eq!(fast_hits.load(Ordering::SeqCst), 9);
    release.notify_waiters();
    // Let the held one go (notify_waiters wakes only those waiting).
    let deadline = Instant::now() + Duration::from_secs(10);
    for h in held {
        loop {
            release.notify_waiters();
            if h.is_finished() {
                break;
            }
            assert!(Instant::now() < deadline, "the held request never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(h.await.unwrap().0, 200);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn every_server_down_is_a_502_naming_each_and_other_routes_serve() {
    let (x, y) = (dead_addr(), dead_addr());
    let good = Mock::echo("good").await;
    let proxy = start_proxy(&format!(
        "{}[backends.good]\nurl = \"{}\"\n[[route]]\npath = \"/good\"\nbackend = \"good\"\n",
        pool_config(&[format!("http://{x}"), format!("http://{y}")], ""),
        good.url()
    ))
    .await;
    for round in 0..2 {
        let res = send(
            Request::post(proxy.url("/v1/chat/completions"))
                .body(full("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 502, "round {round}");
        assert_eq!(res.headers()["x-backend"], "pool");
        let v = json(res).await;
        assert_eq!(v["error"]["code"], "backend_unreachable", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("backend 'pool' has no server to take the request: "),
            "{msg}"
        );
        for addr in [x, y] {
            assert!(
                msg.contains(&format!("http://{addr}: out (refused the connection)")),
                "round {round}: {msg}"
            );
        }
        assert!(msg.len() < 1500, "bounded: {msg}");
    }
    // The other route is not touched.
    let res = send(Request::get(proxy.url("/good/x")).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    proxy.stop().await;
}

/// A server failing its health check is out until it passes again, whatever requests
/// would find; the `/` page says so, in text and JSON.
#[tokio::test]
async fn a_failing_health_check_takes_a_server_out_until_it_passes() {
    let healthy = Arc::new(Mutex::new(true));
    let (hits_a, hits_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, hits) = (healthy.clone(), hits_a.clone());
    let a = Mock::start(handler(move |req| {
        let (h, hits) = (h.clone(), hits.clone());
        async move {
            let health = req.uri().path() == "/api/version";
            mock::collect(req).await;
            let ok = *h.lock().unwrap();
            if !health {
                hits.fetch_add(1, Ordering::SeqCst);
            }
            let status = if health && !ok { 503 } else { 200 };
            http::Response::builder()
                .status(status)
                .header("x-mock", "a")
                .body(mock::full("a"))
                .unwrap()
        }
    }))
    .await;
    let b = named("b", hits_b.clone()).await;
    let proxy = start_proxy(&pool_config(
        &[a.url(), b.url()],
        "health_path = \"/api/version\"\nhealth_interval = \"100ms\"",
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    *healthy.lock().unwrap() = false;
    // Within a few checks it is out: every request goes to b.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = status(&proxy.url("/")).await;
        if page["backends"][0]["servers"][0]["state"] == "down" {
            break;
        }
        assert!(Instant::now() < deadline, "never down: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = body_text(&proxy.url("/")).await;
    assert!(
        text.contains(&format!("{}  down (health check: HTTP 503)", a.url())),
        "{text}"
    );
    assert!(
        text.contains("\nMetrics: off (no [metrics] listen)\n"),
        "{text}"
    );
    let before = hits_a.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(ask(&url).await, (200, "b".to_string()));
    }
    assert_eq!(hits_a.load(Ordering::SeqCst), before);
    *healthy.lock().unwrap() = true;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&proxy.url("/")).await["backends"][0]["servers"][0]["state"] != "up" {
        assert!(Instant::now() < deadline, "never up again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        ask(&url).await;
    }
    assert!(hits_a.load(Ordering::SeqCst) > before, "a serves again");
    proxy.stop().await;
}

/// `GET /` as JSON.
async fn status(url: &str) -> serde_json::Value {
    let res = send(
        Request::get(url)
            .header("accept", "application/json")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    json(res).await
}

async fn body_text(url: &str) -> String {
    let res = send(Request::get(url).body(full("")).unwrap()).await;
    String::from_utf8(body_bytes(res).await.to_vec()).unwrap()
}
