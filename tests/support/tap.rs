//! A wiretap in front of the proxy: a loopback TCP relay that copies bytes both ways and keeps
//! them, so a test sees what a real client sent the proxy and what the proxy answered it
//! (the client's WebSocket upgrade, the proxy's 426) exactly as they went over the wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The bytes of one connection through the tap.
#[derive(Default)]
pub struct Conversation {
    /// What the client sent.
    pub sent: Vec<u8>,
    /// What the proxy answered.
    pub answered: Vec<u8>,
}

impl Conversation {
    pub fn sent_text(&self) -> String {
        String::from_utf8_lossy(&self.sent).into_owned()
    }
    pub fn answered_text(&self) -> String {
        String::from_utf8_lossy(&self.answered).into_owned()
    }
}

pub struct Tap {
    pub addr: SocketAddr,
    conversations: Arc<Mutex<Vec<Arc<Mutex<Conversation>>>>>,
    task: JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// A tap relaying every connection to `to`.
    pub async fn start(to: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conversations: Arc<Mutex<Vec<Arc<Mutex<Conversation>>>>> = Arc::default();
        let all = conversations.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let c = Arc::new(Mutex::new(Conversation::default()));
                all.lock().unwrap().push(c.clone());
                tokio::spawn(relay(client, to, c));
            }
        });
        Tap {
            addr,
            conversations,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Each connection's bytes so far, in the order they were accepted.
    pub fn conversations(&self) -> Vec<(String, String)> {
        self.conversations
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                let c = c.lock().unwrap();
                (c.sent_text(), c.answered_text())
            })
            .collect()
    }
}

async fn relay(client: TcpStream, to: SocketAddr, c: Arc<Mutex<Conversation>>) {
    let Ok(server) = TcpStream::connect(to).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = copy(cr, sw, c.clone(), |c| &mut c.sent);
    let down = copy(sr, cw, c, |c| &mut c.answered);
    tokio::join!(up, down);
}

async fn copy(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    c: Arc<Mutex<Conversation>>,
    side: fn(&mut Conversation) -> &mut Vec<u8>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        side(&mut c.lock().unwrap()).extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
