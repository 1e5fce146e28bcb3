//! The official OpenAI Python SDK gets chat (plain and streamed), a transcription, speech and
//! the model list through the proxy to the right backends.

use std::io::Write;

use bytes::Bytes;
use http::Response;

use crate::support::mock::{self, handler, Mock, Seen};
use crate::support::{default_routes, start_proxy, tls::test_ca};

const CLIENT_KEY: &str = "sk-sdk-test-key";

pub fn json_response(v: serde_json::Value) -> Response<mock::MockBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(mock::full(v.to_string()))
        .unwrap()
}

pub fn chat_reply(s: &Seen) -> Response<mock::MockBody> {
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

/// Runs `tests/SCRIPT` (the bundled mp3 as its argument) with the official OpenAI Python SDK
/// against `base`, and returns the JSON it prints.
pub async fn run_sdk(script: &str, base: String) -> serde_json::Value {
    run_sdk_trusting(script, base, None).await
}

/// [`run_sdk`] with the CA an `https://` proxy's certificate is checked against.
pub async fn run_sdk_trusting(
    script: &str,
    base: String,
    ca: Option<std::path::PathBuf>,
) -> serde_json::Value {
    run_script(script, MP3, base, CLIENT_KEY, ca).await.0
}

/// Runs `tests/SCRIPT ARG` with the official OpenAI Python SDK against `base`, `key` as its
/// API key (and `ca` trusted): the JSON it prints, and what it wrote on stderr.
pub async fn run_script(
    script: &str,
    arg: &str,
    base: String,
    key: &str,
    ca: Option<std::path::PathBuf>,
) -> (serde_json::Value, String) {
    crate::support::tools::require_python_module("openai");
    let ca = ca.map(|ca| ca.to_string_lossy().into_owned());
    let mut envs = vec![("OPENAI_BASE_URL", base.as_str()), ("OPENAI_API_KEY", key)];
    envs.extend(ca.as_deref().map(|ca| ("TEST_PROXY_CA", ca)));
    crate::support::tools::run_python(script, &[arg], envs).await
}

pub const MP3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/huge-manatees.mp3"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_through_the_proxy() {
    let ca = test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_pem.as_bytes()).unwrap();

    let ollama = Mock::recording(chat_reply).await;
    let whisper =
        Mock::recording(|_| json_response(serde_json::json!({"text": "Huge manatees."}))).await;
    let kokoro = Mock::recording(|_| {
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

    let v = run_sdk("sdk_client.py", proxy.url("/v1")).await;
    assert_eq!(v["models"], serde_json::json!(["gpt-4o", "whisper-1"]));
    assert_eq!(v["chat"], "hello from ollama");
    assert_eq!(v["stream"], serde_json::json!(["huge", " manatees"]));
    assert_eq!(v["transcription"], "Huge manatees.");
    assert_eq!(v["speech_head"], "ID3");

    let mp3 = std::fs::read(MP3).unwrap();
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

/// Ollama's answers: its model list, one model, chat (streamed or not) naming the model asked.
fn ollama_reply(s: &Seen) -> Response<mock::MockBody> {
    let path = s.uri.path();
    if path == "/v1/models" {
        return json_response(serde_json::json!({"object": "list", "data": [
            {"id": "llama3.2:3b", "object": "model", "created": 1, "owned_by": "library"},
            {"id": "qwen2.5:7b", "object": "model", "created": 2, "owned_by": "library"}]}));
    }
    if let Some(id) = path.strip_prefix("/v1/models/") {
        return json_response(
            serde_json::json!({"id": id, "object": "model", "created": 1, "owned_by": "library"}),
        );
    }
    chat_reply(s)
}

/// OpenAI's answers: its model list, and chat.
pub fn openai_reply(s: &Seen) -> Response<mock::MockBody> {
    if s.uri.path() == "/v1/models" {
        return json_response(serde_json::json!({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "created": 3, "owned_by": "system"}]}));
    }
    json_response(
        serde_json::json!({"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hello from openai"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}),
    )
}

fn model_of(s: &Seen) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&s.body).ok()?;
    v["model"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_gets_local_and_openai_models_through_one_base_url() {
    let ollama = Mock::recording(ollama_reply).await;
    let whisper =
        Mock::recording(|_| json_response(serde_json::json!({"text": "Huge manatees."}))).await;
    let openai = Mock::recording(openai_reply).await;
    let proxy = start_proxy(&crate::proxy::model_routing::example_with(
        &ollama.url(),
        &whisper.url(),
        &openai.url(),
    ))
    .await;

    let v = run_sdk("sdk_models.py", proxy.url("/v1")).await;
    assert_eq!(
        v["models"],
        serde_json::json!([
            "llama3.2:3b",
            "qwen2.5:7b",
            "gpt-4o-mini",
            "whisper-1",
            "gpt-4o"
        ])
    );
    assert_eq!(v["retrieve"], "llama3.2:3b");
    assert_eq!(v["local"], "hello from ollama");
    assert_eq!(v["cloud"], "hello from openai");
    assert_eq!(v["stream"], serde_json::json!(["huge", " manatees"]));
    assert_eq!(v["transcription"], "Huge manatees.");

    // Each model reached its backend; the key reached OpenAI only.
    let chats = |m: &Mock| -> Vec<String> {
        m.requests()
            .iter()
            .filter(|s| s.uri.path() == "/v1/chat/completions")
            .filter_map(model_of)
            .collect()
    };
    assert_eq!(chats(&ollama), ["llama3.2", "qwen2.5:7b"]);
    assert_eq!(chats(&openai), ["gpt-4o"]);
    let paths: Vec<String> = ollama
        .requests()
        .iter()
        .map(|s| s.uri.path().to_string())
        .collect();
    assert!(
        paths.contains(&"/v1/models/llama3.2:3b".to_string()),
        "{paths:?}"
    );
    assert!(openai
        .requests()
        .iter()
        .all(|s| s.header("authorization") == Some(&*format!("Bearer {CLIENT_KEY}"))));
    assert!(ollama
        .requests()
        .iter()
        .all(|s| s.header("authorization").is_none()));

    // The SDK's multipart upload: whisper-1 became base.en, the audio intact, the length right.
    let mp3 = std::fs::read(MP3).unwrap();
    let w = whisper.requests();
    let upload = w
        .iter()
        .find(|s| s.uri.path() == "/v1/audio/transcriptions")
        .expect("the transcription reached whisper");
    assert!(
        upload.body.windows(mp3.len()).any(|win| win == mp3),
        "the mp3 arrived intact"
    );
    let text = String::from_utf8_lossy(&upload.body);
    assert!(
        text.contains("name=\"model\"\r\n\r\nbase.en\r\n"),
        "{}",
        &text[..300]
    );
    assert!(!text.contains("whisper-1"));
    assert_eq!(
        upload.header("content-length"),
        Some(upload.body.len().to_string().as_str())
    );
    assert!(upload.header("authorization").is_none());
    proxy.stop().await;
}
