//! Clients for talking to the proxy: a hyper client with streamed or full bodies, and raw TCP
//! for requests a well-behaved client would not send.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub use super::mock::full;
use super::mock::{self, MockBody};

pub type TestClient = Client<HttpConnector, MockBody>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A request body sent with `Transfer-Encoding: chunked` (no Content-Length), chunk by chunk
/// as the test feeds it.
pub fn streamed() -> (mpsc::Sender<Result<Bytes, io::Error>>, MockBody) {
    mock::channel_body()
}

pub async fn send(req: Request<MockBody>) -> Response<Incoming> {
    client().request(req).await.expect("request to the proxy")
}

pub async fn body_bytes(res: Response<Incoming>) -> Bytes {
    res.into_body()
        .collect()
        .await
        .expect("complete response body")
        .to_bytes()
}

pub async fn json(res: Response<Incoming>) -> serde_json::Value {
    let b = body_bytes(res).await;
    serde_json::from_slice(&b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&b)))
}

/// Sends raw bytes and returns everything the server sends back until it closes or goes quiet
/// for `quiet`.
pub async fn raw(addr: SocketAddr, request: &[u8], quiet: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 reply.
pub fn raw_status(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"))
}

/// What came back for raw bytes: everything read, and whether the server closed the
/// connection (as opposed to going quiet).
pub struct Exchange {
    pub text: String,
    pub closed: bool,
}

impl Exchange {
    pub fn status(&self) -> Option<u16> {
        let line = self.text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    /// Number of responses (status lines) in the reply.
    pub fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }
}

/// Asserts the reply's status, showing the start of the reply otherwise.
pub fn assert_status(r: &Exchange, code: u16) {
    assert_eq!(
        r.status(),
        Some(code),
        "{}",
        &r.text[..r.text.len().min(300)]
    );
}

/// Sends raw bytes; reads until the server closes the connection or is quiet for 5 s.
pub async fn ask(addr: SocketAddr, request: &[u8]) -> Exchange {
    let quiet = Duration::from_secs(5);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16384];
    let closed = loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Exchange {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}
