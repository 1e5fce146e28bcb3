//! `check-config` and `check-endpoints` through the real binary. check-endpoints talks to an
//! in-process proxy whose backends are mocks, and must report truthfully: a 500, a 200 with
//! a body of the wrong kind, or an unreachable proxy is never a ✓.

use std::process::Output;
use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};

use crate::daemon::config_errors::assert_each_error_class_refused;
use crate::support::bin::command;
use crate::support::mock::{self, handler, Mock, MockBody, Seen};
use crate::support::{dead_addr, default_routes, pattern, start_proxy, TestProxy};

/// The bundled clip check-endpoints falls back to.
const CLIP: &[u8] = include_bytes!("../../fixtures/huge-manatees.mp3");
const KEY: &str = "sk-check-never-print-me";

/// What the mock backends get wrong (at most one thing per test).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Chat (plain and streamed) answers 500.
    Chat500,
    /// `/v1/models` answers 500.
    Models500,
    /// Speech answers 200 with an HTML page.
    SpeechHtml,
    /// Transcription answers 200 `{}`.
    TranscriptionEmpty,
}

/// Audio the mock speech backend returns: an ID3 header and enough bytes to be speech.
fn spoken_audio() -> Vec<u8> {
    let mut a = b"ID3\x04\0\0\0\0\0\0".to_vec();
    a.extend(pattern(0, 4096));
    a
}

fn reply(
    status: StatusCode,
    content_type: &str,
    body: impl Into<bytes::Bytes>,
) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(mock::full(body))
        .unwrap()
}

/// One mock playing every backend the way the real services answer: Ollama (chat, also
/// streamed), OpenAI (models), Kokoro (speech) and whisper.cpp (transcription: it "hears"
/// the text last sent to speech, else the bundled clip's words). Each answer echoes the
/// request's `Authorization` in `x-echo-auth`.
pub(crate) async fn services(fault: Option<Fault>) -> Mock {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let spoken = Arc::new(Mutex::new(None::<String>));
    let log = seen.clone();
    let mut m = Mock::start(handler(move |req| {
        let log = log.clone();
        let spoken = spoken.clone();
        async move {
            let s = mock::collect(req).await;
            let json: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            let ok = StatusCode::OK;
            let mut res = match s.uri.path() {
                "/v1/models" if fault == Some(Fault::Models500) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    r#"{"error":{"message":"models are down"}}"#,
                ),
                "/v1/models" => reply(
                    ok,
                    "application/json",
                    serde_json::json!({"object": "list", "data": [
                        {"id": "llama3", "object": "model"}, {"id": "qwen2", "object": "model"}],
                        "auth": s.header("authorization")})
                    .to_string(),
                ),
                "/v1/chat/completions" if fault == Some(Fault::Chat500) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    r#"{"error":"model runner has crashed"}"#,
                ),
                "/v1/chat/completions" if json["stream"] == true => {
                    let mut sse = String::new();
                    for piece in ["po", "ng"] {
                        let chunk = serde_json::json!({"object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": piece}}]});
                        sse.push_str(&format!("data: {chunk}\n\n"));
                    }
                    sse.push_str("data: [DONE]\n\n");
                    reply(ok, "text/event-stream", sse)
                }
                "/v1/chat/completions" => reply(
                    ok,
                    "application/json",
                    serde_json::json!({"object": "chat.completion", "model": json["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant",
                        "content": "pong"}, "finish_reason": "stop"}]})
                    .to_string(),
                ),
                "/v1/audio/speech" if fault == Some(Fault::SpeechHtml) => reply(
                    ok,
                    "text/html",
                    "<html><body>Kokoro is starting</body></html>",
                ),
                "/v1/audio/speech" => {
                    *spoken.lock().unwrap() = json["input"].as_str().map(str::to_string);
                    reply(ok, "audio/mpeg", spoken_audio())
                }
                "/v1/audio/transcriptions" if fault == Some(Fault::TranscriptionEmpty) => {
                    reply(ok, "application/json", "{}")
                }
                "/v1/audio/transcriptions" => {
                    let heard = spoken.lock().unwrap().clone();
                    let text = heard.unwrap_or_else(|| "huge manatees".into());
                    reply(
                        ok,
                        "application/json",
                        serde_json::json!({ "text": text }).to_string(),
                    )
                }
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "no such path"),
            };
            if let Some(auth) = s.headers.get("authorization") {
                res.headers_mut().insert("x-echo-auth", auth.clone());
            }
            log.lock().unwrap().push(s);
            res
        }
    }))
    .await;
    m.seen = seen;
    m
}

