//! Headless Chromium driven over the DevTools protocol, for what `--dump-dom` cannot do: type
//! into a page, press its buttons, and read its DOM and storage as it changes. One browser and
//! one tab per [`Tab`]; every wait is bounded, and dropping it kills only the Chromium process
//! started here.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::browser::chromium;
use super::ws;

/// How long Chromium may take to answer one command, or a condition to come true.
const LIMIT: Duration = Duration::from_secs(30);

/// A page open in a headless Chromium of its own.
pub struct Tab {
    child: Child,
    ws: ws::Client,
    next: u64,
    session: String,
    _home: tempfile::TempDir,
}

impl Drop for Tab {
    fn drop(&mut self) {
        // Only the process started here (its own children follow it out).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tab {
    /// Starts Chromium with a fresh profile (and HOME) and opens `url` in a tab.
    pub async fn open(url: &str) -> Tab {
        let home = tempfile::tempdir().expect("a temp dir for Chromium");
        let child = chromium(home.path())
            .args(["--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let (addr, path) = devtools_address(&home.path().join("profile")).await;
        let (ws, _) = ws::connect(addr, &path, &[])
            .await
            .expect("Chromium's DevTools WebSocket");
        let mut tab = Tab {
            child,
            ws,
            next: 0,
            session: String::new(),
            _home: home,
        };
        let target = tab.call("Target.createTarget", json!({ "url": url })).await;
        let attached = tab
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        tab.session = attached["sessionId"]
            .as_str()
            .expect("a DevTools session")
            .to_string();
        tab
    }

    /// Sends one command (to the tab once attached) and waits for its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to Chromium");
        let answer = tokio::time::timeout(LIMIT, async {
            loop {
                let msg = self.ws.next().await.expect("Chromium's DevTools closed");
                let Ok(Message::Text(text)) = msg else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("Chromium did not answer {method} within {LIMIT:?}"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// The value of a JavaScript expression in the page (a promise is awaited), as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until the expression `condition` is true in the page (one that throws, say
    /// while the page is still loading, is not); `what` names it.
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + LIMIT;
        let test = format!(
            "(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&test).await != json!(true) {
            if Instant::now() > deadline {
                let dom = self.dom().await;
                panic!("{what}: not within {LIMIT:?}:\n{dom}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's DOM as markup, as it is now.
    pub async fn dom(&mut self) -> String {
        let v = self.eval("document.documentElement.outerHTML").await;
        v.as_str().unwrap_or_default().to_string()
    }
}

/// Where Chromium's DevTools listen: the port and path it writes to `DevToolsActivePort` in its
/// profile once it is up.
async fn devtools_address(profile: &Path) -> (SocketAddr, String) {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut lines = text.lines();
        if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
            if let Ok(port) = port.parse::<u16>() {
                return (SocketAddr::from(([127, 0, 0, 1], port)), path.to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "Chromium wrote no {} within {LIMIT:?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
