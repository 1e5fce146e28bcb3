//! Codex CLI, unmodified (`codex exec`), through the proxy on `/v1/responses` routed by
//! model. Its built-in OpenAI provider (`openai_base_url`) first opens a Responses WebSocket
//! with the model only inside it: the proxy answers 426 and Codex goes on over HTTP at once,
//! where the model is in the body. A custom provider (`[model_providers.NAME]`,
//! `wire_api = "responses"`) goes over HTTP from the start. A tap between Codex and the proxy
//! keeps what went over the wire.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::api_mocks::{self, answer, model_of, on_path};
use crate::support::mock::Mock;
use crate::support::tap::Tap;
use crate::support::tools::{self, npm_program, run_bounded};
use crate::support::{start_proxy, TestProxy};

const INJECTED: &str = "sk-proxy-openai-0123456789";
const CLIENT_KEY: &str = "sk-codex-client-0123456789";
const LOCAL_MODEL: &str = "local-coder";
const CLOUD_MODEL: &str = "gpt-5-codex";

struct Setup {
    local: Mock,
    cloud: Mock,
    proxy: TestProxy,
    tap: Tap,
    /// Codex's CODEX_HOME, HOME and working directory.
    home: tempfile::TempDir,
}

/// `local-*` to a local Responses server (no key), every other model on `/v1/responses` to
/// the cloud with the proxy's key; a tap in front of the proxy.
async fn setup() -> Setup {
    let local = api_mocks::responses("local", Duration::ZERO).await;
    let cloud = api_mocks::responses("cloud", Duration::ZERO).await;
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("openai.key");
    std::fs::write(&key, format!("{INJECTED}\n")).unwrap();
    let proxy = start_proxy(&format!(
        r#"
[backends.local]
url = "{}"
[backends.cloud]
url = "{}"
api_key_file = {key:?}

[[route]]
path = "/v1/responses"
backend = "local"
models = ["local-*"]
[[route]]
path = "/v1/responses"
backend = "cloud"
"#,
        local.url(),
        cloud.url()
    ))
    .await;
    let tap = Tap::start(proxy.addr).await;
    Setup {
        local,
        cloud,
        proxy,
        tap,
        home,
    }
}

/// Runs `codex exec --model MODEL "say hi"` with `config` as its config.toml and `env`: its
/// stdout.
async fn codex(home: &Path, config: &str, model: &str, env: &[(&str, &str)]) -> String {
    let codex_home = home.join("codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(codex_home.join("config.toml"), config).unwrap();
    let mut cmd = tokio::process::Command::new(npm_program("codex", "@openai/codex"));
    for var in tools::CLIENT_VARS {
        cmd.env_remove(var);
    }
    cmd.args(["exec", "--skip-git-repo-check", "--model", model, "say hi"])
        .current_dir(home)
        .env("HOME", home)
        .env("CODEX_HOME", &codex_home)
        .envs(env.iter().copied());
    let out = run_bounded(cmd, Duration::from_secs(120)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "codex failed:\n{stdout}\n{stderr}");
    stdout
}

/// The one `POST /v1/responses` `m` got: streamed, for `model`.
fn one_streamed_post(m: &Mock, model: &str) -> crate::support::mock::Seen {
    let posts = on_path(m, "/v1/responses");
    assert_eq!(posts.len(), 1, "{:?}", m.requests());
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(model_of(&posts[0]), model);
    assert_eq!(body["stream"], true);
    posts[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_builtin_provider_gets_426_for_its_websocket_then_its_model_over_http() {
    let s = setup().await;
    let config = format!("openai_base_url = \"{}\"\n", s.tap.url("/v1"));
    let out = codex(
        s.home.path(),
        &config,
        LOCAL_MODEL,
        &[("CODEX_API_KEY", CLIENT_KEY)],
    )
    .await;
    assert_eq!(out.trim(), answer("local"));

    // On the wire: the upgrade without a model, the proxy's 426 naming the reason, then the
    // request over HTTP.
    let wire = s.tap.conversations();
    let upgrade = wire
        .iter()
        .find(|(sent, _)| sent.starts_with("GET /v1/responses "))
        .unwrap_or_else(|| panic!("no WebSocket upgrade: {wire:#?}"));
    let sent = upgrade.0.to_ascii_lowercase();
    assert!(sent.contains("\r\nupgrade: websocket\r\n"), "{}", upgrade.0);
    assert!(
        sent.contains("\r\nopenai-beta: responses_websockets="),
        "{}",
        upgrade.0
    );
    assert!(
        upgrade.1.starts_with("HTTP/1.1 426 "),
        "the proxy's answer: {}",
        upgrade.1
    );
    assert!(
        upgrade.1.contains("websocket_model_required"),
        "{}",
        upgrade.1
    );
    assert!(
        wire.iter()
            .any(|(sent, _)| sent.contains("POST /v1/responses HTTP/1.1\r\n")),
        "{wire:#?}"
    );

    // The HTTP request reached the local server by its model, without the client's key; no
    // upgrade reached any backend.
    let post = one_streamed_post(&s.local, LOCAL_MODEL);
    assert_eq!(post.header("authorization"), None);
    assert_eq!(s.local.requests().len(), 1);
    assert!(s.cloud.requests().is_empty(), "{:?}", s.cloud.requests());
    s.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_custom_provider_reaches_the_cloud_with_the_proxys_key_over_http() {
    let s = setup().await;
    let config = format!(
        r#"model_provider = "proxy"

[model_providers.proxy]
name = "openai-proxy"
base_url = "{}"
env_key = "PROXY_CLIENT_KEY"
wire_api = "responses"
"#,
        s.tap.url("/v1")
    );
    let env = [("PROXY_CLIENT_KEY", CLIENT_KEY)];
    for (model, name) in [(CLOUD_MODEL, "cloud"), (LOCAL_MODEL, "local")] {
        let out = codex(s.home.path(), &config, model, &env).await;
        assert_eq!(out.trim(), answer(name), "codex --model {model}");
    }

    // Over HTTP only: no upgrade went over the wire.
    for (sent, _) in s.tap.conversations() {
        assert!(!sent.starts_with("GET "), "{sent}");
    }
    let cloud = one_streamed_post(&s.cloud, CLOUD_MODEL);
    assert_eq!(
        cloud.header("authorization"),
        Some(&*format!("Bearer {INJECTED}"))
    );
    let local = one_streamed_post(&s.local, LOCAL_MODEL);
    assert_eq!(local.header("authorization"), None);
    for m in [&s.cloud, &s.local] {
        for r in m.requests() {
            for (name, value) in &r.headers {
                let v = String::from_utf8_lossy(value.as_bytes());
                assert!(
                    !v.contains(CLIENT_KEY),
                    "the client's key went on in {name}"
                );
            }
        }
    }
    s.proxy.stop().await;
}
