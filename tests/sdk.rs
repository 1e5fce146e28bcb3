//! The official OpenAI Python SDK gets chat (plain and streamed), a transcription, speech and
//! the model list through the proxy to the right backends.

use std::io::Write;
use std::process::Command;

use bytes::Bytes;
use http::Response;

use crate::support::mock::{self, handler, Mock, Seen};
use crate::support::{default_routes, start_proxy, tls::test_ca};

const CLIENT_KEY: &str = "sk-sdk-test-key";

fn json_response(v: serde_json::Value) -> Response<mock::MockBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(mock::full(v.to_string()))
        .unwrap()
}

async fn recording(name: &'static str, reply: fn(&Seen) -> Response<mock::MockBody>) -> Mock {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut m = Mock::start(handler(move |req| {
        let log = log.clone();
        async move {
            let s = mock::collect(req).await;
            let res = reply(&s);
            log.lock().unwrap().push(s);
            res
        }
    }))
    .await;
    m.seen = seen;
    let _ = name;
    m
}

fn chat_reply(s: &Seen) -> Response<mock::MockBody> {
    let req: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
    if req["stream"] == true {
        let mut sse = String::new();
        for tok in ["huge", " manatees"] {
            let chunk = serde_json::json!({"id":"c1","object":"chat.completion.chunk","created":1,
                "model":"llama3","choices":[{"index":0,"delta":{"content":tok},"finish_reason":null}]});
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(mock::full(sse))
            .unwrap();
    }
    json_response(
        serde_json::json!({"id":"c0","object":"chat.completion","created":1,"model":"llama3",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hello from ollama"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_through_the_proxy() {
    crate::support::tools::require_python_module("openai");
    let ca = test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_pem.as_bytes()).unwrap();

    let ollama = recording("ollama", chat_reply).await;
    let whisper = recording("whisper", |_| {
        json_response(serde_json::json!({"text": "Huge manatees."}))
    })
    .await;
    let kokoro = recording("kokoro", |_| {
        Response::builder()
            .header("content-type", "audio/mpeg")
            .body(mock::full(Bytes::from_static(
                b"ID3\x04\x00fake-mp3-frames",
            )))
            .unwrap()
    })
    .await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut openai = Mock::start_with(
        handler(move |req| {
            let log = log.clone();
            async move {
                let s = mock::collect(req).await;
                log.lock().unwrap().push(s);
                json_response(serde_json::json!({"object":"list","data":[
                    {"id":"gpt-4o","object":"model","created":1,"owned_by":"openai"},
                    {"id":"whisper-1","object":"model","created":1,"owned_by":"openai"}]}))
            }
        }),
        Some(ca.server.clone()),
    )
    .await;
    openai.seen = seen;
    let proxy = start_proxy(&default_routes(
        &whisper.url(),
        &ollama.url(),
        &kokoro.url(),
        &openai.url(),
        &format!("ca_file = {:?}\nforward_client_auth = true", ca_file.path()),
    ))
    .await;

    let base = proxy.url("/v1");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::support::tools::python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_client.py"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/huge-manatees.mp3"
            ))
            .env("OPENAI_BASE_URL", base)
            .env("OPENAI_API_KEY", CLIENT_KEY)
            .env_remove("OPENAI_ORG_ID")
            .env_remove("OPENAI_PROJECT_ID")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["models"], serde_json::json!(["gpt-4o", "whisper-1"]));
    assert_eq!(v["chat"], "hello from ollama");
    assert_eq!(v["stream"], serde_json::json!(["huge", " manatees"]));
    assert_eq!(v["transcription"], "Huge manatees.");
    assert_eq!(v["speech_head"], "ID3");

    let mp3 = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/huge-manatees.mp3"
    ))
    .unwrap();
    let w = whisper.requests();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].uri.path(), "/v1/audio/transcriptions");
    assert!(
        w[0].body.windows(mp3.len()).any(|win| win == mp3),
        "the mp3 arrived intact"
    );
    assert_eq!(ollama.requests().len(), 2);
    assert_eq!(kokoro.requests().len(), 1);
    let o = openai.requests();
    assert_eq!(o.len(), 1);
    assert_eq!(
        o[0].header("authorization"),
        Some(format!("Bearer {CLIENT_KEY}").as_str())
    );
    for m in [&ollama, &whisper, &kokoro] {
        assert!(m
            .requests()
            .iter()
            .all(|s| s.header("authorization").is_none()));
    }
    proxy.stop().await;
}
