//! Web pages: no page can use the proxy (and the key it injects) unless its origin is
//! allowed, neither by rebinding its DNS name to the proxy's address nor by a cross-site
//! request; pages of allowed origins get CORS, streams included. And `Host` is checked.

use std::io::Write;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::activation::config_file;
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, raw, raw_status, send};
use crate::support::mock::Mock;
use crate::support::{default_routes, start_proxy, TestProxy};

const KEY: &str = "sk-injected-BROWSERS-0123456789";
const PAGE: &str = "http://localhost:3000";

struct Setup {
    openai: Mock,
    ollama: Mock,
    others: [Mock; 2],
    proxy: TestProxy,
    _key: tempfile::NamedTempFile,
}

impl Setup {
    /// The default routes; OpenAI's key injected by the proxy; Ollama streams three events
    /// 150 ms apart; pages of `http://localhost:3000` and Chrome extensions allowed, and the
    /// name `proxy.lan`.
    async fn start() -> Setup {
        let mut key = tempfile::NamedTempFile::new().unwrap();
        writeln!(key, "{KEY}").unwrap();
        let openai = Mock::echo("openai").await;
        let ollama = Mock::sse(3, Duration::from_millis(150)).await;
        let others = [Mock::echo("whisper").await, Mock::echo("kokoro").await];
        let proxy = start_proxy(&format!(
            "[server]\ncors_origins = [\"{PAGE}\", \"chrome-extension://*\"]\n\
             allowed_hosts = [\"proxy.lan\"]\n{}",
            default_routes(
                &others[0].url(),
                &ollama.url(),
                &others[1].url(),
                &openai.url(),
                &format!("api_key_file = {:?}", key.path()),
            )
        ))
        .await;
        Setup {
            openai,
            ollama,
            others,
            proxy,
            _key: key,
        }
    }

    /// Requests every backend received (Ollama's SSE mock records none: it counts
    /// connections instead).
    fn forwarded(&self) -> usize {
        self.openai.requests().len()
            + self
                .others
                .iter()
                .map(|m| m.requests().len())
                .sum::<usize>()
            + self
                .ollama
                .connections
                .load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
        let mut req = Request::post(self.proxy.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(req.body(full("{\"model\":\"m\",\"stream\":true}")).unwrap()).await
    }
}

/// The status, headers and body, as text (for "the key is not in it").
async fn everything(res: Response<Incoming>) -> (u16, String, serde_json::Value) {
    let status = res.status().as_u16();
    let head = format!("{:?}", res.headers());
    let body = body_bytes(res).await;
    let text = format!("{head}\n{}", String::from_utf8_lossy(&body));
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, text, json)
}

#[tokio::test]
async fn pages_of_other_origins_reach_no_backend_and_allowed_ones_get_cors() {
    let s = Setup::start().await;
    let port = s.proxy.addr.port();

    // DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1. Its POST
    // comes with its own name as Host (and Origin); its GETs are same-origin to the
    // browser, without any Origin.
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    for (path, headers) in [
        (
            "/v1/chat/completions",
            vec![
                ("host", evil_host.as_str()),
                ("origin", evil_origin.as_str()),
                ("content-type", "text/plain"),
            ],
        ),
        ("/v1/files", vec![("host", evil_host.as_str())]),
    ] {
        let (status, text, json) = everything(s.post(path, &headers).await).await;
        assert_eq!(status, 403, "{text}");
        assert_eq!(json["error"]["code"], "host_not_allowed", "{text}");
        assert!(
            !text.contains(KEY) && !text.contains("access-control"),
            "{text}"
        );
    }
    // A cross-site "simple" request (no preflight needed): text/plain from another page.
    let (status, text, json) = everything(
        s.post(
            "/v1/chat/completions",
            &[
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(json["error"]["code"], "origin_not_allowed");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"http://evil.example\""),
        "{text}"
    );
    assert!(
        !text.contains(KEY) && !text.contains("access-control"),
        "{text}"
    );
    // Without an Origin, a cross-site (or same-site: another port of localhost) fetch is
    // known by Sec-Fetch-Site.
    for site in ["cross-site", "same-site"] {
        let res = s.post("/v1/models", &[("sec-fetch-site", site)]).await;
        assert_eq!(res.status(), 403, "{site}");
    }
    // A preflight from another origin gets no permission.
    let req = Request::options(s.proxy.url("/v1/chat/completions"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .body(full(""))
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status(), 403);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert_eq!(s.forwarded(), 0, "a refused request reached a backend");

    // An allowed page: the proxy answers its preflight itself, echoing the headers it asks
    // for (SDKs send x-stainless-*), and allows POST.
    let req = Request::options(s.proxy.url("/v1/chat/completions"))
        .header("origin", PAGE)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os, x-stainless-retry-count",
        )
        .body(full(""))
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], PAGE);
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    );
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(h.contains_key("access-control-max-age"));
    assert!(!h.contains_key("access-control-allow-credentials"));
    assert_eq!(s.forwarded(), 0, "the preflight went to a backend");

    // Its streamed chat: the CORS headers come with the response head, the events as they
    // are produced (150 ms apart).
    let res = s
        .post(
            "/v1/chat/completions",
            &[("origin", PAGE), ("content-type", "application/json")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    assert_eq!(res.headers()["access-control-expose-headers"], "*");
    assert_eq!(res.headers()["x-backend"], "ollama");
    let mut body = res.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            arrivals.push(Instant::now());
        }
    }
    assert!(text.starts_with("data: 0\n\n") && text.ends_with("data: [DONE]\n\n"));
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(300),
        "the events came together ({spread:?}): the stream was held"
    );

    // Its request to OpenAI works with the key the proxy injects, and the page can read
    // the answer (and its headers).
    let res = s
        .post(
            "/v1/models",
            &[("origin", PAGE), ("sec-fetch-site", "same-site")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);
    let vary: Vec<_> = res.headers().get_all("vary").iter().collect();
    assert!(vary.iter().any(|v| *v == "origin"), "{vary:?}");
    body_bytes(res).await;
    let seen = s.openai.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    // An error for an allowed page is readable too.
    let res = s.post("/v2/nothing", &[("origin", PAGE)]).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["access-control-allow-origin"], PAGE);

    // Browser extensions by scheme: Chrome's allowed, Firefox's not.
    let res = s
        .post(
            "/v1/models",
            &[("origin", "chrome-extension://abcdefghijklmnop")],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "chrome-extension://abcdefghijklmnop"
    );
    let res = s
        .post("/v1/models", &[("origin", "moz-extension://0a1b2c3d")])
        .await;
    assert_eq!(res.status(), 403);
    s.proxy.stop().await;
}

