//! The tools' one HTTP client of a running proxy (`check-endpoints`, `models`, and `/health`
//! for `status`): where the proxy is ([`ProxyUrl`]: `--url`, `$OPENAI_BASE_URL`, a socket unit's
//! address, or the config's first listen address), and one request over TCP or a Unix socket
//! with hyper, a fresh connection each.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;

use crate::config::tls::AcceptAnyCertificate;
use crate::config::{self, Config, ListenAddr};

/// Connecting to the proxy (normally on loopback) takes no longer than this.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dial {
    /// `HOST:PORT`, the host resolved when connecting.
    Tcp(Authority),
    Unix(PathBuf),
}

/// Where the proxy is: an address, whether it speaks HTTPS, and a base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    dial: Dial,
    /// `https://` (the proxy has `server.tls_cert`); never over a Unix socket.
    https: bool,
    /// Put in front of every request path: empty, or `/something` without a trailing `/` (and
    /// without the `/v1` an `OPENAI_BASE_URL` ends with, since request paths carry it).
    base_path: String,
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dial {
            Dial::Tcp(a) if self.https => write!(f, "https://{a}{}", self.base_path),
            Dial::Tcp(a) => write!(f, "http://{a}{}", self.base_path),
            Dial::Unix(p) => write!(f, "unix:{}{}", p.display(), self.base_path),
        }
    }
}

impl ProxyUrl {
    /// The proxy listening on `addr`; an unspecified address (`0.0.0.0`, `[::]`) is reached
    /// through loopback.
    pub fn listening_on(addr: &ListenAddr) -> ProxyUrl {
        let dial = match addr {
            ListenAddr::Unix(p) => Dial::Unix(p.clone()),
            ListenAddr::Tcp(a) => {
                let mut a = *a;
                if a.ip().is_unspecified() {
                    a.set_ip(match a {
                        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                    });
                }
                // A socket address is always a valid authority.
                Dial::Tcp(
                    Authority::try_from(a.to_string())
                        .unwrap_or_else(|_| Authority::from_static("127.0.0.1:2020")),
                )
            }
        };
        ProxyUrl {
            dial,
            https: false,
            base_path: String::new(),
        }
    }

    /// The proxy a config describes: its first IP:PORT listen address (what HTTP clients
    /// use), else its first Unix socket; HTTPS over TCP when the config has a certificate.
    pub fn from_config(config: &Config) -> anyhow::Result<ProxyUrl> {
        let listen = &config.server.listen;
        listen
            .iter()
            .find(|l| matches!(l, ListenAddr::Tcp(_)))
            .or_else(|| listen.first())
            .map(|l| ProxyUrl::listening_on(l).with_https(config.server.tls.is_some()))
            .ok_or_else(|| anyhow!("{} has no listen address", config.source.display_name()))
    }

    /// The same address, over HTTPS when `https` (and TCP).
    pub fn with_https(mut self, https: bool) -> ProxyUrl {
        self.https = https && matches!(self.dial, Dial::Tcp(_));
        self
    }

