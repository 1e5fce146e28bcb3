//! A WebSocket echo backend (plain or TLS) that records each upgrade request it accepted and
//! when each session ended, and a WebSocket client for the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the backend received: the upgrade request's target and headers.
#[derive(Clone, Debug)]
pub struct Upgrade {
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Upgrade {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The text message that makes the backend close the session itself.
pub const CLOSE_PLEASE: &str = "close, please";

pub struct WsEcho {
    pub addr: SocketAddr,
    pub tls: bool,
    pub seen: Arc<Mutex<Vec<Upgrade>>>,
    /// When each session ended (its stream closed, by either side).
    pub ended: mpsc::UnboundedReceiver<Instant>,
    task: JoinHandle<()>,
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsEcho {
    pub async fn start() -> WsEcho {
        Self::start_with(None).await
    }

    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> WsEcho {
        Self::start_with(Some(tls)).await
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.seen.lock().unwrap().clone()
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let is_tls = tls.is_some();
        let acceptor = tls.map(|mut c| {
            // A WebSocket needs HTTP/1.1.
            Arc::make_mut(&mut c).alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(c)
        });
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (log, ended_tx, acceptor) = (log.clone(), ended_tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acc) => {
                            if let Ok(s) = acc.accept(stream).await {
                                echo(s, log, ended_tx).await;
                            }
                        }
                        None => echo(stream, log, ended_tx).await,
                    }
                });
            }
        });
        WsEcho {
            addr,
            tls: is_tls,
            seen,
            ended,
            task,
        }
    }
}

/// (tungstenite's callback type returns its own large error response.)
#[allow(clippy::result_large_err)]
/// Accepts the upgrade (choosing the first offered subprotocol that is not a key, as OpenAI
/// does), then echoes every message until the session ends.
async fn echo<S>(stream: S, log: Arc<Mutex<Vec<Upgrade>>>, ended: mpsc::UnboundedSender<Instant>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let callback = |req: &Request, mut res: Response| {
        log.lock().unwrap().push(Upgrade {
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        });
        let chosen = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .map(str::trim)
                    .find(|p| !p.starts_with("openai-insecure-api-key."))
                    .map(str::to_string)
            });
        if let Some(p) = chosen {
            res.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        let sent = match msg {
            Message::Text(t) if t.as_str() == CLOSE_PLEASE => {
                ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "asked to".into(),
                }))
                .await
            }
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = ended.send(Instant::now());
}

pub type Client = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `addr` for `path` with extra request headers.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, stream).await
}
