//! What a client may use (`[clients.NAME]` models, routes, backends_with_server_key): anything
//! else is 403 in OpenAI's shape, naming the model or route, before any byte goes to a
//! backend; the model list shows only what the client may use; a guest never makes the proxy
//! spend its key.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use http::{Request, Response};
use serde_json::{json, Value};

use crate::support::client::{full, json, send};
use crate::support::mock::{self, Mock, Seen};
use crate::support::start_proxy;

pub const GUEST: &str = "guest-token-0123456789abcdef";
pub const ADMIN: &str = "admin-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const KEY: &str = "sk-server-side-key-0123456789";

fn answer(s: &Seen, models: &[&str]) -> Response<mock::MockBody> {
    let body = if s.uri.path() == "/v1/models" {
        let data: Vec<Value> = models.iter().map(|m| json!({"id": m})).collect();
        json!({"object": "list", "data": data})
    } else {
        json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    };
    mock::reply("application/json", mock::full(body.to_string()))
}

pub fn secret_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

pub async fn post(url: String, token: &str, body: Value) -> Response<hyper::body::Incoming> {
    send(
        Request::post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn get(url: String, token: &str) -> Response<hyper::body::Incoming> {
    send(
        Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(full(""))
            .unwrap(),
    )
    .await
}

/// The error of a refused request: status, code, and the whole body (to look for tokens).
async fn refused(res: Response<hyper::body::Incoming>) -> (u16, String, String) {
    let status = res.status().as_u16();
    let v = json(res).await;
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v.to_string(),
    )
}

#[tokio::test]
async fn a_client_uses_only_its_models_routes_and_backends_keys() {
    let ollama = Mock::recording(|s| answer(s, &["llama3", "qwen3"])).await;
    let openai = Mock::recording(|s| answer(s, &["gpt-4o"])).await;
    let tokens = secret_file(&format!("guest {GUEST}\nadmin {ADMIN}\nreader {READER}\n"));
    let key = secret_file(KEY);
    let proxy = start_proxy(&format!(
        r#"[server]
client_tokens_file = {tokens:?}
[backends.ollama]
url = "{ollama}"
[backends.openai]
url = "{openai}"
api_key_file = {key:?}
[[route]]
path = "/v1/chat/completions"
backend = "ollama"
models = ["llama*", "qwen*"]
[[route]]
path = "/v1"
backend = "openai"
[clients.guest]
models = ["llama*"]
backends_with_server_key = []
[clients.reader]
routes = ["/v1/models"]
"#,
        tokens = tokens.path(),
        key = key.path(),
        ollama = ollama.url(),
        openai = openai.url(),
    ))
    .await;
    let chat = proxy.url("/v1/chat/completions");
    let nothing_sent = |what: &str| {
        assert!(ollama.requests().is_empty(), "{what}: ollama got a request");
        assert!(openai.requests().is_empty(), "{what}: openai got a request");
    };

    // A model it may not use: whichever backend would take it, nothing is sent.
    for model in ["gpt-4o", "qwen3"] {
        let res = post(chat.clone(), GUEST, json!({"model": model, "messages": []})).await;
        let (status, code, body) = refused(res).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "model_not_allowed"),
            "{body}"
        );
        assert!(
            body.contains(&format!("\\\"{model}\\\"")) && body.contains("'guest'"),
            "{body}"
        );
        assert!(!body.contains(GUEST), "{body}");
        nothing_sent(model);
    }
    // A route whose backend gets the proxy's key: refused, even without a model.
    let res = post(proxy.url("/v1/embeddings"), GUEST, json!({"input": "x"})).await;
    let (status, code, body) = refused(res).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "server_key_not_allowed"),
        "{body}"
    );
    assert!(body.contains("'openai'"), "{body}");
    nothing_sent("embeddings");

    // Its list: only its models, and the keyed backend not even asked.
    let list = json(get(proxy.url("/v1/models"), GUEST).await).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["llama3"], "{list}");
    assert!(
        openai.requests().is_empty(),
        "openai was asked for the guest's list"
    );

    // What it may use goes through, without any key.
    let res = post(
        chat.clone(),
        GUEST,
        json!({"model": "llama3.2", "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = ollama.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.uri.path(), "/v1/chat/completions");
    assert!(last.header("authorization").is_none());

    // Another client, without a scope: every model, and the key for the cloud.
    let res = post(
        chat.clone(),
        ADMIN,
        json!({"model": "gpt-4o", "messages": []}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = openai.requests();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let list = json(get(proxy.url("/v1/models"), ADMIN).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");

    // Routes: the model list only.
    let res = post(
        chat.clone(),
        READER,
        json!({"model": "llama3", "messages": []}),
    )
    .await;
    let (status, code, body) = refused(res).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "route_not_allowed"),
        "{body}"
    );
    assert!(body.contains("/v1/chat/completions"), "{body}");
    assert_eq!(get(proxy.url("/v1/models"), READER).await.status(), 200);
    assert_eq!(get(proxy.url("/usage"), READER).await.status(), 403);
    proxy.stop().await;
}
