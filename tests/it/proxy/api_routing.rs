//! Each client API behind one address: the proxy's own errors in the shape of the client's API
//! (Anthropic's, Ollama's, OpenAI's), Ollama's older `name` routed like `model`, WebSocket
//! upgrades on a path routed by model (`?model=`, `websockets_without_model`, else 426), and a
//! Responses API follow-up on the pool server that created the response it names.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock, Seen};
use crate::support::{dead_addr, start_proxy};

/// A POST of `body` (JSON) to `path`, with extra headers.
fn post(url: String, body: &str, headers: &[(&str, &str)]) -> Request<mock::MockBody> {
    let mut b = Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body.to_string())).unwrap()
}

#[tokio::test]
async fn errors_take_the_shape_of_the_clients_api() {
    let down = format!("http://{}", dead_addr());
    let proxy = start_proxy(&format!(
        "[backends.local]\nurl = \"{down}\"\n\
         [[route]]\npath = \"/v1/messages\"\nbackend = \"local\"\nmodels = [\"local-*\"]\n\
         [[route]]\npath = \"/api\"\nbackend = \"local\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\nmodels = [\"local-*\"]\n"
    ))
    .await;
    // Anthropic's Messages API: a model no route takes, then a backend down.
    let res = send(post(
        proxy.url("/v1/messages"),
        r#"{"model":"claude-x","max_tokens":1,"messages":[]}"#,
        &[("anthropic-version", "2023-06-01")],
    ))
    .await;
    assert_eq!(res.status(), 404);
    let v = json(res).await;
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "not_found_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("claude-x"),
        "{v}"
    );
    let res = send(post(
        proxy.url("/v1/messages"),
        r#"{"model":"local-1","max_tokens":1,"messages":[]}"#,
        &[],
    ))
    .await;
    assert_eq!(res.status(), 502);
    let v = json(res).await;
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    // Any /v1 request of an Anthropic client (it sends anthropic-version with each).
    let res = send(
        Request::get(proxy.url("/v1/files"))
            .header("anthropic-version", "2023-06-01")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json(res).await["error"]["type"], "invalid_request_error");
    // Ollama's API: {"error": "..."}.
    let res = send(post(proxy.url("/api/chat"), r#"{"model":"m"}"#, &[])).await;
    assert_eq!(res.status(), 502);
    let v = json(res).await;
    assert!(
        v["error"].as_str().unwrap().contains("backend 'local'"),
        "{v}"
    );
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    // OpenAI's, as before.
    let res = send(post(
        proxy.url("/v1/chat/completions"),
        r#"{"model":"x"}"#,
        &[],
    ))
    .await;
    assert_eq!(res.status(), 404);
    let v = json(res).await;
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    proxy.stop().await;
}

#[tokio::test]
async fn ollamas_older_name_routes_like_model() {
    let llama = Mock::echo("llama").await;
    let qwen = Mock::echo("qwen").await;
    let proxy = start_proxy(&format!(
        "[backends.llama]\nurl = \"{}\"\n[backends.qwen]\nurl = \"{}\"\n\
         [[route]]\npath = \"/api\"\nbackend = \"llama\"\nmodels = [\"llama*\"]\n\
         [[route]]\npath = \"/api\"\nbackend = \"qwen\"\nmodels = [\"qwen*\"]\n",
        llama.url(),
        qwen.url()
    ))
    .await;
    for (body, to) in [
        (r#"{"name":"qwen2.5:7b"}"#, "qwen"),
        (r#"{"name":"llama3","verbose":true}"#, "llama"),
        (r#"{"model":"qwen2.5:7b","name":"llama3"}"#, "qwen"),
    ] {
        let res = send(post(proxy.url("/api/show"), body, &[])).await;
        assert_eq!(res.status(), 200, "{body}");
        assert_eq!(res.headers()["x-mock"], to, "{body}");
        body_bytes(res).await;
    }
    // Nowhere in Ollama's API is a body without either.
    let res = send(post(proxy.url("/api/show"), r#"{"verbose":true}"#, &[])).await;
    assert_eq!(res.status(), 400);
    assert!(json(res).await["error"].as_str().unwrap().contains("model"));
    proxy.stop().await;
}

/// A WebSocket upgrade to `url`, as Codex CLI sends it.
fn upgrade_request(url: String) -> Request<mock::MockBody> {
    Request::get(url)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("openai-beta", "responses_websockets=2026-02-06")
        .body(full(""))
        .unwrap()
}

/// Sends a WebSocket upgrade to `url` and returns the status.
async fn upgrade(url: String) -> http::StatusCode {
    let res = send(upgrade_request(url)).await;
    let status = res.status();
    body_bytes(res).await;
    status
}

/// Upgrades the backend saw.
fn upgrades(m: &Mock) -> Vec<String> {
    m.requests()
        .iter()
        .filter(|s| s.header("upgrade") == Some("websocket"))
        .map(|s| s.uri.to_string())
        .collect()
}

#[tokio::test]
async fn a_socket_that_names_no_model_on_a_path_routed_by_model_gets_426() {
    let local = Mock::echo("local").await;
    let openai = Mock::echo("openai").await;
    let config = |socket_key: &str| {
        format!(
            "[backends.local]\nurl = \"{}\"\n[backends.openai]\nurl = \"{}\"\n\
             [[route]]\npath = \"/v1/responses\"\nbackend = \"local\"\nmodels = [\"qwen*\"]\n\
             [[route]]\npath = \"/v1/responses\"\nbackend = \"openai\"\n{socket_key}\n",
            local.url(),
            openai.url()
        )
    };
    let proxy = start_proxy(&config("")).await;
    // Codex CLI's first try: the model only inside the socket. 426, in OpenAI's shape: it
    // goes on over HTTP.
    let res = send(upgrade_request(proxy.url("/v1/responses"))).await;
    assert_eq!(res.status(), 426);
    let v = json(res).await;
    assert_eq!(v["error"]["code"], "websocket_model_required", "{v}");
    assert!(upgrades(&local).is_empty() && upgrades(&openai).is_empty());
    // The Realtime API's way: ?model= routes it.
    assert_eq!(
        upgrade(proxy.url("/v1/responses?model=qwen3%3A8b")).await,
        200,
        "the echo mock does not upgrade"
    );
    assert_eq!(upgrades(&local), ["/v1/responses?model=qwen3%3A8b"]);
    assert_eq!(upgrade(proxy.url("/v1/responses?model=gpt-5")).await, 200);
    assert_eq!(upgrades(&openai), ["/v1/responses?model=gpt-5"]);
    // Plain HTTP is routed by its body as before, without a model to the route without models.
    let res = send(post(
        proxy.url("/v1/responses"),
        r#"{"model":"qwen3"}"#,
        &[],
    ))
    .await;
    assert_eq!(res.headers()["x-mock"], "local");
    body_bytes(res).await;
    proxy.stop().await;

    // A config that says where such sockets go.
    let proxy = start_proxy(&config("websockets_without_model = true")).await;
    assert_eq!(upgrade(proxy.url("/v1/responses")).await, 200);
    assert_eq!(upgrades(&openai).len(), 2);
    assert_eq!(upgrades(&local).len(), 1);
    proxy.stop().await;
}

/// A server of a pool that answers the Responses API: `POST /v1/responses` creates
/// `resp_{name}_{n}` (a JSON answer, or `response.created` first in a stream), anything under
/// `/v1/responses/{id}` answers which server it reached.
async fn responses_server(name: &'static str, seen: Arc<Mutex<Vec<(String, Seen)>>>) -> Mock {
    let made = Arc::new(AtomicUsize::new(0));
    Mock::start(handler(move |req| {
        let (seen, made) = (seen.clone(), made.clone());
        async move {
            let s = mock::collect(req).await;
            let path = s.uri.path().to_string();
            let stream = s.body.windows(13).any(|w| w == b"\"stream\":true");
            seen.lock().unwrap().push((name.to_string(), s));
            let id = format!("resp_{name}_{}", made.fetch_add(1, Ordering::Relaxed));
            let (ct, body) = match (path.as_str(), stream) {
                ("/v1/responses", false) => (
                    "application/json",
                    format!(r#"{{"id":"{id}","object":"response","status":"completed"}}"#),
                ),
                ("/v1/responses", true) => (
                    "text/event-stream",
                    format!(
                        "event: response.created\ndata: {{\"type\":\"response.created\",\
                         \"response\":{{\"id\":\"{id}\"}}}}\n\n\
                         event: response.completed\ndata: {{\"type\":\"response.completed\"}}\n\n"
                    ),
                ),
                _ => ("application/json", format!(r#"{{"server":"{name}"}}"#)),
            };
            http::Response::builder()
                .header("content-type", ct)
                .header("x-mock", name)
                .body(full(body))
                .unwrap()
        }
    }))
    .await
}

#[tokio::test]
async fn a_follow_up_goes_to_the_pool_server_that_made_the_response() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let a = responses_server("a", seen.clone()).await;
    let b = responses_server("b", seen.clone()).await;
    let proxy = start_proxy(&format!(
        "[backends.local]\nurls = [\"{}\", \"{}\"]\n\
         [[route]]\npath = \"/v1/responses\"\nbackend = \"local\"\n",
        a.url(),
        b.url()
    ))
    .await;
    for stream in [false, true] {
        let mut ids = Vec::new();
        for _ in 0..4 {
            let body = format!(r#"{{"model":"m","input":"hi","stream":{stream}}}"#);
            let res = send(post(proxy.url("/v1/responses"), &body, &[])).await;
            let server = res.headers()["x-mock"].to_str().unwrap().to_string();
            let text = String::from_utf8_lossy(&body_bytes(res).await).into_owned();
            let id = text
                .split("\"id\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap()
                .to_string();
            ids.push((id, server));
        }
        let servers: Vec<&str> = ids.iter().map(|(_, s)| s.as_str()).collect();
        assert!(
            servers.contains(&"a") && servers.contains(&"b"),
            "both servers make responses: {servers:?}"
        );
        for (id, server) in &ids {
            for _ in 0..3 {
                let body = format!(
                    r#"{{"model":"m","input":"more","previous_response_id":"{id}","stream":{stream}}}"#
                );
                let res = send(post(proxy.url("/v1/responses"), &body, &[])).await;
                assert_eq!(
                    res.headers()["x-mock"],
                    server.as_str(),
                    "follow-up of {id}"
                );
                body_bytes(res).await;
            }
            for req in [
                Request::get(proxy.url(&format!("/v1/responses/{id}"))),
                Request::get(proxy.url(&format!("/v1/responses/{id}/input_items"))),
                Request::delete(proxy.url(&format!("/v1/responses/{id}"))),
            ] {
                let res = send(req.body(full("")).unwrap()).await;
                assert_eq!(res.headers()["x-mock"], server.as_str(), "about {id}");
                body_bytes(res).await;
            }
        }
    }
    // A response the proxy never saw goes where the pool sends it.
    let mut to = std::collections::HashSet::new();
    for _ in 0..6 {
        let res = send(
            Request::get(proxy.url("/v1/responses/resp_unknown"))
                .body(full(""))
                .unwrap(),
        )
        .await;
        to.insert(res.headers()["x-mock"].to_str().unwrap().to_string());
        body_bytes(res).await;
    }
    assert_eq!(to.len(), 2, "{to:?}");
    proxy.stop().await;
    tokio::time::sleep(Duration::ZERO).await;
}

#[tokio::test]
async fn ollamas_json_lines_are_marked_unbuffered_for_a_proxy_in_front() {
    let ollama = Mock::recording(|_| {
        mock::reply(
            "application/x-ndjson",
            full("{\"done\":false}\n{\"done\":true}\n"),
        )
    })
    .await;
    let proxy = start_proxy(&format!(
        "[backends.ollama]\nurl = \"{}\"\n[[route]]\npath = \"/api\"\nbackend = \"ollama\"\n",
        ollama.url()
    ))
    .await;
    let res = send(post(proxy.url("/api/chat"), r#"{"model":"m"}"#, &[])).await;
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(
        &body_bytes(res).await[..],
        b"{\"done\":false}\n{\"done\":true}\n"
    );
    proxy.stop().await;
}

/// The guide's example (`config/examples/every-api.toml`).
const EVERY_API: &str = include_str!("../../../config/examples/every-api.toml");

#[test]
fn the_client_apis_guide_shows_the_example_as_it_is() {
    crate::support::assert_guide_shows(
        "client-apis.md",
        "config/examples/every-api.toml",
        EVERY_API,
    );
}

#[tokio::test]
async fn the_guides_config_sends_each_api_by_model_with_the_right_keys() {
    let ollama = Mock::echo("ollama").await;
    let anthropic = Mock::echo("anthropic").await;
    let openai = Mock::echo("openai").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("anthropic", "sk-ant-proxy-0123456789"),
        ("openai", "sk-proxy-0123456789"),
    ];
    let mut cfg = EVERY_API
        .replace("http://127.0.0.1:11434", &ollama.url())
        .replace("https://api.anthropic.com", &anthropic.url())
        .replace("https://api.openai.com", &openai.url());
    for (name, key) in keys {
        let file = dir.path().join(format!("{name}.key"));
        std::fs::write(&file, key).unwrap();
        cfg = cfg.replace(
            &format!("\"/etc/openai-proxy/{name}.key\""),
            &format!("{file:?}"),
        );
    }
    let proxy = start_proxy(&cfg).await;
    let client_key = [
        ("x-api-key", "sk-ant-client-0123456789"),
        ("authorization", "Bearer sk-client-0123456789"),
    ];
    for (path, model, to) in [
        ("/api/chat", "qwen3:8b", "ollama"),
        ("/api/chat", "anything", "ollama"),
        ("/v1/messages?beta=true", "qwen3:8b", "ollama"),
        ("/v1/messages?beta=true", "claude-sonnet-4-5", "anthropic"),
        (
            "/v1/messages/count_tokens",
            "claude-sonnet-4-5",
            "anthropic",
        ),
        ("/v1/responses", "gpt-oss:20b", "ollama"),
        ("/v1/responses", "gpt-5", "openai"),
        ("/v1/chat/completions", "llama3.2", "ollama"),
        ("/v1/chat/completions", "gpt-4o", "openai"),
    ] {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let res = send(post(proxy.url(path), &body, &client_key)).await;
        assert_eq!(res.status(), 200, "{path} {model}");
        assert_eq!(res.headers()["x-mock"], to, "{path} {model}");
        body_bytes(res).await;
    }
    let last = |m: &Mock| m.requests().pop().unwrap();
    let seen = last(&anthropic);
    assert_eq!(seen.uri.to_string(), "/v1/messages/count_tokens");
    assert_eq!(seen.header("x-api-key"), Some(keys[0].1));
    assert!(seen.header("authorization").is_none());
    assert_eq!(
        last(&openai).header("authorization"),
        Some("Bearer sk-proxy-0123456789")
    );
    for s in ollama.requests() {
        assert!(s.header("x-api-key").is_none() && s.header("authorization").is_none());
    }
    assert!(ollama
        .requests()
        .iter()
        .any(|s| s.uri == "/v1/messages?beta=true"));
    // Codex's socket: 426.
    let res = send(upgrade_request(proxy.url("/v1/responses"))).await;
    assert_eq!(res.status(), 426);
    body_bytes(res).await;
    proxy.stop().await;
}
