//! Backends in the shape of the APIs real clients speak, recording what they got (path with
//! query, headers, body): Anthropic's Messages API and OpenAI's Responses API, plain JSON and
//! streamed as typed server-sent events, the text deltas `gap` apart. Each names itself in its
//! answers ("Hello from NAME"), so a client's output says which backend answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::mock::{channel_body, collect, full, handler, Mock, MockBody, Seen};

/// The words of every answer, one text delta each: "Hello from NAME".
pub fn words(name: &str) -> [String; 3] {
    ["Hello".into(), " from".into(), format!(" {name}")]
}

pub fn answer(name: &str) -> String {
    words(name).concat()
}

/// A JSON answer.
pub fn json_reply(status: StatusCode, v: &Value) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap()
}

/// One server-sent event: `event: NAME` and its JSON data, sent `delay` after the one before.
struct Event {
    name: String,
    data: Value,
    delay: Duration,
}

fn event(data: Value) -> Event {
    let name = data["type"].as_str().unwrap_or_default().to_string();
    Event {
        name,
        data,
        delay: Duration::ZERO,
    }
}

/// A `text/event-stream` answer that sends each event after its delay.
fn event_stream(events: Vec<Event>) -> Response<MockBody> {
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for e in events {
            tokio::time::sleep(e.delay).await;
            let text = format!("event: {}\ndata: {}\n\n", e.name, e.data);
            if tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

/// A mock whose `answer` sees each request whole, after it was recorded.
async fn recording<F>(answer: F) -> Mock
where
    F: Fn(&Seen) -> Response<MockBody> + Send + Sync + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let mut m = Mock::start(handler(move |req| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let s = collect(req).await;
            log.lock().unwrap().push(s.clone());
            answer(&s)
        }
    }))
    .await;
    m.seen = seen;
    m
}

fn body_json(s: &Seen) -> Value {
    serde_json::from_slice(&s.body).unwrap_or_default()
}

/// Anthropic's Messages API: `POST /v1/messages` (JSON, or the streamed events when the body
/// says `"stream": true`) and `POST /v1/messages/count_tokens` (`{"input_tokens": 42}`);
/// anything else gets Anthropic's 404 error.
pub async fn anthropic(name: &'static str, gap: Duration) -> Mock {
    recording(move |s| {
        let req = body_json(s);
        match (s.method.clone(), s.uri.path()) {
            (Method::POST, "/v1/messages/count_tokens") => {
                json_reply(StatusCode::OK, &json!({"input_tokens": 42}))
            }
            (Method::POST, "/v1/messages") if req["stream"] == true => {
                event_stream(message_events(name, &req["model"], gap))
            }
            (Method::POST, "/v1/messages") => {
                let mut m = message(name, &req["model"]);
                m["content"] = json!([{"type": "text", "text": answer(name)}]);
                m["stop_reason"] = json!("end_turn");
                m["usage"]["output_tokens"] = json!(3);
                json_reply(StatusCode::OK, &m)
            }
            _ => json_reply(
                StatusCode::NOT_FOUND,
                &json!({"type": "error", "error": {"type": "not_found_error",
                    "message": format!("{name} has no {}", s.uri.path())}}),
            ),
        }
    })
    .await
}

fn message(name: &str, model: &Value) -> Value {
    json!({"id": format!("msg_{name}"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 1}})
}

/// Anthropic's streamed message, each text delta `gap` after the event before it.
fn message_events(name: &str, model: &Value, gap: Duration) -> Vec<Event> {
    let mut events = vec![
        event(json!({"type": "message_start", "message": message(name, model)})),
        event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})),
    ];
    for w in words(name) {
        events.push(Event {
            delay: gap,
            ..event(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": w}}))
        });
    }
    events.extend([
        event(json!({"type": "content_block_stop", "index": 0})),
        event(json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 3}})),
        event(json!({"type": "message_stop"})),
    ]);
    events
}

