//! The ledger, end to end through the real binary: who (named client tokens), which model
//! (asked, and the backend's after an alias), how many tokens and how fast, in the access line,
//! `GET /usage` and `/metrics`; labels bounded under a flood of model names; totals kept
//! across a reload and, with `[usage] file`, a restart. No token ever shows.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use serde_json::Value;

use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, channel_body, handler, reply, Mock};
use crate::support::prom::{metrics_addr, parse, Scrape};

const ALICE: &str = "alice-token-0123456789abcdef";
const UNNAMED: &str = "unnamed-token-0123456789abcdef";

/// A llama.cpp-like server: it answers with the model it was asked for (as llama.cpp does),
/// usage, and `timings`; a stream's first event comes at once, the next after 300 ms.
async fn llama() -> Mock {
    Mock::start(handler(|req: Request<hyper::body::Incoming>| async move {
        let seen = mock::collect(req).await;
        let body: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("?").to_string();
        if body["stream"] == true {
            let (tx, out) = channel_body();
            tokio::spawn(async move {
                let first = format!("data: {{\"id\":\"c\",\"model\":\"{model}\",\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}]}}\n\n");
                let _ = tx.send(Ok(Bytes::from(first))).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let last = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":30,\"prompt_tokens\":4},\"timings\":{\"prompt_per_second\":500.5,\"predicted_per_second\":42.25}}\n\ndata: [DONE]\n\n";
                let _ = tx.send(Ok(Bytes::from_static(last.as_bytes()))).await;
            });
            return reply("text/event-stream", out);
        }
        let answer = format!(
            r#"{{"id":"c","object":"chat.completion","model":"{model}","choices":[],"usage":{{"prompt_tokens":10,"completion_tokens":5}}}}"#
        );
        reply("application/json", mock::full(answer))
    }))
    .await
}

fn config(dir: &Path, backend: &str) -> std::path::PathBuf {
    let rest = format!(
        r#"[backends.llama]
url = "{backend}"
[backends.llama.aliases]
fast = "qwen2.5-0.5b"
[[route]]
path = "/v1/chat/completions"
backend = "llama"
models = ["qwen*"]
"#
    );
    daemon_config(dir, &format!("alice {ALICE}\n{UNNAMED}\n"), &rest)
}

