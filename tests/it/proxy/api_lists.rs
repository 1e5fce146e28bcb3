//! The lists the proxy answers in other APIs' shapes: Ollama's `/api/tags` and `/api/ps`
//! merged from every backend that speaks Ollama's API (aliases added, failures named, `ps`
//! never cached), `/api/version` the lowest, Anthropic's `GET /v1/models` merged in its
//! shape with each backend's own key; a scoped client sees only its models; and the official
//! Ollama Python library through the proxy (list, streamed chat, embed, errors).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::support::client::{json, send};
use crate::support::mock::{self, channel_body, handler, Mock, MockBody, Seen};
use crate::support::{dead_addr, start_proxy};

fn reply(body: Value) -> Response<MockBody> {
    mock::reply("application/json", mock::full(body.to_string()))
}

/// A model in `/api/tags`'s shape, its digest telling which backend listed it.
fn tag(name: &str, backend: &str) -> Value {
    json!({
        "name": name, "model": name, "modified_at": "2025-05-01T10:00:00.000000+02:00",
        "size": 2019393189u64, "digest": format!("{backend}-{name}"),
        "details": {"parent_model": "", "format": "gguf", "family": "llama",
                    "families": ["llama"], "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M"},
    })
}

/// One line of `/api/chat`'s stream.
fn chat_line(model: &str, content: &str, done: bool) -> String {
    let mut v = json!({
        "model": model, "created_at": "2025-05-01T10:00:00.000000Z",
        "message": {"role": "assistant", "content": content}, "done": done,
    });
    if done {
        for (k, n) in [
            ("total_duration", 4_000_000u64),
            ("load_duration", 1_000_000),
            ("prompt_eval_count", 5),
            ("prompt_eval_duration", 1_000_000),
            ("eval_count", 3),
            ("eval_duration", 2_000_000),
        ] {
            v[k] = json!(n);
        }
        v["done_reason"] = json!("stop");
    }
    format!("{v}\n")
}

/// An Ollama server: its models (`/api/tags`), those running (`/api/ps`, changed through
/// the returned handle), its version; `/api/chat` streams three chunks naming the backend
/// 150 ms apart, `/api/embed` answers an embedding that tells which backend it was. Every
/// request but health checks is recorded.
async fn ollama(
    name: &'static str,
    models: &'static [&'static str],
    version: &'static str,
) -> (Mock, Arc<Mutex<Vec<&'static str>>>) {
    let running: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (now, log) = (running.clone(), seen.clone());
    let mut m = Mock::start(handler(move |req| {
        let (now, log) = (now.clone(), log.clone());
        async move {
            let s = mock::collect(req).await;
            let path = s.uri.path().to_string();
            let asked: Value = serde_json::from_slice(&s.body).unwrap_or_default();
            if !matches!(path.as_str(), "/health" | "/ready") {
                log.lock().unwrap().push(s);
            }
            let model = asked["model"].as_str().unwrap_or_default().to_string();
            match path.as_str() {
                "/api/tags" => reply(
                    json!({"models": models.iter().map(|n| tag(n, name)).collect::<Vec<_>>()}),
                ),
                "/api/ps" => {
                    let names = now.lock().unwrap().clone();
                    reply(json!({"models": names.iter().map(|n| {
                        let mut t = tag(n, name);
                        t["expires_at"] = json!("2025-05-01T10:05:00Z");
                        t["size_vram"] = json!(2019393189u64);
                        t
                    }).collect::<Vec<_>>()}))
                }
                "/api/version" => reply(json!({ "version": version })),
                "/api/embed" => reply(json!({
                    "model": model,
                    "embeddings": [[if name == "one" { 1.0 } else { 2.0 }, 0.5]],
                    "total_duration": 1000, "load_duration": 10, "prompt_eval_count": 3,
                })),
                "/api/chat" => {
                    let (tx, body) = channel_body();
                    tokio::spawn(async move {
                        for (i, part) in ["from ", name, ""].into_iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                            let line = chat_line(&model, part, i == 2);
                            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                                return;
                            }
                        }
                    });
                    mock::reply("application/x-ndjson", body)
                }
                _ => Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(mock::full("404 page not found"))
                    .unwrap(),
            }
        }
    }))
    .await;
    m.seen = seen;
    (m, running)
}

