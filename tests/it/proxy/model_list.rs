//! `GET /v1/models` merged from every backend: asked in parallel, failures and 404s left out
//! and named, aliases added, OpenAI's list fetched with each client's own key and never
//! cached across keys.

use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock, MockBody, Seen};
use crate::support::{dead_addr, start_proxy, TestProxy};

fn reply(status: StatusCode, body: Value) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(mock::full(body.to_string()))
        .unwrap()
}

fn ollama_models(s: &Seen) -> Response<MockBody> {
    match s.uri.path() {
        "/v1/models" => reply(
            StatusCode::OK,
            json!({"object": "list", "data": [
                {"id": "llama3.2:3b", "object": "model", "created": 1727000000, "owned_by": "library"},
                {"id": "qwen2.5:7b", "object": "model", "created": 1727000001, "owned_by": "library"},
                {"id": "mistral:7b", "object": "model", "created": 1727000002, "owned_by": "library"}]}),
        ),
        _ => reply(StatusCode::OK, json!({"backend": "ollama"})),
    }
}

fn openai_models(s: &Seen) -> Response<MockBody> {
    // What each key may use: the list depends on who asks.
    let extra = match s.header("authorization") {
        Some("Bearer sk-alice") => "ft:gpt-4o:alice",
        Some("Bearer sk-bob") => "ft:gpt-4o:bob",
        _ => {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"message": "no key"}}),
            )
        }
    };
    reply(
        StatusCode::OK,
        json!({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
            {"id": "whisper-1", "object": "model", "created": 1677532384, "owned_by": "openai-internal"},
            {"id": extra, "object": "model", "created": 1, "owned_by": "user"}]}),
    )
}

struct Setup {
    ollama: Mock,
    whisper: Mock,
    kokoro: Mock,
    openai: Mock,
    proxy: TestProxy,
}

async fn setup() -> Setup {
    let ollama = Mock::recording(ollama_models).await;
    let whisper =
        Mock::recording(|_| reply(StatusCode::NOT_FOUND, json!({"error": "no such path"}))).await;
    let kokoro =
        Mock::recording(|_| reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "down"})))
            .await;
    let openai = Mock::recording(openai_models).await;
    let proxy = start_proxy(&format!(
        r#"
[backends.ollama]
url = "{}"
[backends.ollama.aliases]
"gpt-4o-mini" = "llama3.2:3b"
[backends.whisper]
url = "{}"
[backends.whisper.aliases]
"whisper-1" = "base.en"
[backends.kokoro]
url = "{}"
[backends.gone]
url = "http://{}"
[backends.quiet]
url = "http://{}"
list_models = false
[backends.openai]
url = "{}"
forward_client_auth = true

[[route]]
path = "/v1/chat/completions"
backend = "ollama"
models = ["llama*", "qwen*"]
[[route]]
path = "/v1/audio/transcriptions"
backend = "whisper"
models = ["whisper-1"]
[[route]]
path = "/v1/audio/speech"
backend = "kokoro"
[[route]]
path = "/v1/audio/voices"
backend = "gone"
[[route]]
path = "/v1/embeddings"
backend = "quiet"
[[route]]
path = "/v1"
backend = "openai"
"#,
        ollama.url(),
        whisper.url(),
        kokoro.url(),
        dead_addr(),
        dead_addr(),
        openai.url()
    ))
    .await;
    Setup {
        ollama,
        whisper,
        kokoro,
        openai,
        proxy,
    }
}

async fn list(proxy: &TestProxy, query: &str, key: &str) -> Response<hyper::body::Incoming> {
    send(
        Request::get(proxy.url(&format!("/v1/models{query}")))
            .header("authorization", format!("Bearer {key}"))
            .header("accept-encoding", "gzip, deflate")
            .body(full(""))
            .unwrap(),
    )
    .await
}

fn models_requests(m: &Mock) -> Vec<Seen> {
    m.requests()
        .into_iter()
        .filter(|s| s.uri.path() == "/v1/models")
        .collect()
}

