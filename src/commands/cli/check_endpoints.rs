//! The `check-endpoints` command's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use super::parse_timeout;
use crate::commands::check_endpoints::{self, CheckName, ClientApi};
use crate::commands::client::{parse_proxy_url, ProxyUrl};

/// `check-endpoints`.
#[derive(Debug, Clone, Args)]
pub struct CheckEndpointsArgs {
    /// The proxy's base URL, e.g. http://127.0.0.1:2020 or https://proxy.lan:2020.
    ///
    /// http:// or https:// (a proxy with server.tls_cert); a missing scheme means http://, and
    /// a trailing /v1 is removed, so an OPENAI_BASE_URL value works too. Default:
    /// $OPENAI_BASE_URL, else the first IP:PORT in the config's server.listen (0.0.0.0 and
    /// [::] are reached through 127.0.0.1 and [::1]; https:// when the config has
    /// server.tls_cert), else its first unix: socket.
    #[arg(long, value_name = "URL", value_parser = parse_proxy_url)]
    pub url: Option<ProxyUrl>,

    /// CA certificates (PEM) to check an https:// proxy's certificate against, besides the
    /// bundled web roots (e.g. the private CA that signed server.tls_cert).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Also print each response body (text cut after 1000 characters; audio as its size).
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Also print each response's headers (credentials redacted).
    #[arg(long = "headers", short = 'H')]
    pub headers: bool,

    /// Run only these checks (several after one --only, comma-separated, or --only repeated).
    ///
    /// The checks always run in the order health, models, chat, chat-stream, speech,
    /// transcription. A check named here that is skipped makes the exit status 1.
    #[arg(long, value_name = "NAME", num_args = 1.., value_delimiter = ',')]
    pub only: Vec<CheckName>,

    /// How long each check's request may take, from connecting to the last byte of the
    /// response (e.g. "30s", "2m").
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = parse_timeout
    )]
    pub timeout: Duration,

    /// The model for the chat checks.
    ///
    /// Default: the first model that the backend of the chat route lists and that route takes
    /// (asked for with GET /v1/models?backend=NAME; the route is found in the config, see
    /// --config). Without a readable config: the first model /v1/models lists.
    #[arg(long, value_name = "MODEL")]
    pub chat_model: Option<String>,

    /// Also check that the model NAME reaches the backend the config sends it to (repeat for
    /// several).
    ///
    /// Sends the request its route serves (a chat completion, a transcription, speech or an
    /// embedding; a chat completion when no route names the model) and passes when the
    /// backend the config sends NAME to answers (X-Backend) with a well-formed answer. These
    /// checks run after the others, whatever --only says.
    #[arg(long, value_name = "NAME")]
    pub model: Vec<String>,

    /// Also check a client API beyond Chat Completions (several after one --api,
    /// comma-separated, or --api repeated).
    ///
    /// Each sends one streamed request of that API with the --chat-model (default: the first
    /// model of the API's own list) and passes when the stream is complete: ollama
    /// (GET /api/tags, then POST /api/chat as NDJSON ending "done": true), anthropic
    /// (POST /v1/messages with anthropic-version, typed events ending in message_stop; no
    /// Anthropic key is sent, the proxy puts its own), responses (POST /v1/responses, typed
    /// events ending in response.completed). Default: each API the config has a route of its
    /// own for (/api, /v1/messages, /v1/responses); none with --only. They run after the
    /// other checks.
    #[arg(long, value_name = "API", num_args = 1.., value_delimiter = ',')]
    pub api: Vec<ClientApi>,
}

impl ValueEnum for ClientApi {
    fn value_variants<'a>() -> &'a [Self] {
        &ClientApi::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            ClientApi::Ollama => "Ollama's native API: /api/tags, /api/chat",
            ClientApi::Anthropic => "Anthropic's Messages API: /v1/messages",
            ClientApi::Responses => "OpenAI's Responses API: /v1/responses",
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

impl ValueEnum for CheckName {
    fn value_variants<'a>() -> &'a [Self] {
        &CheckName::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            CheckName::Health => {
                "GET /health: the proxy itself answers {\"status\":\"ok\"}; then each server of a pool"
            }
            CheckName::Models => "GET /v1/models: a JSON list of models",
            CheckName::Chat => "POST /v1/chat/completions: one JSON answer",
            CheckName::ChatStream => {
                "POST /v1/chat/completions with \"stream\": true: server-sent events ending in [DONE]"
            }
            CheckName::Speech => "POST /v1/audio/speech: audio",
            CheckName::Transcription => "POST /v1/audio/transcriptions: JSON with the text",
            // Not values of --only: it runs for each --model, they for each --api.
            CheckName::Model
            | CheckName::Ollama
            | CheckName::Anthropic
            | CheckName::Responses => return None,
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

impl From<&CheckEndpointsArgs> for check_endpoints::Options {
    fn from(a: &CheckEndpointsArgs) -> Self {
        check_endpoints::Options {
            url: a.url.clone(),
            verbose: a.verbose,
            headers: a.headers,
            only: a.only.clone(),
            timeout: a.timeout,
            chat_model: a.chat_model.clone(),
            models: a.model.clone(),
            apis: a.api.clone(),
            ca_file: a.ca_file.clone(),
        }
    }
}
