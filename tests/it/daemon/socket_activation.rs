//! Socket activation (`systemd-socket-activate`), sd_notify readiness, idle exit, and reload.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use http::Request;

use crate::support::activation::{
    config_file, free_port, get_health, start_notified, Activated, NotifySocket,
};
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;

const MINIMAL: &str =
    "[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";

#[test]
fn inherited_socket_is_served_and_server_listen_stays_unbound() {
    let port = free_port();
    let configured = free_port();
    let (_d, cfg) = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:{configured}\"]\n{MINIMAL}"
    ));
    let notify = NotifySocket::new(false);
    let mut act = Activated::start(&[format!("127.0.0.1:{port}")], &notify, &cfg);
    // The first connection starts the proxy, which answers it on the inherited socket.
    assert_eq!(get_health(&format!("127.0.0.1:{port}")), "HTTP/1.1 200 OK");
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        ready.contains("STATUS=Serving 1 routes on 127.0.0.1:"),
        "{ready}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", configured)).is_err(),
        "server.listen must not be bound when sockets are inherited"
    );
    let log = act.log_text();
    assert!(
        log.contains("using socket \"http\" from the service manager"),
        "{log}"
    );
    act.signal(libc::SIGTERM);
    assert_eq!(act.wait_exit(Duration::from_secs(10)), Some(0));
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    // READY came before STOPPING, once.
    let all = notify.all();
    assert_eq!(
        all.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "{all:?}"
    );
}

#[test]
fn several_sockets_tcp_and_unix_with_an_abstract_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("proxy.sock");
    let (p1, p2) = (free_port(), free_port());
    let (_d, cfg) = config_file(MINIMAL);
    let notify = NotifySocket::new(true);
    assert!(notify.env.starts_with('@'));
    let listen = [
        format!("127.0.0.1:{p1}"),
        format!("127.0.0.1:{p2}"),
        unix.display().to_string(),
    ];
    let mut act = Activated::start(&listen, &notify, &cfg);
    assert_eq!(get_health(&format!("127.0.0.1:{p1}")), "HTTP/1.1 200 OK");
    notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(get_health(&format!("127.0.0.1:{p2}")), "HTTP/1.1 200 OK");
    assert_eq!(
        get_health(&format!("unix:{}", unix.display())),
        "HTTP/1.1 200 OK"
    );
    let status = notify.all().join("\n");
    assert!(
        status.contains(&format!("unix:{}", unix.display())),
        "{status}"
    );
    act.signal(libc::SIGTERM);
    assert_eq!(act.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_bad_config_never_reports_ready() {
    let port = free_port();
    let (_d, cfg) = config_file("[server]\nnonsense = 1\n");
    let notify = NotifySocket::new(false);
    let mut act = Activated::start(&[format!("127.0.0.1:{port}")], &notify, &cfg);
    // The connection starts the proxy, which refuses to run.
    let _ = TcpStream::connect(("127.0.0.1", port));
    assert_eq!(act.wait_exit(Duration::from_secs(10)), Some(78));
    assert!(notify.all().iter().all(|m| !m.contains("READY=1")));
}

#[test]
fn idle_exit_only_after_the_last_connection_closed() {
    let port = free_port();
    let (_d, cfg) = config_file(&format!("[server]\nidle_exit = \"500ms\"\n{MINIMAL}"));
    let notify = NotifySocket::new(false);
    let mut act = Activated::start(&[format!("127.0.0.1:{port}")], &notify, &cfg);
    // A keep-alive connection that stays open longer than idle_exit keeps the proxy up.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = conn.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    notify.wait_for("READY=1", Duration::from_secs(10));
    act.assert_idle_exit_after(&notify, Duration::from_millis(1500), || drop(conn));
}

fn routed_to(name: &str, url: &str) -> String {
    format!("[backends.{name}]\nurl = \"{url}\"\n[[route]]\npath = \"/v1\"\nbackend = \"{name}\"\n")
}

async fn backend_of(base: &str) -> String {
    let res = send(
        Request::get(format!("{base}/v1/models"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let name = res.headers()["x-backend"].to_str().unwrap().to_string();
    body_bytes(res).await;
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_config_keeps_the_old_one() {
    let (a, b) = (Mock::echo("a").await, Mock::echo("b").await);
    let (dir, cfg) = config_file(&routed_to("a", &a.url()));
    let (proc, notify) = start_notified(&cfg);
    let base = format!("http://{}", proc.addr);
    assert_eq!(backend_of(&base).await, "a");

    std::fs::write(&cfg, routed_to("b", &b.url())).unwrap();
    proc.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(!ready.contains("FAILED"), "{ready}");
    assert_eq!(backend_of(&base).await, "b");

    std::fs::write(&cfg, "[[route]]\npath = \"/v1\"\nbackend = \"nowhere\"\n").unwrap();
    proc.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    let file = cfg.display().to_string();
    assert!(ready.contains("reload FAILED"), "{ready}");
    assert!(
        ready.contains(&format!("{file}:3:11: route[0].backend")),
        "{ready}"
    );
    assert_eq!(
        backend_of(&base).await,
        "b",
        "the previous config keeps serving"
    );

    std::fs::write(&cfg, routed_to("a", &a.url())).unwrap();
    proc.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        !ready.contains("FAILED"),
        "a good reload clears the error: {ready}"
    );
    assert_eq!(backend_of(&base).await, "a");

    let log = proc.stop().await;
    assert!(
        log.contains(&format!(
            "reload failed, keeping the previous configuration: {file}:3:11"
        )),
        "{log}"
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let (a, b) = (Mock::echo("a").await, Mock::echo("b").await);
    let (_dir, cfg) = config_file(&(routed_to("a", &a.url()) + "[log]\naccess_log = false\n"));
    let (mut proc, notify) = start_notified(&cfg);
    let base = format!("http://{}", proc.addr);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (base, stop) = (base.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = crate::support::client::client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 100_000 {
                let req = Request::post(format!("{base}/v1/chat/completions"))
                    .body(full("{}"))
                    .unwrap();
                match client.request(req).await {
                    Ok(res) if res.status() == 200 => {
                        body_bytes(res).await;
                        ok += 1;
                    }
                    Ok(res) => failed.push(format!("status {}", res.status())),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..10 {
        let (name, url) = if i % 2 == 0 {
            ("b", b.url())
        } else {
            ("a", a.url())
        };
        std::fs::write(&cfg, routed_to(name, &url) + "[log]\naccess_log = false\n").unwrap();
        proc.signal(libc::SIGHUP);
        notify.wait_for("RELOADING=1", Duration::from_secs(10));
        notify.wait_for("READY=1", Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut failures) = (0, Vec::new());
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        total += ok;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 100, "only {total} requests during the reloads");
    assert!(!a.requests().is_empty() && !b.requests().is_empty());
    proc.signal(libc::SIGTERM);
    tokio::task::spawn_blocking(move || proc.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
}
