//! Backends started on demand by systemd: for each backend address that a socket unit listens
//! on, whether the server behind it is running, starting, stopping or stopped. Read-only: it
//! runs `systemctl show`, three times at most, and gives up quietly where there is no systemd
//! (or no answer within [`SYSTEMCTL_TIMEOUT`]).
//!
//! The chain it follows is the one of `contrib/systemd/on-demand/`, but nothing here depends on
//! its names: a socket unit whose `Listen=` is the backend's address; the service that socket
//! `Triggers=` (`systemd-socket-proxyd`); the server is the first service that one `BindsTo=`
//! (the recipe's `openai-proxy-server@NAME.service`), or the triggered service itself when it
//! binds to none (a server that is socket-activated itself).
//!
//! Used by `openai-proxy status`, the `/` page and the model lists' states; starting and
//! stopping the units found here is [`super::control`]'s.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;

/// How long the `/` page reuses what systemd said.
const FRESH: Duration = Duration::from_secs(1);

/// How long one `systemctl show` may take.
pub(crate) const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(2);

/// Which service manager to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    System,
    User,
}

impl Scope {
    /// The manager the running proxy belongs to: the user's when a user manager started it
    /// (`$MANAGERPID`) or when it runs by hand as a user with a user manager; else the system's
    /// when systemd runs; else none.
    pub(crate) fn of_this_process() -> Option<Scope> {
        let user_manager = std::env::var_os("XDG_RUNTIME_DIR")
            .is_some_and(|d| Path::new(&d).join("systemd/private").exists());
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if user_manager && (std::env::var_os("MANAGERPID").is_some() || !root) {
            Some(Scope::User)
        } else if Path::new("/run/systemd/system").exists() {
            Some(Scope::System)
        } else {
            None
        }
    }

    pub(crate) fn systemctl(self) -> Command {
        let mut c = Command::new("systemctl");
        if self == Scope::User {
            c.arg("--user");
        }
        c
    }
}

/// A backend address to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub backend: String,
    pub host: String,
    pub port: u16,
}

/// The addresses of a config's plain-HTTP backends on this machine (loopback, `localhost` or
/// an unspecified address): only those can be a local socket unit.
pub(crate) fn addresses(config: &Config) -> Vec<Address> {
    config
        .backends
        .iter()
        .flat_map(|b| b.servers.iter().map(move |s| (b, s)))
        .filter(|(_, s)| !s.is_https())
        .filter_map(|(b, s)| {
            let host = s.authority.host();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let local = match bare.parse::<IpAddr>() {
                Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
                Err(_) => bare.eq_ignore_ascii_case("localhost"),
            };
            local.then(|| Address {
                backend: b.name.clone(),
                host: host.to_string(),
                port: s.authority.port_u16().unwrap_or(80),
            })
        })
        .collect()
}

/// What systemd says of one config's on-demand backends, for the `/` page and the model lists:
/// asked when they are asked for (off the serving thread), at most once a [`FRESH`] interval.
pub(crate) struct Watch {
    scope: Option<Scope>,
    addresses: Vec<Address>,
    last: tokio::sync::Mutex<Option<(Instant, Arc<[OnDemand]>)>>,
}

impl Watch {
    pub(crate) fn new(config: &Config) -> Watch {
        let addresses = addresses(config);
        Watch {
            scope: if addresses.is_empty() {
                None
            } else {
                Scope::of_this_process()
            },
            addresses,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The service manager asked, if any.
    pub(crate) fn scope(&self) -> Option<Scope> {
        self.scope
    }

    /// The backends whose address is a socket unit, and their servers' states; empty without
    /// systemd or on-demand backends.
    pub(crate) async fn found(&self) -> Arc<[OnDemand]> {
        let Some(scope) = self.scope else {
            return Arc::from([]);
        };
        // One query at a time; those waiting meanwhile get its answer.
        let mut last = self.last.lock().await;
        if let Some((at, found)) = &*last {
            if at.elapsed() < FRESH {
                return found.clone();
            }
        }
        let addresses = self.addresses.clone();
        let found: Arc<[OnDemand]> = tokio::task::spawn_blocking(move || query(scope, &addresses))
            .await
            .map_or_else(|_| Arc::from([]), Arc::from);
        *last = Some((Instant::now(), found.clone()));
        found
    }

    /// Forgets what systemd said: the next question asks again (a unit was just started or
    /// stopped).
    pub(crate) async fn forget(&self) {
        *self.last.lock().await = None;
    }

    /// The lines of [`describe`], or nothing without systemd or on-demand backends.
    pub(crate) async fn describe(&self) -> Arc<str> {
        match self.scope {
            None => Arc::from(""),
            Some(scope) => Arc::from(describe(&self.found().await, scope)),
        }
    }
}

/// What the server of an on-demand backend is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitState {
    Running,
    /// Started, not answering yet (loading its model).
    Starting,
    Stopping,
    Stopped,
}

impl UnitState {
    fn from_active_state(s: &str) -> UnitState {
        match s {
            "active" | "reloading" => UnitState::Running,
            "activating" => UnitState::Starting,
            "deactivating" => UnitState::Stopping,
            _ => UnitState::Stopped,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UnitState::Running => "running",
            UnitState::Starting => "starting",
            UnitState::Stopping => "stopping",
            UnitState::Stopped => "stopped",
        }
    }
}

/// One backend whose address is a socket unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnDemand {
    pub backend: String,
    pub state: UnitState,
    /// The server's unit.
    pub server: String,
    /// The service the socket starts (`systemd-socket-proxyd`, which starts the server); the
    /// server itself when it is socket-activated.
    pub forwarder: String,
    pub socket: String,
    /// The socket's first address, as systemd shows it.
    pub listen: String,
    /// The socket itself is not listening (stopped or failed): connections are refused.
    pub socket_down: bool,
}