async fn get(url: String, headers: &[(&str, &str)]) -> Response<hyper::body::Incoming> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(mock::full("")).unwrap()).await
}

fn names(v: &Value, array: &str, key: &str) -> Vec<String> {
    v[array]
        .as_array()
        .unwrap_or_else(|| panic!("no {array} in {v}"))
        .iter()
        .map(|m| m[key].as_str().unwrap().to_string())
        .collect()
}

fn asked(m: &Mock, path: &str) -> usize {
    m.requests().iter().filter(|s| s.uri.path() == path).count()
}

/// Two Ollama servers and one that is down, each with a route of its own.
fn three_ollamas(one: &Mock, two: &Mock, extra: &str) -> String {
    format!(
        r#"
[backends.one]
url = "{}"
[backends.one.aliases]
"fast" = "llama3.2:3b"
[backends.two]
url = "{}"
[backends.down]
url = "http://{}"
api = ["ollama"]
[[route]]
path = "/api/chat"
backend = "one"
[[route]]
path = "/api/generate"
backend = "two"
[[route]]
path = "/v1/embeddings"
backend = "down"
{extra}"#,
        one.url(),
        two.url(),
        dead_addr()
    )
}

#[tokio::test]
async fn ollama_tags_and_ps_merged_and_the_lowest_version() {
    let (one, one_running) = ollama("one", &["llama3.2:3b", "qwen2.5:7b"], "0.6.2").await;
    let (two, two_running) = ollama("two", &["qwen2.5:7b", "gemma3:4b"], "0.5.10").await;
    let proxy = start_proxy(&three_ollamas(&one, &two, "")).await;

    let res = get(proxy.url("/api/tags"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend"], "one,two");
    assert_eq!(res.headers()["x-models-skipped"], "down (unreachable)");
    let v = json(res).await;
    // Each name once, the first backend's; the alias is its model's entry, renamed.
    assert_eq!(
        names(&v, "models", "name"),
        ["llama3.2:3b", "qwen2.5:7b", "fast", "gemma3:4b"]
    );
    assert_eq!(v["models"][1]["digest"], "one-qwen2.5:7b");
    let mut fast = tag("fast", "one");
    fast["digest"] = json!("one-llama3.2:3b");
    assert_eq!(v["models"][2], fast);
    assert_eq!(v["models"][3], tag("gemma3:4b", "two"));
    // Kept: asked once.
    json(get(proxy.url("/api/tags"), &[]).await).await;
    assert_eq!((asked(&one, "/api/tags"), asked(&two, "/api/tags")), (1, 1));

    // What runs: merged, and asked afresh each time.
    one_running.lock().unwrap().push("llama3.2:3b");
    two_running.lock().unwrap().push("gemma3:4b");
    let ps = || async { json(get(proxy.url("/api/ps"), &[]).await).await };
    let v = ps().await;
    assert_eq!(
        names(&v, "models", "name"),
        ["llama3.2:3b", "fast", "gemma3:4b"]
    );
    assert_eq!(v["models"][0]["size_vram"], 2019393189u64);
    two_running.lock().unwrap().clear();
    one_running.lock().unwrap().push("qwen2.5:7b");
    let v = ps().await;
    assert_eq!(
        names(&v, "models", "name"),
        ["llama3.2:3b", "qwen2.5:7b", "fast"]
    );
    assert_eq!((asked(&one, "/api/ps"), asked(&two, "/api/ps")), (2, 2));

    // The lowest version that answered, as numbers (0.5.10 is below 0.6.2).
    let res = get(proxy.url("/api/version"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-models-skipped"], "down (unreachable)");
    assert_eq!(json(res).await, json!({"version": "0.5.10"}));
    proxy.stop().await;

    // None answers: 502 in Ollama's shape, naming each.
    let proxy = start_proxy(&format!(
        "[backends.gone]\nurl = \"http://{}\"\n[[route]]\npath = \"/api\"\nbackend = \"gone\"\n",
        dead_addr()
    ))
    .await;
    for path in ["/api/version", "/api/tags"] {
        let res = get(proxy.url(path), &[]).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{path}");
        let v = json(res).await;
        let message = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains("gone (unreachable)"), "{message}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_scoped_client_sees_only_its_models_in_api_tags() {
    use super::clients_scope::{secret_file, ADMIN, GUEST};
    let (one, _) = ollama("one", &["llama3.2:3b", "qwen2.5:7b"], "0.6.2").await;
    let (two, _) = ollama("two", &["qwen2.5:7b", "gemma3:4b"], "0.5.10").await;
    let tokens = secret_file(&format!("guest {GUEST}\nadmin {ADMIN}\n"));
    // Its routes leave out /api: the proxy's own list is its models all the same, as
    // /v1/models is, while the rest of Ollama's API is refused.
    let extra =
        "[clients.guest]\nmodels = [\"llama*\", \"gemma*\"]\nroutes = [\"/v1/chat/completions\"]\n";
    let config = three_ollamas(&one, &two, extra);
    let proxy = start_proxy(&format!(
        "[server]\nclient_tokens_file = {:?}\n{config}",
        tokens.path()
    ))
    .await;
    let tags = |token: &'static str| {
        let url = proxy.url("/api/tags");
        async move {
            let auth = format!("Bearer {token}");
            let v = json(get(url, &[("authorization", &auth)]).await).await;
            names(&v, "models", "name")
        }
    };
    assert_eq!(tags(GUEST).await, ["llama3.2:3b", "gemma3:4b"]);
    let res = get(
        proxy.url("/api/show"),
        &[("authorization", &format!("Bearer {GUEST}"))],
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        tags(ADMIN).await,
        ["llama3.2:3b", "qwen2.5:7b", "fast", "gemma3:4b"]
    );
    proxy.stop().await;
}

const CLAUDE_KEY: &str = "sk-ant-proxy-key-0123456789";

/// Anthropic's `GET /v1/models`, for its own key and a version header only.
fn anthropic_models(s: &Seen) -> Response<MockBody> {
    let keyed = s.header("x-api-key") == Some(CLAUDE_KEY) && s.header("authorization").is_none();
    if !keyed || s.header("anthropic-version").is_none() || s.uri.path() != "/v1/models" {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(mock::full(r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#))
            .unwrap();
    }
    reply(json!({
        "data": [
            {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
             "created_at": "2025-09-29T00:00:00Z"},
            {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
             "created_at": "2025-10-15T00:00:00Z"}],
        "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5",
    }))
}

/// llama.cpp's `GET /v1/models`, OpenAI-shaped (it speaks Anthropic's Messages API too).
fn llama_cpp_models(_: &Seen) -> Response<MockBody> {
    reply(json!({"object": "list", "data": [
        {"id": "qwen3-coder", "object": "model", "created": 1727000000, "owned_by": "llamacpp"},
        {"id": "gemma3", "object": "model", "owned_by": "llamacpp"}]}))
}

#[tokio::test]
async fn anthropic_clients_get_anthropics_model_list() {
    let claude = Mock::recording(anthropic_models).await;
    let local = Mock::recording(llama_cpp_models).await;
    let key = super::clients_scope::secret_file(CLAUDE_KEY);
    let proxy = start_proxy(&format!(
        r#"
[backends.claude]
url = "{}"
api_key_file = {:?}
api_key_header = "x-api-key"
[backends.local]
url = "{}"
api = ["openai", "anthropic"]
[backends.local.aliases]
"claude-3-haiku" = "gemma3"
[[route]]
path = "/v1/messages"
backend = "claude"
models = ["claude-*"]
[[route]]
path = "/v1"
backend = "local"
"#,
        claude.url(),
        key.path(),
        local.url()
    ))
    .await;
    let anthropic = [
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", "sk-ant-the-clients-own"),
    ];
    let res = get(proxy.url("/v1/models"), &anthropic).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend"], "claude,local");
    assert!(res.headers().get("x-models-skipped").is_none());
    let v = json(res).await;
    assert_eq!(
        v,
        json!({
            "data": [
                {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                 "created_at": "2025-09-29T00:00:00Z"},
                {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
                 "created_at": "2025-10-15T00:00:00Z"},
                {"type": "model", "id": "qwen3-coder", "display_name": "qwen3-coder",
                 "created_at": "2024-09-22T10:13:20Z"},
                {"type": "model", "id": "gemma3", "display_name": "gemma3",
                 "created_at": "1970-01-01T00:00:00Z"},
                {"type": "model", "id": "claude-3-haiku", "display_name": "claude-3-haiku",
                 "created_at": "1970-01-01T00:00:00Z"}],
            "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-3-haiku",
        })
    );
    let asked = claude.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].header("x-api-key"), Some(CLAUDE_KEY));
    assert_eq!(asked[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(asked[0].uri.query(), Some("limit=1000"));

    // Anthropic's pages.
    let v = json(
        get(
            proxy.url("/v1/models?limit=2&after_id=claude-haiku-4-5"),
            &anthropic,
        )
        .await,
    )
    .await;
    assert_eq!(names(&v, "data", "id"), ["qwen3-coder", "gemma3"]);
    assert_eq!(
        (&v["has_more"], &v["last_id"]),
        (&json!(true), &json!("gemma3"))
    );

    // An OpenAI client gets OpenAI's list.
    let v = json(get(proxy.url("/v1/models"), &[]).await).await;
    assert_eq!(v["object"], "list");
    assert!(v["data"][0].get("created_at").is_none(), "{v}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_python_library_through_the_proxy() {
    crate::support::tools::require_python_module("ollama");
    let (one, _) = ollama("one", &["llama3.2:3b", "nomic-embed-text"], "0.6.2").await;
    let (two, _) = ollama("two", &["qwen3:8b", "mxbai-embed-large"], "0.6.2").await;
    let proxy = start_proxy(&format!(
        r#"
[backends.one]
url = "{}"
[backends.two]
url = "{}"
[[route]]
path = "/api"
backend = "one"
models = ["llama*", "nomic*"]
[[route]]
path = "/api"
backend = "two"
models = ["qwen*", "mxbai*"]
"#,
        one.url(),
        two.url()
    ))
    .await;
    let script = format!("{}/tests/ollama_client.py", env!("CARGO_MANIFEST_DIR"));
    let host = format!("http://{}", proxy.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::support::tools::python())
            .args([&script, &host, "qwen3:8b", "nomic-embed-text"])
            .env_remove("OLLAMA_HOST")
            .env_remove("OLLAMA_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ollama_client.py failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_eq!(
        v["list"],
        json!([
            "llama3.2:3b",
            "nomic-embed-text",
            "qwen3:8b",
            "mxbai-embed-large"
        ])
    );
    // The chat went to `two`, and its chunks came as they were sent, 150 ms apart.
    let chat = v["chat"].as_array().unwrap();
    let text: String = chat
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "from two");
    assert_eq!(chat.len(), 3);
    assert_eq!(
        (&chat[2]["done"], &chat[2]["eval_count"]),
        (&json!(true), &json!(3))
    );
    let at: Vec<f64> = chat.iter().map(|c| c["at"].as_f64().unwrap()).collect();
    for pair in at.windows(2) {
        assert!(pair[1] - pair[0] >= 0.1, "chunks not spread out: {at:?}");
    }
    assert_eq!(asked(&two, "/api/chat"), 1);
    assert_eq!(asked(&one, "/api/chat"), 0);
    // The embedding came from `one`.
    assert_eq!(
        v["embed"],
        json!({"model": "nomic-embed-text", "embeddings": [[1.0, 0.5]]})
    );
    assert_eq!(asked(&one, "/api/embed"), 1);
    // A model no route takes: the proxy's 404, read by the library as Ollama's error.
    assert_eq!(v["error"]["status"], 404);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"no-such-model\"") && message.contains("no route for /api/chat"),
        "{message}"
    );
    proxy.stop().await;
}
