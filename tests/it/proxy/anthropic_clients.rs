//! Anthropic's clients, unmodified, through the proxy: the official Python SDK (messages plain
//! and streamed, token counts, its error types) and Claude Code (`claude -p`). One address for
//! both backends: `local-*` models to a local server that gets no key, every other model to
//! Anthropic with the proxy's key in `x-api-key`, never the client's.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::api_mocks::{self, answer, model_of, on_path};
use crate::support::mock::{Mock, Seen};
use crate::support::tools::{self, npm_program, run_bounded, run_python};
use crate::support::{dead_addr, start_proxy, TestProxy};

const INJECTED: &str = "sk-ant-proxy-0123456789";
const CLIENT_KEY: &str = "sk-ant-client-0123456789";
const LOCAL_MODEL: &str = "local-llama";
const CLOUD_MODEL: &str = "claude-sonnet-4-5";
/// The mocks' time between two text deltas: wide enough to see a stream arrive as it is sent.
const GAP: Duration = Duration::from_millis(150);

/// `local-*` to `local`, the rest of `/v1/messages` to `anthropic` with the key in `key`.
/// `catch_all: false` sends only `claude-*` to Anthropic, so another model has no route.
fn config(local: &str, anthropic: &str, key: &Path, catch_all: bool) -> String {
    let models = if catch_all {
        ""
    } else {
        "models = [\"claude-*\"]"
    };
    format!(
        r#"
[backends.local]
url = "{local}"
[backends.anthropic]
url = "{anthropic}"
api_key_file = {key:?}
api_key_header = "x-api-key"

[[route]]
path = "/v1/messages"
backend = "local"
models = ["local-*"]
[[route]]
path = "/v1/messages"
backend = "anthropic"
{models}
"#
    )
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("anthropic.key");
    std::fs::write(&key, format!("{INJECTED}\n")).unwrap();
    key
}

/// A local server and Anthropic, each answering with deltas `gap` apart, behind a proxy with
/// [`config`]'s routes (every model not local to Anthropic), and the key file's directory.
async fn local_and_cloud(gap: Duration) -> (Mock, Mock, tempfile::TempDir, TestProxy) {
    let local = api_mocks::anthropic("local", gap).await;
    let cloud = api_mocks::anthropic("anthropic", gap).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&local.url(), &cloud.url(), &key_file(dir.path()), true);
    let proxy = start_proxy(&cfg).await;
    (local, cloud, dir, proxy)
}

fn anthropic_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ANTHROPIC_BASE_URL", base.to_string()),
        ("ANTHROPIC_API_KEY", CLIENT_KEY.to_string()),
    ]
}

/// Anthropic got the proxy's key and no trace of the client's; the local server got no key.
fn assert_keys(local: &Mock, anthropic: &Mock) {
    for s in anthropic.requests() {
        assert_eq!(s.header("x-api-key"), Some(INJECTED), "{}", s.uri);
        assert_eq!(s.header("authorization"), None);
        assert_no_client_key(&s);
    }
    for s in local.requests() {
        for name in ["x-api-key", "authorization"] {
            assert_eq!(s.header(name), None, "{name} reached the local server");
        }
        assert_no_client_key(&s);
    }
}

fn assert_no_client_key(s: &Seen) {
    for (name, value) in &s.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(CLIENT_KEY),
            "the client's key went on in {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_messages_streams_and_token_counts_go_by_model() {
    tools::require_python_module("anthropic");
    let (local, cloud, _dir, proxy) = local_and_cloud(GAP).await;

    let (v, _) = run_python(
        "anthropic_client.py",
        &["messages", LOCAL_MODEL, CLOUD_MODEL],
        anthropic_env(&proxy.url("")),
    )
    .await;

    assert_eq!(v["local"]["text"], answer("local"));
    assert_eq!(v["local"]["model"], LOCAL_MODEL);
    assert_eq!(v["cloud"]["text"], answer("anthropic"));
    assert_eq!(v["cloud"]["stop"], "end_turn");
    assert_eq!(v["final"]["text"], answer("anthropic"));
    assert_eq!(v["final"]["output_tokens"], 3);
    assert_eq!(v["count"], 42);
    assert_stream_as_sent(&v["stream"]);

    // What each backend got: by model; Anthropic's headers and query as the SDK sent them.
    let posts = on_path(&local, "/v1/messages");
    assert_eq!(posts.len(), 1);
    assert_eq!(model_of(&posts[0]), LOCAL_MODEL);
    let seen = cloud.requests();
    let what: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.uri.to_string(), model_of(s)))
        .collect();
    let want = |uri: &str| (uri.to_string(), CLOUD_MODEL.to_string());
    assert_eq!(
        what,
        [
            want("/v1/messages"),
            want("/v1/messages?beta=true"),
            want("/v1/messages?beta=true"),
            want("/v1/messages/count_tokens"),
        ]
    );
    let version = v["version"].as_str().unwrap();
    for s in local.requests().iter().chain(&seen) {
        assert_eq!(s.header("anthropic-version"), Some(version));
    }
    for s in &seen[1..3] {
        assert_eq!(
            s.header("anthropic-beta"),
            Some("interleaved-thinking-2025-05-14")
        );
    }
    assert_keys(&local, &cloud);
    proxy.stop().await;
}

