//! A guest with a daily budget, through the real binary: its refusals in the access log (its
//! name, never its token), in `/metrics` (rejections by reason, tokens of the day), in
//! `/usage`; the day's count kept across SIGHUP (with a changed limit applied at once) and,
//! with `[usage] file`, across a restart. The token shows nowhere: log, metrics, `/usage`, the
//! usage file, the page, the errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Request;
use serde_json::{json, Value};

use super::clients_scope::GUEST;
use super::ledger::daemon_config;
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::prom::{metrics_addr, scrape_as};

/// Writes the config (and its tokens file) with the guest's `tokens_per_day`.
fn config(dir: &Path, backend: &str, per_day: u32) -> PathBuf {
    let rest = format!(
        r#"[backends.llama]
url = "{backend}"
[[route]]
path = "/v1"
backend = "llama"
[clients.guest]
max_concurrent = 2
tokens_per_day = {per_day}
backends_with_server_key = []
"#
    );
    daemon_config(dir, &format!("guest {GUEST}\n"), &rest)
}

async fn chat(proc: &Proc, id: &str) -> (u16, String) {
    let url = format!("http://{}/v1/chat/completions", proc.addr);
    let res = send(
        Request::post(url)
            .header("authorization", format!("Bearer {GUEST}"))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(full(json!({"model": "llama3", "messages": []}).to_string()))
            .unwrap(),
    )
    .await;
    let status = res.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&body_bytes(res).await).into_owned(),
    )
}

async fn get(proc: &Proc, path: &str) -> String {
    let res = send(
        Request::get(format!("http://{}{path}", proc.addr))
            .header("authorization", format!("Bearer {GUEST}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    String::from_utf8_lossy(&body_bytes(res).await).into_owned()
}

/// The guest's entry of `/usage`'s `limits`, once its tokens of the day are `today` (bounded
/// wait: the count lands when the answer's record is done).
async fn limits(proc: &Proc, today: u64) -> Value {
    for _ in 0..100 {
        let u: Value = serde_json::from_str(&get(proc, "/usage").await).unwrap();
        if u["limits"][0]["tokens_today"] == today {
            return u["limits"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the guest never had {today} tokens today");
}

async fn reloaded(proc: &Proc, times: usize) {
    proc.signal(libc::SIGHUP);
    for _ in 0..100 {
        if proc.log_text().matches("reloaded").count() >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reload:\n{}", proc.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_day_is_seen_everywhere_kept_across_reload_and_restart_and_its_token_nowhere() {
    let backend = Mock::start(handler(|req| async move {
        mock::collect(req).await;
        let body = json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 50}});
        mock::reply("application/json", mock::full(body.to_string()))
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &backend.url(), 100);
    let proc = Proc::start(&cfg, &[]);
    let (status, _) = chat(&proc, "first").await;
    assert_eq!(status, 200);
    let l = limits(&proc, 150).await;
    assert_eq!(
        (l["client"].as_str(), l["tokens_per_day"].as_u64()),
        (Some("guest"), Some(100))
    );
    let (status, refused) = chat(&proc, "over").await;
    assert_eq!(status, 429, "{refused}");

    // A reload: the day's 150 stay; its new limit applies to the next request.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("= 100\n", "= 400\n"),
    )
    .unwrap();
    reloaded(&proc, 1).await;
    assert_eq!(chat(&proc, "after-reload").await.0, 200);
    limits(&proc, 300).await;
    let metrics = metrics_addr(&proc).await;
    let s = scrape_as(metrics, false, Some(GUEST)).await;
    let reason = [("client", "guest"), ("reason", "tokens_per_day")];
    assert_eq!(
        s.value("openai_proxy_client_rejections_total", &reason),
        1.0
    );
    assert_eq!(
        s.value("openai_proxy_client_tokens_today", &[("client", "guest")]),
        300.0
    );
    let metrics_text = metrics_text_of(metrics).await;
    let usage = get(&proc, "/usage").await;
    let page = get(&proc, "/").await;
    let log = proc.stop().await;

    // A restart: the day's count comes back from the usage file.
    let proc = Proc::start(&cfg, &[]);
    assert_eq!(limits(&proc, 300).await["tokens_today"], 300);
    assert_eq!(chat(&proc, "one-more").await.0, 200, "300 of 400");
    let (status, refused_again) = chat(&proc, "over-again").await;
    assert_eq!(status, 429, "{refused_again}");
    let log2 = proc.stop().await;

    let line = |log: &str, id: &str| {
        let want = format!("request_id=\"{id}\"");
        log.lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("{id}:\n{log}"))
            .to_string()
    };
    let over = line(&log, "over");
    assert!(
        over.contains(" client=\"guest\" ") && over.contains(" status=429 "),
        "{over}"
    );
    assert!(over.contains("tokens_per_day"), "{over}");
    let usage_file = std::fs::read_to_string(dir.path().join("usage.json")).unwrap();
    for (what, text) in [
        ("log", &log),
        ("log after restart", &log2),
        ("metrics", &metrics_text),
        ("/usage", &usage),
        ("page", &page),
        ("usage file", &usage_file),
        ("429", &refused),
    ] {
        assert!(!text.contains(GUEST), "the token is in the {what}");
    }
}

/// The metrics as text (with the guest's token, as Prometheus would send one).
async fn metrics_text_of(addr: std::net::SocketAddr) -> String {
    let res = send(
        Request::get(format!("http://{addr}/metrics"))
            .header("authorization", format!("Bearer {GUEST}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    String::from_utf8_lossy(&body_bytes(res).await).into_owned()
}
