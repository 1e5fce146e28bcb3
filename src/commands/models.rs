//! `openai-proxy models`: asks a running proxy for its models (`GET /models`: backend and
//! state) and their usage (`GET /usage`: requests and tokens per model) and prints them as a
//! table; `models load|unload NAME` posts to `/models/load` or `/models/unload`. The proxy is
//! found, and the client token sent, as `check-endpoints` does ([`client::locate_proxy`],
//! [`client::api_key`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request as HttpRequest, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::{json, Value};

use super::client::{self, Client, ProxyUrl, SendError, Trust, MAX_CONNECT_TIMEOUT};

/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// What to ask the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The table of models.
    List,
    /// Start a model's server.
    Load(String),
    /// Stop a model's server; `force`: without waiting for its requests in flight.
    Unload {
        /// The model.
        model: String,
        /// Cut the requests in flight.
        force: bool,
    },
}

/// The options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--url`.
    pub url: Option<ProxyUrl>,
    /// How long each exchange may take.
    pub timeout: Duration,
    /// What to do.
    pub action: Request,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    model: String,
    backend: String,
    state: String,
    requests: String,
    tokens: String,
}

/// Runs `models`, printing to `out`.
pub fn run(
    config_flag: Option<&Path>,
    options: &Options,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (url, _) = client::locate_proxy(config_flag, options.url.as_ref())?;
    let auth = client::api_key()?.map(|(value, _)| value);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ask = Asker {
        client: Client::new(
            url,
            options.timeout.min(MAX_CONNECT_TIMEOUT),
            Trust::Roots(Vec::new()),
        )?,
        auth,
        timeout: options.timeout,
    };
    runtime.block_on(async {
        match &options.action {
            Request::List => {
                let (status, models) = ask.exchange(Method::GET, "/models", None).await?;
                if status != StatusCode::OK {
                    bail!("GET /models: {}", refusal(status, &models));
                }
                let (status, usage) = ask.exchange(Method::GET, "/usage", None).await?;
                let usage = (status == StatusCode::OK).then_some(usage);
                out.write_all(table(&rows(&models, usage.as_ref())).as_bytes())?;
                Ok(())
            }
            Request::Load(model) => {
                let body = json!({ "model": model });
                ask.control("/models/load", body, out).await
            }
            Request::Unload { model, force } => {
                let body = json!({ "model": model, "force": force });
                ask.control("/models/unload", body, out).await
            }
        }
    })
}

