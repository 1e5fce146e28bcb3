//! Model state and llama.cpp router's model management, without a service manager: each model
//! of `GET /models` and `GET /v1/models` says its backend and its state (`loaded` while its
//! server is up, `unloaded` when it is down); `POST /models/load` and `/models/unload` refuse
//! a model that is not on demand (400), an unknown model (404), a malformed body (400), a page
//! of another origin (403, even one allowed by `server.cors_origins`) and a request without
//! the client token (401). Loading and unloading for real: the machine test
//! `on_demand_systemd::models_load_and_unload_in_a_real_systemd_user_manager`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::support::client::{full, json, send};
use crate::support::mock::{self, Mock, MockBody, Seen};
use crate::support::{dead_addr, start_proxy, TestProxy};

const TOKEN: &str = "tok-models-0123456789abcdef012345";

fn models(s: &Seen) -> Response<MockBody> {
    let body = match s.uri.path() {
        "/v1/models" => json!({"object": "list", "data": [
            {"id": "llama3", "object": "model", "created": 1, "owned_by": "library"}]}),
        _ => json!({"ok": true}),
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(mock::full(body.to_string()))
        .unwrap()
}

/// `llm` is up and lists llama3; `down` is unreachable (its alias `tiny` is listed all the
/// same); `od` is on demand (so not asked for its list) but no socket unit listens for it.
async fn setup(server: &str) -> (Mock, Mock, TestProxy) {
    let llm = Mock::recording(models).await;
    let od = Mock::recording(models).await;
    let proxy = start_proxy(&format!(
        r#"{server}
[backends.llm]
url = "{}"
[backends.down]
url = "http://{}"
[backends.down.aliases]
"tiny" = "tiny-1b"
[backends.od]
url = "{}"
on_demand = true
list_models = false

[[route]]
path = "/v1/chat/completions"
backend = "llm"
models = ["llama*"]
[[route]]
path = "/v1/chat/completions"
backend = "down"
models = ["tiny"]
[[route]]
path = "/v1/chat/completions"
backend = "od"
models = ["od-*", "od-exact"]
"#,
        llm.url(),
        dead_addr(),
        od.url(),
    ))
    .await;
    (llm, od, proxy)
}

async fn get(proxy: &TestProxy, path: &str) -> Response<Incoming> {
    send(Request::get(proxy.url(path)).body(full("")).unwrap()).await
}

async fn post(
    proxy: &TestProxy,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::post(proxy.url(path)).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = send(req.body(full(body.to_string())).unwrap()).await;
    let status = res.status();
    (status, json(res).await)
}

fn by_id<'v>(list: &'v Value, id: &str) -> &'v Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[tokio::test]
async fn the_lists_give_each_model_its_backend_and_state() {
    let (_llm, _od, proxy) = setup("").await;
    for path in ["/models", "/v1/models"] {
        let res = get(&proxy, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let v = json(res).await;
        assert_eq!(v["object"], "list", "{path}");
        let llama = by_id(&v, "llama3");
        assert_eq!(llama["backend"], "llm", "{path}: {v}");
        assert_eq!(llama["status"], json!({"value": "loaded"}), "{path}: {v}");
        // The backend's own fields are kept as they were.
        assert_eq!(llama["owned_by"], "library");
        assert_eq!(llama["created"], 1);
        let tiny = by_id(&v, "tiny");
        assert_eq!(tiny["backend"], "down", "{path}: {v}");
        assert_eq!(tiny["status"]["value"], "unloaded", "{path}: {v}");
        // An on-demand backend is not asked (that would start it): the model its route names
        // exactly is listed for it, its pattern is not.
        assert_eq!(by_id(&v, "od-exact")["backend"], "od", "{path}: {v}");
        assert!(!v.to_string().contains("od-*"), "{v}");
    }
}

#[tokio::test]
async fn load_and_unload_refuse_what_they_cannot_do() {
    let (llm, od, proxy) = setup("").await;
    for path in ["/models/load", "/models/unload"] {
        // Not on demand: llama3 (its route's models), tiny (an alias of a backend).
        for model in ["llama3", "tiny"] {
            let (status, v) = post(&proxy, path, &json!({"model": model}).to_string(), &[]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {model}: {v}");
            assert_eq!(v["error"]["code"], "model_not_on_demand", "{v}");
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
            assert_eq!(v["error"]["param"], "model", "{v}");
        }
        // On demand in the config, but no service manager's socket listens for it.
        let (status, v) = post(&proxy, path, r#"{"model":"od-7b"}"#, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "model_not_on_demand", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("backend 'od'"), "{message}");

        let (status, v) = post(&proxy, path, r#"{"model":"no-such-model"}"#, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");

        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"model":3}"#,
            r#"{"model":"od-7b","force":"yes"}"#,
        ] {
            let (status, v) = post(&proxy, path, bad, &[]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad:?}: {v}");
            assert_eq!(v["error"]["code"], "invalid_request_body", "{bad:?}: {v}");
        }
    }
    let res = get(&proxy, "/models/load").await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    // None of it reached a backend but for the model lists.
    for m in [&llm, &od] {
        assert!(
            m.requests().iter().all(|s| s.uri.path() == "/v1/models"),
            "{:?}",
            m.requests()
                .iter()
                .map(|s| s.uri.path().to_string())
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn pages_of_other_origins_cannot_load_or_unload() {
    let (_llm, _od, proxy) = setup("[server]\ncors_origins = [\"http://localhost:3000\"]\n").await;
    let body = r#"{"model":"od-7b"}"#;
    for path in ["/models/load", "/models/unload"] {
        for headers in [
            &[("origin", "http://evil.example")][..],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            // Allowed to use the API (CORS), not to change the machine.
            &[("origin", "http://localhost:3000")],
            &[
                ("origin", "http://localhost:3000"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            let (status, v) = post(&proxy, path, body, headers).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {headers:?}: {v}");
            assert_eq!(v["error"]["code"], "origin_not_allowed", "{v}");
        }
        // The same request from no web page reaches the model check.
        let (status, v) = post(&proxy, path, body, &[("sec-fetch-site", "none")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    }
    // The allowed origin still reads the list.
    let res = send(
        Request::get(proxy.url("/models"))
            .header("origin", "http://localhost:3000")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn load_and_unload_need_the_client_token() {
    let mut tokens = tempfile::NamedTempFile::new().unwrap();
    writeln!(tokens, "{TOKEN}").unwrap();
    std::fs::set_permissions(tokens.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = format!("[server]\nclient_tokens_file = {:?}\n", tokens.path());
    let (_llm, _od, proxy) = setup(&server).await;
    let body = r#"{"model":"od-7b"}"#;
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/models/load", "/models/unload"] {
        for headers in [
            &[][..],
            &[("authorization", "Bearer tok-wrong-0123456789abcdef0123")],
        ] {
            let (status, v) = post(&proxy, path, body, headers).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {v}");
            assert!(!v.to_string().contains(TOKEN));
        }
        let (status, v) = post(&proxy, path, body, &[("authorization", &bearer)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "model_not_on_demand", "{v}");
    }
    assert_eq!(
        get(&proxy, "/models").await.status(),
        StatusCode::UNAUTHORIZED
    );
}