/// A proxy with the default routes, every backend played by `services(fault)`; OpenAI gets
/// the client's key.
async fn setup(fault: Option<Fault>) -> (Mock, TestProxy) {
    let m = services(fault).await;
    let url = m.url();
    let proxy = start_proxy(&default_routes(
        &url,
        &url,
        &url,
        &url,
        "forward_client_auth = true",
    ))
    .await;
    (m, proxy)
}

/// The result of one run of the binary.
pub(crate) struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The result line of one check.
    pub fn line(&self, check: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| {
                l.split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(&format!("{check} ")))
            })
            .unwrap_or_else(|| panic!("no line for {check} in:\n{}", self.stdout))
    }

    /// Asserts the exit status and the summary line at the end.
    pub fn assert_outcome(&self, code: i32, summary: &str) {
        assert_eq!(self.code, Some(code), "{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stdout.ends_with(&format!("\n{summary}\n")),
            "expected `{summary}` last in:\n{}",
            self.stdout
        );
    }

    /// Asserts that stdout (or stderr) contains `text`.
    pub fn assert_says(&self, text: &str) {
        let all = format!("{}\n{}", self.stdout, self.stderr);
        assert!(all.contains(text), "expected `{text}` in:\n{all}");
    }

    /// Asserts a check's mark and that its line contains each of `parts`.
    pub fn assert_line(&self, mark: &str, check: &str, parts: &[&str]) {
        let line = self.line(check);
        assert!(
            line.starts_with(mark),
            "{check}: expected {mark} in: {line}"
        );
        for p in parts {
            assert!(line.contains(p), "{check}: expected `{p}` in: {line}");
        }
    }
}

fn finished(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `openai-proxy ARGS` (off the runtime, which serves the proxy meanwhile) without the
/// developer's OpenAI settings, plus `env`.
pub(crate) async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = command();
    cmd.env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run openai-proxy"))
        .await
        .unwrap();
    finished(out)
}

/// Sets up the mocks with `fault` and the proxy, and runs check-endpoints with `extra`.
async fn check_with(fault: Option<Fault>, extra: &[&str]) -> (Mock, TestProxy, Run) {
    let (m, proxy) = setup(fault).await;
    let r = check_endpoints(&proxy, extra).await;
    (m, proxy, r)
}

