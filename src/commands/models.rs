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
                out.write_all(model_table(&models, usage.as_ref()).as_bytes())?;
                if let Some(clients) = usage.as_ref().and_then(client_table) {
                    writeln!(out)?;
                    out.write_all(clients.as_bytes())?;
                }
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

/// The models of the list, each with its usage when there is some.
fn model_table(models: &Value, usage: Option<&Value>) -> String {
    let mut used: HashMap<&str, &Value> = HashMap::new();
    if let Some(list) = usage.and_then(|u| u["models"].as_array()) {
        for m in list {
            if let Some(name) = m["model"].as_str() {
                used.insert(name, m);
            }
        }
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = list(&models["data"])
        .iter()
        .map(|m| {
            let id = m["id"].as_str().unwrap_or_default();
            let (requests, tokens) = match (usage, used.get(id)) {
                (None, _) => ("-".to_string(), "-".to_string()),
                (Some(_), None) => ("0".to_string(), "0/0".to_string()),
                (Some(_), Some(u)) => (count(&u["requests"]), in_out(u)),
            };
            vec![
                id.to_string(),
                text(&m["backend"]),
                text(&m["status"]["value"]),
                requests,
                tokens,
            ]
        })
        .collect();
    let heading = ["MODEL", "BACKEND", "STATE", "REQUESTS", "TOKENS (IN/OUT)"];
    let mut text = columns(&heading, &rows, &[3]);
    if rows.is_empty() {
        text.push_str("(no models)\n");
    }
    text
}

/// The named clients: their totals, and for those with limits, what they use of them now
/// (`None` when the proxy has no named client).
fn client_table(usage: &Value) -> Option<String> {
    let limits = list(&usage["limits"]);
    let mut names: Vec<&str> = list(&usage["clients"])
        .iter()
        .filter_map(|c| c["client"].as_str().filter(|n| !n.is_empty()))
        .collect();
    for l in limits {
        if let Some(n) = l["client"].as_str() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    let find = |of: &Value, name: &str| -> Option<Value> {
        list(of).iter().find(|c| c["client"] == name).cloned()
    };
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            let totals = find(&usage["clients"], name).unwrap_or(Value::Null);
            let limit = find(&usage["limits"], name);
            let (in_flight, today, words) = match &limit {
                Some(l) => (
                    count(&l["in_flight"]),
                    count(&l["tokens_today"]),
                    limit_words(l),
                ),
                None => ("-".into(), "-".into(), "no limits".into()),
            };
            vec![
                (*name).to_string(),
                count(&totals["requests"]),
                in_out(&totals),
                in_flight,
                today,
                words,
            ]
        })
        .collect();
    let heading = [
        "CLIENT",
        "REQUESTS",
        "TOKENS (IN/OUT)",
        "IN FLIGHT",
        "TODAY",
        "LIMITS",
    ];
    Some(columns(&heading, &rows, &[1, 3, 4]))
}

/// A client's limits in words: `2 at once, 10000 tokens/day`.
fn limit_words(l: &Value) -> String {
    let words: Vec<String> = [
        ("max_concurrent", " at once"),
        ("requests_per_minute", " requests/min"),
        ("tokens_per_minute", " tokens/min"),
        ("tokens_per_day", " tokens/day"),
    ]
    .iter()
    .filter_map(|(key, what)| Some(format!("{}{what}", l[*key].as_u64()?)))
    .collect();
    words.join(", ")
}

/// The items of a JSON array (none when it is not one).
fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A count, `0` when absent.
fn count(v: &Value) -> String {
    v.as_u64().unwrap_or(0).to_string()
}

/// `PROMPT/COMPLETION` tokens of a model's or client's totals.
fn in_out(totals: &Value) -> String {
    format!(
        "{}/{}",
        count(&totals["prompt_tokens"]),
        count(&totals["completion_tokens"])
    )
}

/// Rows in aligned columns under `heading`; the columns in `right` are aligned right.
fn columns(heading: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let head: Vec<String> = heading.iter().map(|h| (*h).to_string()).collect();
    let all: Vec<&Vec<String>> = std::iter::once(&head).chain(rows).collect();
    let width = |i: usize| {
        all.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..heading.len()).map(width).collect();
    let mut text = String::new();
    for row in all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let w = widths[i];
            if right.contains(&i) {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:w$}"));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
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
            model_table(&models, Some(&usage)),
            "MODEL   BACKEND  STATE     REQUESTS  TOKENS (IN/OUT)\n\
             llama3  ollama   loaded           3  30/12\n\
             qwen    chat     unloaded         0  0/0\n"
        );
        let none = model_table(&models, None);
        assert!(
            none.contains("llama3  ollama   loaded           -  -\n"),
            "{none}"
        );
        assert_eq!(
            model_table(&json!({"data": []}), None),
            "MODEL  BACKEND  STATE  REQUESTS  TOKENS (IN/OUT)\n(no models)\n"
        );
    }

    #[test]
    fn the_clients_table_joins_totals_and_limits() {
        let usage = json!({
            "clients": [
                {"client": "", "requests": 1, "prompt_tokens": 1, "completion_tokens": 1},
                {"client": "guest", "requests": 12, "prompt_tokens": 300, "completion_tokens": 120},
                {"client": "alice", "requests": 2, "prompt_tokens": 20, "completion_tokens": 4}],
            "limits": [
                {"client": "guest", "in_flight": 1, "tokens_today": 420, "refused": 0,
                 "max_concurrent": 2, "tokens_per_day": 10000},
                {"client": "idle", "in_flight": 0, "tokens_today": 0, "refused": 0,
                 "requests_per_minute": 60}]});
        assert_eq!(
            client_table(&usage).unwrap(),
            "CLIENT  REQUESTS  TOKENS (IN/OUT)  IN FLIGHT  TODAY  LIMITS\n\
             alice          2  20/4                     -      -  no limits\n\
             guest         12  300/120                  1    420  2 at once, 10000 tokens/day\n\
             idle           0  0/0                      0      0  60 requests/min\n"
        );
        assert_eq!(client_table(&json!({"clients": [{"client": ""}]})), None);
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
