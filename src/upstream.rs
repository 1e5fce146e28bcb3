//! Connections to backends: one pooled hyper-util client per backend, with its own time-outs
//! and TLS settings (rustls with the `ring` provider; bundled webpki roots plus `ca_file`; ALPN
//! offers HTTP/2 and HTTP/1.1 to HTTPS backends).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::body::RequestBody;
use crate::config::BackendConfig;

/// The client type every backend uses.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// How long an idle pooled connection to a backend is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept per backend.
const POOL_MAX_IDLE: usize = 256;

/// A backend: its settings and the client that talks to it.
pub struct Backend {
    pub config: BackendConfig,
    pub client: HttpClient,
    /// The `X-Backend` response header value, made once.
    pub header: HeaderValue,
    /// The `Host` request header for a plain-HTTP backend, made once (what hyper's client
    /// would otherwise format for every request). `None` for HTTPS, where HTTP/2 may be
    /// negotiated and the client sets `:authority` itself.
    pub host: Option<HeaderValue>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.config.name)
            .field("url", &self.config.url)
            .finish()
    }
}

impl Backend {
    pub fn new(config: BackendConfig) -> anyhow::Result<Backend> {
        let header = HeaderValue::from_str(&config.name)
            .with_context(|| format!("backend name '{}' is not a header value", config.name))?;
        let client = build_client(&config)?;
        Ok(Backend {
            host: host_header(&config),
            config,
            client,
            header,
        })
    }
}

/// `Host` as hyper's client writes it for HTTP/1: the host, and the port unless it is 80.
fn host_header(cfg: &BackendConfig) -> Option<HeaderValue> {
    if cfg.is_https() {
        return None;
    }
    let a = &cfg.authority;
    let value = match a.port_u16() {
        None | Some(80) => a.host().to_string(),
        Some(port) => format!("{}:{port}", a.host()),
    };
    HeaderValue::from_str(&value).ok()
}

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
    for cert in &cfg.ca_certs {
        roots.add(cert.clone()).with_context(|| {
            format!(
                "backend '{}': a certificate in ca_file is not a usable CA certificate",
                cfg.name
            )
        })?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn build_client(cfg: &BackendConfig) -> anyhow::Result<HttpClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(cfg)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(connector))
}

/// `tls_insecure = true`: accepts any certificate (signatures are still checked, so the
/// handshake itself is sound; only the identity is not).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
