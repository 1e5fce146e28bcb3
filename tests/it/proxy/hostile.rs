//! Hostile clients: oversized heads, request smuggling and route confusion. Each test would
//! fail without the protection it names. (Slow clients and the malformed-request flood are in
//! `load.rs`, which runs on its own.)

use crate::support::client::{ask, assert_status};
use crate::support::mock::Mock;
use crate::support::{default_routes, start_proxy, TestProxy};

const ONE_BACKEND: &str =
    "[backends.b]\nurl = \"URL\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";

fn one_backend(url: &str, server: &str) -> String {
    format!("[server]\n{server}\n{}", ONE_BACKEND.replace("URL", url))
}

// ---------------------------------------------------------------------------------------------
// Oversized heads

fn get_with_headers(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").into_bytes()
}

#[tokio::test]
async fn header_block_over_max_header_size_is_431_and_closed() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    // Just under the default 64 KiB: served.
    let big = format!("X-Big: {}\r\n", "a".repeat(60 * 1024));
    let r = ask(
        proxy.addr,
        &get_with_headers("/v1/models", &(big + "Connection: close\r\n")),
    )
    .await;
    assert_status(&r, 200);
    // Over it (hyper's own buffer limit would allow ~400 KiB): 431, connection closed.
    let huge = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let r = ask(proxy.addr, &get_with_headers("/v1/models", &huge)).await;
    assert_status(&r, 431);
    assert!(r.closed);
    // Many small headers adding up: the same.
    let many: String = (0..60)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(1200)))
        .collect();
    let r = ask(proxy.addr, &get_with_headers("/v1/models", &many)).await;
    assert_status(&r, 431);
    assert!(r.closed);
    assert_eq!(m.requests().len(), 1);
    proxy.stop().await;

    // A configured limit applies.
    let proxy = start_proxy(&one_backend(&m.url(), "max_header_size = \"8KiB\"")).await;
    let r = ask(
        proxy.addr,
        &get_with_headers("/v1/models", &format!("X-Big: {}\r\n", "a".repeat(9000))),
    )
    .await;
    assert_status(&r, 431);
    assert_eq!(m.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn too_many_headers_is_431_and_closed() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let r = ask(
        proxy.addr,
        &get_with_headers("/v1/models", &(headers(90) + "Connection: close\r\n")),
    )
    .await;
    assert_status(&r, 200);
    let r = ask(proxy.addr, &get_with_headers("/v1/models", &headers(101))).await;
    assert_status(&r, 431);
    assert!(r.closed);
    assert_eq!(m.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn request_line_too_long_is_414_or_431() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    // A target over 8 KiB: 414 with a JSON body, never forwarded.
    let path = format!("/v1/{}", "a".repeat(9000));
    let r = ask(
        proxy.addr,
        &get_with_headers(&path, "Connection: close\r\n"),
    )
    .await;
    assert_status(&r, 414);
    assert!(r.text.contains("\"code\":\"uri_too_long\""), "{}", r.text);
    // The same in the query string.
    let path = format!("/v1/models?q={}", "a".repeat(9000));
    let r = ask(
        proxy.addr,
        &get_with_headers(&path, "Connection: close\r\n"),
    )
    .await;
    assert_eq!(r.status(), Some(414));
    // A request line longer than the whole header block allows: 431 from the parser, closed.
    let path = format!("/v1/{}", "a".repeat(100 * 1024));
    let r = ask(proxy.addr, &get_with_headers(&path, "")).await;
    assert_status(&r, 431);
    assert!(r.closed);
    assert!(m.requests().is_empty());
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Request smuggling

/// A request whose framing is ambiguous, with a second request hidden where one reading of
/// the framing puts it.
const SMUGGLED: &str = "GET /v1/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn assert_refused_and_closed(proxy: &TestProxy, m: &Mock, head: &str, body: &str) {
    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n{head}\r\n{body}");
    let r = ask(proxy.addr, req.as_bytes()).await;
    assert_eq!(r.status(), Some(400), "{head:?}: {}", r.text);
    assert!(r.closed, "{head:?}: the connection must be closed");
    assert_eq!(r.responses(), 1, "{head:?}: {}", r.text);
    assert!(
        m.requests().is_empty(),
        "{head:?}: the backend saw {:?}",
        m.requests()
            .iter()
            .map(|s| s.uri.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn smuggling_attempts_are_400_closed_and_never_forwarded() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    let chunked_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    for (head, body) in [
        // Two different lengths.
        (
            "Content-Length: 4\r\nContent-Length: 40\r\n",
            format!("abcd{SMUGGLED}"),
        ),
        ("Content-Length: 4, 40\r\n", format!("abcd{SMUGGLED}")),
        ("Content-Length: +4\r\n", format!("abcd{SMUGGLED}")),
        ("Content-Length: 0x4\r\n", format!("abcd{SMUGGLED}")),
        // Obfuscated Transfer-Encoding, alone or next to a Content-Length.
        (
            "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: chunked, identity\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: identity, chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: gzip, chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding : chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding:\x0bchunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "X-Pad: 1\r\n Transfer-Encoding: chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer-Encoding: \"chunked\"\r\n",
            chunked_then_smuggled.clone(),
        ),
        (
            "Transfer_Encoding: chunked\r\nContent-Length: x\r\n",
            String::new(),
        ),
        // Bare LF or CR inside the head.
        (
            "X-A: 1\rTransfer-Encoding: chunked\r\n",
            chunked_then_smuggled.clone(),
        ),
    ] {
        assert_refused_and_closed(&proxy, &m, head, &body).await;
    }
    // Bad chunk sizes inside an otherwise fine chunked body: the backend may have seen the
    // start of the request, but never the hidden one.
    for body in [
        format!("-1\r\n\r\n{SMUGGLED}"),
        format!("fffffffffffffffff\r\n\r\n{SMUGGLED}"),
        format!("4 ;\r\nabcd\r\n0x0\r\n\r\n{SMUGGLED}"),
    ] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let r = ask(proxy.addr, req.as_bytes()).await;
        assert!(r.closed, "{body:?}: {}", r.text);
        assert!(r.responses() <= 1, "{body:?}: {}", r.text);
    }
    assert!(m.requests().iter().all(|s| s.uri.path() != "/v1/smuggled"));
    proxy.stop().await;
}

/// `Content-Length` together with `Transfer-Encoding: chunked`: hyper's parser frames the body
/// by the chunked encoding, drops the `Content-Length` (RFC 9112 §6.3) and closes the
/// connection after the response, so whatever follows the chunked body is never read as a
/// request. (The `Content-Length` never reaches the proxy's code, so it cannot answer 400
/// here; see docs/security.md.)
#[tokio::test]
async fn content_length_with_chunked_never_lets_a_second_request_through() {
    let m = Mock::echo("b").await;
    let proxy = start_proxy(&one_backend(&m.url(), "")).await;
    for head in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: CHUNKED\r\n",
    ] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n{head}\r\n0\r\n\r\n{SMUGGLED}"
        );
        let r = ask(proxy.addr, req.as_bytes()).await;
        assert!(r.closed, "{head:?}: the connection must be closed");
        assert_eq!(r.responses(), 1, "{head:?}: {}", r.text);
    }
    let seen = m.requests();
    assert!(
        seen.iter().all(|s| s.uri.path() == "/v1/chat/completions"),
        "{:?}",
        seen.iter().map(|s| s.uri.clone()).collect::<Vec<_>>()
    );
    for s in &seen {
        assert!(s.body.is_empty(), "the chunked body was empty");
        assert!(s.headers.get("content-length").map_or(true, |v| v == "0"));
    }
    // Two identical Content-Lengths are one length (RFC 9110 §8.6): no ambiguity, and a
    // pipelined request after the body is its own request.
    let before = m.requests().len();
    let req = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd\
         GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let r = ask(proxy.addr, req.as_bytes()).await;
    assert_eq!(r.responses(), 2, "{}", r.text);
    let seen = m.requests();
    assert_eq!(seen.len(), before + 2);
    assert_eq!(&seen[before].body[..], b"abcd");
    assert_eq!(seen[before + 1].uri.path(), "/v1/models");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Route confusion