impl OnDemand {
    /// One line: `chat  running  openai-proxy-server@chat.service (socket ... on ...)`.
    pub(crate) fn line(&self, name_width: usize) -> String {
        let state = if self.socket_down {
            "stopped, socket not listening"
        } else {
            self.state.as_str()
        };
        format!(
            "{:name_width$}  {state:8}  {} (socket {} on {})",
            self.backend, self.server, self.socket, self.listen
        )
    }
}

/// Lines for a report: a heading, then one line per on-demand backend; empty without any.
pub(crate) fn describe(found: &[OnDemand], scope: Scope) -> String {
    if found.is_empty() {
        return String::new();
    }
    let width = found.iter().map(|f| f.backend.len()).max().unwrap_or(0);
    let mut s = format!(
        "Backends on demand ({} units):\n",
        match scope {
            Scope::System => "systemd system",
            Scope::User => "systemd user",
        }
    );
    for f in found {
        s.push_str("  ");
        s.push_str(&f.line(width));
        s.push('\n');
    }
    s
}

/// Looks up the backends among `addresses` that a socket unit of `scope` listens for. Empty
/// when there is none, or when systemd cannot be asked.
pub(crate) fn query(scope: Scope, addresses: &[Address]) -> Vec<OnDemand> {
    if addresses.is_empty() {
        return Vec::new();
    }
    let Some(sockets) = show(scope, &["*.socket"], "Id,Listen,Triggers,ActiveState") else {
        return Vec::new();
    };
    // (backend, socket unit, listen, socket active, triggered service)
    let mut matched = Vec::new();
    for a in addresses {
        for s in &sockets {
            let listen = get(s, "Listen");
            let Some(first) = listen
                .split(") ")
                .map(|l| l.split(" (").next().unwrap_or_default().trim())
                .find(|l| listens_for(l, a))
            else {
                continue;
            };
            let triggers = get(s, "Triggers").split_whitespace().next().unwrap_or("");
            if triggers.is_empty() || matched.iter().any(|m: &Match| m.backend == a.backend) {
                continue;
            }
            matched.push(Match {
                backend: a.backend.clone(),
                socket: get(s, "Id").to_string(),
                listen: first.to_string(),
                socket_up: get(s, "ActiveState") == "active",
                triggers: triggers.to_string(),
                server: String::new(),
            });
        }
    }
    if matched.is_empty() {
        return Vec::new();
    }
    let triggered: Vec<&str> = matched.iter().map(|m| m.triggers.as_str()).collect();
    let Some(services) = show(scope, &triggered, "Id,BindsTo") else {
        return Vec::new();
    };
    for m in &mut matched {
        let binds = services
            .iter()
            .find(|s| get(s, "Id") == m.triggers)
            .map(|s| get(s, "BindsTo"))
            .unwrap_or("");
        m.server = binds
            .split_whitespace()
            .find(|u| u.ends_with(".service"))
            .unwrap_or(&m.triggers)
            .to_string();
    }
    let servers: Vec<&str> = matched.iter().map(|m| m.server.as_str()).collect();
    let Some(states) = show(scope, &servers, "Id,ActiveState") else {
        return Vec::new();
    };
    matched
        .into_iter()
        .map(|m| {
            let active = states
                .iter()
                .find(|s| get(s, "Id") == m.server)
                .map(|s| get(s, "ActiveState"))
                .unwrap_or("");
            OnDemand {
                state: UnitState::from_active_state(active),
                socket_down: !m.socket_up,
                backend: m.backend,
                server: m.server,
                forwarder: m.triggers,
                socket: m.socket,
                listen: m.listen,
            }
        })
        .collect()
}