    /// Whether the proxy is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The address alone: `HOST:PORT` or `unix:PATH`.
    pub fn address(&self) -> String {
        match &self.dial {
            Dial::Tcp(a) => a.to_string(),
            Dial::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// The `Host` header: the authority, or `localhost` over a Unix socket.
    fn host(&self) -> HeaderValue {
        match &self.dial {
            Dial::Tcp(a) => HeaderValue::from_str(a.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            Dial::Unix(_) => HeaderValue::from_static("localhost"),
        }
    }
}

/// Parses `--url` or `$OPENAI_BASE_URL`: `http://HOST:PORT[/base]`, the scheme optional, a
/// trailing `/v1` dropped.
pub fn parse_proxy_url(s: &str) -> Result<ProxyUrl, String> {
    let t = s.trim();
    if t.contains('@') {
        // Never echo the value: it may hold a password.
        return Err("credentials in the URL are not supported; set $OPENAI_API_KEY".into());
    }
    let full = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let uri: Uri = full
        .parse()
        .map_err(|e| format!("\"{t}\" is not a valid URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "\"{t}\": only http:// and https:// URLs are supported"
            ))
        }
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .cloned()
        .ok_or_else(|| format!("\"{t}\" has no host"))?;
    if uri.query().is_some() {
        return Err(format!(
            "\"{t}\" has a query string; give only the base URL"
        ));
    }
    let path = uri.path().trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .unwrap_or(path)
        .trim_end_matches('/');
    Ok(ProxyUrl {
        dial: Dial::Tcp(authority),
        https,
        base_path: path.to_string(),
    })
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The proxy could not be reached at all.
    Connect(String),
    /// The exchange failed after connecting.
    Failed(String),
}

/// How an `https://` proxy's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Against the bundled web roots and these CA certificates (`--ca-file`).
    Roots(Vec<rustls_pki_types::CertificateDer<'static>>),
    /// Not at all: `status` asking the proxy of its own config for `/health`, which carries
    /// no secret either way.
    Anything,
}

/// Sends requests to one proxy.
pub struct Client {
    url: ProxyUrl,
    host: HeaderValue,
    connect_timeout: Duration,
    /// For an `https://` URL.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    /// A client of the proxy at `url`, trusting its certificate as `trust` says.
    pub fn new(url: ProxyUrl, connect_timeout: Duration, trust: Trust) -> anyhow::Result<Client> {
        let tls = match url.https {
            true => Some(tokio_rustls::TlsConnector::from(Arc::new(tls_config(
                trust,
            )?))),
            false => None,
        };
        Ok(Client {
            host: url.host(),
            url,
            connect_timeout,
            tls,
        })
    }

    /// Where the proxy is.
    pub fn url(&self) -> &ProxyUrl {
        &self.url
    }

    /// Sends `req` (its URI: a path under the base path) on a new connection and returns the
    /// response head, its body still streaming.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        *req.uri_mut() = format!("{}{path}", self.url.base_path)
            .parse()
            .map_err(|e| SendError::Failed(format!("cannot build the request: {e}")))?;
        req.headers_mut().insert(header::HOST, self.host.clone());
        let connect = async {
            match &self.url.dial {
                Dial::Tcp(a) => {
                    // Without a port, HTTP's; an IPv6 host without its brackets.
                    let host = a.host().trim_start_matches('[').trim_end_matches(']');
                    let default_port = if self.tls.is_some() { 443 } else { 80 };
                    let port = a.port_u16().unwrap_or(default_port);
                    let s = tokio::net::TcpStream::connect((host, port)).await?;
                    s.set_nodelay(true)?;
                    match &self.tls {
                        None => handshake(s).await,
                        Some(tls) => {
                            let name = ServerName::try_from(host.to_string())
                                .map_err(std::io::Error::other)?;
                            handshake(tls.connect(name, s).await?).await
                        }
                    }
                }
                Dial::Unix(p) => handshake(tokio::net::UnixStream::connect(p).await?).await,
            }
        };
        let mut sender = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => return Err(SendError::Connect("timed out".into())),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(SendError::Connect("connection refused".into()))
            }
            Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Failed(format!("the request failed: {e}")))
    }
}