/// A client of the proxy with the settings of one run.
struct Asker {
    client: Client,
    /// `Authorization: Bearer $OPENAI_API_KEY`, marked sensitive.
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl Asker {
    /// One request; its answer's status and JSON body (`null` when it is not JSON).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = HttpRequest::builder().method(method.clone()).uri(path);
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        let bytes = match &body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .context("cannot build the request")?;
        let at = self.client.url().to_string();
        let exchange = async {
            let res = self.client.send(req).await.map_err(|e| match e {
                SendError::Connect(e) => anyhow!("cannot connect to the proxy at {at}: {e}"),
                SendError::Failed(e) => anyhow!("{method} {path}: {e}"),
            })?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("{method} {path}: no complete answer: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("{path}: no answer from the proxy within {:?}", self.timeout))?
    }

    /// Posts a load or unload and says how it went.
    async fn control(&self, path: &str, body: Value, out: &mut dyn Write) -> anyhow::Result<()> {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let (status, answer) = self.exchange(Method::POST, path, Some(body)).await?;
        if status != StatusCode::OK || answer["success"] != true {
            bail!("{model}: {}", refusal(status, &answer));
        }
        writeln!(
            out,
            "{model}: {} (backend {})",
            answer["status"]["value"].as_str().unwrap_or("?"),
            answer["backend"].as_str().unwrap_or("?")
        )?;
        Ok(())
    }
}

/// The proxy's error message and code, or its status alone.
fn refusal(status: StatusCode, answer: &Value) -> String {
    match (
        answer["error"]["message"].as_str(),
        answer["error"]["code"].as_str(),
    ) {
        (Some(m), Some(c)) => format!("the proxy answered {status}: {m} ({c})"),
        (Some(m), None) => format!("the proxy answered {status}: {m}"),
        _ => format!("the proxy answered {status}"),
    }
}

/// The table's rows: each model of the list, with its usage when there is some.
fn rows(models: &Value, usage: Option<&Value>) -> Vec<Row> {
    let mut used: HashMap<&str, &Value> = HashMap::new();
    if let Some(list) = usage.and_then(|u| u["models"].as_array()) {
        for m in list {
            if let Some(name) = m["model"].as_str() {
                used.insert(name, m);
            }
        }
    }
    let count = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "0".to_string(), |n| n.to_string())
    };
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    models["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap_or_default();
            let (requests, tokens) = match (usage, used.get(id)) {
                (None, _) => ("-".to_string(), "-".to_string()),
                (Some(_), None) => ("0".to_string(), "0/0".to_string()),
                (Some(_), Some(u)) => (
                    count(&u["requests"]),
                    format!(
                        "{}/{}",
                        count(&u["prompt_tokens"]),
                        count(&u["completion_tokens"])
                    ),
                ),
            };
            Row {
                model: id.to_string(),
                backend: text(&m["backend"]),
                state: text(&m["status"]["value"]),
                requests,
                tokens,
            }
        })
        .collect()
}

/// The rows under a heading, in aligned columns.
fn table(rows: &[Row]) -> String {
    let heading = Row {
        model: "MODEL".into(),
        backend: "BACKEND".into(),
        state: "STATE".into(),
        requests: "REQUESTS".into(),
        tokens: "TOKENS (IN/OUT)".into(),
    };
    let all: Vec<&Row> = std::iter::once(&heading).chain(rows).collect();
    let width = |f: fn(&Row) -> &str| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (m, b, s, r) = (
        width(|r| &r.model),
        width(|r| &r.backend),
        width(|r| &r.state),
        width(|r| &r.requests),
    );
    let mut text = String::new();
    for row in all {
        let line = format!(
            "{:m$}  {:b$}  {:s$}  {:>r$}  {}",
            row.model, row.backend, row.state, row.requests, row.tokens
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if rows.is_empty() {
        text.push_str("(no models)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_joins_models_and_usage() {
        let models = json!({"object": "list", "data": [
            {"id": "llama3", "backend": "ollama", "status": {"value": "loaded"}},
            {"id": "qwen", "backend": "chat", "status": {"value": "unloaded"}}]});
        let usage = json!({"models": [
            {"model": "llama3", "requests": 3, "prompt_tokens": 30, "completion_tokens": 12}]});
        assert_eq!(
            table(&rows(&models, Some(&usage))),
            "MODEL   BACKEND  STATE     REQUESTS  TOKENS (IN/OUT)\n\
             llama3  ollama   loaded           3  30/12\n\
             qwen    chat     unloaded         0  0/0\n"
        );
        let none = table(&rows(&models, None));
        assert!(
            none.contains("llama3  ollama   loaded           -  -\n"),
            "{none}"
        );
        assert_eq!(
            table(&[]),
            "MODEL  BACKEND  STATE  REQUESTS  TOKENS (IN/OUT)\n(no models)\n"
        );
    }

    #[test]
    fn refusals_show_the_proxys_message() {
        let answer = json!({"error": {"message": "no", "code": "model_not_on_demand"}});
        assert_eq!(
            refusal(StatusCode::BAD_REQUEST, &answer),
            "the proxy answered 400 Bad Request: no (model_not_on_demand)"
        );
        assert_eq!(
            refusal(StatusCode::BAD_GATEWAY, &Value::Null),
            "the proxy answered 502 Bad Gateway"
        );
    }
}
