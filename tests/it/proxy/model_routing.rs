//! Routing by the request's `model`: JSON and multipart bodies read only as far as the model,
//! forwarded byte for byte (or with an alias spliced in), paths that name a model, the
//! fallback, and the errors when no route can be chosen.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::support::client::{self, body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::{pattern, pattern_byte, start_proxy};

mod reading; // one reading of `model`: what could be read two ways is refused

/// The routing guide's example config (`config/examples/local-and-openai.toml`).
pub const EXAMPLE: &str = include_str!("../../../config/examples/local-and-openai.toml");

/// The example config with each backend's URL replaced by a mock's.
pub fn example_with(ollama: &str, whisper: &str, openai: &str) -> String {
    let mut text = EXAMPLE.to_string();
    for (from, to) in [
        ("http://127.0.0.1:11434", ollama),
        ("http://127.0.0.1:2022", whisper),
        ("https://api.openai.com", openai),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{from} in the example");
        text = text.replace(from, to);
    }
    text
}

/// Three echo mocks and a proxy with the example config pointing at them.
async fn example() -> (Mock, Mock, Mock, crate::support::TestProxy) {
    let ollama = Mock::echo("ollama").await;
    let whisper = Mock::echo("whisper").await;
    let openai = Mock::echo("openai").await;
    let proxy = start_proxy(&example_with(&ollama.url(), &whisper.url(), &openai.url())).await;
    (ollama, whisper, openai, proxy)
}

