//! Client tokens (`server.client_tokens_file`): without a valid `Authorization: Bearer TOKEN`
//! a request gets 401 before it is routed; with one, it is served and the token is never
//! forwarded. The file is re-read on reload.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use http::Request;
use openai_proxy::ClientTokens;

use crate::support::activation::{config_file, start_notified};
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::Mock;
use crate::support::{default_routes, start_proxy};

const TOKEN_A: &str = "tok-a-0123456789abcdef0123456789";
const TOKEN_B: &str = "tok-b-fedcba9876543210fedcba9876";
const KEY: &str = "sk-injected-for-openai-0123456789";

fn tokens_file(tokens: &[&str]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "# tokens for the proxy\n").unwrap();
    for t in tokens {
        writeln!(f, "  {t}  ").unwrap();
    }
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

#[tokio::test]
async fn without_a_valid_token_every_route_is_401_before_routing() {
    let tokens = tokens_file(&[TOKEN_A, TOKEN_B]);
    let mut key = tempfile::NamedTempFile::new().unwrap();
    writeln!(key, "{KEY}").unwrap();
    let mocks = [
        Mock::echo("whisper").await,
        Mock::echo("ollama").await,
        Mock::echo("kokoro").await,
        Mock::echo("openai").await,
    ];
    let cfg = format!(
        "[server]\nclient_tokens_file = {:?}\n{}",
        tokens.path(),
        default_routes(
            &mocks[0].url(),
            &mocks[1].url(),
            &mocks[2].url(),
            &mocks[3].url(),
            &format!("api_key_file = {:?}", key.path()),
        )
    );
    let proxy = start_proxy(&cfg).await;
    let total = || mocks.iter().map(|m| m.requests().len()).sum::<usize>();

    let bad_auth: [Option<String>; 9] = [
        None,
        Some(String::new()),
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some(format!("Basic {TOKEN_A}")),
        Some(format!("Bearer {}", &TOKEN_A[..TOKEN_A.len() - 1])),
        Some(format!("Bearer {TOKEN_A}x")),
        Some(format!("Bearer {}", TOKEN_A.to_uppercase())),
        Some(TOKEN_A.to_string()),
    ];
    for path in [
        "/v1/chat/completions",
        "/v1/audio/transcriptions",
        "/v1/models",
        "/",
        "/v2/unknown",
        "/v1/chat/completions/../../audio/speech",
    ] {
        for auth in &bad_auth {
            let mut req = Request::post(proxy.url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a.as_str());
            }
            let res = send(req.body(full("{}")).unwrap()).await;
            let status = res.status();
            if path.contains("..") {
                // Refused as a bad path first: nothing is routed either way.
                assert_eq!(status, 400, "{path} {auth:?}");
                continue;
            }
            assert_eq!(status, 401, "{path} {auth:?}");
            assert_eq!(
                res.headers()["www-authenticate"],
                "Bearer realm=\"openai-proxy\""
            );
            assert!(res.headers().get("x-backend").is_none());
            let v = json(res).await;
            assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        }
    }
    // A token in another header than Authorization or (Anthropic's clients) x-api-key does
    // not count.
    let res = send(
        Request::get(proxy.url("/v1/models"))
            .header("api-key", TOKEN_A)
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(total(), 0, "a request without a valid token was forwarded");

    // /health needs no token (service managers and load balancers poll it).
    let res = send(Request::get(proxy.url("/health")).body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);

    // Valid tokens: served, and the token reaches no backend.
    for (path, header, auth) in [
        (
            "/v1/chat/completions",
            "authorization",
            format!("Bearer {TOKEN_A}"),
        ),
        (
            "/v1/audio/transcriptions",
            "authorization",
            format!("bearer {TOKEN_B}"),
        ),
        (
            "/v1/audio/speech",
            "authorization",
            format!("BEARER   {TOKEN_A} "),
        ),
        ("/v1/models", "authorization", format!("Bearer {TOKEN_B}")),
        ("/", "authorization", format!("Bearer {TOKEN_A}")),
        // Claude Code's ANTHROPIC_API_KEY.
        ("/v1/chat/completions", "x-api-key", TOKEN_B.to_string()),
    ] {
        let res = send(
            Request::post(proxy.url(path))
                .header(header, auth)
                .body(full("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(res.status(), 200, "{path} {header}");
        body_bytes(res).await;
    }
    assert_eq!(total(), 5);
    for m in &mocks {
        for s in m.requests() {
            for (h, v) in &s.headers {
                let v = String::from_utf8_lossy(v.as_bytes());
                assert!(
                    !v.contains("tok-a-") && !v.contains("tok-b-"),
                    "a backend got the client token in {h}"
                );
            }
        }
    }
    // The OpenAI backend gets its own injected key; the local ones get no Authorization.
    let openai = mocks[3].requests();
    assert_eq!(
        openai[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    for m in &mocks[..3] {
        assert!(m.requests()[0].header("authorization").is_none());
    }
    proxy.stop().await;
}

#[test]
fn tokens_files_are_checked_and_never_echoed() {
    for (text, message) in [
        ("", "contains no token"),
        ("# only a comment\n\n", "contains no token"),
        (
            "short-token\n",
            "line 1: the token is shorter than 16 characters",
        ),
        (
            "good-token-0123456789\nwith space inside 0123\n",
            "line 2: give a token, or a name and a token separated by a space",
        ),
        (
            "good-token-0123456789\nname tok\u{e9}n-0123456789abc\n",
            "line 2: a token may contain only visible ASCII characters",
        ),
    ] {
        let err = ClientTokens::parse(text).unwrap_err();
        assert!(err.contains(message), "{text:?}: {err}");
        assert!(
            !err.contains("short-token")
                && !err.contains("inside")
                && !err.contains("0123456789abc"),
            "{err}"
        );
    }
    let t =
        ClientTokens::parse("# c\n\n good-token-0123456789 \nanother-token-0123456789\n").unwrap();
    assert_eq!(t.len(), 2);
    assert!(!format!("{t:?}").contains("good-token"), "{t:?}");

    // In a config: the error names the config file, line, column and key.
    let (_dir, cfg) = config_file(
        "[server]\nclient_tokens_file = \"/nonexistent/tokens\"\n\
         [backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
    );
    let out = crate::support::bin::run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:22: server.client_tokens_file: cannot read client tokens file /nonexistent/tokens",
            cfg.display()
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_a_changed_tokens_file() {
    let m = Mock::echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN_A}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_cdir, cfg) = config_file(&format!(
        "[server]\nclient_tokens_file = {tokens:?}\n[backends.b]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        m.url()
    ));
    let (proc, notify) = start_notified(&cfg);
    let base = format!("http://{}", proc.addr);
    let status = |token: &'static str| {
        let url = format!("{base}/v1/models");
        async move {
            let res = send(
                Request::get(url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(full(""))
                    .unwrap(),
            )
            .await;
            let s = res.status().as_u16();
            body_bytes(res).await;
            s
        }
    };
    assert_eq!(status(TOKEN_A).await, 200);
    assert_eq!(status(TOKEN_B).await, 401);

    std::fs::write(&tokens, format!("{TOKEN_B}\n")).unwrap();
    proc.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(!ready.contains("FAILED"), "{ready}");
    assert_eq!(status(TOKEN_A).await, 401, "the old token still works");
    assert_eq!(status(TOKEN_B).await, 200);

    // A tokens file that became unreadable: the reload fails, the old tokens stay in force
    // (never "no tokens, everyone welcome").
    std::fs::remove_file(&tokens).unwrap();
    proc.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(ready.contains("reload FAILED"), "{ready}");
    assert_eq!(status(TOKEN_B).await, 200);
    assert_eq!(status(TOKEN_A).await, 401);

    let log = proc.stop().await;
    assert!(log.contains("clients must send one of 1 tokens"), "{log}");
    assert!(!log.contains("beyond loopback"), "{log}");
    assert!(!log.contains(TOKEN_A) && !log.contains(TOKEN_B), "{log}");
}

#[test]
fn a_tokens_file_others_can_read_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN_A}\n")).unwrap();
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(mode)).unwrap();
        let (_cdir, cfg) = config_file(&format!(
            "[server]\nclient_tokens_file = {tokens:?}\n[backends.b]\nurl = \"http://127.0.0.1:9\"\n\
             forward_client_auth = true\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
        ));
        let mut proc = Proc::start(&cfg, &[]);
        proc.signal(libc::SIGTERM);
        assert!(proc.wait_exit(Duration::from_secs(10)).is_some());
        let log = proc.log_text();
        assert_eq!(
            log.contains(&format!(
                "client tokens file {} is readable by other users",
                tokens.display()
            )),
            warned,
            "{mode:o}: {log}"
        );
        // forward_client_auth cannot forward a token the proxy consumes: said at start.
        assert!(
            log.contains("backend 'b' has forward_client_auth = true, but with client tokens"),
            "{log}"
        );
    }
}
