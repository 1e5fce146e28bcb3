//! Token usage found in answers as they pass: in the access line (`prompt_tokens`,
//! `completion_tokens`) and in `/metrics` (`openai_proxy_tokens_total`), for OpenAI's JSON
//! and event streams, the Responses API and Ollama's NDJSON; absent when an answer has none;
//! a stream whose client leaves after its last event is complete.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt as _;

use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, channel_body, handler, reply, Mock};
use crate::support::prom::{metrics_addr, scrape};
use crate::support::routes_to;

const CHAT_JSON: &str = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": 99"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
const CHAT_STREAM: [&str; 3] = [
    "data: {\"choices\":[{\"delta\":{\"content\":\"po\"}}],\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"ng\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
    "data: [DONE]\n\n",
];
const OLLAMA: [&str; 2] = [
    "{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n",
    "{\"model\":\"m\",\"done\":true,\"prompt_eval_count\":26,\"eval_count\":290}\n",
];
const RESPONSES: [&str; 2] = [
    "{\"object\":\"response\",\"output\":[],",
    "\"usage\":{\"input_tokens\":5,\"output_tokens\":8,\"total_tokens\":13}}",
];

/// A backend that answers like the real ones: by path, and for a chat request asking to
/// stream, with events (the last one `[DONE]`) on a stream it keeps open a while after.
async fn backend() -> Mock {
    Mock::start(handler(|req: Request<hyper::body::Incoming>| async move {
        let path = req.uri().path().to_string();
        let seen = mock::collect(req).await;
        let streamed = |ct: &str, parts: &'static [&'static str], hold: Duration| {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for p in parts {
                    let _ = tx.send(Ok(Bytes::from_static(p.as_bytes()))).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(hold).await;
            });
            reply(ct, body)
        };
        match path.as_str() {
            "/v1/chat/completions" if seen.body.starts_with(b"{\"stream\":true") => {
                streamed("text/event-stream", &CHAT_STREAM, Duration::from_secs(3))
            }
            "/v1/chat/completions" => reply("application/json", mock::full(CHAT_JSON)),
            "/api/chat" => streamed("application/x-ndjson", &OLLAMA, Duration::ZERO),
            "/v1/responses" => streamed("application/json", &RESPONSES, Duration::ZERO),
            _ => reply("application/json", mock::full("{\"data\":[]}")),
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_in_the_access_line_and_the_metrics() {
    let m = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        routes_to(&m.url())
            + "[[route]]\npath = \"/api\"\nbackend = \"ollama\"\n\
               [log]\naccess_log = true\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    let post = |path: &str, id: &str, body: &'static str| {
        Request::post(format!("{base}{path}"))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    };
    for (path, id) in [
        ("/v1/chat/completions", "json"),
        ("/api/chat", "ollama"),
        ("/v1/responses", "responses"),
        ("/v1/embeddings", "none"),
    ] {
        let res = send(post(path, id, "{\"model\":\"m\"}")).await;
        assert_eq!(res.status(), 200);
        body_bytes(res).await;
    }
    // A stream read up to its [DONE], then left while the backend keeps it open (as SDKs do).
    let res = send(post("/v1/chat/completions", "stream", "{\"stream\":true}")).await;
    let mut body = res.into_body();
    let mut got = Vec::new();
    while !got.ends_with(b"data: [DONE]\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stream's events in time")
            .expect("more of the stream")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(
        got,
        CHAT_STREAM.concat().as_bytes(),
        "the bytes as the backend sent them"
    );
    drop(body);

    let metrics = metrics_addr(&proc).await;
    let tokens = |route: &'static str, backend: &'static str, kind: &'static str| {
        let labels = [("route", route), ("backend", backend), ("kind", kind)];
        move |s: &crate::support::prom::Scrape| s.value("openai_proxy_tokens_total", &labels)
    };
    let chat_prompt = tokens("/v1/chat/completions", "ollama", "prompt");
    let chat_completion = tokens("/v1/chat/completions", "ollama", "completion");
    // The stream's record is done once the proxy sees the client gone: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = scrape(metrics, false).await;
        if chat_prompt(&s) == 19.0 || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(chat_prompt(&s), 19.0, "12 + 7");
    assert_eq!(chat_completion(&s), 5.0, "3 + 2");
    assert_eq!(tokens("/api", "ollama", "prompt")(&s), 26.0);
    assert_eq!(tokens("/api", "ollama", "completion")(&s), 290.0);
    assert_eq!(tokens("/v1", "openai", "prompt")(&s), 5.0);
    assert_eq!(tokens("/v1", "openai", "completion")(&s), 8.0);

    let log = proc.stop().await;
    let line = |id: &str| {
        let want = format!("request_id=\"{id}\"");
        log.lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))
            .to_string()
    };
    for (id, fields) in [
        ("json", " prompt_tokens=12 completion_tokens=3 "),
        ("ollama", " prompt_tokens=26 completion_tokens=290 "),
        ("responses", " prompt_tokens=5 completion_tokens=8 "),
        ("stream", " prompt_tokens=7 completion_tokens=2 "),
    ] {
        let l = line(id);
        assert!(l.contains(fields), "{id}: {l}");
        assert!(l.ends_with("outcome=\"ok\""), "{id}: {l}");
    }
    let none = line("none");
    assert!(!none.contains("_tokens="), "no usage, no counts: {none}");
}
