//! `start`, `stop`, `restart`, `reload`, `status`, `enable`, `disable`: the OS service manager
//! does the work (systemd's `systemctl`, or on macOS `brew services` / `launchctl`); these
//! commands only spell out the right invocation, print it with `-v`, and for `status` add
//! what `/health` answers. Nothing here ever signals a process by name.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use super::process::{self, argv};
use super::status;
use crate::config::ListenAddr;
use crate::upstream::units::{self, parse_show, Scope};

/// The socket unit: what `start`, `enable` and friends drive on systemd.
pub const SOCKET_UNIT: &str = "openai-proxy.socket";
/// The service unit the socket starts.
pub const SERVICE_UNIT: &str = "openai-proxy.service";
/// Label of the launchd jobs in `contrib/launchd/`.
pub const LAUNCHD_LABEL: &str = "org.openai-proxy";
/// Label Homebrew gives the formula's service.
pub const BREW_LABEL: &str = "homebrew.mxcl.openai-proxy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a service command does.
pub enum Action {
    /// Start serving.
    Start,
    /// Stop serving.
    Stop,
    /// Stop, then start.
    Restart,
    /// Read the config again without stopping.
    Reload,
    /// Say whether it serves.
    Status,
    /// Start now and at every boot or login.
    Enable,
    /// Stop now and no more at boot or login.
    Disable,
}

/// Which service manager runs the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// `systemctl` (with `--user` for the per-user manager).
    Systemd,
    /// `brew services` (macOS, formula installed).
    Brew {
        /// The user, for the `gui/UID` domain.
        uid: u32,
    },
    /// `launchctl` with a plist from `contrib/launchd/`.
    Launchctl {
        /// The user, for the `gui/UID` domain.
        uid: u32,
    },
}

/// The commands an action runs, in order (for `status`: the query part).
pub fn plan(manager: &Manager, action: Action, user: bool) -> Vec<Vec<String>> {
    match manager {
        Manager::Systemd => {
            let mut base = vec!["systemctl"];
            if user {
                base.push("--user");
            }
            let with = |rest: &[&str]| argv(&[&base[..], rest].concat());
            match action {
                // The socket is what serves: the service starts on the first connection.
                Action::Start => vec![with(&["start", SOCKET_UNIT])],
                Action::Stop => vec![with(&["stop", SOCKET_UNIT, SERVICE_UNIT])],
                // The socket stays open, so no connection is refused while restarting.
                Action::Restart => vec![with(&["restart", SERVICE_UNIT])],
                // Nothing to do when not running: the config is read at the next start.
                Action::Reload => vec![with(&["try-reload-or-restart", SERVICE_UNIT])],
                Action::Enable => vec![with(&["enable", "--now", SOCKET_UNIT])],
                Action::Disable => vec![
                    with(&["disable", "--now", SOCKET_UNIT]),
                    with(&["stop", SERVICE_UNIT]),
                ],
                Action::Status => vec![with(&[
                    "show",
                    "--property=Id,ActiveState,SubState,MainPID,StatusText,Listen",
                    SOCKET_UNIT,
                    SERVICE_UNIT,
                ])],
            }
        }
        Manager::Brew { uid } => {
            let domain = if user {
                format!("gui/{uid}")
            } else {
                "system".to_string()
            };
            let brew = |verb: &str| argv(&["brew", "services", verb, "openai-proxy"]);
            match action {
                Action::Start | Action::Enable => vec![brew("start")],
                Action::Stop | Action::Disable => vec![brew("stop")],
                Action::Restart => vec![brew("restart")],
                Action::Reload => vec![vec![
                    "launchctl".into(),
                    "kill".into(),
                    "SIGHUP".into(),
                    format!("{domain}/{BREW_LABEL}"),
                ]],
                Action::Status => vec![brew("info")],
            }
        }
        Manager::Launchctl { uid } => {
            let domain = if user {
                format!("gui/{uid}")
            } else {
                "system".to_string()
            };
            let target = format!("{domain}/{LAUNCHD_LABEL}");
            let plist = launchd_plist(user).display().to_string();
            let l = |args: &[&str]| argv(&[&["launchctl"], args].concat());
            match action {
                Action::Start => vec![l(&["bootstrap", &domain, &plist])],
                Action::Stop => vec![l(&["bootout", &target])],
                Action::Restart => vec![l(&["kickstart", "-k", &target])],
                Action::Reload => vec![l(&["kill", "SIGHUP", &target])],
                Action::Enable => vec![l(&["enable", &target]), l(&["bootstrap", &domain, &plist])],
                Action::Disable => vec![l(&["disable", &target]), l(&["bootout", &target])],
                Action::Status => vec![l(&["print", &target])],
            }
        }
    }
}

