//! `check-endpoints`: a client of a running proxy that tells the truth about each route.
//!
//! It sends the requests an OpenAI SDK sends and passes a check only when the status is right
//! *and* the body is well formed and of the right kind: a 500, or a 200 carrying an HTML page
//! where audio belongs, is a failure. The key from `$OPENAI_API_KEY` is sent but never shown:
//! it is replaced in every response body as it arrives, every line printed goes through
//! [`report::Output`], which redacts it again, and credential headers are never printed.

mod apis;
mod audio;
mod report;
mod routing;
mod servers;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::{json, Value};

pub use self::apis::ClientApi;
use self::audio::{audio_format, built_in_clip, multipart, words, Clip, MP3, TRANSCRIPTION_MODEL};
use self::report::{human_size, snippet, stream_content, Ask, Exchange, Output, Report, Verdict};
use self::routing::Picked;
use super::client::{self, Client, ProxyUrl, SendError, Trust, MAX_CONNECT_TIMEOUT};
use crate::config::format_duration;
use crate::routing::routes::Router;

/// What one run checks and how (the command line, as plain values).
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the proxy is; `None`: `$OPENAI_BASE_URL`, else the config's listen address.
    pub url: Option<ProxyUrl>,
    /// Print each response body.
    pub verbose: bool,
    /// Print each response's headers (credentials redacted).
    pub headers: bool,
    /// Run only these checks; empty: all.
    pub only: Vec<CheckName>,
    /// For each exchange, from connecting to the last byte.
    pub timeout: Duration,
    /// The model for the chat checks; `None`: the first that the chat route's backend lists.
    pub chat_model: Option<String>,
    /// Models to check: each must reach the backend the config sends it to.
    pub models: Vec<String>,
    /// Client APIs to check; empty: each the config routes (none with `--only`).
    pub apis: Vec<ClientApi>,
    /// CA certificates (PEM) an `https://` proxy's certificate is checked against, besides
    /// the bundled web roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckName {
    /// GET /health: the proxy itself answers {"status":"ok"}; then each server of a pool
    /// (from GET /), in or out
    Health,
    /// GET /v1/models: a JSON list of models
    Models,
    /// POST /v1/chat/completions: one JSON answer
    Chat,
    /// POST /v1/chat/completions with "stream": true: server-sent events ending in [DONE]
    ChatStream,
    /// POST /v1/audio/speech: audio
    Speech,
    /// POST /v1/audio/transcriptions: JSON with the text
    Transcription,
    /// `--model NAME`: that model reaches the backend the config sends it to (not in
    /// [`CheckName::ALL`]: it runs for each `--model`).
    Model,
    /// Ollama's API (`--api ollama`, or a route of `/api`; not in [`CheckName::ALL`]).
    Ollama,
    /// Anthropic's Messages API (`--api anthropic`, or a route of `/v1/messages`).
    Anthropic,
    /// OpenAI's Responses API (`--api responses`, or a route of `/v1/responses`).
    Responses,
}

impl CheckName {
    /// Every check, in the order they run and are reported.
    pub const ALL: [CheckName; 6] = [
        CheckName::Health,
        CheckName::Models,
        CheckName::Chat,
        CheckName::ChatStream,
        CheckName::Speech,
        CheckName::Transcription,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::Health => "health",
            CheckName::Models => "models",
            CheckName::Chat => "chat",
            CheckName::ChatStream => "chat-stream",
            CheckName::Speech => "speech",
            CheckName::Transcription => "transcription",
            CheckName::Model => "model",
            CheckName::Ollama => "ollama",
            CheckName::Anthropic => "anthropic",
            CheckName::Responses => "responses",
        }
    }
}

/// What the speech check asks for, and what the transcription of it should give back.
const SPEECH_TEXT: &str = "The quick brown fox jumps over the lazy dog.";
/// Model and voice names OpenAI knows and Kokoro-FastAPI maps to its own.
const SPEECH_MODEL: &str = "tts-1";
const SPEECH_VOICE: &str = "alloy";
pub(crate) const CHAT_PROMPT: &str = "Reply with the single word: pong";

