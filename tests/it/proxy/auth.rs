//! Credentials go only where the config says: local backends never see the client's keys; the
//! OpenAI backend sees either the client's key (forward) or the injected one, never both.

use std::io::Write;

use http::Request;

use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;
use crate::support::{default_routes, start_proxy, tls::test_ca, TestProxy};

const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "api-key",
    "x-api-key",
    "openai-organization",
    "openai-project",
];
const CLIENT_KEY: &str = "sk-client-key-0123456789";
const INJECTED_KEY: &str = "sk-injected-key-9876543210";

struct Setup {
    local: [Mock; 3],
    openai: Mock,
    proxy: TestProxy,
    _ca_file: tempfile::NamedTempFile,
}

async fn setup(openai_auth: &str) -> Setup {
    let ca = test_ca();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.ca_pem.as_bytes()).unwrap();
    let local = [
        Mock::echo("whisper").await,
        Mock::echo("ollama").await,
        Mock::echo("kokoro").await,
    ];
    let openai = Mock::echo_tls("openai", ca.server.clone()).await;
    let cfg = default_routes(
        &local[0].url(),
        &local[1].url(),
        &local[2].url(),
        &openai.url(),
        &format!("ca_file = {:?}\n{openai_auth}", ca_file.path()),
    );
    let proxy = start_proxy(&cfg).await;
    Setup {
        local,
        openai,
        proxy,
        _ca_file: ca_file,
    }
}

/// Sends one request to every route with all five credential headers set by the client.
async fn send_everywhere(proxy: &TestProxy) {
    for path in [
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/audio/speech",
        "/v1/audio/voices",
        "/v1/models",
    ] {
        let req = Request::post(proxy.url(path))
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .header("api-key", CLIENT_KEY)
            .header("x-api-key", CLIENT_KEY)
            .header("openai-organization", "org-client")
            .header("openai-project", "proj-client")
            .body(full("{}"))
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.status(), 200, "{path}");
        body_bytes(res).await;
    }
}

fn assert_locals_saw_no_secrets(s: &Setup) {
    for m in &s.local {
        let seen = m.requests();
        assert!(!seen.is_empty());
        for req in seen {
            for h in SECRET_HEADERS {
                assert!(req.headers.get(h).is_none(), "local backend got {h}");
            }
            for (_, v) in req.headers.iter() {
                let v = v.to_str().unwrap_or("");
                assert!(!v.contains(CLIENT_KEY) && !v.contains(INJECTED_KEY));
            }
            assert!(!String::from_utf8_lossy(&req.body).contains("sk-"));
        }
    }
}

#[tokio::test]
async fn forward_client_auth_sends_the_clients_key_to_openai_only() {
    let s = setup("forward_client_auth = true").await;
    send_everywhere(&s.proxy).await;
    assert_locals_saw_no_secrets(&s);
    let seen = s.openai.requests();
    assert_eq!(seen.len(), 1);
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth, [format!("Bearer {CLIENT_KEY}").as_str()]);
    assert_eq!(seen[0].header("openai-organization"), Some("org-client"));
    assert_eq!(seen[0].header("api-key"), Some(CLIENT_KEY));
    s.proxy.stop().await;
}

#[tokio::test]
async fn without_a_policy_every_backend_gets_no_credentials() {
    let s = setup("").await;
    send_everywhere(&s.proxy).await;
    assert_locals_saw_no_secrets(&s);
    for h in SECRET_HEADERS {
        assert!(s.openai.requests()[0].headers.get(h).is_none(), "{h}");
    }
    s.proxy.stop().await;
}

async fn assert_injected(auth_line: &str) {
    let s = setup(auth_line).await;
    send_everywhere(&s.proxy).await;
    assert_locals_saw_no_secrets(&s);
    let seen = s.openai.requests();
    assert_eq!(seen.len(), 1);
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth,
        [format!("Bearer {INJECTED_KEY}").as_str()],
        "{auth_line}: exactly the injected key"
    );
    for h in [
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
    ] {
        assert!(
            seen[0].headers.get(h).is_none(),
            "{auth_line}: client's {h} forwarded"
        );
    }
    s.proxy.stop().await;
}

#[tokio::test]
async fn injected_key_from_file_replaces_the_clients() {
    let mut key = tempfile::NamedTempFile::new().unwrap();
    writeln!(key, "{INJECTED_KEY}").unwrap();
    assert_injected(&format!(
        "api_key_file = {:?}\nforward_client_auth = true",
        key.path()
    ))
    .await;
}

#[tokio::test]
async fn injected_key_from_env_replaces_the_clients() {
    std::env::set_var("OPENAI_PROXY_TEST_AUTH_ENV_KEY", INJECTED_KEY);
    assert_injected("api_key_env = \"OPENAI_PROXY_TEST_AUTH_ENV_KEY\"").await;
}

#[tokio::test]
async fn injected_key_from_systemd_credential_replaces_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openai"), INJECTED_KEY).unwrap();
    // Only this test reads $CREDENTIALS_DIRECTORY.
    std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    assert_injected("api_key_credential = \"openai\"").await;
}