/// This machine's name, as the proxy reads it.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0);
    let len = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[tokio::test]
async fn the_proxys_own_names_pass_with_any_port() {
    let s = Setup::start().await;
    let me = hostname();
    let mine = [
        "localhost:2020".to_string(),
        "127.0.0.1:2020".into(),
        "[::1]:2020".into(),
        "proxy.lan:2020".into(),
        "PROXY.LAN".into(),
        "app.localhost:8080".into(),
        "192.168.1.20:2020".into(),
        format!("{me}:2020"),
        format!("{me}.local"),
    ];
    for host in &mine {
        let res = s.post("/v1/models", &[("host", host.as_str())]).await;
        assert_eq!(res.status(), 200, "{host}");
        body_bytes(res).await;
    }
    assert_eq!(s.openai.requests().len(), mine.len());
    for host in [
        "proxy.lan.evil.example",
        "localhost.evil.example",
        "lan",
        "",
    ] {
        let res = s.post("/v1/models", &[("host", host)]).await;
        assert_eq!(res.status(), 403, "{host:?}");
    }
    assert_eq!(s.openai.requests().len(), mine.len());
    s.proxy.stop().await;
}

#[tokio::test]
async fn host_missing_repeated_or_malformed_is_400_json() {
    let s = Setup::start().await;
    for (what, head) in [
        ("missing", "GET /v1/models HTTP/1.1\r\n"),
        (
            "repeated",
            "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n",
        ),
        ("two names", "GET /v1/models HTTP/1.1\r\nHost: a b\r\n"),
        (
            "user info",
            "GET /v1/models HTTP/1.1\r\nHost: me@localhost\r\n",
        ),
        (
            "bad port",
            "GET /v1/models HTTP/1.1\r\nHost: localhost:http\r\n",
        ),
    ] {
        let reply = raw(
            s.proxy.addr,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(raw_status(&reply), 400, "{what}: {reply}");
        let body = reply.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_host", "{what}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // HTTP/1.0 needs no Host.
    let reply = raw(
        s.proxy.addr,
        b"GET /v1/models HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&reply), 200, "{reply}");
    assert_eq!(s.openai.requests().len(), 1);
    s.proxy.stop().await;
}

#[tokio::test]
async fn over_a_unix_socket_any_name_passes_but_not_a_foreign_page() {
    use openai_proxy::serve::{self, Shared};
    use openai_proxy::{Config, ListenAddr, Proxy};
    let m = Mock::echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.sock");
    let config = Config::from_toml(&format!(
        "[backends.b]\nurl = \"{}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        m.url()
    ))
    .unwrap();
    let listeners = openai_proxy::bind(&[ListenAddr::Unix(path.clone())]).unwrap();
    let state = Shared::new(Proxy::new(config).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve::run(listeners, state, async move {
        let _ = rx.await;
    }));
    let ask = |extra: &'static str| {
        let path = path.clone();
        async move {
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            let req = format!("GET /v1/models HTTP/1.1\r\n{extra}Connection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
                .await
                .unwrap()
                .unwrap();
            raw_status(&out)
        }
    };
    // Whatever fronts the socket chose the name; no browser reaches a socket file by one.
    assert_eq!(ask("Host: openai-proxy.internal.example\r\n").await, 200);
    assert_eq!(
        ask("Host: localhost\r\nOrigin: http://evil.example\r\n").await,
        403
    );
    assert_eq!(ask("").await, 400);
    assert_eq!(m.requests().len(), 1);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn letting_every_page_or_name_through_is_warned_about() {
    let m = Mock::echo("b").await;
    let (_dir, cfg) = config_file(&format!(
        "[server]\ncors_origins = [\"*\"]\nallowed_hosts = [\"*\"]\n[log]\ntarget = \"stderr\"\n\
         [backends.b]\nurl = \"{}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n",
        m.url()
    ));
    let proc = Proc::start(&cfg, &[]);
    // With "*" a page of any origin and any name get through, as configured.
    let res = send(
        Request::get(format!("http://{}/v1/models", proc.addr))
            .header("host", "anything.example")
            .header("origin", "https://any.example")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://any.example"
    );
    let log = proc.stop().await;
    assert!(
        log.contains(
            "server.cors_origins contains \"*\": every web page you visit can use the proxy"
        ),
        "{log}"
    );
    assert!(log.contains("server.allowed_hosts contains \"*\""), "{log}");
}
