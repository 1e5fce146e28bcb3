//! The HTTPS listener (`server.tls_cert`, `server.tls_key`): the OpenAI Python SDK over HTTPS,
//! HTTP/2 by ALPN, a new certificate on SIGHUP, mismatched pairs refused at start and at
//! reload, check-endpoints against it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::cli::check::{run, services};
use crate::proxy::sdk::{chat_reply, json_response, openai_reply, run_sdk_trusting};
use crate::support::bin::{self, Proc};
use crate::support::mock::{full, Mock};
use crate::support::tls::{test_ca, TestCa};
use crate::support::{default_routes, routes_to, start_proxy};

/// The certificate and key of `ca` written to `dir`; the `[server]` lines naming them.
fn tls_files(dir: &Path, ca: &TestCa, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let ca_file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&cert, &ca.cert_pem).unwrap();
    std::fs::write(&key, &ca.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    (cert, key, ca_file)
}

/// A config whose `[server]` serves TLS with `cert` and `key`, then `rest`.
fn tls_config(cert: &Path, key: &Path, rest: &str) -> String {
    format!("[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n{rest}")
}

fn roots(cas: &[&TestCa]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    roots
}

fn client_config(cas: &[&TestCa], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots(cas))
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

/// The leaf certificate a TLS server at `addr` presents (checked against `cas`), and the
/// protocol ALPN agreed on.
async fn handshake(
    addr: std::net::SocketAddr,
    cas: &[&TestCa],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(cas, &[b"h2", b"http/1.1"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the proxy");
    let (_, conn) = tls.get_ref();
    (
        conn.peer_certificates().unwrap()[0].clone().into_owned(),
        conn.alpn_protocol().map(<[u8]>::to_vec),
    )
}

fn leaf(ca: &TestCa) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_over_https() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = tls_files(dir.path(), &ca, "proxy");
    let ollama = Mock::recording(chat_reply).await;
    let whisper =
        Mock::recording(|_| json_response(serde_json::json!({"text": "Huge manatees."}))).await;
    let kokoro = Mock::recording(|_| {
        http::Response::builder()
            .header("content-type", "audio/mpeg")
            .body(full(&b"ID3\x04\x00fake-mp3-frames"[..]))
            .unwrap()
    })
    .await;
    let openai = Mock::recording(openai_reply).await;
    let proxy = start_proxy(&tls_config(
        &cert,
        &key,
        &default_routes(
            &whisper.url(),
            &ollama.url(),
            &kokoro.url(),
            &openai.url(),
            "forward_client_auth = true",
        ),
    ))
    .await;
    let base = format!("https://localhost:{}/v1", proxy.addr.port());
    let v = run_sdk_trusting("sdk_client.py", base, Some(ca_file)).await;
    assert_eq!(v["models"], serde_json::json!(["gpt-4o"]));
    assert_eq!(v["chat"], "hello from ollama");
    assert_eq!(v["stream"], serde_json::json!(["huge", " manatees"]));
    assert_eq!(v["transcription"], "Huge manatees.");
    assert_eq!(v["speech_head"], "ID3");
    let chats = ollama.requests();
    assert_eq!(chats.len(), 2);
    for s in &chats {
        assert_eq!(s.header("x-forwarded-proto"), Some("https"));
        assert!(s.header("authorization").is_none());
    }
    let mp3 = std::fs::read(crate::proxy::sdk::MP3).unwrap();
    assert!(whisper.requests()[0]
        .body
        .windows(mp3.len())
        .any(|w| w == mp3));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_offered_by_alpn_and_serves_requests() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls_files(dir.path(), &ca, "proxy");
    let backend = Mock::echo("b").await;
    let proxy = start_proxy(&tls_config(&cert, &key, &routes_to(&backend.url()))).await;
    let (_, alpn) = handshake(proxy.addr, &[&ca]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&[&ca], &[]))
        .https_only()
        .enable_http2()
        .build();
    let client: Client<_, crate::support::mock::MockBody> =
        Client::builder(TokioExecutor::new()).build(https);
    let url = format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    );
    let mut answers = Vec::new();
    for i in 0..3 {
        let res = client
            .request(
                Request::post(&url)
                    .header("content-type", "application/json")
                    .body(full(format!("{{\"n\":{i}}}")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.version(), Version::HTTP_2);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-backend"], "ollama");
        answers.push(res.into_body().collect().await.unwrap().to_bytes());
    }
    assert!(String::from_utf8_lossy(&answers[2]).contains("\"bytes\":7"));
    let seen = backend.requests();
    assert_eq!(seen.len(), 3);
    // One HTTP/2 connection from the client; HTTP/1.1 to the backend, which heard where the
    // request came from.
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    let host = format!("localhost:{}", proxy.addr.port());
    assert_eq!(seen[0].header("x-forwarded-host"), Some(host.as_str()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_and_keeps_it_when_the_next_pair_is_wrong() {
    let (first, second, third) = (test_ca(), test_ca(), test_ca());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls_files(dir.path(), &first, "proxy");
    let backend = Mock::echo("b").await;
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, tls_config(&cert, &key, &routes_to(&backend.url()))).unwrap();
    let proc = Proc::start(&cfg, &[]);
    let all = [&first, &second, &third];
    assert_eq!(handshake(proc.addr, &all).await.0, leaf(&first));

    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    proc.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake(proc.addr, &all).await.0 != leaf(&second) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The third certificate with the second's key: refused, the second pair kept.
    std::fs::write(&cert, &third.cert_pem).unwrap();
    proc.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proc.log_text().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handshake(proc.addr, &all).await.0, leaf(&second));
    let log = proc.stop().await;
    let failed = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap()
        .to_string();
    assert!(failed.contains("server.tls_key"), "{failed}");
    assert!(failed.contains(&*key.to_string_lossy()), "{failed}");
    assert!(failed.contains(&*cert.to_string_lossy()), "{failed}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    let (one, other) = (test_ca(), test_ca());
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = tls_files(dir.path(), &one, "one");
    let (_, key, _) = tls_files(dir.path(), &other, "other");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        tls_config(&cert, &key, &routes_to("http://127.0.0.1:9")),
    )
    .unwrap();
    let cfg_arg = cfg.to_string_lossy().into_owned();
    for args in [
        vec!["--config", &cfg_arg, "serve", "--listen", "127.0.0.1:0"],
        vec!["--config", &cfg_arg, "check-config"],
    ] {
        let out = bin::run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains("server.tls_key"), "{stderr}");
        assert!(
            stderr.contains("does not go with the certificate"),
            "{stderr}"
        );
        assert!(stderr.contains(&*key.to_string_lossy()), "{stderr}");
        assert!(stderr.contains(&*cert.to_string_lossy()), "{stderr}");
        assert!(stderr.contains(":3:"), "the line of tls_key: {stderr}");
    }
    // Half a pair, and a file that is not PEM.
    std::fs::write(
        &cfg,
        format!(
            "[server]\ntls_cert = {cert:?}\n{}",
            routes_to("http://127.0.0.1:9")
        ),
    )
    .unwrap();
    let out = bin::run(&["--config", &cfg_arg, "check-config"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs server.tls_key too"));
    std::fs::write(&key, "not a key\n").unwrap();
    std::fs::write(
        &cfg,
        tls_config(&cert, &key, &routes_to("http://127.0.0.1:9")),
    )
    .unwrap();
    let out = bin::run(&["--config", &cfg_arg, "check-config"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contains no PEM private key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_endpoints_checks_an_https_proxy_with_its_ca() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = tls_files(dir.path(), &ca, "proxy");
    let m = services(None).await;
    let proxy = start_proxy(&tls_config(
        &cert,
        &key,
        &default_routes(
            &m.url(),
            &m.url(),
            &m.url(),
            &m.url(),
            "forward_client_auth = true",
        ),
    ))
    .await;
    let url = format!("https://localhost:{}/v1", proxy.addr.port());
    let ca_arg = ca_file.to_string_lossy().into_owned();
    let r = run(
        &[
            "check-endpoints",
            "--url",
            &url,
            "--ca-file",
            &ca_arg,
            "--timeout",
            "20s",
        ],
        &[],
    )
    .await;
    r.assert_outcome(0, "6 passed, 0 failed, 0 skipped");
    r.assert_says(&format!(
        "Checking the proxy at https://localhost:{}",
        proxy.addr.port()
    ));
    // Without the CA the certificate is not trusted, and it says so.
    let r = run(
        &[
            "check-endpoints",
            "--url",
            &url,
            "--only",
            "health",
            "--timeout",
            "20s",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    r.assert_says("UnknownIssuer");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_speaks_https() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls_files(dir.path(), &ca, "proxy");
    let backend = Mock::echo("b").await;
    let config = openai_proxy::Config::from_toml(&tls_config(
        &cert,
        &key,
        &format!("workers = 2\n{}", routes_to(&backend.url())),
    ))
    .unwrap();
    let proxy = crate::support::start_proxy_with_workers(config, 1).await;
    let url = format!("https://localhost:{}/v1/models", proxy.addr.port());
    let mut connections = 0;
    while proxy.state.requests.per_worker().contains(&0) {
        assert!(
            connections < 200,
            "no connection reached one of the workers"
        );
        // A new client, so a new connection, each time; HTTP/1.1 and HTTP/2 by turns.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(&[&ca], &[]))
            .https_only();
        let https = if connections % 2 == 0 {
            https.enable_http1().build()
        } else {
            https.enable_http2().build()
        };
        let client: Client<_, crate::support::mock::MockBody> =
            Client::builder(TokioExecutor::new()).build(https);
        let res = client
            .request(Request::get(&url).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
        connections += 1;
    }
    proxy.stop().await;
}
