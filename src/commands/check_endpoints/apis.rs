//! The checks of the client APIs beyond Chat Completions (`--api`, or each API the config
//! routes): Ollama's native API (`GET /api/tags`, then `POST /api/chat` streamed as NDJSON),
//! Anthropic's Messages API (`POST /v1/messages` streamed as its typed events, with
//! `anthropic-version`; no Anthropic key is sent: the proxy is expected to put its own) and
//! OpenAI's Responses API (`POST /v1/responses` streamed as its typed events).

use serde_json::{json, Value};

use super::report::{snippet, Ask, Exchange, Report, Verdict};
use super::{CheckName, Checker, CHAT_PROMPT};
use crate::routing::routes::{under, Router};

/// The API version the Anthropic check says it speaks.
const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

/// A client API `check-endpoints` can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientApi {
    /// Ollama's native API.
    Ollama,
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Responses API.
    Responses,
}

impl ClientApi {
    /// Every API, in the order they are checked.
    pub const ALL: [ClientApi; 3] = [
        ClientApi::Ollama,
        ClientApi::Anthropic,
        ClientApi::Responses,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApi::Ollama => "ollama",
            ClientApi::Anthropic => "anthropic",
            ClientApi::Responses => "responses",
        }
    }

    /// Its check.
    fn check(self) -> CheckName {
        match self {
            ClientApi::Ollama => CheckName::Ollama,
            ClientApi::Anthropic => CheckName::Anthropic,
            ClientApi::Responses => CheckName::Responses,
        }
    }

    /// The path whose route says the config serves it.
    fn path(self) -> &'static str {
        match self {
            ClientApi::Ollama => "/api/chat",
            ClientApi::Anthropic => "/v1/messages",
            ClientApi::Responses => "/v1/responses",
        }
    }

    /// The prefix of a route that is for this API (not a `/v1` route for everything).
    fn own_prefix(self) -> &'static str {
        match self {
            ClientApi::Ollama => "/api",
            ClientApi::Anthropic => "/v1/messages",
            ClientApi::Responses => "/v1/responses",
        }
    }
}

/// The APIs a config routes: those with a route of their own (`/api...`, `/v1/messages...`,
/// `/v1/responses...`).
pub(super) fn routed(routes: &Router<String>) -> Vec<ClientApi> {
    ClientApi::ALL
        .into_iter()
        .filter(|api| {
            routes
                .candidates(api.path())
                .any(|m| under(&m.route.prefix, api.own_prefix()))
        })
        .collect()
}