/// Where `contrib/launchd/` plists are installed.
pub fn launchd_plist(user: bool) -> PathBuf {
    let name = format!("{LAUNCHD_LABEL}.plist");
    if user {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("~"), PathBuf::from);
        home.join("Library/LaunchAgents").join(name)
    } else {
        PathBuf::from("/Library/LaunchDaemons").join(name)
    }
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Finds the service manager, or explains why there is none.
pub fn detect(user: bool) -> anyhow::Result<Manager> {
    if cfg!(target_os = "macos") {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        if in_path("brew")
            && Command::new("brew")
                .args(["list", "--formula", "openai-proxy"])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return Ok(Manager::Brew { uid });
        }
        return Ok(Manager::Launchctl { uid });
    }
    if !in_path("systemctl") {
        bail!(
            "no service manager found: systemctl is not installed. Run `openai-proxy serve` in \
             the foreground, or under your init system"
        );
    }
    if user {
        // The user manager is reachable through its private socket in $XDG_RUNTIME_DIR.
        let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") else {
            bail!(
                "no user service manager: $XDG_RUNTIME_DIR is not set (no login session). Log \
                 in normally, or use the system service without --user"
            );
        };
        if !Path::new(&runtime).join("systemd/private").exists() {
            bail!(
                "no user service manager: systemd --user is not running for this user (no \
                 {}/systemd/private). Log in normally, or run `openai-proxy serve`",
                Path::new(&runtime).display()
            );
        }
    } else if !Path::new("/run/systemd/system").exists() {
        bail!(
            "no service manager found: systemd is not running here (PID 1 is not systemd, e.g. \
             in a container). Run `openai-proxy serve` in the foreground instead"
        );
    }
    Ok(Manager::Systemd)
}

/// Runs `action`, printing to `out`; returns the process exit status.
pub fn run(
    action: Action,
    user: bool,
    verbose: bool,
    config_flag: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let manager = detect(user)?;
    let commands = plan(&manager, action, user);
    if action == Action::Status {
        let on_demand = match manager {
            Manager::Systemd => on_demand_lines(user, config_flag),
            _ => String::new(),
        };
        return status::run(out, &commands, verbose, config_flag, &on_demand, |o| {
            let text = String::from_utf8_lossy(&o.stdout);
            match manager {
                Manager::Systemd => describe_units(&text),
                _ => (text.into_owned(), None),
            }
        });
    }
    for c in &commands {
        process::execute(c, verbose)?;
    }
    Ok(0)
}

/// The backends of the config that a socket unit of the same manager listens for, and their
/// servers' state; nothing when the config cannot be read or none is on demand.
fn on_demand_lines(user: bool, config_flag: Option<&Path>) -> String {
    let Ok(config) = crate::config::load(config_flag) else {
        return String::new();
    };
    let scope = if user { Scope::User } else { Scope::System };
    units::describe(&units::query(scope, &units::addresses(&config)), scope)
}

/// The first address in a socket unit's `Listen=` property (`127.0.0.1:2020 (Stream) ...`).
pub fn listen_from_show(value: &str) -> Option<ListenAddr> {
    let first = value.split(" (").next()?.trim();
    if first.starts_with('/') {
        Some(ListenAddr::Unix(PathBuf::from(first)))
    } else {
        first.parse::<SocketAddr>().ok().map(ListenAddr::Tcp)
    }
}