struct Routes {
    whisper: Mock,
    ollama: Mock,
    kokoro: Mock,
    openai: Mock,
    proxy: TestProxy,
}

impl Routes {
    async fn start() -> Routes {
        let whisper = Mock::echo("whisper").await;
        let ollama = Mock::echo("ollama").await;
        let kokoro = Mock::echo("kokoro").await;
        let openai = Mock::echo("openai").await;
        let proxy = start_proxy(&default_routes(
            &whisper.url(),
            &ollama.url(),
            &kokoro.url(),
            &openai.url(),
            "",
        ))
        .await;
        Routes {
            whisper,
            ollama,
            kokoro,
            openai,
            proxy,
        }
    }

    fn mocks(&self) -> [(&'static str, &Mock); 4] {
        [
            ("whisper", &self.whisper),
            ("ollama", &self.ollama),
            ("kokoro", &self.kokoro),
            ("openai", &self.openai),
        ]
    }

    fn total(&self) -> usize {
        self.mocks().iter().map(|(_, m)| m.requests().len()).sum()
    }

    /// Every request any backend received belongs to that backend by the path it received.
    fn assert_each_backend_got_only_its_own(&self) {
        let route = |p: &str| -> &'static str {
            for (prefix, name) in [
                ("/v1/audio/transcriptions", "whisper"),
                ("/v1/chat/completions", "ollama"),
                ("/v1/audio/speech", "kokoro"),
                ("/v1/audio/voices", "kokoro"),
                ("/v1", "openai"),
            ] {
                if p == prefix || p.starts_with(&format!("{prefix}/")) {
                    return name;
                }
            }
            "none"
        };
        for (name, m) in self.mocks() {
            for s in m.requests() {
                assert_eq!(route(s.uri.path()), name, "{name} received {}", s.uri);
            }
        }
    }
}

