//! `check-endpoints` and the client APIs beyond Chat Completions: each API the config has a
//! route of its own for is checked with one streamed request (`--api` names them), and a
//! stream that does not end as its API says fails.

use http::Response;

use crate::cli::check::run;
use crate::support::mock::{self, handler, Mock};
use crate::support::start_proxy;

/// A backend speaking the three APIs; `complete`: streams end as they should.
async fn three_apis(complete: bool) -> Mock {
    Mock::start(handler(move |req| async move {
        let s = mock::collect(req).await;
        let (ct, body) = match s.uri.path() {
            "/api/tags" => (
                "application/json",
                r#"{"models":[{"name":"llama3:8b","model":"llama3:8b"}]}"#.to_string(),
            ),
            "/api/chat" => {
                let mut lines = concat!(
                    r#"{"model":"llama3:8b","message":{"role":"assistant","content":"po"},"done":false}"#,
                    "\n",
                    r#"{"model":"llama3:8b","message":{"role":"assistant","content":"ng"},"done":false}"#,
                    "\n"
                )
                .to_string();
                if complete {
                    lines.push_str(r#"{"model":"llama3:8b","message":{"role":"assistant","content":""},"done":true}"#);
                    lines.push('\n');
                }
                ("application/x-ndjson", lines)
            }
            "/v1/models" => (
                "application/json",
                r#"{"data":[{"type":"model","id":"claude-local","display_name":"c"}]}"#.to_string(),
            ),
            "/v1/messages" => {
                assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
                let mut events = concat!(
                    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
                    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"pong\"}}\n\n",
                )
                .to_string();
                if complete {
                    events.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
                }
                ("text/event-stream", events)
            }
            "/v1/responses" => {
                let mut events = concat!(
                    "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"}}\n\n",
                    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"pong\"}\n\n",
                )
                .to_string();
                if complete {
                    events.push_str("event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n");
                }
                ("text/event-stream", events)
            }
            _ => ("application/json", "{}".to_string()),
        };
        Response::builder()
            .header("content-type", ct)
            .body(mock::full(body))
            .unwrap()
    }))
    .await
}

fn config(url: &str) -> String {
    format!(
        "[backends.local]\nurl = \"{url}\"\n\
         [[route]]\npath = \"/api\"\nbackend = \"local\"\n\
         [[route]]\npath = \"/v1/messages\"\nbackend = \"local\"\n\
         [[route]]\npath = \"/v1/responses\"\nbackend = \"local\"\n\
         [[route]]\npath = \"/v1/models\"\nbackend = \"local\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_the_config_routes_is_checked_with_a_stream() {
    for complete in [true, false] {
        let local = three_apis(complete).await;
        let cfg = config(&local.url());
        let proxy = start_proxy(&cfg).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, &cfg).unwrap();
        let url = proxy.url("");
        let args = [
            "--config",
            file.to_str().unwrap(),
            "check-endpoints",
            "--url",
            &url,
        ];
        let r = run(&args, &[]).await;
        if complete {
            r.assert_line(
                "✓",
                "ollama",
                &["model llama3:8b", "3 lines, done, \"pong\""],
            );
            r.assert_line(
                "✓",
                "anthropic",
                &["model claude-local", "message_stop", "\"pong\""],
            );
            r.assert_line("✓", "responses", &["response.completed", "\"pong\""]);
        } else {
            r.assert_line("✗", "ollama", &["2 lines but none ends the stream"]);
            r.assert_line("✗", "anthropic", &["the last is not message_stop"]);
            r.assert_line("✗", "responses", &["the last is not response.completed"]);
        }
        // --only without --api: none of them; --api alone picks.
        let r = run(&[&args[..], &["--only", "health"]].concat(), &[]).await;
        assert!(!r.stdout.contains("ollama"), "{}", r.stdout);
        let r = run(
            &[
                &args[..],
                &[
                    "--only",
                    "health",
                    "--api",
                    "responses",
                    "--chat-model",
                    "m",
                ],
            ]
            .concat(),
            &[],
        )
        .await;
        assert!(!r.stdout.contains("ollama"), "{}", r.stdout);
        let mark = if complete { "✓" } else { "✗" };
        r.assert_line(mark, "responses", &["200"]);
        proxy.stop().await;
    }
}
