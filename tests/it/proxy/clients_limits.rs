//! A client's limits: requests a minute, tokens a minute and a day, requests at once. Over
//! one: 429 `rate_limit_exceeded` with `Retry-After`, `retry-after-ms` and OpenAI's
//! `x-ratelimit-*`, at the right request; served again once the window allows; other clients
//! served all along; counters kept and a changed limit applied on reload.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::clients_scope::{post, secret_file, ADMIN, GUEST};
use crate::support::client::{body_bytes, json};
use crate::support::mock::{self, channel_body, handler, Mock};
use crate::support::{start_proxy, TestProxy};

/// A backend whose every answer reports `tokens` (prompt and completion together), and how
/// many requests it got.
async fn counting(tokens: u64) -> (Mock, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let mock = Mock::start(handler(move |req| {
        let count = count.clone();
        async move {
            mock::collect(req).await;
            count.fetch_add(1, Ordering::SeqCst);
            let usage =
                json!({"prompt_tokens": tokens / 2, "completion_tokens": tokens - tokens / 2});
            let body = json!({"object": "chat.completion", "choices": [], "usage": usage});
            mock::reply("application/json", mock::full(body.to_string()))
        }
    }))
    .await;
    (mock, seen)
}

fn got(seen: &AtomicUsize) -> usize {
    seen.load(Ordering::SeqCst)
}

fn config(backend: &str, tokens: &std::path::Path, guest: &str) -> String {
    format!(
        r#"[server]
client_tokens_file = {tokens:?}
[backends.local]
url = "{backend}"
[[route]]
path = "/v1"
backend = "local"
[clients.guest]
{guest}
"#
    )
}

async fn start(backend: &Mock, guest: &str) -> (TestProxy, tempfile::NamedTempFile) {
    let tokens = secret_file(&format!("guest {GUEST}\nadmin {ADMIN}\n"));
    let proxy = start_proxy(&config(&backend.url(), tokens.path(), guest)).await;
    (proxy, tokens)
}

async fn chat(proxy: &TestProxy, token: &str) -> Response<hyper::body::Incoming> {
    post(
        proxy.url("/v1/chat/completions"),
        token,
        json!({"model": "llama3", "messages": []}),
    )
    .await
}

/// A 429's headers and error, checked for what every one has.
async fn limited(res: Response<hyper::body::Incoming>) -> (HeaderMap, Value) {
    assert_eq!(res.status(), 429);
    let headers = res.headers().clone();
    let body = json(res).await;
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(!body.to_string().contains(GUEST), "{body}");
    let secs: u64 = header(&headers, "retry-after").parse().unwrap();
    let ms: u64 = header(&headers, "retry-after-ms").parse().unwrap();
    assert!(
        secs >= 1 && ms <= secs * 1000 && ms + 1000 > secs * 1000,
        "{secs} s, {ms} ms"
    );
    (headers, body)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name}: {h:?}"))
}

