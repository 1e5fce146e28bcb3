//! A backend's `max_concurrent`: requests beyond it wait in the proxy, in turns between
//! clients (one client's burst does not starve another), each client's in order; a request
//! whose client goes away leaves the queue; one that waits past `queue_timeout` gets 503
//! `backend_busy` with `Retry-After`. Streams hold their place until they end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use serde_json::json;
use tokio::sync::Semaphore;

use super::clients_scope::{post, secret_file, ADMIN, GUEST};
use crate::support::client::{body_bytes, json};
use crate::support::mock::{self, handler, Mock};
use crate::support::prom::scrape_as;
use crate::support::{serve_metrics, start_proxy, TestProxy};

/// A backend that notes the `user` of each request as it arrives and answers it when the test
/// lets one more go (a permit each).
async fn gated(order: Arc<Mutex<Vec<String>>>, go: Arc<Semaphore>) -> Mock {
    Mock::start(handler(move |req| {
        let (order, go) = (order.clone(), go.clone());
        async move {
            let seen = mock::collect(req).await;
            let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap_or_default();
            order
                .lock()
                .unwrap()
                .push(body["user"].as_str().unwrap_or("?").to_string());
            let _ = go.acquire().await.map(|p| p.forget());
            mock::reply("application/json", mock::full("{\"choices\":[]}"))
        }
    }))
    .await
}

async fn start(backend: &Mock, queue_timeout: &str) -> (TestProxy, tempfile::NamedTempFile) {
    let tokens = secret_file(&format!("guest {GUEST}\nadmin {ADMIN}\n"));
    let proxy = start_proxy(&format!(
        r#"[server]
client_tokens_file = {tokens:?}
[metrics]
listen = "127.0.0.1:0"
[backends.llama]
url = "{url}"
max_concurrent = 1
queue_timeout = "{queue_timeout}"
[[route]]
path = "/v1"
backend = "llama"
"#,
        tokens = tokens.path(),
        url = backend.url(),
    ))
    .await;
    (proxy, tokens)
}

fn ask(proxy: &TestProxy, token: &'static str, user: String) -> tokio::task::JoinHandle<u16> {
    let url = proxy.url("/v1/chat/completions");
    tokio::spawn(async move {
        let res: Response<_> = post(url, token, json!({"model": "m", "user": user})).await;
        let status = res.status().as_u16();
        body_bytes(res).await;
        status
    })
}

/// Waits (bounded) until the backend's queue has `n` requests waiting.
async fn waiting(metrics: std::net::SocketAddr, n: f64) {
    for _ in 0..500 {
        let s = scrape_as(metrics, false, Some(ADMIN)).await;
        if s.value(
            "openai_proxy_backend_queue_waiting",
            &[("backend", "llama")],
        ) == n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the queue never had {n} waiting");
}

#[tokio::test]
async fn clients_take_turns_so_a_burst_does_not_starve_another_client() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let go = Arc::new(Semaphore::new(0));
    let backend = gated(order.clone(), go.clone()).await;
    let (proxy, _tokens) = start(&backend, "60s").await;
    let metrics = serve_metrics(&proxy.state).await;
    // The guest's burst of six: one runs, five wait; then the admin's two arrive.
    let mut tasks: Vec<_> = (0..6)
        .map(|i| ask(&proxy, GUEST, format!("g{i}")))
        .collect();
    waiting(metrics, 5.0).await;
    tasks.extend((0..2).map(|i| ask(&proxy, ADMIN, format!("a{i}"))));
    waiting(metrics, 7.0).await;
    for served in 1..=8 {
        go.add_permits(1);
        for _ in 0..500 {
            if order.lock().unwrap().len() > served || served == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let order = order.lock().unwrap().clone();
    let admin_at: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].starts_with('a'))
        .collect();
    // Turns: the guest's first two (one ran, one was next in line), then the admin's, the
    // guest's, the admin's: not after the whole burst.
    assert_eq!(admin_at, [2, 4], "{order:?}");
    assert_eq!(
        (order[2].as_str(), order[4].as_str()),
        ("a0", "a1"),
        "{order:?}"
    );
    let s = scrape_as(metrics, false, Some(ADMIN)).await;
    assert_eq!(
        s.value(
            "openai_proxy_backend_queue_waits_total",
            &[("backend", "llama")]
        ),
        7.0
    );
    assert_eq!(
        s.value(
            "openai_proxy_backend_queue_waiting",
            &[("backend", "llama")]
        ),
        0.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_whose_client_left_leaves_the_queue_and_one_that_waits_too_long_gets_503() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let go = Arc::new(Semaphore::new(0));
    let backend = gated(order.clone(), go.clone()).await;
    let (proxy, _tokens) = start(&backend, "1s").await;
    let metrics = serve_metrics(&proxy.state).await;
    let running = ask(&proxy, GUEST, "first".into());
    waiting(metrics, 0.0).await;
    for _ in 0..500 {
        if !order.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Its client goes away while it waits.
    let gone = ask(&proxy, GUEST, "gone".into());
    waiting(metrics, 1.0).await;
    gone.abort();
    waiting(metrics, 0.0).await;
    // This one waits its second, then is refused.
    let url = proxy.url("/v1/chat/completions");
    let res = post(url, ADMIN, json!({"model": "m", "user": "late"})).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["x-backend"], "llama");
    let body = json(res).await;
    assert_eq!(body["error"]["code"], "backend_busy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_concurrent"),
        "{body}"
    );
    go.add_permits(1);
    assert_eq!(running.await.unwrap(), 200);
    // The place freed went to nobody: the next request runs at once.
    let next = ask(&proxy, ADMIN, "next".into());
    go.add_permits(1);
    assert_eq!(next.await.unwrap(), 200);
    assert_eq!(*order.lock().unwrap(), ["first", "next"]);
    let s = scrape_as(metrics, false, Some(ADMIN)).await;
    assert_eq!(
        s.value(
            "openai_proxy_backend_queue_timeouts_total",
            &[("backend", "llama")]
        ),
        1.0
    );
    proxy.stop().await;
}