async fn post(
    proxy: &crate::support::TestProxy,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> http::Response<hyper::body::Incoming> {
    send(
        Request::post(proxy.url(path))
            .header("content-type", ct)
            .header("authorization", "Bearer sk-client")
            .body(full(body))
            .unwrap(),
    )
    .await
}

/// Posts `body` as a chat request and checks that `backend` answered it, reading the answer.
async fn chat_answered_by(proxy: &crate::support::TestProxy, body: &str, backend: &str) {
    let res = post(
        proxy,
        "/v1/chat/completions",
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{body:.80}");
    assert_eq!(res.headers()["x-backend"], backend, "{body:.80}");
    body_bytes(res).await;
}

#[tokio::test]
async fn the_example_parses_as_written_and_is_in_the_routing_guide() {
    crate::support::assert_guide_shows(
        "routing-and-models.md",
        "config/examples/local-and-openai.toml",
        EXAMPLE,
    );
    openai_proxy::Config::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn json_bodies_go_where_their_model_says_byte_for_byte() {
    let (ollama, _whisper, openai, proxy) = example().await;
    for (model, to, mock) in [
        ("llama3.2", "ollama", &ollama),
        ("qwen2.5:7b", "ollama", &ollama),
        ("gpt-4o", "openai", &openai),
    ] {
        // `model` after other keys, spacing and escapes as a client may write them.
        let body = format!(
            "{{\"messages\": [{{\"role\":\"user\",\"content\":\"say \\\"model\\\": \\\"x\\\"\"}}],\n \"model\" : \"{model}\", \"stream\": false}}"
        );
        let before = mock.requests().len();
        chat_answered_by(&proxy, &body, to).await;
        let seen = mock.requests();
        assert_eq!(seen.len(), before + 1, "{model}");
        let got = seen.last().unwrap();
        assert_eq!(
            got.body,
            body.as_bytes(),
            "{model}: the body arrives as sent"
        );
        assert_eq!(got.uri.path(), "/v1/chat/completions");
        assert_eq!(
            got.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    // The client's key reaches OpenAI only.
    assert!(ollama
        .requests()
        .iter()
        .all(|s| s.header("authorization").is_none()));
    assert!(openai
        .requests()
        .iter()
        .all(|s| s.header("authorization") == Some("Bearer sk-client")));
    proxy.stop().await;
}

#[tokio::test]
async fn a_model_past_the_peek_limit_goes_to_the_fallback_one_before_it_does_not() {
    let (ollama, _whisper, openai, proxy) = example().await;
    let filler = "a".repeat(4 << 20);
    let late =
        format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"llama3.2"}}"#);
    let early =
        format!(r#"{{"model":"llama3.2","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    assert!(late.len() > 4 << 20 && late.len() < 5 << 20);
    for (body, mock, name) in [(&late, &openai, "openai"), (&early, &ollama, "ollama")] {
        chat_answered_by(&proxy, body, name).await;
        let got = mock.requests().pop().unwrap();
        assert!(
            got.body == body.as_bytes(),
            "the {name} body arrives intact"
        );
    }
    proxy.stop().await;
}

/// Routes with `models` and no fallback: a request no route takes is refused.
fn without_fallback(ollama: &str, whisper: &str) -> String {
    format!(
        r#"
[backends.ollama]
url = "{ollama}"
[backends.whisper]
url = "{whisper}"
[[route]]
path = "/v1/chat/completions"
backend = "ollama"
models = ["llama*"]
[[route]]
path = "/v1/audio/transcriptions"
backend = "whisper"
models = ["whisper-1"]
"#
    )
}

/// A request, and the status, code and message parts it must get.
struct Case(
    &'static str,
    &'static str,
    Vec<u8>,
    StatusCode,
    &'static str,
    &'static [&'static str],
);

async fn error_of(res: http::Response<hyper::body::Incoming>) -> (StatusCode, String, String) {
    let status = res.status();
    assert_eq!(res.headers()["content-type"], "application/json");
    let v = json(res).await;
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    (
        status,
        v["error"]["code"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn bad_bodies_get_a_clear_error_and_the_proxy_keeps_serving() {
    let ollama = Mock::echo("ollama").await;
    let whisper = Mock::echo("whisper").await;
    let proxy = start_proxy(&without_fallback(&ollama.url(), &whisper.url())).await;
    let long = format!("gpt-{}", "4".repeat(1000));
    let cases = vec![
        Case(
            "/v1/chat/completions",
            "application/json",
            br#"{"model": "llama3", "messages": [}"#.to_vec(),
            // The model comes first, but the rest is read too (for a second `model`).
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &["not valid JSON", "byte 33"],
        ),
        Case(
            "/v1/chat/completions",
            "application/json",
            br#"{"messages": [}, "model": "llama3"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &["not valid JSON", "byte 14", "/v1/chat/completions"],
        ),
        Case(
            "/v1/chat/completions",
            "application/json",
            br#"{"model": 4, "messages": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "model_required",
            &["\"model\" in the JSON body is not a string"],
        ),
        Case(
            "/v1/chat/completions",
            "application/json",
            br#"{"messages": []}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "model_required",
            &["no top-level \"model\""],
        ),
        Case(
            "/v1/chat/completions",
            "application/json",
            format!(r#"{{"model": "{long}"}}"#).into_bytes(),
            StatusCode::NOT_FOUND,
            "model_not_found",
            &["the model \"gpt-444", "(1004 bytes)", "no route for /v1/chat/completions takes it"],
        ),
        Case(
            "/v1/audio/transcriptions",
            "multipart/form-data",
            b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--\r\n".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            &["no boundary"],
        ),
        Case(
            "/v1/audio/transcriptions",
            "multipart/form-data; boundary=x",
            [
                &b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\n"[..],
                &pattern(0, 3 << 19),
                b"\r\n--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--\r\n",
            ]
            .concat(),
            StatusCode::BAD_REQUEST,
            "model_required",
            &["within the first 1048576 bytes", "its file comes first; send the model field before the file"],
        ),
    ];
    for Case(path, ct, body, status, code, says) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let res = post(&proxy, path, ct, body).await;
        if status == StatusCode::OK {
            assert_eq!(res.status(), status, "{shown}");
            body_bytes(res).await;
            continue;
        }
        let (got, got_code, message) = error_of(res).await;
        assert_eq!(
            (got, got_code.as_str()),
            (status, code),
            "{shown}: {message}"
        );
        for s in says {
            assert!(message.contains(s), "{shown}: expected `{s}` in: {message}");
        }
        assert!(message.len() < 600, "{message}");
    }
    // No backend saw any of the refused requests, and the proxy still routes.
    assert!(ollama.requests().is_empty());
    assert!(whisper.requests().is_empty());
    let res = post(
        &proxy,
        "/v1/chat/completions",
        "application/json",
        br#"{"model":"llama3.2"}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn with_a_fallback_what_no_model_route_takes_goes_there() {
    let (ollama, _whisper, openai, proxy) = example().await;
    for body in [
        br#"{"messages": [}, "model": "llama3"}"#.to_vec(),
        br#"{"model": 4}"#.to_vec(),
        br#"{"model": "mistral"}"#.to_vec(),
        b"not json at all".to_vec(),
        Vec::new(),
    ] {
        let res = post(
            &proxy,
            "/v1/chat/completions",
            "application/json",
            body.clone(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-backend"], "openai");
        body_bytes(res).await;
        assert_eq!(openai.requests().pop().unwrap().body, body);
    }
    // Without a body: GET /v1/chat/completions (stored completions) is OpenAI's.
    let res = send(
        Request::get(proxy.url("/v1/chat/completions"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "openai");
    assert!(ollama.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn aliases_rewrite_the_model_and_fix_the_length() {
    let (ollama, whisper, _openai, proxy) = example().await;
    // JSON with a Content-Length.
    let body = br#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}"#;
    let res = post(
        &proxy,
        "/v1/chat/completions",
        "application/json",
        body.to_vec(),
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "ollama");
    body_bytes(res).await;
    let got = ollama.requests().pop().unwrap();
    let want = br#"{"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}]}"#;
    assert_eq!(got.body, &want[..]);
    assert_eq!(
        got.header("content-length"),
        Some(want.len().to_string().as_str())
    );

    // JSON, chunked, the model split between chunks: still chunked at the backend.
    let (tx, req_body) = client::streamed();
    let req = Request::post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(req_body)
        .unwrap();
    let pending = tokio::spawn(client::client().request(req));
    for piece in [&body[..12], &body[12..20], &body[20..]] {
        tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    drop(tx);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.headers()["x-backend"], "ollama");
    body_bytes(res).await;
    let got = ollama.requests().pop().unwrap();
    assert_eq!(got.body, &want[..]);
    assert_eq!(got.header("content-length"), None);
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));

    // Multipart: the model part rewritten, the file untouched.
    let mp3 = pattern(7, 70_000);
    let form = multipart("----b0und", "whisper-1", &mp3);
    let res = post(
        &proxy,
        "/v1/audio/transcriptions",
        "multipart/form-data; boundary=----b0und",
        form,
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "whisper");
    body_bytes(res).await;
    let got = whisper.requests().pop().unwrap();
    let want = multipart("----b0und", "base.en", &mp3);
    assert!(
        got.body == want,
        "the multipart body with base.en in place of whisper-1"
    );
    assert_eq!(
        got.header("content-length"),
        Some(want.len().to_string().as_str())
    );
    proxy.stop().await;
}

/// `multipart/form-data` as the SDKs send it: `model` before the file.
fn multipart(boundary: &str, model: &str, file: &[u8]) -> Vec<u8> {
    let mut b = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\njson\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\
         Content-Type: audio/mpeg\r\n\r\n"
    )
    .into_bytes();
    b.extend_from_slice(file);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

#[tokio::test]
async fn paths_that_name_a_model_go_to_its_route() {
    let (ollama, _whisper, openai, proxy) = example().await;
    for (path, mock, name, forwarded) in [
        (
            "/v1/models/llama3.2",
            &ollama,
            "ollama",
            "/v1/models/llama3.2",
        ),
        (
            "/v1/models/gpt-4o-mini",
            &ollama,
            "ollama",
            "/v1/models/llama3.2:3b",
        ),
        ("/v1/models/gpt-4o", &openai, "openai", "/v1/models/gpt-4o"),
    ] {
        let res = send(Request::get(proxy.url(path)).body(full("")).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["x-backend"], name, "{path}");
        body_bytes(res).await;
        assert_eq!(mock.requests().pop().unwrap().uri.path(), forwarded);
    }
    let res = send(
        Request::delete(proxy.url("/v1/models/qwen2.5:7b"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.headers()["x-backend"], "ollama");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A 100 MB upload is routed by its model while the client is still sending.

const AUDIO: u64 = 100_000_000;

/// A whisper-like backend that checks the upload byte by byte against `expected` as it
/// streams in, and reports how much has arrived.
async fn checking_backend(
    expected: Arc<dyn Fn(u64) -> u8 + Send + Sync>,
    progress: watch::Sender<u64>,
) -> Mock {
    let progress = Arc::new(progress);
    Mock::start(handler(move |req| {
        let (progress, expected) = (progress.clone(), expected.clone());
        async move {
            let mut body = req.into_body();
            let (mut n, mut intact) = (0u64, true);
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    intact &= data
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == expected(n + i as u64));
                    n += data.len() as u64;
                    progress.send_replace(n);
                }
            }
            let reply = serde_json::json!({"bytes": n, "intact": intact});
            http::Response::new(mock::full(reply.to_string()))
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_is_routed_by_model_while_it_is_still_being_sent() {
    for sized in [true, false] {
        let head = multipart("xyzzy", "whisper-1", b"");
        let head = head[..head.len() - "\r\n--xyzzy--\r\n".len()].to_vec();
        let tail = b"\r\n--xyzzy--\r\n".to_vec();
        let total = head.len() as u64 + AUDIO + tail.len() as u64;
        let (h, t) = (head.clone(), tail.clone());
        let expected = Arc::new(move |i: u64| {
            let hl = h.len() as u64;
            if i < hl {
                h[i as usize]
            } else if i < hl + AUDIO {
                pattern_byte(i - hl)
            } else {
                t.get((i - hl - AUDIO) as usize).copied().unwrap_or(0)
            }
        });
        let (progress_tx, mut progress) = watch::channel(0u64);
        let whisper = checking_backend(expected, progress_tx).await;
        let openai = Mock::echo("openai").await;
        let ollama = Mock::echo("ollama").await;
        let mut cfg = example_with(&ollama.url(), &whisper.url(), &openai.url());
        // No alias here: the bytes must arrive exactly as sent.
        cfg = cfg.replace("\"whisper-1\" = \"base.en\"", "");
        let proxy = start_proxy(&cfg).await;

        // With a Content-Length (the Python SDK's way) or in chunks.
        let (tx, body) = if sized {
            mock::sized_channel_body(total)
        } else {
            client::streamed()
        };
        let req = Request::post(proxy.url("/v1/audio/transcriptions"))
            .header("content-type", "multipart/form-data; boundary=xyzzy")
            .body(body)
            .unwrap();
        let pending = tokio::spawn(client::client().request(req));
        const FIRST: usize = 1 << 20;
        let mut first = head.clone();
        first.extend(pattern(0, FIRST));
        let first_len = first.len() as u64;
        tx.send(Ok(Bytes::from(first))).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|&n| n >= first_len))
            .await
            .expect("the backend got nothing while the client was still sending: the proxy holds the upload back")
            .unwrap();
        let mut off = FIRST as u64;
        while off < AUDIO {
            let len = (256 << 10).min(AUDIO - off);
            tx.send(Ok(Bytes::from(pattern(off, len as usize))))
                .await
                .unwrap();
            off += len;
        }
        tx.send(Ok(Bytes::from(tail.clone()))).await.unwrap();
        drop(tx);
        let res = pending.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::OK, "sized: {sized}");
        assert_eq!(res.headers()["x-backend"], "whisper");
        let v = json(res).await;
        assert_eq!(v["bytes"], total, "sized: {sized}");
        assert_eq!(v["intact"], true, "sized: {sized}");
        assert!(openai.requests().is_empty());
        proxy.stop().await;
    }
}

#[tokio::test]
async fn the_status_page_shows_models_aliases_and_the_model_list() {
    let (_ollama, _whisper, _openai, proxy) = example().await;
    let res = send(Request::get(proxy.url("/")).body(full("")).unwrap()).await;
    let page = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    for line in [
        ", models: llama*, qwen*",
        ", models: whisper-1",
        "  gpt-4o-mini -> llama3.2:3b on ollama",
        "  whisper-1 -> base.en on whisper",
        "Model list: GET /v1/models merges the lists of these backends; GET \
         /v1/models?backend=NAME for one of: ollama, whisper, openai",
    ] {
        assert!(page.contains(line), "expected `{line}` in:\n{page}");
    }
    // Routes in the order they are tried: the chat route before /v1.
    let chat = page.find("/v1/chat/completions").unwrap();
    let v1 = page
        .find("  /v1  ")
        .unwrap_or_else(|| page.find("  /v1 ").unwrap());
    assert!(chat < v1, "{page}");
    proxy.stop().await;
}

/// The OpenAI Node SDK's transcription uploads, byte for byte as captured from the SDK
/// (`client.audio.transcriptions.create({ file: fs.createReadStream(...), model:
/// "whisper-1" })`): version 4 sends the model first with a Content-Length, version 6 streams
/// the fields in the order of the call, the file first, chunked.
fn node_sdk_upload(version: u8, mp3: &[u8], model: &str) -> (String, Vec<u8>) {
    let file = |b: &str| {
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"huge-manatees.mp3\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
    };
    let field = |b: &str| {
        format!("--{b}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n")
    };
    let (b, body) = if version == 4 {
        let b = "form-data-boundary-7bh3xitc3kqlqvwp";
        let head = format!("{}{}", field(b), file(b));
        (
            b,
            [
                head.as_bytes(),
                mp3,
                format!("\r\n--{b}--\r\n\r\n").as_bytes(),
            ]
            .concat(),
        )
    } else {
        let b = "openai-epfashlrgs";
        let tail = format!("\r\n{}--{b}--\r\n", field(b));
        (b, [file(b).as_bytes(), mp3, tail.as_bytes()].concat())
    };
    (format!("multipart/form-data; boundary={b}"), body)
}

#[tokio::test]
async fn the_node_sdks_uploads_are_routed_by_model_whichever_field_comes_first() {
    let (_ollama, whisper, openai, proxy) = example().await;
    let mp3 = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/huge-manatees.mp3"
    ))
    .unwrap();
    for version in [4, 6] {
        let (ct, body) = node_sdk_upload(version, &mp3, "whisper-1");
        let req = if version == 4 {
            Request::post(proxy.url("/v1/audio/transcriptions"))
                .header("content-type", &ct)
                .body(full(body))
                .unwrap()
        } else {
            let (tx, req_body) = client::streamed();
            for piece in body.chunks(16 << 10) {
                tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
            }
            drop(tx);
            Request::post(proxy.url("/v1/audio/transcriptions"))
                .header("content-type", &ct)
                .body(req_body)
                .unwrap()
        };
        let res = send(req).await;
        assert_eq!(res.headers()["x-backend"], "whisper", "Node SDK {version}");
        body_bytes(res).await;
        let got = whisper.requests().pop().unwrap();
        let (_, want) = node_sdk_upload(version, &mp3, "base.en");
        assert!(
            got.body == want,
            "Node SDK {version}: whisper-1 became base.en, nothing else changed"
        );
    }
    assert!(openai.requests().is_empty());
    proxy.stop().await;
}
