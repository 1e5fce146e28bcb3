//! Runs the real `openai-proxy` binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits for a child to exit, at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends `sig` to a child we started (by PID, never by name).
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on the PID of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_openai-proxy")
}

/// A command for the binary with a clean environment for config lookup: nothing inherited
/// from the developer's `$OPENAI_PROXY_CONFIG` or `~/.config`.
pub fn command() -> Command {
    let mut c = Command::new(exe());
    c.env_remove("OPENAI_PROXY_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("JOURNAL_STREAM")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    c
}

/// Runs the binary to completion.
pub fn run(args: &[&str]) -> Output {
    command().args(args).output().expect("run openai-proxy")
}

/// A running proxy process. Killed (by PID) when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `openai-proxy --config CONFIG serve --listen 127.0.0.1:0 EXTRA...` and waits for
    /// it to report its address.
    pub fn start(config: &Path, extra: &[&str]) -> Proc {
        let mut cmd = command();
        cmd.arg("--config")
            .arg(config)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra);
        Self::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openai-proxy");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on ").nth(1) {
                    if let Ok(addr) = a.trim().parse::<SocketAddr>() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "openai-proxy did not start; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Proc { child, addr, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// Sends SIGTERM, waits (off the async runtime) for the exit, at most 20 s, and returns
    /// the log.
    pub async fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        tokio::task::spawn_blocking(move || {
            assert!(
                self.wait_exit(Duration::from_secs(20)).is_some(),
                "openai-proxy did not stop"
            );
            self.log_text()
        })
        .await
        .expect("waiting for openai-proxy")
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
