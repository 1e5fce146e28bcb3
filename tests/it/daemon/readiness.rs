//! What an orchestrator needs: `/ready` turns 503 the moment a graceful stop begins while new
//! connections are still taken for `server.shutdown_delay` (the load balancer's time to stop
//! sending), streams in flight finish, then it exits 0; and `server.watch_config` reloads
//! when a ConfigMap-shaped directory swaps its `..data` symlink, without a failed request.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Request;

use crate::support::bin::Proc;
use http_body_util::BodyExt;

use crate::support::client::{body_bytes, client, full, send};
use crate::support::mock::Mock;
use crate::support::routes_to;

pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let res = send(
        Request::get(format!("http://{addr}{path}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    let status = res.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&body_bytes(res).await).into_owned(),
    )
}

async fn chat(addr: std::net::SocketAddr) -> (u16, String) {
    chat_as(addr, "m", &[]).await.expect("request to the proxy")
}

/// POSTs a chat request for `model` with these extra headers; an error when the connection
/// fails (refused, reset), for request loops that count failures.
pub async fn chat_as(
    addr: std::net::SocketAddr,
    model: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = full(format!(r#"{{"model":"{model}"}}"#));
    let res = client()
        .request(req.body(body).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&bytes.to_bytes()).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_ready_to_503_at_once_keeps_accepting_for_the_delay_and_drains() {
    let backend = Mock::sse(10, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let text = format!(
        "[server]\nshutdown_delay = \"1s\"\n{}",
        routes_to(&backend.url())
    );
    std::fs::write(&cfg, text).unwrap();
    let mut proc = Proc::start(&cfg, &[]);
    let addr = proc.addr;
    assert_eq!(
        get(addr, "/ready").await,
        (200, "{\"status\":\"ready\"}\n".into())
    );

    // A stream of 2 s is in flight when the stop begins.
    let stream = tokio::spawn(chat(addr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proc.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(addr, "/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"status\":\"stopping\"}\n")
    );
    assert_eq!(get(addr, "/health").await.0, 200, "still alive");
    // Within the delay a new request is still served (a load balancer may not know yet).
    let late = tokio::spawn(chat(addr));
    // After the delay the listener closes (bounded wait).
    let mut refused = false;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "still accepting long after shutdown_delay");
    for (what, task) in [("the stream in flight", stream), ("the late request", late)] {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{what}");
        assert!(
            body.contains("data: 9") && body.ends_with("data: [DONE]\n\n"),
            "{what}: {body}"
        );
    }
    let (code, log) = tokio::task::spawn_blocking(move || {
        let st = proc.wait_exit(Duration::from_secs(10));
        (st.and_then(|s| s.code()), proc.log_text())
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("/ready answers 503; still accepting connections for 1s"),
        "{log}"
    );
}

/// Makes `dir` look like a mounted ConfigMap or Secret: each `file` → `..data/file`, `..data`
/// → the version directory `name` holding the files. Called again, swaps `..data` atomically.
pub fn configmap(dir: &Path, name: &str, files: &[(&str, &str)]) {
    let version = dir.join(name);
    std::fs::create_dir(&version).unwrap();
    for (file, text) in files {
        std::fs::write(version.join(file), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(name, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (file, _) in files {
        let link = dir.join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_reloaded_without_a_failed_request_and_a_bad_one_is_refused() {
    let (a, b) = (Mock::echo("a").await, Mock::echo("b").await);
    let dir = tempfile::tempdir().unwrap();
    let with = |url: &str| format!("[server]\nwatch_config = true\n{}", routes_to(url));
    configmap(dir.path(), "..v1", &[("config.toml", &with(&a.url()))]);
    let proc = Proc::start(&dir.path().join("config.toml"), &[]);
    let addr = proc.addr;

    // Requests all along; each must succeed, first from a, then from b.
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let failed = failed.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !*stop_rx.borrow() {
                if chat(addr).await.0 != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    configmap(dir.path(), "..v2", &[("config.toml", &with(&b.url()))]);
    let mut moved = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !b.requests().is_empty() {
            moved = true;
            break;
        }
    }
    assert!(
        moved,
        "the new config was not picked up:\n{}",
        proc.log_text()
    );
    // A bad update fails safe: b keeps serving, the log says why.
    configmap(
        dir.path(),
        "..v3",
        &[("config.toml", "[server]\nno_such_key = 1\n")],
    );
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if proc.log_text().contains("no_such_key") {
            break;
        }
    }
    let before = b.requests().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send(true).unwrap();
    let sent = load.await.unwrap();
    assert!(
        b.requests().len() > before,
        "b stopped serving after a bad update"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "of {sent} requests");
    let log = proc.stop().await;
    assert!(
        log.contains("server.watch_config: the config or a file it names changed"),
        "{log}"
    );
    assert!(log.contains("no_such_key"), "{log}");
}