#[tokio::test]
async fn requests_per_minute_refuses_the_one_past_the_limit_and_serves_again_after_retry_after() {
    let (backend, seen) = counting(2).await;
    let (proxy, _tokens) = start(&backend, "requests_per_minute = 120").await;
    for i in 0..120 {
        assert_eq!(chat(&proxy, GUEST).await.status(), 200, "request {i}");
    }
    let (h, body) = limited(chat(&proxy, GUEST).await).await;
    assert_eq!(body["error"]["type"], "requests");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'guest'") && message.contains("120 requests a minute"),
        "{message}"
    );
    assert_eq!(header(&h, "x-ratelimit-limit-requests"), "120");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    assert!(
        header(&h, "x-ratelimit-reset-requests").ends_with('s'),
        "{h:?}"
    );
    assert!(
        h.get("x-ratelimit-limit-tokens").is_none(),
        "no token limit: {h:?}"
    );
    assert_eq!(got(&seen), 120, "the refused request reached the backend");
    // Another client is not limited by the guest's use.
    assert_eq!(chat(&proxy, ADMIN).await.status(), 200);
    let wait: u64 = header(&h, "retry-after-ms").parse().unwrap();
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    assert_eq!(chat(&proxy, GUEST).await.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn tokens_per_minute_counts_the_answers_usage_and_lets_the_crossing_request_finish() {
    // 60 000 a minute is one a millisecond: an answer of 61 000 leaves a debt of about 1 s.
    let (backend, seen) = counting(61_000).await;
    let (proxy, _tokens) = start(&backend, "tokens_per_minute = 60000").await;
    assert_eq!(chat(&proxy, GUEST).await.status(), 200);
    let (h, body) = limited(chat(&proxy, GUEST).await).await;
    assert_eq!(body["error"]["type"], "tokens");
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "60000");
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), "0");
    let wait: u64 = header(&h, "retry-after-ms").parse().unwrap();
    assert!((900..=1100).contains(&wait), "{wait} ms");
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    assert_eq!(chat(&proxy, GUEST).await.status(), 200);
    assert_eq!(got(&seen), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn tokens_per_day_holds_until_midnight_and_a_reload_keeps_the_count_with_its_new_limit() {
    let (backend, seen) = counting(150).await;
    let (proxy, tokens) = start(&backend, "tokens_per_day = 100").await;
    assert_eq!(chat(&proxy, GUEST).await.status(), 200);
    let (h, body) = limited(chat(&proxy, GUEST).await).await;
    assert_eq!(body["error"]["type"], "tokens");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("midnight UTC"),
        "{body}"
    );
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "100");
    let secs: u64 = header(&h, "retry-after").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs, 86_400 - now % 86_400, "until midnight UTC");

    // A reload with a higher limit: the 150 of today still count.
    let text = config(&backend.url(), tokens.path(), "tokens_per_day = 200");
    let cfg = openai_proxy::Config::from_toml(&text).unwrap();
    proxy
        .state
        .replace(openai_proxy::Proxy::with(cfg, &proxy.state.lasting()).unwrap());
    assert_eq!(chat(&proxy, GUEST).await.status(), 200, "150 of 200 used");
    let (h, _) = limited(chat(&proxy, GUEST).await).await;
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "200");
    assert_eq!(got(&seen), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn max_concurrent_refuses_a_third_stream_while_two_run_and_another_client_is_served() {
    // Streams that each end when the test lets them: request i waits for gates[i].
    let gates: Arc<Vec<Semaphore>> = Arc::new((0..4).map(|_| Semaphore::new(0)).collect());
    let (g, next) = (gates.clone(), Arc::new(AtomicUsize::new(0)));
    let backend = Mock::start(handler(move |req| {
        let (gates, i) = (g.clone(), next.fetch_add(1, Ordering::SeqCst));
        async move {
            mock::collect(req).await;
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))
                    .await;
                if let Some(gate) = gates.get(i) {
                    let _ = gate.acquire().await.map(|p| p.forget());
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
            });
            mock::reply("text/event-stream", body)
        }
    }))
    .await;
    let (proxy, _tokens) = start(&backend, "max_concurrent = 2").await;
    let first = chat(&proxy, GUEST).await;
    let second = chat(&proxy, GUEST).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (h, body) = limited(chat(&proxy, GUEST).await).await;
    assert_eq!(body["error"]["type"], "requests");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests in flight"),
        "{body}"
    );
    assert_eq!(header(&h, "retry-after"), "1");
    // Another client is served meanwhile (the backend's third request).
    let other = chat(&proxy, ADMIN).await;
    assert_eq!(other.status(), 200);
    gates[2].add_permits(1);
    let text = body_bytes(other).await;
    assert!(text.ends_with(b"data: [DONE]\n\n"));
    // Still two of the guest's: refused; one ends, and its place is free for the next.
    limited(chat(&proxy, GUEST).await).await;
    gates[0].add_permits(1);
    body_bytes(first).await;
    let third = chat(&proxy, GUEST).await;
    assert_eq!(third.status(), 200);
    gates[1].add_permits(1);
    gates[3].add_permits(1);
    body_bytes(second).await;
    body_bytes(third).await;
    proxy.stop().await;
}

/// The official OpenAI Python SDK as the guest: its call past the limit is refused once, it
/// waits what `retry-after-ms` says, and its retry is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_backs_off_on_429_and_then_succeeds() {
    let backend = Mock::recording(super::sdk::chat_reply).await;
    let (proxy, _tokens) = start(&backend, "requests_per_minute = 60").await;
    let (v, stderr) =
        super::sdk::run_script("sdk_limits.py", "61", proxy.url("/v1"), GUEST, None).await;
    assert!(!stderr.contains(GUEST), "{stderr}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 61);
    assert!(
        calls.iter().all(|c| c["content"] == "hello from ollama"),
        "{v}"
    );
    // The 61st was refused once; the SDK waited what the proxy said (its own note) and
    // its retry was served.
    let retries = v["retries"].as_array().unwrap();
    assert_eq!(retries.len(), 1, "{v}");
    let wait = retries[0].as_f64().unwrap();
    assert!(
        (0.9..=1.0).contains(&wait),
        "the SDK waited {wait} s, not the proxy's Retry-After"
    );
    let last = calls[60]["seconds"].as_f64().unwrap();
    assert!(last >= wait, "the SDK did not wait: {last} s for {wait} s");
    let u = json(
        crate::support::client::send(
            http::Request::get(proxy.url("/usage"))
                .header("authorization", format!("Bearer {GUEST}"))
                .body(crate::support::client::full(""))
                .unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(u["limits"][0]["refused"], 1, "{u}");
    assert_eq!(
        backend.requests().len(),
        61,
        "the refused attempt reached the backend"
    );
    proxy.stop().await;
}
