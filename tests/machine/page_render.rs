//! The page's script against the JSON it reads, in headless Chromium: the page's own files
//! (with the proxy's headers, CSP included) served by a stand-in for the proxy that answers
//! `/` (JSON), `/models` and `/usage` in exactly the shapes the page is written for (llama.cpp
//! router's model list, with `status` as an object or a string; the usage totals, minutes and
//! last requests), or 404 for one of them. So the rendering is checked whatever the proxy's
//! own `/models` and `/usage` do: names are text, never markup; nulls are "-"; the newest
//! request first; a missing part says so and the rest still shows.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::support::browser::{assert_note, body_rows, dom, element, totals_cells};
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, handler, Mock, MockBody, Seen};
use crate::support::{routes_to, start_proxy};

/// One of the page's files as the proxy serves it.
pub(super) type File = (&'static str, HeaderMap, Bytes);

/// The page, `/page.js` and `/page.css`, with the proxy's headers.
pub(super) async fn page_files() -> Vec<File> {
    let proxy = start_proxy(&routes_to("http://127.0.0.1:9")).await;
    let mut files = Vec::new();
    for path in ["/", "/page.js", "/page.css"] {
        let req = Request::get(proxy.url(path))
            .header("accept", "text/html")
            .body(full(""))
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        files.push((path, headers, body_bytes(res).await));
    }
    proxy.stop().await;
    files
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn status() -> Value {
    json!({"version": "9.9.9", "routes": [{"path": "/v1", "backend": "openai", "fallback": null}],
           "backends": [{"name": "openai", "health_path": null, "servers": [
               {"url": "https://api.openai.com", "state": "down", "detail": "down: refused",
                "in_flight": 0}]}]})
}

fn models() -> Value {
    json!({"object": "list", "data": [
        {"id": "llama3", "object": "model", "backend": "ollama", "status": {"value": "loaded"}},
        {"id": "qwen", "object": "model", "backend": "llama", "status": "unloaded"},
        {"id": "mistral", "object": "model", "backend": "llama", "status": {"value": "loading"}}]})
}

/// Usage as `/usage` gives it; with `?after=SEQ` only the requests after SEQ.
fn usage(after: Option<u64>) -> Value {
    let t = now();
    let minute = (t / 60.0).floor() * 60.0;
    let recent = json!([
        {"seq": 17, "time": t - 5.5, "client": "alice", "model": "llama3",
         "backend_model": "llama3:8b", "route": "/v1/chat/completions", "backend": "ollama",
         "status": 200, "prompt_tokens": 12, "completion_tokens": 3, "duration_ms": 123.4,
         "ttfb_ms": 12.3, "tokens_per_second": 45.6},
        {"seq": 18, "time": t - 1.0, "client": null, "model": null, "backend_model": null,
         "route": "/v1/embeddings", "backend": "openai", "status": 502, "prompt_tokens": null,
         "completion_tokens": null, "duration_ms": 12000.0, "ttfb_ms": null,
         "tokens_per_second": null}]);
    let recent: Vec<Value> = recent
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| after.map_or(true, |a| e["seq"].as_u64().unwrap() > a))
        .cloned()
        .collect();
    json!({"since": (t as u64) - 600,
           "models": [{"model": "llama3", "requests": 3, "prompt_tokens": 30, "completion_tokens": 12},
                      {"model": "<img src=x id=injected>", "requests": 1, "prompt_tokens": 1,
                       "completion_tokens": 2}],
           "clients": [{"client": "alice", "requests": 3, "prompt_tokens": 30, "completion_tokens": 12},
                       {"client": "", "requests": 1, "prompt_tokens": 1, "completion_tokens": 2}],
           "minutes": [{"minute": minute - 7200.0, "prompt_tokens": 5, "completion_tokens": 5},
                       {"minute": minute - 60.0, "prompt_tokens": 30, "completion_tokens": 12}],
           "recent": recent})
}

/// A stand-in for the proxy: the page's files, `/` as JSON, and `/models` and `/usage`
/// unless `missing` names one of them (404 in OpenAI's shape, as the proxy's).
/// The POSTs of the page's buttons are recorded (`Mock::requests`): `/models/load` succeeds,
/// `/models/unload` is refused as the proxy refuses a model that is not on demand.
pub(super) async fn stand_in(files: Vec<File>, missing: &'static str) -> Mock {
    let files = Arc::new(files);
    let posts: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = posts.clone();
    let mut m = Mock::start(handler(move |req: Request<Incoming>| {
        let files = files.clone();
        let log = log.clone();
        async move {
            let path = req.uri().path().to_string();
            if req.method() == Method::POST {
                let seen = mock::collect(req).await;
                log.lock().unwrap().push(seen);
                return match path.as_str() {
                    "/models/load" => reply(200, HeaderMap::new(), Bytes::from("{\"success\":true}")),
                    _ => reply(400, HeaderMap::new(), Bytes::from(NOT_ON_DEMAND)),
                };
            }
            let json_wanted = req
                .headers()
                .get("accept")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let after = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("after="))
                .and_then(|s| s.parse().ok());
            let answer = match path.as_str() {
                p if p == missing => None,
                "/" if json_wanted => Some(status()),
                "/models" => Some(models()),
                "/usage" => Some(usage(after)),
                _ => None,
            };
            if let Some(value) = answer {
                return reply(200, HeaderMap::new(), Bytes::from(value.to_string()));
            }
            match files.iter().find(|f| f.0 == path) {
                Some((_, headers, body)) => reply(200, headers.clone(), body.clone()),
                None => reply(
                    404,
                    HeaderMap::new(),
                    Bytes::from(r#"{"error":{"message":"Not found: no route","type":"invalid_request_error","code":"not_found"}}"#),
                ),
            }
        }
    }))
    .await;
    m.seen = posts;
    m
}

/// The proxy's answer to unloading a model that is not on demand (OpenAI's error shape).
const NOT_ON_DEMAND: &str = r#"{"error":{"message":"model \"llama3\" is not on demand","type":"invalid_request_error","code":"model_not_on_demand"}}"#;

fn reply(status: u16, headers: HeaderMap, body: Bytes) -> Response<MockBody> {
    let mut res = Response::new(mock::full(body));
    *res.status_mut() = status.try_into().unwrap();
    *res.headers_mut() = headers;
    res.headers_mut()
        .entry("content-type")
        .or_insert("application/json".parse().unwrap());
    res
}

/// The page's DOM, served by the stand-in with `missing` missing.
async fn rendered(missing: &'static str) -> String {
    let site = stand_in(page_files().await, missing).await;
    dom(site.url() + "/").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_renders_as_text_newest_first_and_missing_models_are_said_so() {
    let dom = rendered("/models").await;

    assert_note(
        &dom,
        "models-note",
        Some("model states not available"),
        "no /models",
    );
    assert!(body_rows(element(&dom, "table", "models")).is_empty());
    assert_note(&dom, "usage-note", None, "usage is there");

    let by_model = element(&dom, "table", "usage-models");
    let llama = totals_cells("llama3", [3, 30, 12]);
    assert!(by_model.contains(&llama), "{llama} in {by_model}");
    // A name is text: escaped in the DOM, never an element.
    assert!(
        by_model.contains("<td>&lt;img src=x id=injected&gt;</td>"),
        "{by_model}"
    );
    assert!(!dom.contains("id=\"injected\""), "{dom}");
    let by_client = element(&dom, "table", "usage-clients");
    assert!(by_client.contains("<td>alice</td>"), "{by_client}");
    assert!(
        by_client.contains("<td>-</td><td class=\"num\">1</td>"),
        "{by_client}"
    );

    // Polled with ?after= as well, and still each request once, the newest first.
    let recent = body_rows(element(&dom, "table", "recent"));
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert!(
        recent[0].contains(
            "<td>-</td><td>-</td><td>openai</td><td class=\"failed\">502</td>\
             <td class=\"num\">-</td><td class=\"num\">-</td><td class=\"num\">12.0 s</td>\
             <td class=\"num\">-</td>"
        ),
        "{}",
        recent[0]
    );
    assert!(
        recent[1].contains(
            "<td>alice</td><td>llama3</td><td>ollama</td><td class=\"ok\">200</td>\
             <td class=\"num\">12</td><td class=\"num\">3</td><td class=\"num\">123 ms</td>\
             <td class=\"num\">45.6</td>"
        ),
        "{}",
        recent[1]
    );
    // The chart: the minute of the last hour, not the one two hours ago.
    let chart = element(&dom, "div", "chart");
    assert_eq!(chart.matches("class=\"prompt\"").count(), 1, "{chart}");
    assert_eq!(chart.matches("class=\"completion\"").count(), 1, "{chart}");
    assert!(chart.contains("42 tokens/min"), "{chart}");

    let backends = element(&dom, "table", "backends");
    assert!(
        backends.contains("<td class=\"down\">down</td><td>down: refused</td>"),
        "{backends}"
    );
    assert!(dom.contains("<span id=\"version\">9.9.9</span>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_render_with_their_state_and_buttons_and_missing_usage_is_said_so() {
    let dom = rendered("/usage").await;

    assert_note(&dom, "usage-note", Some("usage not available"), "no /usage");
    assert!(body_rows(element(&dom, "table", "recent")).is_empty());

    let rows = body_rows(element(&dom, "table", "models"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, name, backend, state, load, unload) in [
        (rows[0], "llama3", "ollama", "loaded", false, true),
        (rows[1], "qwen", "llama", "unloaded", true, false),
        (rows[2], "mistral", "llama", "loading", false, true),
    ] {
        let cells = format!("<td>{name}</td><td>{backend}</td><td class=\"{state}\">{state}</td>");
        assert!(row.contains(&cells), "{cells} in {row}");
        for (what, enabled) in [("Load", load), ("Unload", unload)] {
            let button = format!("aria-label=\"{what} {name}\"");
            let disabled = format!("{button} disabled=\"\"");
            assert!(row.contains(&button), "{button} in {row}");
            assert_eq!(!row.contains(&disabled), enabled, "{what} {name}: {row}");
        }
    }
    assert_note(&dom, "models-note", None, "the models are there");
}
