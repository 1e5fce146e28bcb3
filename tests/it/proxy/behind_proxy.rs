//! Streams stay streams behind another proxy: server-sent events get `X-Accel-Buffering: no`
//! and `Cache-Control: no-cache` unless the backend set them, and the nginx block of
//! docs/service-and-containers.md,
//! run by a real nginx in front of the proxy, passes tokens on as they come and WebSockets
//! through.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Request;
use tokio_tungstenite::tungstenite::Message;

use crate::support::activation::free_port;
use crate::support::bin::{signal, wait_exit};
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;
use crate::support::sse::{self, Events};
use crate::support::ws::{connect, WsEcho};
use crate::support::{default_routes, routes_to, start_proxy};

/// A backend streaming `data: 0` ... `data: 4`, 300 ms apart, with `headers`; notes when
/// each event was sent.
async fn sse(
    headers: &'static [(&'static str, &'static str)],
    sent: Arc<Mutex<Vec<Instant>>>,
) -> Mock {
    let mut events = Events::numbered(5, Duration::from_millis(300));
    events.headers = headers.to_vec();
    events.done = false;
    sse::backend(events, sent).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_marked_unbuffered_unless_the_backend_said_otherwise() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let plain = sse(&[], sent.clone()).await;
    let own = sse(
        &[("cache-control", "no-store"), ("x-accel-buffering", "yes")],
        sent,
    )
    .await;
    let json = Mock::echo("json").await;
    let proxy = start_proxy(&default_routes(
        &json.url(),
        &plain.url(),
        &own.url(),
        &json.url(),
        "",
    ))
    .await;
    let get = |path: &str| {
        send(
            Request::post(proxy.url(path))
                .body(full("{\"stream\":true}"))
                .unwrap(),
        )
    };
    let res = get("/v1/chat/completions").await;
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    body_bytes(res).await;
    let res = get("/v1/audio/speech").await;
    assert_eq!(res.headers()["x-accel-buffering"], "yes");
    assert_eq!(res.headers()["cache-control"], "no-store");
    body_bytes(res).await;
    let res = get("/v1/models").await;
    assert!(res.headers().get("x-accel-buffering").is_none());
    assert!(res.headers().get("cache-control").is_none());
    body_bytes(res).await;
    proxy.stop().await;
}

/// The nginx block of the service guide ("Behind nginx or Caddy").
fn guide_nginx_block() -> String {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/service-and-containers.md"
    ))
    .unwrap();
    let start = guide
        .find("```nginx\n")
        .expect("docs/service-and-containers.md has an nginx block")
        + 9;
    let len = guide[start..].find("```").unwrap();
    guide[start..start + len].to_string()
}

/// nginx, stopped (by PID) when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        signal(&self.0, libc::SIGTERM);
        if wait_exit(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs the guide's nginx block on `port` (plain HTTP: the TLS lines dropped) in front of
/// the proxy at `upstream`.
fn start_nginx(dir: &std::path::Path, port: u16, upstream: std::net::SocketAddr) -> Nginx {
    let block: String = guide_nginx_block()
        .lines()
        .filter(|l| !l.contains("ssl_certificate"))
        .map(|l| {
            l.replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"))
                .replace("127.0.0.1:2020", &upstream.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        block.contains(&format!("listen 127.0.0.1:{port};")),
        "{block}"
    );
    let d = dir.display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         {block}\n}}\n"
    );
    crate::support::tools::require("nginx", "nginx");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let nginx = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let nginx = Nginx(nginx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_guides_nginx_tokens_stream_and_websockets_pass() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let ollama = sse(&[], sent.clone()).await;
    let echo = WsEcho::start().await;
    let proxy = start_proxy(
        &routes_to(&echo.url()).replace(
            "[[route]]\npath = \"/v1/chat/completions\"\nbackend = \"ollama\"",
            &format!("[backends.sse]\nurl = \"{}\"\n[[route]]\npath = \"/v1/chat/completions\"\nbackend = \"sse\"", ollama.url()),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = start_nginx(dir.path(), port, proxy.addr);

    // Each event arrives before the next is sent: nginx did not hold it back.
    let res = send(
        Request::post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(full("{\"model\":\"llama3\",\"stream\":true}"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "sse");
    let numbered: Vec<String> = (0..5).map(|i| format!("data: {i}\n\n")).collect();
    let (text, arrived) = sse::read_timed(res.into_body(), &numbered).await;
    assert_eq!(arrived.len(), 5, "{text}");
    let sent = sent.lock().unwrap().clone();
    sse::assert_each_arrived_before_the_next_was_sent(&arrived, &sent, "nginx or the proxy");

    // A WebSocket through nginx and the proxy.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut ws, res) = connect(addr, "/v1/realtime?model=m", &[]).await.unwrap();
    assert_eq!(res.headers()["x-backend"], "openai");
    ws.send(Message::text("through nginx")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::text("through nginx"));
    ws.close(None).await.unwrap();
    proxy.stop().await;
}