impl Checker {
    /// The check of one API, with `model` (else the first the API's own list gives).
    pub(super) async fn api_check(
        &self,
        api: ClientApi,
        model: Option<&str>,
    ) -> anyhow::Result<Report> {
        let model = match model {
            Some(m) => m.to_string(),
            None => match self.first_model(api).await? {
                Ok(m) => m,
                Err(why) => return Ok(Report::skip(api.check(), why)),
            },
        };
        let mut report = match api {
            ClientApi::Ollama => {
                let body = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": CHAT_PROMPT}],
                    "stream": true,
                });
                let ask = Ask::post_json("/api/chat", "application/x-ndjson", &body);
                self.check(api.check(), ask, ndjson_content).await?
            }
            ClientApi::Anthropic => {
                let body = json!({
                    "model": model,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": CHAT_PROMPT}],
                    "stream": true,
                });
                let mut ask = Ask::post_json("/v1/messages", "text/event-stream", &body);
                ask.headers = &[ANTHROPIC_VERSION];
                self.check(api.check(), ask, |a| {
                    events(a, "message_stop", |v| {
                        v["delta"]["text"].as_str().map(str::to_string)
                    })
                })
                .await?
            }
            ClientApi::Responses => {
                let body = json!({"model": model, "input": CHAT_PROMPT, "stream": true});
                let ask = Ask::post_json("/v1/responses", "text/event-stream", &body);
                self.check(api.check(), ask, |a| {
                    events(a, "response.completed", |v| {
                        (v["type"] == "response.output_text.delta")
                            .then(|| v["delta"].as_str().map(str::to_string))
                            .flatten()
                    })
                })
                .await?
            }
        };
        if let Verdict::Pass(detail) = &mut report.verdict {
            *detail = format!("model {model}: {detail}");
        }
        Ok(report)
    }

    /// The first model of the API's own list: Ollama's `/api/tags`, Anthropic's
    /// `/v1/models` (asked as an Anthropic client), OpenAI's `/v1/models`.
    async fn first_model(&self, api: ClientApi) -> anyhow::Result<Result<String, String>> {
        let (path, headers, key): (_, &'static [(&str, &str)], _) = match api {
            ClientApi::Ollama => ("/api/tags", &[], ("models", "name")),
            ClientApi::Anthropic => ("/v1/models", &[ANTHROPIC_VERSION], ("data", "id")),
            ClientApi::Responses => ("/v1/models", &[], ("data", "id")),
        };
        let mut ask = Ask::get(path);
        ask.headers = headers;
        let no_model = |why: String| {
            Ok(Err(format!(
                "no model to ask: {why}; name one with --chat-model"
            )))
        };
        let a = match self.send(ask).await {
            Ok(a) => a,
            Err(super::SendError::Connect(msg)) => return Err(anyhow::anyhow!(msg)),
            Err(super::SendError::Failed(msg)) => return no_model(format!("{path}: {msg}")),
        };
        if a.status != http::StatusCode::OK {
            return no_model(format!("{path} answered {}: {}", a.status, a.error_text()));
        }
        let first = a.json().ok().and_then(|v| {
            v[key.0].as_array()?.first()?[key.1]
                .as_str()
                .map(str::to_string)
        });
        match first {
            Some(m) => Ok(Ok(m)),
            None => no_model(format!("{path} lists no model")),
        }
    }
}

/// Reads an Ollama NDJSON stream: JSON lines, the last with `"done": true`.
fn ndjson_content(a: &Exchange) -> Result<String, String> {
    let text = std::str::from_utf8(&a.body).map_err(|_| "the stream is not UTF-8 text")?;
    let mut said = String::new();
    let mut lines = 0usize;
    let mut done = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|_| format!("line {} is not JSON: {}", lines + 1, snippet(line, 80)))?;
        if let Some(e) = v["error"].as_str() {
            return Err(format!("the stream carried an error: {}", snippet(e, 120)));
        }
        lines += 1;
        if let Some(piece) = v["message"]["content"].as_str() {
            said.push_str(piece);
        }
        done = v["done"] == true;
    }
    if !done {
        return Err(format!(
            "{lines} lines but none ends the stream with \"done\": true (content type \"{}\")",
            a.content_type()
        ));
    }
    Ok(format!("{lines} lines, done, \"{}\"", snippet(&said, 60)))
}

/// Reads a stream of typed events (`event:`/`data:`), which must end with event `last`;
/// `text` takes what each event says.
fn events(
    a: &Exchange,
    last: &str,
    text: impl Fn(&Value) -> Option<String>,
) -> Result<String, String> {
    let body = std::str::from_utf8(&a.body).map_err(|_| "the stream is not UTF-8 text")?;
    let mut said = String::new();
    let mut count = 0usize;
    let mut ended = false;
    for data in body.lines().filter_map(|l| l.strip_prefix("data:")) {
        let v: Value = serde_json::from_str(data.trim())
            .map_err(|_| format!("event {} is not JSON: {}", count + 1, snippet(data, 80)))?;
        if v["type"] == "error" {
            return Err(format!(
                "the stream carried an error: {}",
                snippet(&v["error"].to_string(), 120)
            ));
        }
        count += 1;
        if let Some(piece) = text(&v) {
            said.push_str(&piece);
        }
        ended = v["type"] == last;
    }
    if count == 0 {
        return Err(format!(
            "no events (content type \"{}\"): {}",
            a.content_type(),
            snippet(body, 80)
        ));
    }
    if !ended {
        return Err(format!("{count} events but the last is not {last}"));
    }
    Ok(format!(
        "{count} events, {last}, \"{}\"",
        snippet(&said, 60)
    ))
}
