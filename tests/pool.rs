//! Plain-HTTP backends: requests go out in origin form (`GET /path HTTP/1.1`, as a server
//! expects it), and one keep-alive connection carries request after request.

use std::sync::{Arc, Mutex};

use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::client::{body_bytes, full, send};
use crate::support::start_proxy;

#[tokio::test]
async fn requests_go_out_in_origin_form_on_one_reused_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(0usize));
    let (seen, count) = (lines.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            *count.lock().unwrap() += 1;
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        seen.lock()
                            .unwrap()
                            .push(head.lines().next().unwrap_or_default().to_string());
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                            .await;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let proxy = start_proxy(&format!(
        "[backends.b]\nurl = \"http://{addr}\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
    ))
    .await;
    for path in ["/v1/models", "/v1/models?limit=2", "//v1/./files"] {
        let res = send(Request::get(proxy.url(path)).body(full("")).unwrap()).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(body_bytes(res).await, "{}");
    }
    assert_eq!(
        *lines.lock().unwrap(),
        [
            "GET /v1/models HTTP/1.1",
            "GET /v1/models?limit=2 HTTP/1.1",
            "GET /v1/files HTTP/1.1"
        ]
    );
    assert_eq!(*accepted.lock().unwrap(), 1, "one pooled connection");
    proxy.stop().await;
}