/// An HTTP/1.1 connection over `io`, driven in its own task.
async fn handshake<I>(
    io: I,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// TLS settings for talking to the proxy (HTTP/1.1, as the client speaks).
fn tls_config(trust: Trust) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match trust {
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        Trust::Roots(extra) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in extra {
                roots
                    .add(cert)
                    .context("a certificate of --ca-file is not a usable CA certificate")?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads `--ca-file`: PEM certificates (without blocking on a FIFO or reading a huge file).
pub fn read_ca_file(path: &std::path::Path) -> anyhow::Result<Trust> {
    let bytes = crate::config::read_small_file(path)
        .map_err(|e| anyhow!("{}", e.about("CA file", path)))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("CA file {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "CA file {} contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(Trust::Roots(certs))
}

/// `GET /health`: the status code and how long it took.
pub fn health(url: &ProxyUrl, timeout: Duration) -> anyhow::Result<(u16, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::new(url.clone(), timeout, Trust::Anything)?;
    let start = Instant::now();
    runtime.block_on(async {
        let req = Request::get("/health")
            .body(Full::new(Bytes::new()))
            .context("cannot build the request")?;
        let exchange = async {
            let res = client.send(req).await.map_err(|e| match e {
                SendError::Connect(e) => anyhow!("cannot connect: {e}"),
                SendError::Failed(e) => anyhow!("{e}"),
            })?;
            let status = res.status().as_u16();
            res.into_body()
                .collect()
                .await
                .context("no complete answer")?;
            Ok::<_, anyhow::Error>(status)
        };
        let status = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {timeout:?}"))??;
        Ok((status, start.elapsed()))
    })
}

/// The proxy's URL and where it came from: `--url`, then `$OPENAI_BASE_URL`, then the
/// config's first listen address.
pub fn locate_proxy(
    config_flag: Option<&Path>,
    url: Option<&ProxyUrl>,
) -> anyhow::Result<(ProxyUrl, String)> {
    if let Some(u) = url {
        return Ok((u.clone(), "--url".into()));
    }
    if let Some(v) = std::env::var_os("OPENAI_BASE_URL").filter(|v| !v.is_empty()) {
        let v = v
            .to_str()
            .ok_or_else(|| anyhow!("$OPENAI_BASE_URL is not valid UTF-8"))?;
        let u = parse_proxy_url(v).map_err(|e| {
            anyhow!("$OPENAI_BASE_URL: {e}; pass --url to check the proxy somewhere else")
        })?;
        return Ok((u, "$OPENAI_BASE_URL".into()));
    }
    let config = config::load(config_flag)?;
    let url = ProxyUrl::from_config(&config)?;
    Ok((
        url,
        format!("server.listen in {}", config.source.display_name()),
    ))
}

/// `$OPENAI_API_KEY` as a sensitive `Authorization` value, and the key itself (to redact).
pub fn api_key() -> anyhow::Result<Option<(HeaderValue, String)>> {
    let Some(raw) = std::env::var_os("OPENAI_API_KEY") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok_or_else(|| anyhow!("$OPENAI_API_KEY is not valid UTF-8"))?
        .trim();
    if key.is_empty() {
        return Ok(None);
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        anyhow!("$OPENAI_API_KEY contains characters that are not allowed in an HTTP header")
    })?;
    value.set_sensitive(true);
    Ok(Some((value, key.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let u = parse_proxy_url("http://127.0.0.1:2020/v1/").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:2020");
        let u = parse_proxy_url("localhost:2020").unwrap();
        assert_eq!(u.to_string(), "http://localhost:2020");
        let u = parse_proxy_url("http://[::1]:2020/base/v1").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:2020/base");
        let u = parse_proxy_url("https://proxy.lan:2020/v1").unwrap();
        assert_eq!(u.to_string(), "https://proxy.lan:2020");
        assert!(u.is_https());
        assert!(parse_proxy_url("ftp://proxy.lan")
            .unwrap_err()
            .contains("only http:// and https://"));
        let e = parse_proxy_url("http://user:secret@host").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(parse_proxy_url("http://h/?q=1").is_err());
    }

    #[test]
    fn unspecified_addresses_are_reached_through_loopback() {
        let url = |s: &str| ProxyUrl::listening_on(&s.parse().unwrap()).to_string();
        assert_eq!(url("0.0.0.0:2020"), "http://127.0.0.1:2020");
        assert_eq!(url("[::]:2020"), "http://[::1]:2020");
        assert_eq!(url("10.0.0.2:2020"), "http://10.0.0.2:2020");
        assert_eq!(url("unix:/run/p.sock"), "unix:/run/p.sock");
    }
}