#[tokio::test]
async fn the_lists_are_merged_failures_named_aliases_added() {
    let s = setup().await;
    let res = list(&s.proxy, "", "sk-alice").await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-backend"], "ollama,openai");
    assert_eq!(
        h["x-models-skipped"],
        "whisper (HTTP 404), kokoro (HTTP 500), gone (unreachable)"
    );
    let v = json(res).await;
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids = model_ids(&v);
    // Ollama's models that its route takes (not mistral), its alias, whisper's alias (its
    // backend lists nothing), then OpenAI's, each id once.
    assert_eq!(
        ids,
        [
            "llama3.2:3b",
            "qwen2.5:7b",
            "gpt-4o-mini",
            "whisper-1",
            "gpt-4o",
            "ft:gpt-4o:alice"
        ]
    );
    // Each object as its backend sent it, with its backend and state added (llama.cpp
    // router's "status"); an alias takes its model's.
    assert_eq!(
        data[0],
        json!({"id": "llama3.2:3b", "object": "model", "created": 1727000000, "owned_by": "library",
               "backend": "ollama", "status": {"value": "loaded"}})
    );
    assert_eq!(
        data[2],
        json!({"id": "gpt-4o-mini", "object": "model", "created": 1727000000, "owned_by": "library",
               "backend": "ollama", "status": {"value": "loaded"}})
    );
    assert_eq!(data[3]["owned_by"], "whisper");
    assert_eq!(data[4]["owned_by"], "system");

    // Who was asked, and with what.
    let o = models_requests(&s.ollama);
    assert_eq!(o.len(), 1);
    assert_eq!(
        o[0].header("authorization"),
        None,
        "ollama never sees the key"
    );
    assert_eq!(o[0].header("accept-encoding"), None);
    assert_eq!(models_requests(&s.whisper).len(), 1);
    assert_eq!(models_requests(&s.kokoro).len(), 1);
    let a = models_requests(&s.openai);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].header("authorization"), Some("Bearer sk-alice"));

    // Another client: OpenAI is asked again with that client's key; the others come from
    // the cache, failures included.
    let res = list(&s.proxy, "", "sk-bob").await;
    let v = json(res).await;
    let ids = model_ids(&v);
    assert!(
        ids.contains(&"ft:gpt-4o:bob") && !ids.contains(&"ft:gpt-4o:alice"),
        "{ids:?}"
    );
    let a = models_requests(&s.openai);
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].header("authorization"), Some("Bearer sk-bob"));
    assert_eq!(models_requests(&s.ollama).len(), 1);
    assert_eq!(models_requests(&s.whisper).len(), 1);
    assert_eq!(models_requests(&s.kokoro).len(), 1);

    // Without a key, OpenAI's list is left out and said to be.
    let res = send(
        Request::get(s.proxy.url("/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["x-models-skipped"]
        .to_str()
        .unwrap()
        .ends_with("openai (HTTP 401)"));
    s.proxy.stop().await;
}

#[tokio::test]
async fn one_backends_list_on_request() {
    let s = setup().await;
    let res = list(&s.proxy, "?backend=ollama", "sk-alice").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend"], "ollama");
    let v = json(res).await;
    let ids = model_ids(&v);
    assert_eq!(ids, ["llama3.2:3b", "qwen2.5:7b", "gpt-4o-mini"]);
    assert!(models_requests(&s.openai).is_empty());

    for (query, status, code, says) in [
        ("?backend=gone", 502, "backend_error", "gone (unreachable)"),
        (
            "?backend=quiet",
            404,
            "not_found",
            "no backend named \"quiet\"",
        ),
        (
            "?backend=nope",
            404,
            "not_found",
            "no backend named \"nope\"",
        ),
    ] {
        let res = list(&s.proxy, query, "sk-alice").await;
        assert_eq!(res.status().as_u16(), status, "{query}");
        let v = json(res).await;
        assert_eq!(v["error"]["code"], code, "{query}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    s.proxy.stop().await;
}

#[tokio::test]
async fn backends_are_asked_in_parallel_with_a_short_time_out() {
    let hang = || {
        Mock::start(handler(|req| async move {
            mock::collect(req).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Response::new(mock::full(""))
        }))
    };
    let (a, b) = (hang().await, hang().await);
    let ollama = Mock::recording(ollama_models).await;
    let proxy = start_proxy(&format!(
        "[backends.a]\nurl = \"{}\"\n[backends.b]\nurl = \"{}\"\n[backends.ollama]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"ollama\"\nmodels = [\"llama*\"]\n\
         [[route]]\npath = \"/v1/audio\"\nbackend = \"a\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        a.url(),
        b.url(),
        ollama.url()
    ))
    .await;
    let start = Instant::now();
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let took = start.elapsed();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["x-models-skipped"],
        "a (no answer within 3s), b (no answer within 3s)"
    );
    body_bytes(res).await;
    // Each waits 3 s; asked one after the other they would take 6 s.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(5500),
        "{took:?}"
    );
    proxy.stop().await;
}

/// The ids of a model list, in its order.
fn model_ids(list: &serde_json::Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}