/// Audio shorter than this is not speech, whatever its header says.
const MIN_AUDIO_BYTES: usize = 1024;
/// Responses are read whole; nothing a check asks for comes near this.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Runs `check-endpoints`, printing to `out`; `Ok(true)` when the exit status should be 0.
pub fn run(
    config_flag: Option<&Path>,
    options: &Options,
    out: Box<dyn std::io::Write>,
) -> anyhow::Result<bool> {
    let (url, from) = client::locate_proxy(config_flag, options.url.as_ref())?;
    let trust = match &options.ca_file {
        Some(path) => client::read_ca_file(path)?,
        None => Trust::Roots(Vec::new()),
    };
    let key = client::api_key()?;
    let selected: Vec<CheckName> = CheckName::ALL
        .into_iter()
        .filter(|c| options.only.is_empty() || options.only.contains(c))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    let (auth, secret) = key.unzip();
    let checker = Checker {
        client: Client::new(url, options.timeout.min(MAX_CONNECT_TIMEOUT), trust)?,
        auth,
        timeout: options.timeout,
        out: Output::new(out, options.verbose, options.headers, secret),
        routes: routing::routes(config_flag),
    };
    checker.out.line(&format!(
        "Checking the proxy at {} ({from})",
        checker.client.url()
    ))?;
    let apis = match (&options.apis[..], &checker.routes) {
        ([], Ok(routes)) if options.only.is_empty() => apis::routed(routes),
        (chosen, _) => chosen.to_vec(),
    };
    let reports = runtime.block_on(async {
        let mut reports = checker
            .run(&selected, options.chat_model.as_deref(), &options.models)
            .await?;
        for api in apis {
            let report = checker
                .api_check(api, options.chat_model.as_deref())
                .await?;
            checker.out.report(&report)?;
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;
    let count = |f: fn(&Verdict) -> bool| reports.iter().filter(|r| f(&r.verdict)).count();
    let passed = count(|v| matches!(v, Verdict::Pass(_)));
    let failed = count(|v| matches!(v, Verdict::Fail(_)));
    let skipped = count(|v| matches!(v, Verdict::Skip { .. }));
    checker.out.line(&format!(
        "{passed} passed, {failed} failed, {skipped} skipped"
    ))?;
    let excused = |v: &Verdict| match v {
        Verdict::Skip { no_route, .. } => *no_route && options.only.is_empty(),
        _ => true,
    };
    Ok(failed == 0 && reports.iter().all(|r| excused(&r.verdict)))
}

/// What `/v1/models` gave: the model ids, or why there are none to use.
type ModelList = Result<Vec<String>, String>;

/// A client of the proxy with the settings of one run.
struct Checker {
    client: Client,
    /// `Authorization: Bearer $OPENAI_API_KEY`, marked sensitive.
    auth: Option<HeaderValue>,
    /// For each exchange, from connecting to the last byte.
    timeout: Duration,
    out: Output,
    /// The config's routes (targets: backend names), to know where a model should go; or
    /// why the config could not be read.
    routes: Result<Router<String>, String>,
}

impl Checker {
    /// Runs the selected checks in order, printing each result as it comes. Fails only when
    /// the proxy cannot be reached.
    async fn run(
        &self,
        selected: &[CheckName],
        chat_model: Option<&str>,
        check_models: &[String],
    ) -> anyhow::Result<Vec<Report>> {
        let mut reports = Vec::new();
        let mut models: Option<ModelList> = None;
        let mut picked: Option<Picked> = None;
        let mut speech: Option<Clip> = None;
        for &name in selected {
            let report = match name {
                CheckName::Health => self.health().await?,
                CheckName::Models => {
                    let (report, list) = self.models(None).await?;
                    models = Some(list);
                    report
                }
                CheckName::Chat | CheckName::ChatStream => {
                    let model = match (chat_model, &picked) {
                        (Some(m), _) => Ok((m.to_string(), None)),
                        (None, Some(p)) => p.clone(),
                        (None, None) => {
                            let p = self.pick_chat_model(&mut models).await?;
                            picked = Some(p.clone());
                            p
                        }
                    };
                    match model {
                        Ok((model, guessed)) => self.chat(name, &model, guessed.as_deref()).await?,
                        Err(reason) => Report::skip(name, reason),
                    }
                }
                CheckName::Speech => {
                    let report = self.speech(SPEECH_MODEL).await?;
                    speech = report.answer.as_ref().filter(|_| report.passed()).map(|a| {
                        let format = audio_format(&a.body).unwrap_or(MP3);
                        Clip {
                            audio: a.body.clone(),
                            file_name: format!("speech.{}", format.ext),
                            mime: format.mime,
                            text: SPEECH_TEXT,
                            origin: "round trip of the speech check",
                        }
                    });
                    report
                }
                CheckName::Transcription => {
                    let clip = speech.take().unwrap_or_else(built_in_clip);
                    self.transcription(&clip, TRANSCRIPTION_MODEL).await?
                }
                CheckName::Model
                | CheckName::Ollama
                | CheckName::Anthropic
                | CheckName::Responses => continue,
            };
            self.out.report(&report)?;
            reports.push(report);
            if name == CheckName::Health {
                for r in self.servers().await? {
                    self.out.report(&r)?;
                    reports.push(r);
                }
            }
        }
        for model in check_models {
            let report = self.model_check(model).await?;
            self.out.report(&report)?;
            reports.push(report);
        }
        Ok(reports)
    }

    /// Sends one request and reads the whole answer.
    async fn send(&self, ask: Ask<'_>) -> Result<Exchange, SendError> {
        let mut req = Request::builder()
            .method(ask.method)
            .uri(ask.path)
            .header(header::ACCEPT, ask.accept)
            .header(
                header::USER_AGENT,
                concat!("openai-proxy-check/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(ct) = ask.content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        for (name, value) in ask.headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(ask.body))
            .map_err(|e| SendError::Failed(format!("cannot build the request: {e}")))?;
        let start = Instant::now();
        let exchange = async {
            let res = self.client.send(req).await.map_err(|e| match e {
                SendError::Connect(reason) => SendError::Connect(format!(
                    "cannot connect to the proxy at {}: {reason} — is it running? \
                     (openai-proxy status / --url)",
                    self.client.url()
                )),
                failed => failed,
            })?;
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    SendError::Failed(if e.is::<LengthLimitError>() {
                        format!(
                            "the response is larger than {}",
                            human_size(MAX_RESPONSE_BYTES)
                        )
                    } else {
                        format!("the response broke off: {e}")
                    })
                })?
                .to_bytes();
            Ok(Exchange {
                status: parts.status,
                headers: parts.headers,
                body: self.out.redact_body(body),
                elapsed: Duration::ZERO,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(SendError::Failed(format!(
                "no complete answer within {} (--timeout)",
                format_duration(self.timeout)
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(mut a)) => {
                a.elapsed = start.elapsed();
                Ok(a)
            }
        }
    }

    /// Sends `ask` and judges the answer: skipped when the proxy has no route, failed unless
    /// the status is 200 and `judge` accepts the body.
    async fn check(
        &self,
        name: CheckName,
        ask: Ask<'_>,
        judge: impl FnOnce(&Exchange) -> Result<String, String>,
    ) -> anyhow::Result<Report> {
        let path = ask.path.to_string();
        let answer = match self.send(ask).await {
            Ok(a) => a,
            Err(SendError::Connect(msg)) => return Err(anyhow!(msg)),
            Err(SendError::Failed(msg)) => {
                return Ok(Report {
                    name,
                    label: None,
                    verdict: Verdict::Fail(msg),
                    answer: None,
                })
            }
        };
        let verdict = if answer.is_no_route() {
            Verdict::Skip {
                reason: format!("the proxy has no route for {path}"),
                no_route: true,
            }
        } else if answer.status != StatusCode::OK {
            Verdict::Fail(format!("HTTP {}: {}", answer.status, answer.error_text()))
        } else {
            match judge(&answer) {
                Ok(detail) => Verdict::Pass(detail),
                Err(problem) => Verdict::Fail(problem),
            }
        };
        Ok(Report {
            name,
            label: None,
            verdict,
            answer: Some(answer),
        })
    }

    async fn health(&self) -> anyhow::Result<Report> {
        self.check(CheckName::Health, Ask::get("/health"), |a| {
            match a.json()?["status"].as_str() {
                Some("ok") => Ok("ok".into()),
                _ => Err(format!(
                    "expected {{\"status\":\"ok\"}}, got {}",
                    snippet(&String::from_utf8_lossy(&a.body), 80)
                )),
            }
        })
        .await
    }

    /// `GET /v1/models`, or with `backend` one backend's list (`?backend=NAME`).
    async fn models(&self, backend: Option<&str>) -> anyhow::Result<(Report, ModelList)> {
        let path = match backend {
            Some(b) => format!("/v1/models?backend={b}"),
            None => "/v1/models".to_string(),
        };
        let mut ids = Vec::new();
        let report = self
            .check(CheckName::Models, Ask::get(&path), |a| {
                let v = a.json()?;
                let data = v["data"]
                    .as_array()
                    .ok_or("the JSON has no \"data\" array of models")?;
                ids = data
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect();
                let mut detail = match data.len() {
                    1 => "1 model".to_string(),
                    n => format!("{n} models"),
                };
                if !ids.is_empty() {
                    let shown: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
                    let more = if ids.len() > 3 { ", …" } else { "" };
                    let _ = write!(detail, ": {}{more}", shown.join(", "));
                }
                // The merged list names the backends it had to leave out.
                if let Some(skipped) = a.headers.get("x-models-skipped") {
                    let _ = write!(detail, "; left out: {}", skipped.to_str().unwrap_or("?"));
                }
                Ok(detail)
            })
            .await?;
        let list = match &report.verdict {
            Verdict::Pass(_) => Ok(ids),
            Verdict::Fail(why) => Err(format!("{path} failed ({})", snippet(why, 120))),
            Verdict::Skip { reason, .. } => Err(reason.clone()),
        };
        Ok((report, list))
    }

    /// A chat check with `model`; `guessed`: where the model came from, when it was not
    /// named (said when the check fails).
    async fn chat(
        &self,
        name: CheckName,
        model: &str,
        guessed: Option<&str>,
    ) -> anyhow::Result<Report> {
        let stream = name == CheckName::ChatStream;
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": CHAT_PROMPT}],
        });
        if stream {
            body["stream"] = Value::Bool(true);
        }
        let ask = Ask::post_json("/v1/chat/completions", "application/json", &body);
        let mut report = self
            .check(name, ask, |a| {
                let said = if stream {
                    stream_content(a)?
                } else {
                    let v = a.json()?;
                    let content = v["choices"][0]["message"]["content"]
                        .as_str()
                        .ok_or("the JSON has no choices[0].message.content")?;
                    format!("\"{}\"", snippet(content, 60))
                };
                Ok(format!("model {model}: {said}"))
            })
            .await?;
        if let (Verdict::Fail(why), Some(from)) = (&mut report.verdict, guessed) {
            let _ = write!(
                why,
                " (model \"{model}\" is the first that {from} lists; name yours with \
                 --chat-model)"
            );
        }
        Ok(report)
    }

    async fn speech(&self, model: &str) -> anyhow::Result<Report> {
        let body = json!({
            "model": model,
            "input": SPEECH_TEXT,
            "voice": SPEECH_VOICE,
            "response_format": "mp3",
        });
        let ask = Ask::post_json("/v1/audio/speech", "*/*", &body);
        self.check(CheckName::Speech, ask, |a| {
            let ct = a.content_type();
            let format = audio_format(&a.body);
            let mut problems = Vec::new();
            if !ct.starts_with("audio/") {
                problems.push(format!("content type \"{ct}\" is not audio/*"));
            }
            if a.body.len() < MIN_AUDIO_BYTES {
                problems.push(format!("only {} bytes", a.body.len()));
            }
            if format.is_none() {
                problems.push(format!(
                    "no known audio signature (starts with {})",
                    snippet(
                        &String::from_utf8_lossy(&a.body[..a.body.len().min(16)]),
                        16
                    )
                ));
            }
            match format {
                Some(f) if problems.is_empty() => {
                    Ok(format!("{ct}, {}, {}", human_size(a.body.len()), f.name))
                }
                _ => Err(format!("not audio: {}", problems.join("; "))),
            }
        })
        .await
    }

    async fn transcription(&self, clip: &Clip, model: &str) -> anyhow::Result<Report> {
        let (content_type, body) = multipart(&clip.file_name, clip.mime, &clip.audio, model);
        let ask = Ask {
            method: Method::POST,
            path: "/v1/audio/transcriptions",
            accept: "application/json",
            content_type: Some(&content_type),
            body,
            headers: &[],
        };
        self.check(CheckName::Transcription, ask, |a| {
            let v = a.json()?;
            let text = v["text"]
                .as_str()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or("the JSON has no non-empty \"text\"")?;
            let verdict = if words(text) == words(clip.text) {
                "the words match"
            } else {
                "the words differ"
            };
            Ok(format!(
                "\"{}\" ({}: {verdict})",
                snippet(text, 60),
                clip.origin
            ))
        })
        .await
    }
}
