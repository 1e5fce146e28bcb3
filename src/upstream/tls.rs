//! HTTPS backends: hyper-util's pooled client with TLS (rustls with the `ring` provider;
//! bundled webpki roots plus `ca_file`; ALPN offers HTTP/2 and HTTP/1.1), built when a server
//! is first used, so a proxy that never talks to one never parses its trust store.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::crypto::{ring, CryptoProvider};
use rustls::{ClientConfig, RootCertStore};
use tower_service::Service;

use crate::body::RequestBody;
use crate::config::tls::AcceptAnyCertificate;
use crate::config::BackendConfig;
use crate::upstream::pool;

/// The client type every HTTPS server uses.
pub(super) type HttpClient = Client<NoInfo<HttpsConnector<HttpConnector>>, RequestBody>;

/// At most this many idle connections are kept per HTTPS server.
const POOL_MAX_IDLE: usize = 256;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The TLS settings for one backend.
fn tls_config(cfg: &BackendConfig) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    if !cfg.is_https() {
        // Never used for http:// backends; an empty trust store costs nothing.
        return Ok(builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth());
    }
    if cfg.tls_insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.roots.extend(ca_roots(cfg)?.roots);
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The CA certificates of `ca_file`, checked.
pub(super) fn ca_roots(cfg: &BackendConfig) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in &cfg.ca_certs {
        roots.add(cert.clone()).with_context(|| {
            format!(
                "backend '{}': a certificate in ca_file is not a usable CA certificate",
                cfg.name
            )
        })?;
    }
    Ok(roots)
}

/// TCP connections to a backend: its connect time-out, no Nagle delay, keep-alive probes.
fn tcp_connector(cfg: &BackendConfig) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// Connections to a backend that speak HTTP/1.1 only (TLS without ALPN for `https://`), for a
/// request that upgrades its connection (a WebSocket).
pub(crate) fn http1_connector(
    cfg: &BackendConfig,
) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(cfg)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp_connector(cfg)))
}

pub(super) fn build_client(cfg: &BackendConfig) -> anyhow::Result<HttpClient> {
    let http = tcp_connector(cfg);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(cfg)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let connector = NoInfo(connector);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        // A pooled connection the backend has closed, found out only as a request starts on
        // it (nothing sent yet): send the request again on a fresh connection. (The default;
        // set here because tests/faults.rs relies on it.)
        .retry_canceled_requests(true)
        .build(connector))
}

/// A connector whose connections carry no `HttpInfo` (peer and local address). hyper-util
/// copies a connection's info into the extensions of every response, which costs three
/// allocations per request, and nothing here reads it.
#[derive(Clone, Debug)]
pub(super) struct NoInfo<T>(T);

impl<S> Service<Uri> for NoInfo<S>
where
    S: Service<Uri>,
    S::Future: Unpin,
{
    type Response = NoInfo<S::Response>;
    type Error = S::Error;
    type Future = NoInfo<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        NoInfo(self.0.call(uri))
    }
}

impl<F, T, E> Future for NoInfo<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<NoInfo<T>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(NoInfo)
    }
}

impl<T: Connection> Connection for NoInfo<T> {
    fn connected(&self) -> Connected {
        // Keep what the pool needs (HTTP/2 negotiated, proxied); drop the extra info.
        let inner = self.0.connected();
        let mut c = Connected::new().proxy(inner.is_proxied());
        if inner.is_negotiated_h2() {
            c = c.negotiated_h2();
        }
        c
    }
}

impl<T: Read + Unpin> Read for NoInfo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for NoInfo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