/// One line per unit of `systemctl show` output, and the socket's first address.
fn describe_units(text: &str) -> (String, Option<ListenAddr>) {
    let mut lines = String::new();
    let mut address = None;
    for unit in parse_show(text) {
        let get = |k: &str| {
            unit.iter()
                .find(|(key, _)| key == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut line = format!(
            "{}: {} ({})",
            get("Id"),
            get("ActiveState"),
            get("SubState")
        );
        if !get("Listen").is_empty() {
            line.push_str(&format!(" on {}", get("Listen")));
            address = address.or_else(|| listen_from_show(get("Listen")));
        }
        if get("MainPID") != "0" && !get("MainPID").is_empty() {
            line.push_str(&format!(", PID {}", get("MainPID")));
        }
        if !get("StatusText").is_empty() {
            line.push_str(&format!(": {}", get("StatusText")));
        }
        lines.push_str(&line);
        lines.push('\n');
    }
    (lines, address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Manager, a: Action, user: bool) -> Vec<String> {
        plan(m, a, user).iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn systemd_commands() {
        let m = Manager::Systemd;
        assert_eq!(
            lines(&m, Action::Start, true),
            ["systemctl --user start openai-proxy.socket"]
        );
        assert_eq!(
            lines(&m, Action::Stop, false),
            ["systemctl stop openai-proxy.socket openai-proxy.service"]
        );
        assert_eq!(
            lines(&m, Action::Restart, false),
            ["systemctl restart openai-proxy.service"]
        );
        assert_eq!(
            lines(&m, Action::Reload, true),
            ["systemctl --user try-reload-or-restart openai-proxy.service"]
        );
        assert_eq!(
            lines(&m, Action::Enable, true),
            ["systemctl --user enable --now openai-proxy.socket"]
        );
        assert_eq!(
            lines(&m, Action::Disable, false),
            [
                "systemctl disable --now openai-proxy.socket",
                "systemctl stop openai-proxy.service"
            ]
        );
    }

    #[test]
    fn macos_commands() {
        let brew = Manager::Brew { uid: 501 };
        assert_eq!(
            lines(&brew, Action::Start, true),
            ["brew services start openai-proxy"]
        );
        assert_eq!(
            lines(&brew, Action::Reload, true),
            ["launchctl kill SIGHUP gui/501/homebrew.mxcl.openai-proxy"]
        );
        let l = Manager::Launchctl { uid: 501 };
        let start = lines(&l, Action::Start, true);
        assert_eq!(start.len(), 1);
        assert!(start[0].starts_with("launchctl bootstrap gui/501 "));
        assert!(start[0].ends_with("/Library/LaunchAgents/org.openai-proxy.plist"));
        assert_eq!(
            lines(&l, Action::Reload, false),
            ["launchctl kill SIGHUP system/org.openai-proxy"]
        );
        assert_eq!(
            lines(&l, Action::Restart, true),
            ["launchctl kickstart -k gui/501/org.openai-proxy"]
        );
        assert_eq!(
            lines(&l, Action::Start, false),
            ["launchctl bootstrap system /Library/LaunchDaemons/org.openai-proxy.plist"]
        );
    }

    #[test]
    fn systemctl_show_parsing() {
        let text = "Id=openai-proxy.socket\nActiveState=active\nSubState=listening\nMainPID=0\n\
                    StatusText=\nListen=127.0.0.1:2020 (Stream)\n\nId=openai-proxy.service\n\
                    ActiveState=inactive\nSubState=dead\nMainPID=0\nStatusText=\nListen=\n";
        let units = parse_show(text);
        assert_eq!(units.len(), 2);
        assert_eq!(
            units[0][2],
            ("SubState".to_string(), "listening".to_string())
        );
        assert_eq!(
            listen_from_show("127.0.0.1:2020 (Stream) [::1]:2020 (Stream)"),
            Some(ListenAddr::Tcp("127.0.0.1:2020".parse().unwrap()))
        );
        assert_eq!(
            listen_from_show("/run/openai-proxy.sock (Stream)"),
            Some(ListenAddr::Unix("/run/openai-proxy.sock".into()))
        );
    }
}