async fn check_endpoints(proxy: &TestProxy, extra: &[&str]) -> Run {
    let url = proxy.url("");
    let mut args = vec!["check-endpoints", "--url", &url, "--timeout", "20s"];
    args.extend_from_slice(extra);
    run(&args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_pass_naming_the_backend_that_answered() {
    let (m, proxy, r) = check_with(None, &[]).await;
    r.assert_outcome(0, "6 passed, 0 failed, 0 skipped");
    r.assert_line("✓", "health", &["200", "ok"]);
    r.assert_line("✓", "models", &["openai", "200", "2 models: llama3, qwen2"]);
    r.assert_line("✓", "chat", &["ollama", "200", "model llama3: \"pong\""]);
    r.assert_line(
        "✓",
        "chat-stream",
        &["ollama", "200", "2 chunks, [DONE], \"pong\""],
    );
    r.assert_line(
        "✓",
        "speech",
        &["kokoro", "200", "audio/mpeg", "4.0 KiB", "MP3"],
    );
    r.assert_line(
        "✓",
        "transcription",
        &[
            "whisper",
            "200",
            "round trip of the speech check: the words match",
        ],
    );
    assert!(r.stdout.contains(" ms "), "{}", r.stdout);

    // The requests were those an SDK sends, and the transcription got the speech back.
    let seen = m.requests();
    let find = |path: &str, stream: bool| {
        seen.iter()
            .find(|s| {
                let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
                s.uri.path() == path && (v["stream"] == true) == stream
            })
            .unwrap_or_else(|| panic!("no request to {path}"))
            .clone()
    };
    let stream = find("/v1/chat/completions", true);
    assert_eq!(stream.header("accept"), Some("application/json"));
    let speech: serde_json::Value =
        serde_json::from_slice(&find("/v1/audio/speech", false).body).unwrap();
    for key in ["model", "input", "voice"] {
        assert!(
            speech[key].is_string(),
            "speech request without {key}: {speech}"
        );
    }
    let upload = find("/v1/audio/transcriptions", false);
    assert!(upload
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("multipart/form-data; boundary=")));
    let audio = spoken_audio();
    assert!(upload.body.windows(audio.len()).any(|w| w == audio));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_fails_with_the_status() {
    let (_m, proxy, r) = check_with(Some(Fault::Chat500), &[]).await;
    r.assert_outcome(1, "4 passed, 2 failed, 0 skipped");
    for check in ["chat", "chat-stream"] {
        let parts = ["ollama", "500", "model runner has crashed", "--chat-model"];
        r.assert_line("✗", check, &parts);
    }
    r.assert_line("✓", "speech", &[]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_that_is_not_audio_fails_and_transcription_uses_the_built_in_clip() {
    let (m, proxy, r) = check_with(
        Some(Fault::SpeechHtml),
        &["--only", "speech", "transcription"],
    )
    .await;
    r.assert_outcome(1, "1 passed, 1 failed, 0 skipped");
    let why = [
        "not audio",
        "\"text/html\" is not audio/*",
        "no known audio signature",
    ];
    r.assert_line("✗", "speech", &["kokoro", "200", why[0], why[1], why[2]]);
    r.assert_line(
        "✓",
        "transcription",
        &["whisper", "built-in clip: the words match"],
    );
    assert!(!r.stdout.contains("health"), "{}", r.stdout);
    let requests = m.requests();
    let upload = requests
        .iter()
        .find(|s| s.uri.path() == "/v1/audio/transcriptions")
        .unwrap();
    assert!(upload.body.windows(CLIP.len()).any(|w| w == CLIP));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_without_text_fails() {
    let (_m, proxy, r) = check_with(
        Some(Fault::TranscriptionEmpty),
        &["--only=transcription", "-v"],
    )
    .await;
    r.assert_outcome(1, "0 passed, 1 failed, 0 skipped");
    r.assert_line(
        "✗",
        "transcription",
        &["whisper", "200", "no non-empty \"text\""],
    );
    assert!(
        r.stdout.contains("    | {}\n"),
        "-v shows the body:\n{}",
        r.stdout
    );
    proxy.stop().await;
}

#[test]
fn a_proxy_that_is_not_running_is_named_clearly() {
    let addr = dead_addr();
    let out = command()
        .env_remove("OPENAI_API_KEY")
        .args(["check-endpoints", "--url", &format!("http://{addr}/v1")])
        .output()
        .unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    r.assert_says(&format!(
        "openai-proxy: error: cannot connect to the proxy at http://{addr}: connection refused \
         — is it running? (openai-proxy status / --url)"
    ));
    assert!(!r.stdout.contains('✓'), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_cannot_run_are_skipped_saying_why() {
    // No model list to pick a chat model from: a skipped --only check fails the run.
    let (_m, proxy, r) = check_with(Some(Fault::Models500), &["--only", "health,chat"]).await;
    r.assert_outcome(1, "1 passed, 0 failed, 1 skipped");
    let why = ["skipped: no model to chat with", "HTTP 500", "--chat-model"];
    r.assert_line("-", "chat", &why);
    let r = check_endpoints(&proxy, &["--only", "chat", "--chat-model", "mine"]).await;
    r.assert_outcome(0, "1 passed, 0 failed, 0 skipped");
    r.assert_line("✓", "chat", &["model mine"]);
    proxy.stop().await;

    // No route for audio: skipped, and not held against the run unless asked for.
    let m = services(None).await;
    let proxy = start_proxy(&format!(
        "[backends.ollama]\nurl = \"{}\"\n[[route]]\npath = \"/v1/chat/completions\"\n\
         backend = \"ollama\"\n[[route]]\npath = \"/v1/models\"\nbackend = \"ollama\"\n",
        m.url()
    ))
    .await;
    let r = check_endpoints(&proxy, &[]).await;
    r.assert_outcome(0, "4 passed, 0 failed, 2 skipped");
    r.assert_line("✓", "models", &["ollama"]);
    for check in ["speech", "transcription"] {
        let why = "skipped: the proxy has no route for /v1/audio/";
        r.assert_line("-", check, &["404", why]);
    }
    let r = check_endpoints(&proxy, &["--only", "speech"]).await;
    r.assert_outcome(1, "0 passed, 0 failed, 1 skipped");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_but_never_printed() {
    let (m, proxy) = setup(None).await;
    let base = proxy.url("/v1");
    let args = ["check-endpoints", "-v", "-H", "--only", "models,chat"];
    let r = run(
        &args,
        &[("OPENAI_API_KEY", KEY), ("OPENAI_BASE_URL", &base)],
    )
    .await;
    r.assert_outcome(0, "2 passed, 0 failed, 0 skipped");
    let from = format!("at {} ($OPENAI_BASE_URL)", proxy.url(""));
    assert!(r.stdout.contains(&from), "{}", r.stdout);
    let requests = m.requests();
    let models = requests.iter().find(|s| s.uri.path() == "/v1/models");
    let bearer = format!("Bearer {KEY}");
    assert_eq!(models.unwrap().header("authorization"), Some(&*bearer));
    // Echoed in a header and in a body, shown with -H and -v: redacted.
    for shown in [
        "x-echo-auth: Bearer [redacted]",
        "\"auth\":\"Bearer [redacted]\"",
        "x-backend: openai",
    ] {
        assert!(
            r.stdout.contains(shown),
            "expected `{shown}` in:\n{}",
            r.stdout
        );
    }
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(!all.contains(KEY), "{all}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_defaults_to_the_configs_listen_address() {
    let proxy = start_proxy(&default_routes(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "",
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let port = proxy.addr.port();
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = [\"unix:/nonexistent/sock\", \"0.0.0.0:{port}\"]\n\
             [backends.a]\nurl = \"http://127.0.0.1:1\"\n[[route]]\npath = \"/v1\"\nbackend = \"a\"\n"
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let only = |check| ["--config", file, "check-endpoints", "--only", check];
    let r = run(&only("health"), &[]).await;
    r.assert_outcome(0, "1 passed, 0 failed, 0 skipped");
    r.assert_says(&format!(
        "Checking the proxy at http://127.0.0.1:{port} (server.listen in {file})"
    ));
    r.assert_line("✓", "health", &["-", "200"]);

    // Backends that are down: the proxy's 502 is a failure naming the backend.
    let r = run(&only("models"), &[]).await;
    r.assert_outcome(1, "0 passed, 1 failed, 0 skipped");
    r.assert_line("✗", "models", &["openai", "502", "refused the connection"]);
    proxy.stop().await;
}

#[test]
fn check_config_refuses_each_error_class_with_exit_78() {
    assert_each_error_class_refused(|file| vec!["check-config".into(), file.into()]);
}

#[test]
fn check_config_accepts_a_valid_config_and_shows_what_it_resolves_to() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let tokens = dir.path().join("client-tokens");
    std::fs::write(
        &tokens,
        "# LAN clients\nclient-token-one-0123456789\nclient-token-two-0123456789\n",
    )
    .unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = [\"127.0.0.1:2021\"]\nclient_tokens_file = {tokens:?}\n\
             [backends.whisper]\nurl = \"http://127.0.0.1:2022/base\"\nconnect_timeout = \"3s\"\n\
             [backends.openai]\nurl = \"https://api.openai.com\"\napi_key_file = {key:?}\n\
             [backends.ollama]\nurl = \"http://127.0.0.1:11434\"\nforward_client_auth = true\n\
             [backends.spare]\nurl = \"http://127.0.0.1:9\"\n\
             [[route]]\npath = \"/v1/audio/transcriptions\"\nbackend = \"whisper\"\nrewrite = \"/inference\"\n\
             [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"ollama\"\n\
             [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n"
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();

    let out = command().args(["check-config", path]).output().unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "Configuration is valid\n");

    let out = command()
        .args(["--config", path, "check-config", "-v"])
        .output()
        .unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let expect_lines = [
        format!("Config file: {path}"),
        "  chosen because: named with --config".to_string(),
        "Listen:      127.0.0.1:2021".to_string(),
        "max_body_size 1GiB, max_header_size 64KiB, header_read_timeout 30s".to_string(),
        format!(
            "Clients:     need one of 2 tokens from {} (Authorization: Bearer)",
            tokens.display()
        ),
    ];
    for l in &expect_lines {
        assert!(
            r.stdout.contains(l.as_str()),
            "expected `{l}` in:\n{}",
            r.stdout
        );
    }
    let row = |route: &str| {
        r.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{route} ")))
            .unwrap_or_else(|| panic!("no row for {route} in:\n{}", r.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("/v1/audio/transcriptions"),
        "/v1/audio/transcriptions whisper http://127.0.0.1:2022/base /inference 3s 10m 5m strip"
    );
    assert_eq!(
        row("/v1/chat/completions"),
        "/v1/chat/completions ollama http://127.0.0.1:11434 - 10s 10m 5m forward"
    );
    assert_eq!(
        row("/v1"),
        format!(
            "/v1 openai https://api.openai.com - 10s 10m 5m inject from file {}",
            key.display()
        )
    );
    assert!(r
        .stdout
        .contains("Backend spare (http://127.0.0.1:9): no route uses it"));
    assert!(
        r.stdout.ends_with("Configuration is valid\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(KEY) && !r.stderr.contains(KEY));

    // Found through $OPENAI_PROXY_CONFIG, and said so.
    let out = command()
        .env("OPENAI_PROXY_CONFIG", path)
        .args(["check-config", "-v"])
        .output()
        .unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("chosen because: named by $OPENAI_PROXY_CONFIG"),
        "{}",
        r.stdout
    );

    // PATH and a different --config: a usage error.
    let out = command()
        .args(["--config", "/elsewhere.toml", "check-config", path])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A pool: each of its servers gets a line under the health check, ✓ when it is in, ✗ with
/// the reason when it is out; one out makes the run fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_of_a_pool_is_reported() {
    let live = Mock::echo("live").await;
    let dead = format!("http://{}", dead_addr());
    let proxy = start_proxy(&format!(
        "[backends.local]\nurls = [\"{}\", \"{dead}\"]\nhealth_backoff = \"10m\"\nhealth_backoff_max = \"10m\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\n",
        live.url()
    ))
    .await;
    let r = check_endpoints(&proxy, &["--only", "health"]).await;
    r.assert_outcome(0, "3 passed, 0 failed, 0 skipped");
    r.assert_line("✓", "local[0]", &[&live.url(), "up, 0 in flight"]);
    r.assert_line("✓", "local[1]", &[&dead, "up"]);

    // Requests until one went to the dead server (and on to the live one): it is out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = crate::support::client::send(
            http::Request::post(proxy.url("/v1/chat/completions"))
                .body(crate::support::client::full("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200);
        crate::support::client::body_bytes(res).await;
        let r = check_endpoints(&proxy, &["--only", "health"]).await;
        if r.code != Some(0) {
            r.assert_outcome(1, "2 passed, 1 failed, 0 skipped");
            r.assert_line("✓", "local[0]", &[&live.url(), "up"]);
            r.assert_line("✗", "local[1]", &[&dead, "out (refused the connection)"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.stdout);
    }
    proxy.stop().await;
}

/// `check-config -v` shows pools, their back-off and health checks, fallbacks, metrics and
/// on-demand backends.
#[test]
fn check_config_shows_pools_fallbacks_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[metrics]\nlisten = \"127.0.0.1:9102\"\n[usage]\nfile = \"/var/lib/openai-proxy/usage.json\"\n\
         [backends.ollama]\nurls = [\"http://10.0.0.1:11434\", \"http://10.0.0.2:11434\"]\n\
         health_path = \"/api/version\"\nhealth_interval = \"5s\"\nhealth_backoff = \"2s\"\n\
         [backends.openai]\nurl = \"https://api.openai.com\"\nforward_client_auth = true\n\
         [backends.chat]\nurl = \"http://127.0.0.1:8081\"\nswap_group = \"gpu\"\n\
         start_timeout = \"2m\"\n\
         [backends.whisper]\nurl = \"http://127.0.0.1:2022\"\non_demand = true\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"ollama\"\nfallback = \"openai\"\n\
         fallback_on_5xx = true\n[[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
    )
    .unwrap();
    let out = command()
        .args(["check-config", "-v", file.to_str().unwrap()])
        .output()
        .unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for l in [
        "max_replay_body 1MiB",
        "Metrics:     http://127.0.0.1:9102/metrics",
        "Usage:       totals per model and client kept in /var/lib/openai-proxy/usage.json",
        "http://10.0.0.1:11434, http://10.0.0.2:11434",
        "Route /v1/chat/completions falls back to openai when ollama fails before answering or \
         answers 5xx",
        "Backend ollama: pool of 2 servers, fewest requests in flight first; a failed server is \
         out for 2s (doubling up to 30s)",
        "Backend ollama: health check GET /api/version every 5s",
        "Backend chat: started on demand (idle connections closed after 1 to 2 s); waits up to \
         2m for it to start; takes turns in swap group gpu (waiting up to 2m)",
        "Backend whisper: started on demand (idle connections closed after 1 to 2 s)\n",
    ] {
        assert!(r.stdout.contains(l), "expected `{l}` in:\n{}", r.stdout);
    }
}

#[test]
fn a_usage_file_must_be_an_absolute_path_and_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n\
         [usage]\nfile = \"usage.json\"\n",
    )
    .unwrap();
    let out = command()
        .args(["check-config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let r = finished(out);
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(
        r.stderr.contains("config.toml:7") && r.stderr.contains("usage.file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("give an absolute path"), "{}", r.stderr);
}
