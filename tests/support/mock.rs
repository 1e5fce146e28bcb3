//! Mock backends: real HTTP servers on 127.0.0.1:0 (plain, or TLS with ALPN h2/http1.1)
//! that record what they received and answer as the test says.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type MockBody = BoxBody<Bytes, std::io::Error>;
pub type MockFuture = Pin<Box<dyn Future<Output = Response<MockBody>> + Send>>;
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> MockFuture + Send + Sync>;

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Mock {
    pub addr: SocketAddr,
    pub tls: bool,
    /// Filled by [`Mock::echo`]-style handlers.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
    /// The tasks of its connections, for [`Mock::kill`].
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A 200 answer with this content type.
pub fn reply(content_type: &str, body: MockBody) -> Response<MockBody> {
    Response::builder()
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

pub fn full(data: impl Into<Bytes>) -> MockBody {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A response body fed from a channel: each `Ok` is one chunk, an `Err` aborts the body.
pub fn channel_body() -> (mpsc::Sender<Result<Bytes, std::io::Error>>, MockBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx, None).boxed())
}

/// [`channel_body`] that says it will carry exactly `len` bytes, so it goes out with a
/// Content-Length (as the Python SDK sends uploads) instead of in chunks.
pub fn sized_channel_body(len: u64) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, MockBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx, Some(len)).boxed())
}

struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>, Option<u64>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
    fn size_hint(&self) -> SizeHint {
        self.1.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// Reads a whole request into a [`Seen`].
pub async fn collect(req: Request<Incoming>) -> Seen {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<MockBody>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

impl Mock {
    /// A backend that answers every request with `reply(request)` and records each request
    /// (see [`Mock::requests`]).
    pub async fn recording(reply: fn(&Seen) -> Response<MockBody>) -> Mock {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut m = Self::start(handler(move |req| {
            let log = log.clone();
            async move {
                let s = collect(req).await;
                let res = reply(&s);
                log.lock().unwrap().push(s);
                res
            }
        }))
        .await;
        m.seen = seen;
        m
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Records every request in full and answers 200 with a JSON echo naming `name`, plus an
    /// `x-mock` response header.
    pub async fn echo(name: &'static str) -> Mock {
        Self::echo_with(name, None).await
    }

    pub async fn echo_tls(name: &'static str, tls: Arc<rustls::ServerConfig>) -> Mock {
        Self::echo_with(name, Some(tls)).await
    }

    async fn echo_with(name: &'static str, tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let h = handler(move |req| {
            let log = log.clone();
            async move {
                let s = collect(req).await;
                let reply = serde_json::json!({
                    "backend": name,
                    "method": s.method.as_str(),
                    "path": s.uri.path(),
                    "query": s.uri.query(),
                    "bytes": s.body.len(),
                });
                log.lock().unwrap().push(s);
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .header("x-mock", name)
                    .body(full(reply.to_string()))
                    .unwrap()
            }
        });
        let mut m = Self::start_with(h, tls).await;
        m.seen = seen;
        m
    }

    /// An Ollama-like backend that answers every request with `count` SSE events
    /// (`data: 0` …) `gap` apart, then `data: [DONE]`.
    pub async fn sse(count: usize, gap: std::time::Duration) -> Mock {
        super::sse::backend(super::sse::Events::numbered(count, gap), Arc::default()).await
    }

    pub async fn start(h: Handler) -> Mock {
        Self::start_with(h, None).await
    }

    /// Stops the server as a killed process would: the listener closes (new connections are
    /// refused) and so does every open connection, whatever it was doing.
    pub fn kill(&self) {
        self.task.abort();
        for conn in self.open.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// A server on `addr` (one that was killed, started again).
    pub async fn start_on(addr: SocketAddr, h: Handler) -> Mock {
        // The port was just closed; binding it again may take a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {addr} again: {e}"),
            }
        };
        Self::serve(listener, h, None)
    }

    pub async fn start_with(h: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, h, tls)
    }

    fn serve(listener: TcpListener, h: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let tracked = open.clone();
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let h = h.clone();
                let acceptor = acceptor.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let h = h.clone();
                        async move { Ok::<_, Infallible>(h(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acc) => {
                            if let Ok(tls) = acc.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
                let mut open = tracked.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(conn.abort_handle());
            }
        });
        Mock {
            addr,
            tls: is_tls,
            seen: Arc::new(Mutex::new(Vec::new())),
            connections,
            task,
            open,
        }
    }
}
