//! The official OpenAI Python SDK on the Responses API through the proxy: a streamed response
//! as typed events, in order and as they were sent; a follow-up (`previous_response_id`), a
//! retrieve and a delete reaching the server of the pool that made the response, the only
//! one that has it.

use std::time::Duration;

use serde_json::Value;

use crate::support::api_mocks::{self, answer, model_of, on_path};
use crate::support::start_proxy;
use crate::support::tools::{self, run_python};

const CLIENT_KEY: &str = "sk-sdk-responses-0123456789";
const GAP: Duration = Duration::from_millis(150);

async fn sdk(base: String, mode: &str, model: &str) -> Value {
    tools::require_python_module("openai");
    let env = [
        ("OPENAI_BASE_URL", base),
        ("OPENAI_API_KEY", CLIENT_KEY.into()),
    ];
    run_python("sdk_responses.py", &[mode, model], env).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_streams_a_response_as_typed_events_as_they_are_sent() {
    let local = api_mocks::responses("local", GAP).await;
    let cloud = api_mocks::responses("cloud", GAP).await;
    let proxy = start_proxy(&format!(
        "[backends.local]\nurl = \"{}\"\n[backends.cloud]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1/responses\"\nbackend = \"local\"\nmodels = [\"llama*\"]\n\
         [[route]]\npath = \"/v1/responses\"\nbackend = \"cloud\"\n",
        local.url(),
        cloud.url()
    ))
    .await;

    let v = sdk(proxy.url("/v1"), "stream", "llama3.2").await;
    let events = v["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i, "{e}");
    }
    let deltas: Vec<&Value> = events.iter().filter(|e| e["delta"].is_string()).collect();
    let text: String = deltas
        .iter()
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, answer("local"));
    for pair in deltas.windows(2) {
        let apart = pair[1]["at"].as_f64().unwrap() - pair[0]["at"].as_f64().unwrap();
        assert!(
            apart >= 0.1,
            "two deltas sent {GAP:?} apart arrived {apart:.3}s apart: {events:?}"
        );
    }
    assert_eq!(v["completed"]["id"], "resp_local_2");
    assert_eq!(v["completed"]["text"], answer("local"));
    assert_eq!(v["completed"]["output_tokens"], 3);

    // The SDK's warm-up stream, then the one timed.
    let posts = on_path(&local, "/v1/responses");
    assert_eq!(posts.len(), 2);
    for p in &posts {
        assert_eq!(model_of(p), "llama3.2");
        assert_eq!(p.header("authorization"), None);
    }
    assert!(cloud.requests().is_empty());
    proxy.stop().await;
}

/// Needs the proxy to send a request about a response (`previous_response_id`, or its id in
/// the path) to the server of the pool that made it: on its own, the pool sends each request
/// to the next server in turn (none has more in flight), which does not have it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_follow_ups_and_retrieves_reach_the_pool_server_that_made_the_response() {
    let a = api_mocks::responses("a", Duration::ZERO).await;
    let b = api_mocks::responses("b", Duration::ZERO).await;
    let proxy = start_proxy(&format!(
        "[backends.pool]\nurls = [\"{}\", \"{}\"]\n\
         [[route]]\npath = \"/v1\"\nbackend = \"pool\"\n",
        a.url(),
        b.url()
    ))
    .await;

    let v = sdk(proxy.url("/v1"), "follow", "llama3.2").await;
    let first = v["first"]["id"].as_str().unwrap().to_string();
    // resp_a_1 or resp_b_1: the server that made it.
    let (maker, other, name) = if first.starts_with("resp_a_") {
        (&a, &b, "a")
    } else {
        (&b, &a, "b")
    };
    assert_eq!(v["first"]["text"], answer(name));
    assert_eq!(v["second"]["text"], answer(name), "{v}");
    assert_eq!(v["second"]["previous"], first.as_str());
    let second = v["second"]["id"].as_str().unwrap();
    assert_eq!(v["retrieved"], serde_json::json!([first, second]));
    assert_eq!(v["deleted"], first.as_str());

    // Every request went to the maker, in order; the other server got none.
    let seen: Vec<String> = maker
        .requests()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(
        seen,
        [
            "POST /v1/responses".to_string(),
            "POST /v1/responses".to_string(),
            format!("GET /v1/responses/{first}"),
            format!("GET /v1/responses/{second}"),
            format!("DELETE /v1/responses/{first}"),
        ]
    );
    let follow: Value = serde_json::from_slice(&maker.requests()[1].body).unwrap();
    assert_eq!(follow["previous_response_id"], first.as_str());
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    proxy.stop().await;
}
