//! `fallback = "BACKEND"` on a route: when its backend fails before a byte of its answer went
//! to the client, the request goes to the fallback, with the fallback's own credentials
//! policy; once a byte went out, there is no fallback; a body larger than
//! `server.max_replay_body` that was read cannot be sent again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::activation::config_file;
use crate::support::bin::Proc;
use crate::support::client::{body_bytes, full, json, send};
use crate::support::mock::{self, handler, Mock};
use crate::support::{dead_addr, pattern, start_proxy};

const CLIENT_KEY: &str = "Bearer sk-client-key-0000";

fn config(
    primary: &str,
    primary_extra: &str,
    fallback: &str,
    fallback_extra: &str,
    route: &str,
) -> String {
    format!(
        "[backends.local]\nurl = \"{primary}\"\n{primary_extra}\n\
         [backends.openai]\nurl = \"{fallback}\"\n{fallback_extra}\n\
         [[route]]\npath = \"/v1\"\nbackend = \"local\"\nfallback = \"openai\"\n{route}\n"
    )
}

async fn chat(url: &str, body: &'static str) -> http::Response<hyper::body::Incoming> {
    send(
        Request::post(url)
            .header("authorization", CLIENT_KEY)
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_refused_backend_falls_back_and_the_fallback_gets_its_own_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openai.key");
    std::fs::write(&key, "sk-fallback-own-key\n").unwrap();
    let openai = Mock::echo("openai").await;
    let dead = format!("http://{}", dead_addr());
    let body = "{\"model\":\"gpt-4o\",\"messages\":[]}";

    // Its own key, never the client's.
    let proxy = start_proxy(&config(
        &dead,
        "",
        &openai.url(),
        &format!("api_key_file = {key:?}"),
        "",
    ))
    .await;
    let res = chat(&proxy.url("/v1/chat/completions"), body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "openai");
    assert_eq!(json(res).await["backend"], "openai");
    let seen = openai.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk-fallback-own-key")
    );
    assert_eq!(
        &seen[0].body[..],
        body.as_bytes(),
        "the body as the client sent it"
    );
    assert_eq!(seen[0].uri.path(), "/v1/chat/completions");
    proxy.stop().await;

    // The client's key, when the fallback's policy forwards it.
    let proxy = start_proxy(&config(
        &dead,
        "",
        &openai.url(),
        "forward_client_auth = true",
        "",
    ))
    .await;
    let res = chat(&proxy.url("/v1/chat/completions"), body).await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    assert_eq!(
        openai.requests()[1].header("authorization"),
        Some(CLIENT_KEY)
    );
    proxy.stop().await;
}

/// A 5xx answer counts as a failure with `fallback_on_5xx`; the first backend never saw the
/// client's key (its policy removes it), the fallback gets its own.
#[tokio::test]
async fn a_5xx_answer_falls_back_only_with_fallback_on_5xx() {
    let local_hits = Arc::new(AtomicUsize::new(0));
    let hits = local_hits.clone();
    let seen_auth = Arc::new(std::sync::Mutex::new(Vec::new()));
    let auth = seen_auth.clone();
    let local = Mock::start(handler(move |req| {
        let (hits, auth) = (hits.clone(), auth.clone());
        async move {
            let s = mock::collect(req).await;
            hits.fetch_add(1, Ordering::SeqCst);
            auth.lock()
                .unwrap()
                .push(s.header("authorization").map(str::to_string));
            http::Response::builder()
                .status(503)
                .header("x-mock", "local")
                .body(mock::full("{\"error\":\"loading model\"}"))
                .unwrap()
        }
    }))
    .await;
    let openai = Mock::echo("openai").await;
    let body = "{\"model\":\"m\"}";
    for on_5xx in [true, false] {
        let proxy = start_proxy(&config(
            &local.url(),
            "",
            &openai.url(),
            "forward_client_auth = true",
            &format!("fallback_on_5xx = {on_5xx}"),
        ))
        .await;
        let res = chat(&proxy.url("/v1/chat/completions"), body).await;
        if on_5xx {
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["x-backend"], "openai");
        } else {
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers()["x-backend"], "local");
            assert_eq!(&body_bytes(res).await[..], b"{\"error\":\"loading model\"}");
            continue;
        }
        body_bytes(res).await;
        proxy.stop().await;
    }
    assert_eq!(local_hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen_auth.lock().unwrap(),
        [None, None],
        "local never saw the key"
    );
    assert_eq!(openai.requests().len(), 1);
    assert_eq!(
        openai.requests()[0].header("authorization"),
        Some(CLIENT_KEY)
    );
}

/// A backend that sent response headers and one event, then died: the client sees that event
/// and the cut, and the fallback never hears of it.
#[tokio::test]
async fn no_fallback_once_a_byte_went_to_the_client() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          transfer-encoding: chunked\r\n\r\nf\r\ndata: {\"t\":1}\n\n\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    let openai = Mock::echo("openai").await;
    let proxy = start_proxy(&config(
        &format!("http://{addr}"),
        "",
        &openai.url(),
        "",
        "fallback_on_5xx = true",
    ))
    .await;
    let res = chat(&proxy.url("/v1/chat/completions"), "{\"stream\":true}").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "local");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: {\"t\":1}\n\n");
    let rest = body.collect().await;
    assert!(rest.is_err(), "the cut shows: the body ends with an error");
    assert!(
        openai.requests().is_empty(),
        "no fallback after the first byte"
    );
    proxy.stop().await;
}

