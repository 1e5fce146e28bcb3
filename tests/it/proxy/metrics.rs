//! `[metrics]`: `/metrics` parses as Prometheus text and as OpenMetrics (with the Prometheus
//! client library's own parsers), its counters match what the test sent, nothing a client
//! sends becomes a label, and a reload changes the routes and servers shown.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use openai_proxy::{Config, Proxy};

use crate::support::activation::{
    config_file, free_port, get_health, start_notified, Activated, NotifySocket,
};
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;
use crate::support::prom::{metrics_addr, scrape, Scrape};
use crate::support::{dead_addr, serve_metrics, start_proxy};

const LISTEN: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn routes(pool: &[String], openai: &str, sse: Option<&str>, extra_route: &str) -> String {
    let urls: Vec<String> = pool.iter().map(|u| format!("\"{u}\"")).collect();
    let mut s = format!(
        "{LISTEN}[backends.pool]\nurls = [{}]\n[backends.openai]\nurl = \"{openai}\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"pool\"\nfallback = \"openai\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n{extra_route}",
        urls.join(", ")
    );
    if let Some(sse) = sse {
        s.push_str(&format!(
            "[backends.sse]\nurl = \"{sse}\"\n[[route]]\npath = \"/sse\"\nbackend = \"sse\"\n"
        ));
    }
    s
}

async fn get(url: String) -> u16 {
    let res = send(Request::get(url).body(full("")).unwrap()).await;
    let s = res.status().as_u16();
    body_bytes(res).await;
    s
}

async fn post(url: String, body: &'static str) -> u16 {
    let res = send(Request::post(url).body(full(body)).unwrap()).await;
    let s = res.status().as_u16();
    body_bytes(res).await;
    s
}

fn requests(m: &Scrape, route: &str, backend: &str, class: &str) -> f64 {
    m.value(
        "openai_proxy_requests_total",
        &[
            ("route", route),
            ("backend", backend),
            ("status_class", class),
        ],
    )
}