/// Writes a tokens file with `lines` (mode 0600) and a config in `dir` that names it, with the
/// access log, metrics on a free port, `[usage] file` in `dir`, and `rest` (backends, routes,
/// clients).
pub(super) fn daemon_config(dir: &Path, lines: &str, rest: &str) -> std::path::PathBuf {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, lines).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&tokens, private).unwrap();
    let cfg = dir.join("config.toml");
    let text = format!(
        "[server]\nclient_tokens_file = \"{tokens}\"\n[log]\naccess_log = true\n[metrics]\n\
         listen = \"127.0.0.1:0\"\n[usage]\nfile = \"{usage}\"\n{rest}",
        tokens = tokens.display(),
        usage = dir.join("usage.json").display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

async fn chat(base: &str, token: &str, id: &str, body: &str) -> Response<hyper::body::Incoming> {
    send(
        Request::post(format!("{base}/v1/chat/completions"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn usage(base: &str, query: &str) -> Value {
    json(
        send(
            Request::get(format!("{base}/usage{query}"))
                .header("authorization", format!("Bearer {ALICE}"))
                .body(full(""))
                .unwrap(),
        )
        .await,
    )
    .await
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v[key] == name)
        .unwrap_or_else(|| panic!("no {key} {name} in {list}"))
}

/// `/metrics` (which takes the client token too), parsed and as text; also as OpenMetrics,
/// which the Prometheus client's stricter parser must read too.
async fn scrape(proc: &Proc) -> (Scrape, String) {
    let addr = metrics_addr(proc).await;
    let get = |accept: &'static str| {
        send(
            Request::get(format!("http://{addr}/metrics"))
                .header("authorization", format!("Bearer {ALICE}"))
                .header("accept", accept)
                .body(full(""))
                .unwrap(),
        )
    };
    let res = get("application/openmetrics-text;version=1.0.0").await;
    assert_eq!(res.status(), 200);
    let open = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    parse(&open, true);
    let res = get("text/plain").await;
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(body_bytes(res).await.to_vec()).unwrap();
    (parse(&text, false), text)
}

/// Waits (bounded) until the ledger has `n` requests.
async fn until_seq(base: &str, n: u64) -> Value {
    for _ in 0..100 {
        let u = usage(base, "").await;
        if u["seq"].as_u64() >= Some(n) {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the ledger never had {n} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_which_model_how_many_tokens_and_how_fast() {
    let m = llama().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &m.url());
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);

    // An alias (the backend gets and answers with its own model), by alice.
    let res = chat(&base, ALICE, "alias", r#"{"model":"fast"}"#).await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    // A stream, by the unnamed token: its first byte at once, the rest 300 ms later.
    let res = chat(
        &base,
        UNNAMED,
        "stream",
        r#"{"model":"qwen2.5-0.5b","stream":true}"#,
    )
    .await;
    let sent = body_bytes(res).await;
    assert!(sent.ends_with(b"data: [DONE]\n\n"));

    let u = until_seq(&base, 2).await;
    let fast = find(&u["models"], "model", "fast");
    assert_eq!(
        (fast["requests"].as_u64(), fast["prompt_tokens"].as_u64()),
        (Some(1), Some(10))
    );
    let qwen = find(&u["models"], "model", "qwen2.5-0.5b");
    assert_eq!(qwen["completion_tokens"], 30);
    let alice = find(&u["clients"], "client", "alice");
    assert_eq!(
        (
            alice["requests"].as_u64(),
            alice["completion_tokens"].as_u64()
        ),
        (Some(1), Some(5))
    );
    let nameless = find(&u["clients"], "client", "");
    assert_eq!(nameless["prompt_tokens"], 4);
    let recent = u["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["model"], "fast");
    assert_eq!(recent[0]["backend_model"], "qwen2.5-0.5b");
    assert_eq!(recent[0]["client"], "alice");
    assert_eq!(recent[1]["client"], Value::Null);
    assert_eq!(
        recent[1]["tokens_per_second"], 42.3,
        "llama.cpp's own measure"
    );
    let ttfb = recent[1]["ttfb_ms"].as_f64().unwrap();
    let total = recent[1]["duration_ms"].as_f64().unwrap();
    assert!(
        ttfb < 250.0 && total >= 300.0,
        "first byte {ttfb} ms, all {total} ms"
    );
    let minutes = u["minutes"].as_array().unwrap();
    let in_minutes: u64 = minutes
        .iter()
        .map(|m| m["prompt_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(in_minutes, 14);
    // Only what came after a request number.
    let after = usage(&base, "?after=1").await;
    assert_eq!(after["recent"].as_array().unwrap().len(), 1);

    let (s, text) = scrape(&proc).await;
    let tokens = |model, client, kind| {
        let labels = [("model", model), ("client", client), ("kind", kind)];
        s.value("openai_proxy_tokens_total", &labels)
    };
    assert_eq!(tokens("fast", "alice", "prompt"), 10.0);
    assert_eq!(tokens("qwen2.5-0.5b", "", "completion"), 30.0);
    let first = [("model", "qwen2.5-0.5b")];
    assert_eq!(
        s.value("openai_proxy_time_to_first_token_seconds_count", &first),
        1.0
    );
    assert_eq!(
        s.value("openai_proxy_generation_tokens_per_second_count", &first),
        1.0
    );

    let log = proc.stop().await;
    let line = |id: &str| {
        let want = format!("request_id=\"{id}\"");
        log.lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("{id}:\n{log}"))
            .to_string()
    };
    let alias = line("alias");
    assert!(
        alias.contains(r#" client="alice" model="fast" backend_model="qwen2.5-0.5b" "#),
        "{alias}"
    );
    let stream = line("stream");
    assert!(
        stream.contains(" model=\"qwen2.5-0.5b\" status=200 "),
        "{stream}"
    );
    assert!(!stream.contains("client="), "{stream}");
    assert!(
        stream.contains(" tokens_per_s=42.3 ") && stream.contains(" ttfb_ms="),
        "{stream}"
    );
    assert!(stream.ends_with("outcome=\"ok\""), "{stream}");
    let usage_file = std::fs::read_to_string(dir.path().join("usage.json")).unwrap();
    for place in [&log, &text, &usage_file] {
        assert!(
            !place.contains(ALICE) && !place.contains(UNNAMED),
            "a token leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_survive_a_reload_and_with_the_usage_file_a_restart() {
    let m = llama().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &m.url());
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    body_bytes(chat(&base, ALICE, "one", r#"{"model":"qwen2.5-0.5b"}"#).await).await;
    until_seq(&base, 1).await;
    proc.signal(libc::SIGHUP);
    // The reload is done when the log says so (bounded).
    for _ in 0..100 {
        if proc.log_text().contains("reloaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    body_bytes(chat(&base, ALICE, "two", r#"{"model":"qwen2.5-0.5b"}"#).await).await;
    let u = until_seq(&base, 2).await;
    assert_eq!(find(&u["clients"], "client", "alice")["requests"], 2, "{u}");
    let since = u["since"].as_u64().unwrap();
    proc.stop().await;

    // A new process reads them back (the last requests are not kept: totals only).
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    let u = usage(&base, "").await;
    assert_eq!(find(&u["clients"], "client", "alice")["requests"], 2, "{u}");
    assert_eq!(
        find(&u["models"], "model", "qwen2.5-0.5b")["prompt_tokens"],
        20
    );
    assert_eq!(u["since"].as_u64(), Some(since));
    assert_eq!(u["recent"].as_array().unwrap().len(), 0);
    proc.stop().await;

    // A corrupt file is a warning, not a failure to start.
    std::fs::write(dir.path().join("usage.json"), "{ not json").unwrap();
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    let u = usage(&base, "").await;
    assert_eq!(u["models"].as_array().unwrap().len(), 0);
    let log = proc.stop().await;
    assert!(log.contains("not a usage file"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_model_names_leaves_the_labels_bounded() {
    let m = llama().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &m.url());
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    // The backend answers with whatever it was asked for (llama.cpp does).
    let floods = 160;
    for i in 0..floods {
        let res = chat(&base, ALICE, "flood", &format!(r#"{{"model":"qwen-{i}"}}"#)).await;
        body_bytes(res).await;
    }
    let u = until_seq(&base, floods).await;
    let models = u["models"].as_array().unwrap();
    assert!(models.len() <= 100 + 2, "{} model labels", models.len());
    assert!(models.iter().any(|m| m["model"] == "other"));
    let counted: u64 = models.iter().map(|m| m["requests"].as_u64().unwrap()).sum();
    assert_eq!(counted, floods);
    let (s, _) = scrape(&proc).await;
    let series = s.matching("openai_proxy_model_requests_total", &[]).count();
    assert!(series <= 100 + 2, "{series} series");
    proc.stop().await;
}

/// Frames arrive as the backend sends them: the stream is not held for the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_holds_no_event_back() {
    let m = llama().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &m.url());
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    let start = tokio::time::Instant::now();
    let res = chat(
        &base,
        ALICE,
        "s",
        r#"{"model":"qwen2.5-0.5b","stream":true}"#,
    )
    .await;
    let mut body = res.into_body();
    let first = loop {
        let f = body.frame().await.unwrap().unwrap();
        if let Ok(d) = f.into_data() {
            break d;
        }
    };
    let at = start.elapsed();
    assert!(first.starts_with(b"data: {\"id\""), "{first:?}");
    assert!(at < Duration::from_millis(200), "first event after {at:?}");
    while let Some(f) = body.frame().await {
        f.unwrap();
    }
    assert!(start.elapsed() >= Duration::from_millis(300));
    proc.stop().await;
}
