//! Test harness: in-process mock backends (some in the shape of Anthropic's and OpenAI's
//! APIs), a proxy started with `serve::run` on 127.0.0.1:0, a wiretap, HTTP clients, a test
//! CA, a runner for the real binary, and a headless browser.

pub mod activation;
pub mod api_mocks;
pub mod bin;
// Headless Chromium: for the machine binary's page tests (tests/machine/) only.
#[allow(dead_code)]
pub mod browser;
pub mod client;
// Chromium over the DevTools protocol: for the machine binary's page tests only.
#[allow(dead_code)]
pub mod devtools;
// The package slot and the user manager's helpers: for the machine binary (tests/machine/) only.
#[allow(dead_code)]
pub mod machine;
pub mod mock;
pub mod prom;
pub mod sse;
pub mod tap;
pub mod tls;
pub mod tools;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use openai_proxy::serve::{self, Shared};
use openai_proxy::{Config, ListenAddr, Proxy, StdListener, Workers};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A proxy running inside the test's runtime.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub state: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    /// Worker threads beside the test runtime's server, if any.
    workers: Option<Workers>,
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers the graceful shutdown and waits for `serve::run` (and every worker) to
    /// return.
    pub async fn stop(mut self) {
        if let Some(w) = &self.workers {
            w.stop();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .expect("server task panicked")
            .expect("serve::run failed");
        if let Some(w) = self.workers.take() {
            w.join().await.expect("a worker failed");
        }
    }
}

/// Starts a proxy for `toml` on a free loopback port.
pub async fn start_proxy(toml: &str) -> TestProxy {
    let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    start_proxy_with(config).await
}

pub async fn start_proxy_with(config: Config) -> TestProxy {
    start_proxy_with_workers(config, 0).await
}

/// A proxy whose server runs in the test's runtime (worker 0) with `extra` more worker
/// threads beside it.
pub async fn start_proxy_with_workers(config: Config, extra: usize) -> TestProxy {
    let listeners = openai_proxy::bind(&[ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())])
        .expect("bind 127.0.0.1:0");
    let addr = match &listeners[0] {
        StdListener::Tcp(l) => l.local_addr().unwrap(),
        _ => unreachable!(),
    };
    let state = Shared::new(Proxy::new(config).expect("proxy"));
    let workers =
        (extra > 0).then(|| Workers::spawn(extra, &listeners, &state).expect("worker threads"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::run(listeners, state.clone(), async move {
        let _ = rx.await;
    }));
    TestProxy {
        addr,
        state,
        stop: Some(tx),
        task,
        workers,
    }
}

/// Serves the proxy's `/metrics` on a free loopback port (the config needs `[metrics]` for
/// anything to be counted); returns its address.
pub async fn serve_metrics(state: &Arc<Shared>) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve::serve_metrics(
        l,
        state.clone(),
        std::future::pending(),
    ));
    addr
}

/// A config with the default routes pointing at the given backends. `openai_extra` is added
/// to `[backends.openai]` (e.g. `ca_file` and the auth policy).
pub fn default_routes(
    whisper: &str,
    ollama: &str,
    kokoro: &str,
    openai: &str,
    openai_extra: &str,
) -> String {
    format!(
        r#"
[backends.whisper]
url = "{whisper}"
[backends.ollama]
url = "{ollama}"
[backends.kokoro]
url = "{kokoro}"
[backends.openai]
url = "{openai}"
{openai_extra}

[[route]]
path = "/v1/audio/transcriptions"
backend = "whisper"
[[route]]
path = "/v1/chat/completions"
backend = "ollama"
[[route]]
path = "/v1/audio/speech"
backend = "kokoro"
[[route]]
path = "/v1/audio/voices"
backend = "kokoro"
[[route]]
path = "/v1"
backend = "openai"
"#
    )
}

/// The default routes, every one of them to the same backend.
pub fn routes_to(url: &str) -> String {
    default_routes(url, url, url, url, "")
}

/// A loopback address nothing listens on, and nothing will while the tests run.
pub fn dead_addr() -> SocketAddr {
    // Bound but never listening: connecting gets a reset, and as the socket stays open for the
    // rest of the test process, no other test's listener picks the port for itself meanwhile
    // (which a port freed right away would allow).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A test may start a server there later (a backend coming up): a listener that also sets
    // SO_REUSEADDR, as tokio's do, may bind beside a socket that does not listen.
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::mem::forget(socket);
    addr
}

/// Deterministic test data: byte `i` of a stream.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

/// Asserts that the user guide `docs/GUIDE` shows `example` (the config file `file`) as a TOML
/// block exactly as it is, so that the guide cannot drift from the file the tests run.
pub fn assert_guide_shows(guide: &str, file: &str, example: &str) {
    let text = std::fs::read_to_string(format!("{}/docs/{guide}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("docs/{guide}: {e}"));
    assert!(
        text.contains(&format!("```toml\n{example}```")),
        "docs/{guide} must show {file} as it is"
    );
}
