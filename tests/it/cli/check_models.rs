//! `check-endpoints` and routing by model: the chat model comes from what the chat route's
//! own backend lists, and `--model NAME` checks that a model reaches the backend the config
//! sends it to.

use http::{Response, StatusCode};

use crate::cli::check::{run, services};
use crate::proxy::model_routing::example_with;
use crate::support::mock::{self, handler, Mock};
use crate::support::{default_routes, start_proxy};

/// OpenAI without a key: 401 for everything.
async fn openai_without_key() -> Mock {
    Mock::start(handler(|req| async move {
        mock::collect(req).await;
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("content-type", "application/json")
            .body(mock::full(
                r#"{"error":{"message":"You didn't provide an API key.","type":"invalid_request_error","code":null}}"#,
            ))
            .unwrap()
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_checked_with_a_model_of_the_chat_backend_when_openai_has_no_key() {
    // The shipped routes, local services up, no OpenAI key: as a local-only user runs it.
    let local = services(None).await;
    let openai = openai_without_key().await;
    let cfg = default_routes(
        &local.url(),
        &local.url(),
        &local.url(),
        &openai.url(),
        "forward_client_auth = true",
    );
    let proxy = start_proxy(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &cfg).unwrap();
    let url = proxy.url("");
    let r = run(
        &[
            "--config",
            file.to_str().unwrap(),
            "check-endpoints",
            "--url",
            &url,
        ],
        &[],
    )
    .await;
    // /v1/models is OpenAI's here and fails, truthfully; chat still runs, with Ollama's model.
    r.assert_line("✗", "models", &["openai", "401", "API key"]);
    r.assert_line("✓", "chat", &["ollama", "200", "model llama3: \"pong\""]);
    r.assert_line("✓", "chat-stream", &["ollama", "200", "model llama3"]);
    r.assert_outcome(1, "5 passed, 1 failed, 0 skipped");
    // The model was asked of Ollama alone.
    let asked: Vec<String> = local
        .requests()
        .iter()
        .filter(|s| s.uri.path() == "/v1/models")
        .map(|s| s.uri.to_string())
        .collect();
    assert_eq!(asked, ["/v1/models"]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_reach_the_backend_the_config_sends_them_to() {
    let local = services(None).await;
    let openai = services(None).await;
    let cfg = example_with(&local.url(), &local.url(), &openai.url());
    let proxy = start_proxy(&cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &cfg).unwrap();
    let url = proxy.url("");
    let file = file.to_str().unwrap();
    let mut args = vec![
        "--config",
        file,
        "check-endpoints",
        "--url",
        &url,
        "--only",
        "health",
    ];
    for m in ["llama3.2", "gpt-4o", "whisper-1", "gpt-4o-mini"] {
        args.extend(["--model", m]);
    }
    let r = run(&args, &[("OPENAI_API_KEY", "sk-check")]).await;
    r.assert_outcome(0, "5 passed, 0 failed, 0 skipped");
    let chat = "/v1/chat/completions";
    r.assert_line(
        "✓",
        "model llama3.2",
        &["ollama", "200", &format!("{chat} → ollama")],
    );
    r.assert_line(
        "✓",
        "model gpt-4o",
        &["openai", "200", &format!("{chat} → openai")],
    );
    r.assert_line(
        "✓",
        "model whisper-1",
        &[
            "whisper",
            "200",
            "/v1/audio/transcriptions → whisper",
            "huge manatees",
        ],
    );
    r.assert_line("✓", "model gpt-4o-mini", &["ollama", "200"]);
    // The alias reached Ollama as its model.
    let bodies: Vec<String> = local
        .requests()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"model\":\"llama3.2:3b\"")),
        "{bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b.contains("\r\n\r\nbase.en\r\n")),
        "the whisper alias"
    );

    // A config that says otherwise than the proxy does: the check fails and says how.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        cfg.replace(r#"models = ["llama*", "qwen*"]"#, r#"models = ["qwen*"]"#),
    )
    .unwrap();
    let other = other.to_str().unwrap();
    let r = run(
        &[
            "--config",
            other,
            "check-endpoints",
            "--url",
            &url,
            "--only",
            "health",
            "--model",
            "llama3.2",
        ],
        &[],
    )
    .await;
    r.assert_outcome(1, "1 passed, 1 failed, 0 skipped");
    r.assert_line(
        "✗",
        "model llama3.2",
        &["backend ollama answered /v1/chat/completions, but the config sends llama3.2 there to openai"],
    );
    proxy.stop().await;
}

#[test]
fn check_config_shows_routes_by_model_aliases_and_the_model_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, crate::proxy::model_routing::EXAMPLE).unwrap();
    let out = crate::support::bin::command()
        .args(["check-config", "-v", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "Routes (longest matching prefix first, then in file order; the first that takes the request's model wins):",
        "Route /v1/chat/completions (route[0]) to ollama takes only the models llama*, qwen*",
        "Route /v1/audio/transcriptions (route[1]) to whisper takes only the models whisper-1",
        "Backend ollama: alias gpt-4o-mini -> llama3.2:3b",
        "Backend whisper: alias whisper-1 -> base.en",
        "Model list:  GET /v1/models merges the lists of ollama, whisper, openai",
        "max_json_peek 1MiB",
    ] {
        assert!(text.contains(line), "expected `{line}` in:\n{text}");
    }
}