/// OpenAI's Responses API, with the responses it made kept by id as OpenAI keeps stored ones:
/// `POST /v1/responses` (JSON, or the typed events when `"stream": true`; a
/// `previous_response_id` it did not make gets OpenAI's 404 `previous_response_not_found`),
/// `GET` and `DELETE /v1/responses/{id}` (404 for an id it did not make). Its ids name it:
/// `resp_NAME_1`, …
pub async fn responses(name: &'static str, gap: Duration) -> Mock {
    let made: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let count = AtomicUsize::new(0);
    recording(move |s| {
        let path = s.uri.path();
        let id = path.strip_prefix("/v1/responses/").unwrap_or_default();
        let mut made = made.lock().unwrap();
        match s.method.clone() {
            Method::POST if path == "/v1/responses" => {
                let req = body_json(s);
                if let Some(prev) = req["previous_response_id"].as_str() {
                    if !made.contains_key(prev) {
                        return not_found(prev, Some("previous_response_id"));
                    }
                }
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let done = response(&format!("resp_{name}_{n}"), name, &req);
                made.insert(done["id"].as_str().unwrap().to_string(), done.clone());
                if req["stream"] == true {
                    event_stream(response_events(done, name, gap))
                } else {
                    json_reply(StatusCode::OK, &done)
                }
            }
            Method::GET if made.contains_key(id) => json_reply(StatusCode::OK, &made[id]),
            Method::DELETE if made.remove(id).is_some() => json_reply(
                StatusCode::OK,
                &json!({"id": id, "object": "response.deleted", "deleted": true}),
            ),
            _ => not_found(id, None),
        }
    })
    .await
}

/// OpenAI's 404 for a response it does not have: the one a request follows up on (`param`
/// `previous_response_id`), or the one in the path.
fn not_found(id: &str, param: Option<&str>) -> Response<MockBody> {
    let (message, code) = match param {
        Some(_) => ("Previous response", "previous_response_not_found"),
        None => ("Response", "not_found"),
    };
    json_reply(
        StatusCode::NOT_FOUND,
        &json!({"error": {"message": format!("{message} with id '{id}' not found."),
            "type": "invalid_request_error", "param": param, "code": code}}),
    )
}

/// A completed response to `req`, saying "Hello from NAME".
fn response(id: &str, name: &str, req: &Value) -> Value {
    json!({"id": id, "object": "response", "created_at": 1, "status": "completed",
        "model": req["model"], "previous_response_id": req["previous_response_id"],
        "output": [output_item(name, &answer(name), "completed")],
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 15}})
}

fn output_item(name: &str, text: &str, status: &str) -> Value {
    let content = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"id": format!("msg_{name}"), "type": "message", "status": status,
        "role": "assistant", "content": content})
}

/// The Responses API's streamed events for `done`, each text delta `gap` after the event
/// before it, numbered by `sequence_number`.
fn response_events(done: Value, name: &str, gap: Duration) -> Vec<Event> {
    let item_id = format!("msg_{name}");
    let at = |v: Value| -> Value {
        let mut v = v;
        v["item_id"] = json!(item_id);
        v["output_index"] = json!(0);
        v["content_index"] = json!(0);
        v
    };
    let mut started = done.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = Value::Null;
    let text = answer(name);
    let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
    let mut events = vec![
        event(json!({"type": "response.created", "response": started})),
        event(
            json!({"type": "response.output_item.added", "output_index": 0,
            "item": output_item(name, "", "in_progress")}),
        ),
        event(at(
            json!({"type": "response.content_part.added", "part": part("")}),
        )),
    ];
    for w in words(name) {
        events.push(Event {
            delay: gap,
            ..event(at(
                json!({"type": "response.output_text.delta", "delta": w}),
            ))
        });
    }
    events.extend([
        event(at(
            json!({"type": "response.output_text.done", "text": text}),
        )),
        event(at(
            json!({"type": "response.content_part.done", "part": part(&text)}),
        )),
        event(
            json!({"type": "response.output_item.done", "output_index": 0,
            "item": output_item(name, &text, "completed")}),
        ),
        event(json!({"type": "response.completed", "response": done})),
    ]);
    for (i, e) in events.iter_mut().enumerate() {
        e.data["sequence_number"] = json!(i);
    }
    events
}

/// The requests `m` got on `path` (without the query), in order.
pub fn on_path(m: &Mock, path: &str) -> Vec<Seen> {
    m.requests()
        .into_iter()
        .filter(|s| s.uri.path() == path)
        .collect()
}

/// The `model` of a request's JSON body.
pub fn model_of(s: &Seen) -> String {
    body_json(s)["model"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