/// The SDK's events (its own `text` and `input_json` left out) came in the order Anthropic
/// sends them, and the text deltas as they were sent, `GAP` apart, not all at the end.
fn assert_stream_as_sent(events: &Value) {
    let events: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !matches!(e["type"].as_str(), Some("text" | "input_json")))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let deltas: Vec<&&Value> = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .collect();
    let text: String = deltas.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(text, answer("anthropic"));
    for pair in deltas.windows(2) {
        let apart = pair[1]["at"].as_f64().unwrap() - pair[0]["at"].as_f64().unwrap();
        assert!(
            apart >= 0.1,
            "two deltas sent {GAP:?} apart arrived {apart:.3}s apart: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_raises_its_own_errors_from_the_proxys_anthropic_shaped_ones() {
    tools::require_python_module("anthropic");
    let local = api_mocks::anthropic("local", Duration::ZERO).await;
    let down = format!("http://{}", dead_addr());
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&config(&local.url(), &down, &key_file(dir.path()), false)).await;

    let args = ["errors", "gpt-4o", CLOUD_MODEL];
    let (v, _) = run_python("anthropic_client.py", &args, anthropic_env(&proxy.url(""))).await;

    // No route takes gpt-4o: the SDK's NotFoundError, from Anthropic's error shape.
    let e = &v["gpt-4o"];
    assert_eq!(e["class"], "NotFoundError", "{v}");
    assert_eq!(e["not_found"], true);
    assert_eq!(e["status"], 404);
    assert_eq!(e["body"]["type"], "error");
    assert_eq!(e["body"]["error"]["type"], "not_found_error");
    let message = e["body"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("gpt-4o"), "{message}");
    assert!(e["message"].as_str().unwrap().contains(message), "{e}");

    // Anthropic's server is down: a server error the SDK reads as such.
    let e = &v[CLOUD_MODEL];
    assert_eq!(e["server_error"], true, "{v}");
    assert_eq!(e["status"], 502);
    assert_eq!(e["body"]["type"], "error");
    assert_eq!(e["body"]["error"]["type"], "api_error");
    assert!(e["body"]["error"]["message"].is_string(), "{e}");
    assert!(local.requests().is_empty());
    proxy.stop().await;
}

/// Runs `claude -p "say hi" --model MODEL` against `base`, in a home of its own: its stdout.
async fn claude(base: &str, model: &str, home: &Path) -> String {
    let mut cmd = tokio::process::Command::new(npm_program("claude", "@anthropic-ai/claude-code"));
    for var in tools::CLIENT_VARS {
        cmd.env_remove(var);
    }
    cmd.args(["-p", "say hi", "--model", model])
        .current_dir(home)
        .env("HOME", home)
        .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .envs(anthropic_env(base));
    let out = run_bounded(cmd, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "claude failed:\n{stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_answers_from_the_backend_of_its_model() {
    let (local, cloud, _dir, proxy) = local_and_cloud(Duration::ZERO).await;
    let home = tempfile::tempdir().unwrap();

    for (model, name) in [(LOCAL_MODEL, "local"), (CLOUD_MODEL, "anthropic")] {
        let out = claude(&proxy.url(""), model, home.path()).await;
        assert_eq!(out.trim(), answer(name), "claude --model {model}");
    }

    // Each sent one streamed message to the beta endpoint, with its own beta features.
    for (m, model) in [(&local, LOCAL_MODEL), (&cloud, CLOUD_MODEL)] {
        let seen = m.requests();
        let uris: Vec<String> = seen.iter().map(|s| s.uri.to_string()).collect();
        assert_eq!(uris, ["/v1/messages?beta=true"], "{model}");
        let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
        assert_eq!(body["model"], model);
        assert_eq!(body["stream"], true);
        assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
        let beta = seen[0].header("anthropic-beta").unwrap_or_default();
        assert!(beta.contains("claude-code-"), "{beta}");
    }
    assert_keys(&local, &cloud);
    proxy.stop().await;
}