struct Match {
    backend: String,
    socket: String,
    listen: String,
    socket_up: bool,
    triggers: String,
    server: String,
}

/// Whether a socket listening on `listen` (`127.0.0.1:8081`, `[::]:8081`) takes connections
/// made to the backend address `a`.
fn listens_for(listen: &str, a: &Address) -> bool {
    let Some((ip, port)) = listen.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(a.port) {
        return false;
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let host = a.host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    match host.parse::<IpAddr>() {
        Ok(h) => h == ip || ip.is_unspecified(),
        Err(_) if host.eq_ignore_ascii_case("localhost") => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => false,
    }
}

type Unit = Vec<(String, String)>;

fn get<'u>(unit: &'u Unit, key: &str) -> &'u str {
    unit.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `systemctl show -p PROPS UNITS...`, parsed; `None` when it cannot run or fails.
fn show(scope: Scope, units: &[&str], props: &str) -> Option<Vec<Unit>> {
    let mut cmd = scope.systemctl();
    cmd.arg("show").arg(format!("--property={props}")).arg("--");
    cmd.args(units);
    let text = output_within(cmd, SYSTEMCTL_TIMEOUT)?;
    Some(parse_show(&text))
}

/// `systemctl show` output: one `KEY=VALUE` block per unit, separated by blank lines.
pub(crate) fn parse_show(text: &str) -> Vec<Unit> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect()
}

/// Runs `cmd` and returns its standard output when it exits 0 within `limit`; a command still
/// running then is killed.
fn output_within(cmd: Command, limit: Duration) -> Option<String> {
    run_within(cmd, limit).ok()
}

/// Why a command run by [`run_within`] did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunError {
    /// It could not be started (say, no `systemctl`).
    Spawn(String),
    /// Still running after the limit: killed.
    TimedOut,
    /// It exited with a failure: its status and the first line of what it wrote on stderr.
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot run systemctl: {e}"),
            RunError::TimedOut => write!(f, "systemctl did not finish in time"),
            RunError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Longest part of a command's stderr kept for a message.
const STDERR_PREFIX: usize = 200;

/// Runs `cmd` and returns its standard output when it exits 0 within `limit`; a command still
/// running then is killed. A failure keeps a short prefix of its stderr's first line.
pub(crate) fn run_within(mut cmd: Command, limit: Duration) -> Result<String, RunError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RunError::Spawn(e.to_string()))?;
    // Read beside the wait, so a full pipe never stalls the child.
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        None => Err(RunError::TimedOut),
        Some(s) if s.success() => Ok(text),
        Some(s) => {
            let first: String = err
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(STDERR_PREFIX)
                .collect();
            Err(RunError::Failed(format!("{s}: {}", first.trim())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> Address {
        Address {
            backend: "b".into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn addresses_a_socket_takes() {
        assert!(listens_for("127.0.0.1:8081", &addr("127.0.0.1", 8081)));
        assert!(!listens_for("127.0.0.1:8081", &addr("127.0.0.1", 8082)));
        assert!(listens_for("127.0.0.1:8081", &addr("localhost", 8081)));
        assert!(listens_for("[::1]:8081", &addr("localhost", 8081)));
        assert!(listens_for("[::1]:8081", &addr("[::1]", 8081)));
        assert!(listens_for("0.0.0.0:8081", &addr("127.0.0.1", 8081)));
        assert!(listens_for("[::]:8081", &addr("localhost", 8081)));
        assert!(!listens_for("10.0.0.1:8081", &addr("127.0.0.1", 8081)));
        assert!(!listens_for("/run/x.sock", &addr("localhost", 8081)));
        assert!(!listens_for("127.0.0.1:8081", &addr("gpu-box", 8081)));
    }

    #[test]
    fn states_and_lines() {
        assert_eq!(UnitState::from_active_state("active"), UnitState::Running);
        assert_eq!(
            UnitState::from_active_state("activating"),
            UnitState::Starting
        );
        assert_eq!(
            UnitState::from_active_state("deactivating"),
            UnitState::Stopping
        );
        assert_eq!(UnitState::from_active_state("failed"), UnitState::Stopped);
        assert_eq!(UnitState::from_active_state(""), UnitState::Stopped);
        let f = OnDemand {
            backend: "chat".into(),
            state: UnitState::Starting,
            server: "openai-proxy-server@chat.service".into(),
            forwarder: "openai-proxy-backend@chat.service".into(),
            socket: "openai-proxy-backend@chat.socket".into(),
            listen: "127.0.0.1:8081".into(),
            socket_down: false,
        };
        assert_eq!(
            describe(&[f], Scope::User),
            "Backends on demand (systemd user units):\n  chat  starting  \
             openai-proxy-server@chat.service (socket openai-proxy-backend@chat.socket on \
             127.0.0.1:8081)\n"
        );
    }
}
