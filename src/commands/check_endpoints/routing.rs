//! Routing by model, as the checks see it: the chat model is picked from what the chat
//! route's own backend lists (`GET /v1/models?backend=NAME`), and `--model NAME` checks that a
//! model reaches the backend the config sends it to.

use std::path::Path;

use serde_json::json;

use super::audio::built_in_clip;
use super::report::{Ask, Exchange, Report, Verdict};
use super::{CheckName, Checker, ModelList};
use crate::config;
use crate::routing::routes::Router;

const CHAT_PATH: &str = "/v1/chat/completions";

/// A chat model and where it was picked from (`None`: named with `--chat-model`), or why
/// there is none.
pub(super) type Picked = Result<(String, Option<String>), String>;

/// The kinds of request a model is checked with.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Chat,
    Transcription,
    Speech,
    Embeddings,
}

/// Each kind's path, in the order a model's route is looked for.
const PROBES: [(&str, Probe); 4] = [
    (CHAT_PATH, Probe::Chat),
    ("/v1/audio/transcriptions", Probe::Transcription),
    ("/v1/audio/speech", Probe::Speech),
    ("/v1/embeddings", Probe::Embeddings),
];

/// The config's routes with backend names as targets (the config `serve` would use), or why
/// it could not be read.
pub(super) fn routes(config_flag: Option<&Path>) -> Result<Router<String>, String> {
    let c = config::load(config_flag).map_err(|e| {
        let text = e.to_string();
        text.lines().next().unwrap_or_default().to_string()
    })?;
    c.router(|r| Ok(r.backend.clone()))
        .map_err(|e| e.to_string())
}

fn no_model(why: &str) -> String {
    format!("no model to chat with: {why}; name one with --chat-model")
}

impl Checker {
    /// The model for the chat checks: the first that the chat route's own backend lists and
    /// its route takes. Without the config (or a chat route in it): the first model
    /// `/v1/models` lists.
    pub(super) async fn pick_chat_model(
        &self,
        models: &mut Option<ModelList>,
    ) -> anyhow::Result<Picked> {
        let chat = self
            .routes
            .as_ref()
            .ok()
            .and_then(|r| Some((r, r.find(CHAT_PATH)?.route.target.clone())));
        let Some((routes, backend)) = chat else {
            let list = match models {
                Some(l) => l.clone(),
                None => {
                    // Not selected: asked quietly, only for a model name.
                    let l = self.models(None).await?.1;
                    *models = Some(l.clone());
                    l
                }
            };
            return Ok(match list {
                Ok(ids) => ids
                    .into_iter()
                    .next()
                    .map(|id| (id, Some("/v1/models".to_string())))
                    .ok_or_else(|| no_model("/v1/models lists none")),
                Err(why) => Err(no_model(&why)),
            });
        };
        let from = format!("backend {backend}");
        Ok(match self.models(Some(&backend)).await?.1 {
            Ok(ids) => ids
                .into_iter()
                .find(|id| {
                    routes
                        .find_for_model(CHAT_PATH, Some(id))
                        .is_some_and(|m| m.route.target == backend)
                })
                .map(|id| (id, Some(from.clone())))
                .ok_or_else(|| no_model(&format!("{from} lists no model its chat route takes"))),
            Err(why) => Err(no_model(&why)),
        })
    }

    /// `--model NAME`: a request for `name` of the kind its route serves (chat when no route
    /// names it) must be answered by the backend the config sends it to, with a well-formed
    /// answer of that kind.
    pub(super) async fn model_check(&self, name: &str) -> anyhow::Result<Report> {
        let fail = |why: String| Report {
            name: CheckName::Model,
            label: Some(format!("model {name}")),
            verdict: Verdict::Fail(why),
            answer: None,
        };
        let routes = match &self.routes {
            Ok(r) => r,
            Err(why) => {
                return Ok(fail(format!(
                    "cannot tell which backend should answer: the config does not load ({why})"
                )))
            }
        };
        let (path, probe) = PROBES
            .into_iter()
            .find(|(p, _)| {
                routes
                    .find_for_model(p, Some(name))
                    .is_some_and(|m| m.route.models.is_some())
            })
            .unwrap_or(PROBES[0]);
        let Some(expected) = routes
            .find_for_model(path, Some(name))
            .map(|m| m.route.target.clone())
        else {
            return Ok(fail(format!(
                "the config has no route for {path} that takes it"
            )));
        };
        let mut report = match probe {
            Probe::Chat => self.chat(CheckName::Model, name, None).await?,
            Probe::Transcription => self.transcription(&built_in_clip(), name).await?,
            Probe::Speech => self.speech(name).await?,
            Probe::Embeddings => self.embeddings(name).await?,
        };
        report.name = CheckName::Model;
        report.label = Some(format!("model {name}"));
        let answered = report.answer.as_ref().and_then(Exchange::backend);
        if answered != Some(expected.as_str()) {
            let who = answered.map_or("the proxy itself".to_string(), |b| format!("backend {b}"));
            report.verdict = Verdict::Fail(format!(
                "{who} answered {path}, but the config sends {name} there to {expected}"
            ));
        } else if let Verdict::Pass(detail) = &mut report.verdict {
            *detail = format!("{path} → {expected}, as the config says: {detail}");
        }
        Ok(report)
    }

    async fn embeddings(&self, model: &str) -> anyhow::Result<Report> {
        let body = json!({"model": model, "input": "ping"});
        let ask = Ask::post_json("/v1/embeddings", "application/json", &body);
        self.check(CheckName::Model, ask, |a| {
            let v = a.json()?;
            let dims = v["data"][0]["embedding"]
                .as_array()
                .ok_or("the JSON has no data[0].embedding")?
                .len();
            Ok(format!("an embedding of {dims} dimensions"))
        })
        .await
    }
}