enum Expect {
    /// This status, and no backend sees the request.
    Refused(u16),
    /// Forwarded to this backend with exactly this path.
    To(&'static str, &'static str),
    /// Answered by the proxy itself (its own pages), never forwarded.
    Own,
}

#[tokio::test]
async fn route_confusion_never_reaches_another_route() {
    let r = Routes::start().await;
    let speech_host = r.kokoro.addr.to_string();
    let speech_host_header = format!("Host: {speech_host}\r\n");
    let cases: Vec<(String, &str, Expect)> = vec![
        (
            "GET /v1/chat/completions/../../audio/speech".into(),
            "",
            Expect::Refused(400),
        ),
        (
            "GET /v1/chat/completions/%2e%2e/%2e%2e/audio/speech".into(),
            "",
            Expect::Refused(400),
        ),
        (
            "GET /v1/chat/completions/%2E%2e/x".into(),
            "",
            Expect::Refused(400),
        ),
        (
            "GET /v1/chat/completions/.%2e/x".into(),
            "",
            Expect::Refused(400),
        ),
        ("GET /v1/audio%2Fspeech".into(), "", Expect::Refused(400)),
        ("GET /v1/audio%2fspeech".into(), "", Expect::Refused(400)),
        ("GET /v1/audio%5Cspeech".into(), "", Expect::Refused(400)),
        ("GET /v1\\audio\\speech".into(), "", Expect::Refused(400)),
        ("GET /v1/audio/speech%00".into(), "", Expect::Refused(400)),
        ("GET /v1/audio/speech/%zz".into(), "", Expect::Refused(400)),
        (
            "GET /v1/chat/completions;/../../audio/speech".into(),
            "",
            Expect::Refused(400),
        ),
        ("OPTIONS * HTTP/1.1".into(), "", Expect::Refused(400)),
        (
            "CONNECT api.openai.com:443".into(),
            "",
            Expect::Refused(405),
        ),
        ("CONNECT 127.0.0.1:1".into(), "", Expect::Refused(405)),
        (
            "GET //v1//audio//speech".into(),
            "",
            Expect::To("kokoro", "/v1/audio/speech"),
        ),
        (
            "GET /v1/./audio/./speech/.".into(),
            "",
            Expect::To("kokoro", "/v1/audio/speech/"),
        ),
        (
            "GET /v1/%61udio/speech".into(),
            "",
            Expect::To("kokoro", "/v1/audio/speech"),
        ),
        (
            "GET /%76%31/chat/completions".into(),
            "",
            Expect::To("ollama", "/v1/chat/completions"),
        ),
        (
            "GET /v1/chat/completionsX".into(),
            "",
            Expect::To("openai", "/v1/chat/completionsX"),
        ),
        (
            "GET /v1/chat/completions%3B/x".into(),
            "",
            Expect::To("openai", "/v1/chat/completions%3B/x"),
        ),
        (
            "GET /v1/chat/completions?x=/../audio/speech".into(),
            "",
            Expect::To("ollama", "/v1/chat/completions"),
        ),
        // Absolute-form targets: the authority in the request line is ignored.
        (
            "GET http://evil.example/v1/chat/completions".into(),
            "",
            Expect::To("ollama", "/v1/chat/completions"),
        ),
        (
            format!("GET http://{speech_host}/v1/models"),
            "",
            Expect::To("openai", "/v1/models"),
        ),
        (
            "GET https://api.openai.com/v1/audio/speech".into(),
            "",
            Expect::To("kokoro", "/v1/audio/speech"),
        ),
        (
            "GET http://127.0.0.1:1/v1/audio/voices".into(),
            "",
            Expect::To("kokoro", "/v1/audio/voices"),
        ),
        // Host tricks: Host is never used for routing; a name that is not the proxy's is
        // refused, and so are two Hosts.
        (
            "GET /v1/models".into(),
            "Host: api.openai.com\r\n",
            Expect::Refused(403),
        ),
        (
            "GET /v1/audio/transcriptions".into(),
            "Host: localhost:11434\r\n",
            Expect::To("whisper", "/v1/audio/transcriptions"),
        ),
        (
            format!("GET http://{speech_host}/v1/models"),
            &speech_host_header,
            Expect::To("openai", "/v1/models"),
        ),
        (
            "GET /v1/models".into(),
            "Host: localhost\r\nHost: 127.0.0.1\r\n",
            Expect::Refused(400),
        ),
        (
            "GET /v1/models".into(),
            "X-Original-URL: /v1/chat/completions\r\nX-Rewrite-URL: /v1/audio/speech\r\n",
            Expect::To("openai", "/v1/models"),
        ),
        (
            "GET /v1/models".into(),
            "X-Forwarded-Host: evil\r\nForwarded: host=evil\r\n",
            Expect::To("openai", "/v1/models"),
        ),
        ("GET /V1/CHAT/COMPLETIONS".into(), "", Expect::Refused(404)),
        ("GET /v2/../v1/models".into(), "", Expect::Refused(400)),
        ("GET /".into(), "", Expect::Own),
        ("GET /health/../v1/models".into(), "", Expect::Refused(400)),
    ];
    for (line, extra, expect) in cases {
        let line = if line.ends_with("HTTP/1.1") {
            line
        } else {
            format!("{line} HTTP/1.1")
        };
        let host = if extra.lines().any(|l| l.starts_with("Host:")) {
            String::new()
        } else {
            "Host: localhost\r\n".to_string()
        };
        let req = format!("{line}\r\n{host}{extra}Connection: close\r\n\r\n");
        let before = r.total();
        let x = ask(r.proxy.addr, req.as_bytes()).await;
        let status = x.status();
        match expect {
            Expect::Refused(code) => {
                assert_eq!(status, Some(code), "{line:?}: {}", x.text);
                assert_eq!(r.total(), before, "{line:?} was forwarded");
            }
            Expect::Own => {
                assert_eq!(status, Some(200), "{line:?}: {}", x.text);
                assert_eq!(r.total(), before, "{line:?} was forwarded");
            }
            Expect::To(backend, path) => {
                assert_eq!(status, Some(200), "{line:?}: {}", x.text);
                assert!(
                    x.text
                        .to_ascii_lowercase()
                        .contains(&format!("x-backend: {backend}")),
                    "{line:?} answered by the wrong backend: {}",
                    x.text
                );
                let (_, m) = r.mocks().into_iter().find(|(n, _)| *n == backend).unwrap();
                let last = m.requests().pop().expect("the backend saw it");
                assert_eq!(last.uri.path(), path, "{line:?}");
                assert_eq!(
                    r.total(),
                    before + 1,
                    "{line:?} reached more than one backend"
                );
                // The backend sees its own authority as Host, never the client's.
                assert_eq!(
                    last.header("host"),
                    Some(m.addr.to_string().as_str()),
                    "{line:?}"
                );
            }
        }
    }
    r.assert_each_backend_got_only_its_own();
    r.proxy.stop().await;
}
