//! One access line per request with the documented fields; no secret in any log line, even at
//! the most verbose level.

use std::time::Duration;

use http::Request;

use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, send};
use crate::support::default_routes;
use crate::support::mock::Mock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_have_every_field_and_no_secret() {
    let m = Mock::echo("m").await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai.key");
    std::fs::write(&key, "sk-injected-logtest\n").unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        default_routes(
            &m.url(),
            &m.url(),
            &m.url(),
            &m.url(),
            &format!("api_key_file = {key:?}"),
        ) + "[log]\nlevel = \"trace\"\naccess_log = true\n",
    )
    .unwrap();
    let mut proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    for path in [
        "/v1/chat/completions?api_key=sk-query-logtest",
        "/v1/models",
    ] {
        let res = send(
            Request::post(format!("{base}{path}"))
                .header("authorization", "Bearer sk-client-logtest")
                .header("x-request-id", "log-test-id")
                .body(full("{\"secret\":\"sk-body-logtest\"}"))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200);
        body_bytes(res).await;
    }
    proc.signal(libc::SIGTERM);
    let log = tokio::task::spawn_blocking(move || {
        proc.wait_exit(Duration::from_secs(10));
        proc.log_text()
    })
    .await
    .unwrap();
    let access: Vec<&str> = log.lines().filter(|l| l.contains("request_id=")).collect();
    assert_eq!(access.len(), 2, "one access line per request:\n{log}");
    let line = access[0];
    for field in [
        "request_id=\"log-test-id\"",
        "method=POST",
        "path=/v1/chat/completions ",
        "route=\"/v1/chat/completions\"",
        "backend=\"ollama\"",
        "status=200",
        "bytes_in=28",
        "bytes_out=",
        "headers_ms=",
        "total_ms=",
        "outcome=\"ok\"",
    ] {
        assert!(line.contains(field), "access line lacks {field}: {line}");
    }
    assert!(access[1].contains("backend=\"openai\""), "{}", access[1]);
    for secret in [
        "sk-injected-logtest",
        "sk-client-logtest",
        "sk-query-logtest",
        "sk-body-logtest",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} appeared in the log:\n{log}"
        );
    }
}
