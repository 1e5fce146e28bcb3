//! HTTPS for clients (`server.tls_cert`, `server.tls_key`): the server's TLS settings made
//! from the PEM files (rustls with the `ring` provider; HTTP/2 and HTTP/1.1 offered by ALPN),
//! and the handshake of one accepted connection, bounded in time. Also the verifier that
//! accepts any certificate (a backend's `tls_insecure`, `status` asking its own proxy).
//!
//! The settings are part of the config, so a reload (SIGHUP) that reads new files serves them
//! on new connections, and one whose files are bad keeps the old ones (like any bad reload).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// What is wrong with a certificate and key pair.
#[derive(Debug)]
pub(crate) enum PemProblem {
    /// The certificate file.
    Cert(String),
    /// The key file.
    Key(String),
    /// Each is fine, the two do not go together.
    Pair(String),
}

/// The ALPN protocol a client and the proxy agreed on for HTTP/2.
pub(crate) const H2: &[u8] = b"h2";

/// TLS settings for the server: the certificate chain of `cert_pem` (leaf first) and the
/// private key of `key_pem` (PKCS#8, PKCS#1 or SEC1), checked to belong together.
pub(crate) fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, PemProblem> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PemProblem::Cert(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PemProblem::Cert(
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        PemProblem::Key(match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "contains no PEM private key (-----BEGIN PRIVATE KEY-----)".into()
            }
            e => format!("not a valid PEM private key: {e}"),
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PemProblem::Pair(e.to_string()))?
        .with_no_client_auth();
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            PemProblem::Pair("the key is not the certificate's private key".into())
        }
        e => PemProblem::Key(format!("cannot be used: {e}")),
    })?;
    config.alpn_protocols = vec![H2.to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS handshake of an accepted connection, given up after `limit` (a client that never
/// finishes it holds nothing for longer than one that never finishes its headers).
pub(crate) async fn accept<I>(
    io: I,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
) -> std::io::Result<TlsStream<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
    match tokio::time::timeout(limit, handshake).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the TLS handshake took longer than server.header_read_timeout",
        )),
    }
}

/// Whether the client and the proxy agreed on HTTP/2.
pub(crate) fn is_h2<I>(stream: &TlsStream<I>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(H2)
}

/// `tls_insecure = true`: accepts any certificate (signatures are still checked, so the
/// handshake itself is sound; only the identity is not).
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

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