/// A backend that reads a body larger than `max_replay_body` and then fails: not sent again
/// (the first error is the answer, as documented); a backend that refused never read it, so
/// even a large body goes to the fallback, whole.
#[tokio::test]
async fn a_body_larger_than_max_replay_body_is_not_sent_again_once_read() {
    const SIZE: usize = 20 << 20;
    let big = Bytes::from(pattern(0, SIZE));
    let read = Arc::new(AtomicUsize::new(0));
    let r = read.clone();
    let reads_then_fails = Mock::start(handler(move |req| {
        let r = r.clone();
        async move {
            let s = mock::collect(req).await;
            r.store(s.body.len(), Ordering::SeqCst);
            http::Response::builder()
                .status(502)
                .body(mock::full("upstream model crashed"))
                .unwrap()
        }
    }))
    .await;
    let openai = Mock::echo("openai").await;
    let post = |url: String, body: Bytes| async move {
        send(Request::post(url).body(full(body)).unwrap()).await
    };

    let proxy = start_proxy(&config(
        &reads_then_fails.url(),
        "",
        &openai.url(),
        "",
        "fallback_on_5xx = true",
    ))
    .await;
    let res = post(proxy.url("/v1/files"), big.clone()).await;
    assert_eq!(res.status(), 502, "the first answer, as it was");
    assert_eq!(res.headers()["x-backend"], "local");
    assert_eq!(&body_bytes(res).await[..], b"upstream model crashed");
    assert_eq!(read.load(Ordering::SeqCst), SIZE);
    assert!(openai.requests().is_empty());
    // Within the limit it goes to the fallback.
    let res = post(proxy.url("/v1/files"), Bytes::from_static(b"small")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "openai");
    body_bytes(res).await;
    proxy.stop().await;

    let proxy = start_proxy(&config(
        &format!("http://{}", dead_addr()),
        "",
        &openai.url(),
        "",
        "",
    ))
    .await;
    let res = post(proxy.url("/v1/files"), big.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["bytes"], SIZE);
    let seen = openai.requests();
    assert_eq!(
        seen.last().unwrap().body,
        big,
        "the whole body, unread by the first"
    );
    proxy.stop().await;
}

/// Routing by model picked the route; the fallback applies to it, with the client's own model
/// (not the alias the first backend would have got) and the fallback's own aliases.
#[tokio::test]
async fn the_fallback_of_a_route_chosen_by_model_gets_the_clients_model() {
    let openai = Mock::echo("openai").await;
    let cloud = Mock::echo("cloud").await;
    let dead = format!("http://{}", dead_addr());
    let proxy = start_proxy(&format!(
        "[backends.ollama]\nurl = \"{dead}\"\n[backends.ollama.aliases]\n\"gpt-4o-mini\" = \"llama3.2:3b\"\n\
         [backends.openai]\nurl = \"{}\"\n\
         [backends.cloud]\nurl = \"{}\"\n[backends.cloud.aliases]\n\"llama3.2\" = \"gpt-4o-mini\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"ollama\"\nmodels = [\"llama*\"]\nfallback = \"cloud\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"openai\"\n",
        openai.url(),
        cloud.url()
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    // gpt-4o-mini is an alias of ollama: its route; ollama is down: cloud gets gpt-4o-mini.
    let res = chat(&url, "{\"model\":\"gpt-4o-mini\",\"n\":1}").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-backend"], "cloud");
    body_bytes(res).await;
    // llama3.2: cloud's own alias applies.
    let res = chat(&url, "{\"model\":\"llama3.2\",\"n\":1}").await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    let seen = cloud.requests();
    assert_eq!(&seen[0].body[..], b"{\"model\":\"gpt-4o-mini\",\"n\":1}");
    assert_eq!(&seen[1].body[..], b"{\"model\":\"gpt-4o-mini\",\"n\":1}");
    assert_eq!(seen[1].header("content-length"), Some("29"));
    // Other models are not this route's: openai, no fallback involved.
    let res = chat(&url, "{\"model\":\"gpt-4o\"}").await;
    assert_eq!(res.headers()["x-backend"], "openai");
    body_bytes(res).await;
    proxy.stop().await;
}

/// The access log records who failed, why, and who answered.
#[tokio::test]
async fn the_access_log_records_the_fallback() {
    let openai = Mock::echo("openai").await;
    let (_dir, cfg) = config_file(&config(
        &format!("http://{}", dead_addr()),
        "",
        &openai.url(),
        "",
        "",
    ));
    let proc = Proc::start(&cfg, &[]);
    let res = send(
        Request::post(format!("http://{}/v1/chat/completions", proc.addr))
            .header("x-request-id", "fallback-1")
            .body(full("{}"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    body_bytes(res).await;
    let log = proc.stop().await;
    let line = log
        .lines()
        .find(|l| l.contains("request_id=\"fallback-1\""))
        .unwrap_or_else(|| panic!("no access line: {log}"));
    assert!(
        line.contains(
            "route=\"/v1\" backend=\"openai\" fallback_from=\"local\" fallback_reason=\"refused\" status=200"
        ),
        "{line}"
    );
}
