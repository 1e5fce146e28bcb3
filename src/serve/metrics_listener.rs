//! The metrics listener: plain HTTP/1.1 on a socket of its own, each request answered by the
//! caller's `answer` (the live configuration's `/metrics`), until `shutdown`. Scrapes are rare
//! and small: one connection task each, on the thread that runs it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// What answers a scrape.
pub(super) type Scrape = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A scraper must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `answer` on `listener` until `shutdown` resolves; connections open then are let go.
pub(super) async fn serve(
    listener: TcpListener,
    answer: Scrape,
    shutdown: impl Future<Output = ()>,
) {
    let accepting = async {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let res = answer(&req);
                    async move { Ok::<_, Infallible>(res) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("metrics: connection ended with an error: {e}");
                }
            });
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = accepting => {}
    }
}
