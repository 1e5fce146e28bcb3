//! An injected key goes to its own backend's `Authorization` header and nowhere else: not to
//! any log line at any level, not to any response or error body, not to another backend.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use http::Request;

use crate::support::activation::config_file;
use crate::support::bin::{self, Proc};
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::tls::test_ca;
use crate::support::{dead_addr, default_routes};

const KEY: &str = "sk-proj-INJECTED-0123456789abcdefXYZ";
const CLIENT_KEY: &str = "sk-client-0123456789abcdef";

fn key_file(mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{KEY}").unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

/// The key and recognizable pieces of it (a leak of half a key is still a leak).
fn pieces() -> Vec<&'static str> {
    vec![KEY, &KEY[8..28], "INJECTED-0123456789"]
}

fn assert_no_key(what: &str, text: &str) {
    for p in pieces() {
        assert!(!text.contains(p), "{what} contains the key ({p}):\n{text}");
    }
}

/// Everything a client can see of a response.
async fn visible(res: http::Response<hyper::body::Incoming>) -> String {
    let head = format!("{} {:?}", res.status(), res.headers());
    let body = body_bytes(res).await;
    format!("{head}\n{}", String::from_utf8_lossy(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_key_reaches_only_its_own_backend() {
    let ca = test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_pem.as_bytes()).unwrap();
    let key = key_file(0o600);
    let whisper = Mock::echo("whisper").await;
    let ollama = Mock::echo("ollama").await;
    let kokoro = Mock::echo("kokoro").await;
    let openai = Mock::echo_tls("openai", ca.server.clone()).await;
    let failing = Mock::start(handler(|req| async move {
        mock::collect(req).await;
        http::Response::builder()
            .status(500)
            .body(mock::full("{\"error\":\"boom\"}"))
            .unwrap()
    }))
    .await;
    let slow = Mock::start(handler(|req| async move {
        mock::collect(req).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        http::Response::new(mock::full("late"))
    }))
    .await;
    let dead = dead_addr();
    let with_key = format!("api_key_file = {:?}", key.path());
    let (_dir, cfg) = config_file(&format!(
        r#"
[server]
max_body_size = "1KiB"
[log]
level = "trace"
access_log = true
target = "stderr"
[backends.failing]
url = "{failing}"
{with_key}
[backends.slow]
url = "{slow}"
response_timeout = "300ms"
{with_key}
[backends.dead]
url = "http://{dead}/base"
{with_key}
[[route]]
path = "/failing"
backend = "failing"
[[route]]
path = "/slow"
backend = "slow"
[[route]]
path = "/dead"
backend = "dead"
{routes}"#,
        failing = failing.url(),
        slow = slow.url(),
        routes = default_routes(
            &whisper.url(),
            &ollama.url(),
            &kokoro.url(),
            &openai.url(),
            &format!("ca_file = {:?}\n{with_key}", ca_file.path()),
        ),
    ));
    let proc = Proc::start(&cfg, &[]);
    let base = format!("http://{}", proc.addr);
    let mut seen_by_client = Vec::new();
    for (method, path, body) in [
        ("POST", "/v1/audio/transcriptions", "audio"),
        ("POST", "/v1/chat/completions?stream=true", "{}"),
        ("POST", "/v1/audio/speech", "{}"),
        ("GET", "/v1/models?limit=5", ""),
        ("POST", "/failing/x", "{}"),
        ("POST", "/slow/x", "{}"),
        ("GET", "/dead/x", ""),
        ("GET", "/v1/../etc", ""),
        ("GET", "/nowhere", ""),
        ("GET", "/", ""),
        ("GET", "/health", ""),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .header("x-api-key", CLIENT_KEY)
            .header("x-request-id", "keys-test")
            .body(full(body))
            .unwrap();
        seen_by_client.push(visible(send(req).await).await);
    }
    // Too large: 413 before forwarding.
    let res = send(
        Request::post(format!("{base}/v1/files"))
            .body(full(vec![b'x'; 2048]))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 413);
    seen_by_client.push(visible(res).await);
    let all = seen_by_client.join("\n----\n");
    for needle in [
        "refused the connection",
        "(response_timeout)",
        "boom",
        "invalid_path",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
    assert_no_key("what clients saw", &all);

    // Backends: the key only in the Authorization header of the ones configured with it.
    for (name, m, gets_key) in [
        ("whisper", &whisper, false),
        ("ollama", &ollama, false),
        ("kokoro", &kokoro, false),
        ("openai", &openai, true),
    ] {
        let seen = m.requests();
        assert!(!seen.is_empty(), "{name} saw nothing");
        for s in seen {
            let mut rest = format!("{} {}\n", s.method, s.uri);
            for (h, v) in &s.headers {
                let v = String::from_utf8_lossy(v.as_bytes());
                if h == "authorization" && gets_key {
                    assert_eq!(v, format!("Bearer {KEY}"), "{name}");
                } else {
                    rest.push_str(&format!("{h}: {v}\n"));
                }
            }
            rest.push_str(&String::from_utf8_lossy(&s.body));
            assert_no_key(&format!("what {name} saw outside Authorization"), &rest);
            if !gets_key {
                assert!(!rest.contains(CLIENT_KEY), "{name} saw the client's key");
            }
        }
    }
    assert_eq!(openai.requests().len(), 1);

    // Every log line, at trace level, including the access lines and the errors.
    let log = proc.stop().await;
    assert!(log.contains("request_id=\"keys-test\""), "{log}");
    assert!(log.contains("refused the connection"), "{log}");
    assert!(log.contains("gets the key from file"), "{log}");
    assert!(!log.contains("readable by other users"), "{log}");
    assert_no_key("the log", &log);
    assert!(!log.contains(CLIENT_KEY), "the client's key is in the log");

    // check-config -v shows the policy, never the key.
    let out = bin::run(&["check-config", "-v", cfg.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_no_key("check-config -v", &text);
}

#[test]
fn a_key_file_others_can_read_is_warned_about() {
    let m_url = format!("http://{}", dead_addr());
    for (mode, warned) in [(0o644, true), (0o604, true), (0o640, false), (0o600, false)] {
        let key = key_file(mode);
        let (_dir, cfg) = config_file(&format!(
            "[backends.b]\nurl = \"{m_url}\"\napi_key_file = {:?}\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
            key.path()
        ));
        let mut proc = Proc::start(&cfg, &[]);
        proc.signal(libc::SIGTERM);
        assert!(proc.wait_exit(Duration::from_secs(10)).is_some());
        let log = proc.log_text();
        let line = format!(
            "key file {} of backend 'b' is readable by other users (mode {mode:o})",
            key.path().display()
        );
        assert_eq!(log.contains(&line), warned, "mode {mode:o}: {log}");
        assert_no_key("the log", &log);
    }
}

#[test]
fn a_malformed_key_is_not_echoed_in_config_errors() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    // A space inside: not a valid header value.
    writeln!(f, "sk-proj-INJECTED-0123456789 abcdefXYZ").unwrap();
    let (_dir, cfg) = config_file(&format!(
        "[backends.b]\nurl = \"http://127.0.0.1:9\"\napi_key_file = {:?}\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        f.path()
    ));
    for args in [
        vec!["check-config", cfg.to_str().unwrap()],
        vec!["--config", cfg.to_str().unwrap(), "serve"],
    ] {
        let out = bin::run(&args);
        assert_eq!(out.status.code(), Some(78));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("backends.b.api_key_file"), "{err}");
        assert!(
            !err.contains("INJECTED") && !err.contains("abcdefXYZ"),
            "{err}"
        );
    }
}
