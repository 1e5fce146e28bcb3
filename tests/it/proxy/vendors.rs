//! Other vendors' APIs by config: Anthropic's `/v1/messages` next to OpenAI, the key injected
//! in `x-api-key` (`api_key_header`) from the backend's file, the client's never forwarded.

use http::Request;

use crate::support::bin;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;
use crate::support::start_proxy;

/// The routing guide's example (`config/examples/anthropic-and-openai.toml`).
const EXAMPLE: &str = include_str!("../../../config/examples/anthropic-and-openai.toml");

const INJECTED: &str = "sk-ant-proxy-0123456789";
const CLIENT_ANTHROPIC: &str = "sk-ant-client-0123456789";
const CLIENT_OPENAI: &str = "sk-openai-client-0123456789";

#[test]
fn the_routing_guide_shows_the_example_as_it_is() {
    crate::support::assert_guide_shows(
        "routing-and-models.md",
        "config/examples/anthropic-and-openai.toml",
        EXAMPLE,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_to_anthropic_with_the_injected_key_and_never_the_clients() {
    let anthropic = Mock::echo("anthropic").await;
    let openai = Mock::echo("openai").await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("anthropic.key");
    std::fs::write(&key, format!("{INJECTED}\n")).unwrap();
    let cfg = EXAMPLE
        .replace("https://api.anthropic.com", &anthropic.url())
        .replace("https://api.openai.com", &openai.url())
        .replace("\"/etc/openai-proxy/anthropic.key\"", &format!("{key:?}"));
    let proxy = start_proxy(&cfg).await;

    for (path, auth) in [
        ("/v1/messages", ("x-api-key", CLIENT_ANTHROPIC.to_string())),
        (
            "/v1/messages/count_tokens",
            ("authorization", format!("Bearer {CLIENT_OPENAI}")),
        ),
    ] {
        let res = send(
            Request::post(proxy.url(path))
                .header(auth.0, auth.1)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .body(full(
                    "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":16,\"messages\":[]}",
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-backend"], "anthropic");
        body_bytes(res).await;
    }
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .header("authorization", format!("Bearer {CLIENT_OPENAI}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "openai");
    body_bytes(res).await;

    let seen = anthropic.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.header("x-api-key"), Some(INJECTED));
        assert_eq!(s.header("authorization"), None);
        assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
        for (name, value) in &s.headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !v.contains(CLIENT_ANTHROPIC) && !v.contains(CLIENT_OPENAI),
                "the client's key reached Anthropic in {name}"
            );
        }
    }
    assert_eq!(seen[1].uri.path(), "/v1/messages/count_tokens");
    let o = openai.requests();
    assert_eq!(
        o[0].header("authorization"),
        Some(&*format!("Bearer {CLIENT_OPENAI}"))
    );
    assert_eq!(o[0].header("x-api-key"), None);
    proxy.stop().await;
}

#[test]
fn api_key_header_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "sk-0123456789\n").unwrap();
    let cfg = dir.path().join("config.toml");
    let cfg_arg = cfg.to_string_lossy().into_owned();
    for (backend, expected) in [
        (
            "\napi_key_header = \"x-api-key\"\n".to_string(),
            "backends.b.api_key_header: only applies with a key to inject",
        ),
        (
            format!("api_key_file = {key:?}\napi_key_header = \"x api key\"\n"),
            "\"x api key\" is not a valid header name",
        ),
        (
            format!("api_key_file = {key:?}\napi_key_header = \"Connection\"\n"),
            "cannot carry the key: the proxy sets or removes that header itself",
        ),
        (
            format!("api_key_file = {key:?}\napi_key_header = \"host\"\n"),
            "cannot carry the key",
        ),
    ] {
        std::fs::write(
            &cfg,
            format!(
                "[backends.b]\nurl = \"http://127.0.0.1:9\"\n{backend}\
                 [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
            ),
        )
        .unwrap();
        let out = bin::run(&["--config", &cfg_arg, "check-config"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected `{expected}` in: {stderr}"
        );
        assert!(
            stderr.contains(":4:"),
            "the line of api_key_header: {stderr}"
        );
    }
}
