//! Socket activation and sd_notify from the test's side: a notification socket the test
//! listens on (path or abstract), `systemd-socket-activate` around the real binary, free ports.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bin;

/// A datagram socket standing in for systemd's notification socket.
pub struct NotifySocket {
    /// The value for `$NOTIFY_SOCKET`.
    pub env: String,
    rx: mpsc::Receiver<String>,
    /// Everything received so far.
    pub seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    /// A socket at a filesystem path, or with `abstract_name`, in the abstract namespace.
    pub fn new(abstract_name: bool) -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let (socket, env) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!(
                "openai-proxy-test-{}-{}",
                std::process::id(),
                dir.path().file_name().unwrap().to_string_lossy()
            );
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let p = dir.path().join("notify");
            (UnixDatagram::bind(&p).unwrap(), p.display().to_string())
        };
        let (tx, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                log.lock().unwrap().push(msg.clone());
                if tx.send(msg).is_err() {
                    break;
                }
            }
        });
        NotifySocket {
            env,
            rx,
            seen,
            _dir: dir,
        }
    }

    /// Waits for the next message containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if m.contains(needle) => return m,
                Ok(_) => {}
                Err(_) => panic!(
                    "no sd_notify message with {needle:?} within {limit:?}; got {:?}",
                    self.seen.lock().unwrap()
                ),
            }
        }
    }

    pub fn all(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `systemd-socket-activate` holding `listen` sockets (named `http`) for
/// `openai-proxy --config CONFIG serve`, which it starts on the first connection.
pub struct Activated {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Activated {
    pub fn start(listen: &[String], notify: &NotifySocket, config: &Path) -> Activated {
        let named: Vec<(&str, &str)> = listen.iter().map(|l| (l.as_str(), "http")).collect();
        Activated::start_named(&named, notify, config)
    }

    /// [`Activated::start`] with a name for each socket: `(address, name)`.
    pub fn start_named(listen: &[(&str, &str)], notify: &NotifySocket, config: &Path) -> Activated {
        super::tools::require("/usr/bin/systemd-socket-activate", "systemd");
        let mut cmd = Command::new("/usr/bin/systemd-socket-activate");
        for (l, _) in listen {
            cmd.arg("-l").arg(l);
        }
        let names = listen.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(":");
        cmd.arg(format!("--fdname={names}"))
            .arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", notify.env))
            .arg(bin::exe())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("systemd-socket-activate");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("Listening on") {
                    let _ = tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        for _ in listen {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("systemd-socket-activate did not listen");
        }
        Activated { child, log }
    }

    /// Sends `sig` to the process (the proxy, once it has been started: it replaces
    /// systemd-socket-activate by exec).
    pub fn signal(&self, sig: i32) {
        bin::signal(&self.child, sig);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        bin::wait_exit(&mut self.child, limit).and_then(|st| st.code())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Asserts that the proxy stays up for `hold` (it has a connection open), then, once
    /// `close` has closed what it holds, that it exits 0 by idle exit.
    pub fn assert_idle_exit_after(
        &mut self,
        notify: &NotifySocket,
        hold: Duration,
        close: impl FnOnce(),
    ) {
        std::thread::sleep(hold);
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "exited with a connection open"
        );
        close();
        assert_eq!(
            self.wait_exit(Duration::from_secs(10)),
            Some(0),
            "{}",
            self.log_text()
        );
        notify.wait_for("STOPPING=1", Duration::from_secs(5));
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /health` over TCP or a Unix socket with plain blocking I/O; the status line.
pub fn get_health(addr: &str) -> String {
    use std::io::{Read, Write};
    let req = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut out = String::new();
    if let Some(path) = addr.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req).unwrap();
        s.read_to_string(&mut out).unwrap();
    } else {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(req).unwrap();
        s.read_to_string(&mut out).unwrap();
    }
    out.lines().next().unwrap_or_default().to_string()
}

/// A config file in a temp dir.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

/// Starts `openai-proxy --config CONFIG serve --listen 127.0.0.1:0` with a notification socket
/// and waits for `READY=1`.
pub fn start_notified(config: &Path) -> (bin::Proc, NotifySocket) {
    let notify = NotifySocket::new(false);
    let mut cmd = bin::command();
    cmd.env("NOTIFY_SOCKET", &notify.env)
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let proc = bin::Proc::spawn(cmd);
    notify.wait_for("READY=1", Duration::from_secs(10));
    (proc, notify)
}