#[tokio::test]
async fn the_counters_match_what_was_sent_and_follow_a_reload() {
    let openai = Mock::echo("openai").await;
    let b2 = Mock::echo("b2").await;
    let sse = Mock::sse(3, Duration::from_millis(400)).await;
    let dead = format!("http://{}", dead_addr());
    let proxy = start_proxy(&routes(
        &[dead.clone(), b2.url()],
        &openai.url(),
        Some(&sse.url()),
        "",
    ))
    .await;
    let metrics = serve_metrics(&proxy.state).await;

    for _ in 0..3 {
        assert_eq!(get(proxy.url("/v1/models?key=sk-query-secret")).await, 200);
    }
    assert_eq!(post(proxy.url("/v1/files"), "hello").await, 200);
    for _ in 0..2 {
        let body = "{\"model\":\"client-model-xyz\"}";
        assert_eq!(post(proxy.url("/v1/chat/completions"), body).await, 200);
    }
    assert_eq!(get(proxy.url("/health")).await, 200);
    assert_eq!(get(proxy.url("/nope")).await, 404);

    // A stream in flight.
    let res = send(Request::post(proxy.url("/sse/x")).body(full("{}")).unwrap()).await;
    assert_eq!(res.status(), 200);
    let mut stream = res.into_body();
    stream.frame().await.unwrap().unwrap();
    let during = scrape(metrics, false).await;
    for name in [
        "openai_proxy_streams_in_flight",
        "openai_proxy_requests_in_flight",
    ] {
        assert_eq!(
            during.value(name, &[("route", "/sse"), ("backend", "sse")]),
            1.0,
            "{name}"
        );
    }
    stream.collect().await.unwrap();

    for openmetrics in [false, true] {
        let m = scrape(metrics, openmetrics).await;
        assert_eq!(m.types["openai_proxy_requests"], "counter", "{openmetrics}");
        assert_eq!(m.types["openai_proxy_time_to_headers_seconds"], "histogram");
        assert_eq!(requests(&m, "/v1", "openai", "2xx"), 4.0);
        assert_eq!(requests(&m, "/v1", "openai", "5xx"), 0.0);
        assert_eq!(requests(&m, "/v1/chat/completions", "pool", "2xx"), 2.0);
        assert_eq!(requests(&m, "/sse", "sse", "2xx"), 1.0);
        assert_eq!(requests(&m, "", "", "2xx"), 1.0, "/health");
        assert_eq!(requests(&m, "", "", "4xx"), 1.0, "/nope");
        let route = [("route", "/v1"), ("backend", "openai")];
        assert_eq!(m.value("openai_proxy_request_bytes_total", &route), 5.0);
        assert!(m.value("openai_proxy_response_bytes_total", &route) > 0.0);
        assert_eq!(
            m.value("openai_proxy_time_to_headers_seconds_count", &route),
            4.0
        );
        let mut inf = route.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(
            m.value("openai_proxy_time_to_headers_seconds_bucket", &inf),
            4.0
        );
        assert_eq!(
            m.value("openai_proxy_request_duration_seconds_count", &route),
            4.0
        );
        for name in [
            "openai_proxy_streams_in_flight",
            "openai_proxy_requests_in_flight",
        ] {
            assert_eq!(m.value(name, &[("route", "/sse"), ("backend", "sse")]), 0.0);
        }
        fn server(url: &str) -> [(&str, &str); 2] {
            [("backend", "pool"), ("server", url)]
        }
        assert_eq!(m.value("openai_proxy_server_up", &server(&dead)), 0.0);
        assert_eq!(m.value("openai_proxy_server_up", &server(&b2.url())), 1.0);
        assert_eq!(
            m.value("openai_proxy_server_taken_out_total", &server(&dead)),
            1.0
        );
        assert_eq!(
            m.value("openai_proxy_server_requests_in_flight", &server(&b2.url())),
            0.0
        );
        // b2 answered: the fallback was never needed.
        let no_fallback: f64 = m
            .matching(
                "openai_proxy_fallbacks_total",
                &[("route", "/v1/chat/completions")],
            )
            .map(|s| s.value)
            .sum();
        assert_eq!(no_fallback, 0.0);
        assert_eq!(
            m.value(
                "openai_proxy_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        // Nothing the client sent is a label.
        for s in &m.samples {
            for v in s.labels.values() {
                assert!(
                    !v.contains("client-model")
                        && !v.contains("sk-")
                        && !v.contains('?')
                        && !v.contains("/nope")
                        && !v.contains("/sse/x"),
                    "{s:?}"
                );
            }
        }
    }

    // A reload: /sse goes, /v2 comes, the pool's dead server is replaced.
    let b3 = Mock::echo("b3").await;
    let config = Config::from_toml(&routes(
        &[b2.url(), b3.url()],
        &openai.url(),
        None,
        "[[route]]\npath = \"/v2\"\nbackend = \"openai\"\n",
    ))
    .unwrap();
    let lasting = proxy.state.lasting();
    proxy.state.replace(Proxy::with(config, &lasting).unwrap());
    assert_eq!(get(proxy.url("/v1/models")).await, 200);
    let m = scrape(metrics, true).await;
    assert_eq!(requests(&m, "/v1", "openai", "2xx"), 5.0, "kept counting");
    assert_eq!(requests(&m, "/v2", "openai", "2xx"), 0.0, "a new route");
    assert!(!m.has("openai_proxy_requests_total", &[("route", "/sse")]));
    assert!(!m.has("openai_proxy_server_up", &[("server", &dead)]));
    assert_eq!(
        m.value("openai_proxy_server_up", &[("server", &b3.url())]),
        1.0
    );
    // The `/` page says where the metrics are.
    let res = send(Request::get(proxy.url("/")).body(full("")).unwrap()).await;
    let page = String::from_utf8_lossy(&body_bytes(res).await).into_owned();
    assert!(
        page.contains("\nMetrics: GET /metrics on the metrics listener"),
        "{page}"
    );
    proxy.stop().await;
}

/// A fallback taken is counted with its reason.
#[tokio::test]
async fn fallbacks_are_counted_by_reason() {
    let openai = Mock::echo("openai").await;
    let proxy = start_proxy(&format!(
        "{LISTEN}[backends.local]\nurl = \"http://{}\"\n[backends.openai]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\nfallback = \"openai\"\n",
        dead_addr(),
        openai.url()
    ))
    .await;
    let metrics = serve_metrics(&proxy.state).await;
    for _ in 0..2 {
        assert_eq!(post(proxy.url("/v1/chat/completions"), "{}").await, 200);
    }
    let m = scrape(metrics, false).await;
    let labels = |reason| {
        [
            ("route", "/v1"),
            ("backend", "local"),
            ("fallback", "openai"),
            ("reason", reason),
        ]
    };
    assert_eq!(
        m.value("openai_proxy_fallbacks_total", &labels("refused")),
        2.0
    );
    assert_eq!(
        m.value("openai_proxy_fallbacks_total", &labels("status_5xx")),
        0.0
    );
    assert_eq!(
        requests(&m, "/v1", "openai", "2xx"),
        2.0,
        "counted for who answered"
    );
    assert_eq!(requests(&m, "/v1", "local", "2xx"), 0.0);
    proxy.stop().await;
}

/// The real binary: `/metrics` on its own listener, reloads counted with their result, and
/// nothing but `/metrics` there.
#[tokio::test]
async fn reloads_are_counted_with_their_result() {
    let openai = Mock::echo("openai").await;
    let good = format!(
        "{LISTEN}[backends.openai]\nurl = \"{}\"\n[[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
        openai.url()
    );
    let (_dir, cfg) = config_file(&good);
    let (proc, notify) = start_notified(&cfg);
    let metrics = metrics_addr(&proc).await;
    for (text, ok) in [(good.clone(), true), ("[server\n".to_string(), false)] {
        std::fs::write(&cfg, text).unwrap();
        proc.signal(libc::SIGHUP);
        notify.wait_for("RELOADING=1", Duration::from_secs(20));
        let ready = notify.wait_for("READY=1", Duration::from_secs(20));
        assert_eq!(ready.contains("FAILED"), !ok, "{ready}");
    }
    let m = scrape(metrics, true).await;
    let reloads = |result| m.value("openai_proxy_config_reloads_total", &[("result", result)]);
    assert_eq!((reloads("success"), reloads("failure")), (1.0, 1.0));
    assert_eq!(
        m.value("openai_proxy_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(get(format!("http://{metrics}/other")).await, 404);
    // The proxy's own port does not serve it.
    assert_eq!(get(format!("http://{}/metrics", proc.addr)).await, 404);
    proc.stop().await;
}

/// Socket activation: the inherited socket named `metrics` serves `/metrics` (and
/// `metrics.listen` stays unbound); the others serve the proxy.
#[tokio::test]
async fn an_inherited_socket_named_metrics_serves_them() {
    let (http, metrics, configured) = (free_port(), free_port(), free_port());
    let openai = Mock::echo("openai").await;
    let (_d, cfg) = config_file(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{configured}\"\n[backends.openai]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
        openai.url()
    ));
    let notify = NotifySocket::new(false);
    let http_addr = format!("127.0.0.1:{http}");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let mut act = Activated::start_named(
        &[(&http_addr, "http"), (&metrics_addr, "metrics")],
        &notify,
        &cfg,
    );
    // The first connection starts the proxy.
    let a = http_addr.clone();
    let status = tokio::task::spawn_blocking(move || get_health(&a))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(
        post(format!("http://{http_addr}/v1/embeddings"), "{}").await,
        200
    );
    let m = scrape(metrics_addr.parse().unwrap(), false).await;
    assert_eq!(requests(&m, "/v1", "openai", "2xx"), 1.0);
    assert_eq!(get(format!("http://{http_addr}/metrics")).await, 404);
    // Asked of the proxy's own sockets: another test may have bound the port meanwhile.
    assert!(
        listens_on(act.child.id(), http) && listens_on(act.child.id(), metrics),
        "the proxy's inherited sockets are seen"
    );
    assert!(
        !listens_on(act.child.id(), configured),
        "metrics.listen must not be bound when a metrics socket is inherited"
    );
    let log = act.log_text();
    assert!(
        log.contains("using socket \"metrics\" from the service manager for /metrics"),
        "{log}"
    );
    act.signal(libc::SIGTERM);
    assert_eq!(act.wait_exit(Duration::from_secs(10)), Some(0));
}

/// With `server.client_tokens_file`, `/metrics` needs a token too (Prometheus sends it with
/// `authorization`), and never echoes it.
#[tokio::test]
async fn metrics_need_a_client_token_when_the_proxy_does() {
    let openai = Mock::echo("openai").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "metrics-token-0123456789abcdef\n").unwrap();
    let proxy = start_proxy(&format!(
        "[server]\nclient_tokens_file = {tokens:?}\n{LISTEN}[backends.openai]\nurl = \"{}\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
        openai.url()
    ))
    .await;
    let metrics = serve_metrics(&proxy.state).await;
    let ask = |auth: Option<&'static str>| async move {
        let mut req = Request::get(format!("http://{metrics}/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = send(req.body(full("")).unwrap()).await;
        let status = res.status().as_u16();
        (status, body_bytes(res).await)
    };
    let (status, body) = ask(None).await;
    assert_eq!(status, 401);
    let (status, body2) = ask(Some("Bearer wrong-token-0123456789abcdef")).await;
    assert_eq!(status, 401);
    for b in [&body, &body2] {
        assert!(!String::from_utf8_lossy(b).contains("token-0123456789"));
    }
    let (status, body) = ask(Some("Bearer metrics-token-0123456789abcdef")).await;
    assert_eq!(status, 200);
    let m = crate::support::prom::parse(&String::from_utf8_lossy(&body), false);
    assert_eq!(m.value("openai_proxy_build_info", &[]), 1.0);
    proxy.stop().await;
}

/// Whether process `pid` holds a TCP socket listening on `port` (its descriptors' socket
/// inodes, looked up in /proc/net/tcp and tcp6, state 0A).
fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f
                    .get(1)
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                f.get(3) == Some(&"0A")
                    && local_port == Some(port)
                    && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i))
            })
    })
}
