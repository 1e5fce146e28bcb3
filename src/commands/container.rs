//! `container start|stop|status|logs|enable|disable`: the proxy under Podman. Like
//! [`super::manage`], these commands only spell out the right `podman` and `systemctl`
//! invocations (printed with `-v`); [`plan`] builds them and is what the tests check.
//!
//! The container uses the host's network, so the config's addresses mean what they mean
//! outside a container (listen on 127.0.0.1:2020, reach Ollama on 127.0.0.1:11434). The
//! directory holding the config file is mounted read-only at the same path, so paths inside
//! the config (an `api_key_file` next to it) still resolve.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use super::process::{self, argv, Argv};
use super::status;
use crate::config;

/// The image `container start` and `container enable` run unless `--image` says otherwise: the
/// one `podman build -t openai-proxy -f contrib/container/Containerfile .` makes.
pub const DEFAULT_IMAGE: &str = "localhost/openai-proxy:latest";
/// The container's name.
pub const NAME: &str = "openai-proxy";
/// The quadlet's file name; systemd's quadlet generator makes `openai-proxy.service` of it.
pub const QUADLET_FILE: &str = "openai-proxy.container";
/// The unit the quadlet generator makes.
pub const QUADLET_UNIT: &str = "openai-proxy.service";
/// The quadlet in `contrib/container/`, the template `container enable` installs.
pub const QUADLET_TEMPLATE: &str = include_str!("../../contrib/container/openai-proxy.container");
/// Seconds `podman stop` waits before SIGKILL: `server.shutdown_timeout` (30 s by default)
/// plus a margin, as `TimeoutStopSec=` in the units.
pub const STOP_TIMEOUT: u32 = 40;
/// Quadlet `.container` files with `HealthCmd=` need Podman 4.5.
pub const QUADLET_MIN_PODMAN: (u32, u32) = (4, 5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a `container` command does.
pub enum Action {
    /// Run the container (in the background).
    Start,
    /// Stop and remove it.
    Stop,
    /// Whether it runs.
    Status,
    /// Its log, followed with `follow`.
    Logs {
        /// Keep printing what comes.
        follow: bool,
    },
    /// Install a Quadlet unit that starts it at boot or login.
    Enable,
    /// Remove that unit.
    Disable,
}

/// What a `container` command needs to know beyond the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The image to run (start, enable).
    pub image: String,
    /// The config file to mount and use; `None`: the image's built-in default.
    pub config: Option<PathBuf>,
    /// enable/disable: the per-user service manager and quadlet directory.
    pub user: bool,
    /// Where quadlets go for this manager.
    pub quadlet_dir: PathBuf,
}

/// What an action does: files to write or remove first, then commands to run in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (path, contents) to write before the commands.
    pub write: Option<(PathBuf, String)>,
    /// A file to remove after the first command (disable: after stopping the service).
    pub remove: Option<PathBuf>,
    /// The commands to run, in order.
    pub commands: Vec<Argv>,
}

/// How the container gets the config file: its directory mounted read-only at the same path
/// (so files next to it, like an `api_key_file`, resolve too), and `$OPENAI_PROXY_CONFIG`
/// naming it (read by `serve` and by the health check alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMount {
    /// `DIR:DIR:ro,z`
    pub volume: String,
    /// `OPENAI_PROXY_CONFIG=FILE`
    pub env: String,
}

/// How the config file `file` is mounted into the container.
pub fn config_mount(file: &Path) -> ConfigMount {
    let dir = file
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    ConfigMount {
        volume: format!("{dir}:{dir}:ro,z"),
        env: format!("{}={}", config::CONFIG_ENV, file.display()),
    }
}

/// `podman run` for `container start`.
pub fn run_command(image: &str, config: Option<&Path>) -> Argv {
    let mut c = argv(&[
        "podman",
        "run",
        "--detach",
        "--rm",
        "--replace",
        "--name",
        NAME,
        "--network",
        "host",
    ]);
    if let Some(m) = config.map(config_mount) {
        c.extend(["--volume".to_string(), m.volume, "--env".to_string(), m.env]);
    }
    c.push(image.to_string());
    c
}

/// The quadlet `container enable` installs: the template with `Image=` set and, for a config
/// file, its commented `Volume=` and `Environment=` lines filled in.
pub fn quadlet(image: &str, config: Option<&Path>) -> String {
    let mount = config.map(config_mount);
    let mut out = String::new();
    for line in QUADLET_TEMPLATE.lines() {
        let line = match &mount {
            _ if line.starts_with("Image=") => format!("Image={image}"),
            Some(m) if line.starts_with("#Volume=") => format!("Volume={}", m.volume),
            Some(m) if line.starts_with("#Environment=") => format!("Environment={}", m.env),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn systemctl(user: bool, rest: &[&str]) -> Argv {
    let scope: &[&str] = if user { &["--user"] } else { &[] };
    argv(&[&["systemctl"], scope, rest].concat())
}

/// The commands (and file changes) an action means.
pub fn plan(action: Action, setup: &Setup) -> Plan {
    let quadlet_path = setup.quadlet_dir.join(QUADLET_FILE);
    let just = |command: Argv| Plan {
        commands: vec![command],
        ..Plan::default()
    };
    match action {
        Action::Start => just(run_command(&setup.image, setup.config.as_deref())),
        Action::Stop => just(argv(&[
            "podman",
            "stop",
            "--ignore",
            "--time",
            &STOP_TIMEOUT.to_string(),
            NAME,
        ])),
        Action::Status => just(argv(&[
            "podman",
            "container",
            "inspect",
            "--format",
            "{{.Name}}: {{.State.Status}} since {{.State.StartedAt}}, image {{.ImageName}}",
            NAME,
        ])),
        Action::Logs { follow } => {
            let mut c = argv(&["podman", "logs"]);
            if follow {
                c.push("--follow".into());
            }
            c.push(NAME.into());
            just(c)
        }
        Action::Enable => Plan {
            write: Some((quadlet_path, quadlet(&setup.image, setup.config.as_deref()))),
            remove: None,
            commands: vec![
                systemctl(setup.user, &["daemon-reload"]),
                systemctl(setup.user, &["start", QUADLET_UNIT]),
            ],
        },
        Action::Disable => Plan {
            write: None,
            remove: Some(quadlet_path),
            commands: vec![
                systemctl(setup.user, &["stop", QUADLET_UNIT]),
                systemctl(setup.user, &["daemon-reload"]),
            ],
        },
    }
}

/// Where quadlets go: `/etc/containers/systemd`, or for `--user`
/// `$XDG_CONFIG_HOME/containers/systemd` (`~/.config/containers/systemd`).
pub fn quadlet_dir(user: bool) -> anyhow::Result<PathBuf> {
    if !user {
        return Ok(PathBuf::from("/etc/containers/systemd"));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => bail!("neither $XDG_CONFIG_HOME nor $HOME is set: cannot find ~/.config"),
        },
    };
    Ok(base.join("containers").join("systemd"))
}

/// The config file the container should use: the one the lookup order finds, as an absolute
/// path; `None` when the built-in default would be used.
pub fn config_file(config_flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let source = config::locate(config_flag);
    let Some(path) = source.path else {
        return Ok(None);
    };
    let absolute = std::fs::canonicalize(&path)
        .with_context(|| format!("cannot use the config file {}", path.display()))?;
    Ok(Some(absolute))
}

/// `podman --version` → (major, minor).
pub fn parse_podman_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().last()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn podman_version() -> anyhow::Result<(u32, u32)> {
    let out = Command::new("podman")
        .arg("--version")
        .output()
        .context("cannot run podman: is it installed? (apt install podman / dnf install podman)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_podman_version(&text)
        .with_context(|| format!("cannot read the version in `podman --version`: {text:?}"))
}

/// A `container` command, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub action: Action,
    /// The image to run (start, enable).
    pub image: String,
    /// enable/disable: the per-user service manager.
    pub user: bool,
    /// Print each command before running it.
    pub verbose: bool,
}

/// Runs a `container` command, printing to `out`; returns the exit status.
pub fn run(req: &Request, config_flag: Option<&Path>, out: &mut dyn Write) -> anyhow::Result<u8> {
    let Request {
        action,
        ref image,
        user,
        verbose,
    } = *req;
    let config = match action {
        Action::Start | Action::Enable => config_file(config_flag)?,
        _ => None,
    };
    let setup = Setup {
        image: image.clone(),
        config,
        user,
        quadlet_dir: quadlet_dir(user)?,
    };
    let plan = plan(action, &setup);
    match action {
        Action::Status => {
            return status::run(out, &plan.commands, verbose, config_flag, "", |o| {
                let text = if o.status.success() {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                } else {
                    format!("{NAME}: no such container (not started, or stopped)\n")
                };
                (text, None)
            })
        }
        Action::Enable => {
            let version = podman_version()?;
            if version < QUADLET_MIN_PODMAN {
                bail!(
                    "container enable installs a quadlet with a health check, which needs Podman \
                     {}.{} or later; this is Podman {}.{}. Use `openai-proxy container start`, \
                     or `podman generate systemd --new --name {NAME}` after it",
                    QUADLET_MIN_PODMAN.0,
                    QUADLET_MIN_PODMAN.1,
                    version.0,
                    version.1
                );
            }
        }
        Action::Disable => {
            if let Some(path) = plan.remove.as_ref().filter(|p| !p.exists()) {
                writeln!(
                    out,
                    "No quadlet at {}: the container is not enabled there",
                    path.display()
                )?;
                return Ok(0);
            }
        }
        _ => {}
    }
    if let Some((path, contents)) = &plan.write {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        process::trace(&format!("write {}", path.display()), verbose);
        std::fs::write(path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for (i, c) in plan.commands.iter().enumerate() {
        process::execute(c, verbose)?;
        if let Some(path) = plan.remove.as_ref().filter(|_| i == 0) {
            process::trace(&format!("rm {}", path.display()), verbose);
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(config: Option<&str>, user: bool) -> Setup {
        Setup {
            image: "localhost/openai-proxy:test".into(),
            config: config.map(PathBuf::from),
            user,
            quadlet_dir: PathBuf::from("/home/u/.config/containers/systemd"),
        }
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.commands.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn start_runs_on_the_host_network_with_the_config_mounted() {
        let p = plan(
            Action::Start,
            &setup(Some("/etc/openai-proxy/config.toml"), false),
        );
        assert_eq!(
            lines(&p),
            [
                "podman run --detach --rm --replace --name openai-proxy --network host \
              --volume /etc/openai-proxy:/etc/openai-proxy:ro,z \
              --env OPENAI_PROXY_CONFIG=/etc/openai-proxy/config.toml localhost/openai-proxy:test"
            ]
        );
        let p = plan(Action::Start, &setup(None, false));
        assert_eq!(
            lines(&p),
            [
                "podman run --detach --rm --replace --name openai-proxy --network host \
              localhost/openai-proxy:test"
            ]
        );
        // A path with a space stays one argument.
        let p = plan(Action::Start, &setup(Some("/home/u/my dir/p.toml"), false));
        assert!(p.commands[0].contains(&"/home/u/my dir:/home/u/my dir:ro,z".to_string()));
        assert!(p.commands[0].contains(&"OPENAI_PROXY_CONFIG=/home/u/my dir/p.toml".to_string()));
    }

    #[test]
    fn stop_status_logs() {
        let s = setup(None, false);
        assert_eq!(
            lines(&plan(Action::Stop, &s)),
            ["podman stop --ignore --time 40 openai-proxy"]
        );
        assert_eq!(
            lines(&plan(Action::Logs { follow: true }, &s)),
            ["podman logs --follow openai-proxy"]
        );
        assert_eq!(
            lines(&plan(Action::Logs { follow: false }, &s)),
            ["podman logs openai-proxy"]
        );
        let status = plan(Action::Status, &s);
        assert_eq!(&status.commands[0][..3], ["podman", "container", "inspect"]);
        assert_eq!(status.commands[0].last().unwrap(), "openai-proxy");
    }

    #[test]
    fn enable_writes_the_quadlet_and_starts_its_service() {
        let p = plan(
            Action::Enable,
            &setup(Some("/home/u/.config/openai-proxy/config.toml"), true),
        );
        let (path, text) = p.write.clone().unwrap();
        assert_eq!(
            path,
            Path::new("/home/u/.config/containers/systemd/openai-proxy.container")
        );
        assert!(
            text.contains("\nImage=localhost/openai-proxy:test\n"),
            "{text}"
        );
        assert!(text
            .contains("\nVolume=/home/u/.config/openai-proxy:/home/u/.config/openai-proxy:ro,z\n"));
        assert!(text.contains(
            "\nEnvironment=OPENAI_PROXY_CONFIG=/home/u/.config/openai-proxy/config.toml\n"
        ));
        assert_eq!(text.matches("\nImage=").count(), 1);
        assert_eq!(
            lines(&p),
            [
                "systemctl --user daemon-reload",
                "systemctl --user start openai-proxy.service"
            ]
        );
        let p = plan(Action::Enable, &setup(None, false));
        let text = p.write.unwrap().1;
        assert!(!text
            .lines()
            .any(|l| l.starts_with("Volume=") || l.starts_with("Environment=")));
        assert!(
            text.contains("\n#Volume=") && text.contains("\nImage=localhost/openai-proxy:test\n")
        );
        assert_eq!(
            lines(&plan(Action::Disable, &setup(None, false))),
            [
                "systemctl stop openai-proxy.service",
                "systemctl daemon-reload"
            ]
        );
    }

    #[test]
    fn podman_versions() {
        assert_eq!(parse_podman_version("podman version 4.3.1\n"), Some((4, 3)));
        assert_eq!(
            parse_podman_version("podman version 5.0.0-dev"),
            Some((5, 0))
        );
        assert_eq!(parse_podman_version("nonsense"), None);
        assert!((4, 3) < QUADLET_MIN_PODMAN && (4, 9) >= QUADLET_MIN_PODMAN);
    }

    #[test]
    fn user_quadlet_dir_follows_xdg() {
        assert_eq!(
            quadlet_dir(false).unwrap(),
            Path::new("/etc/containers/systemd")
        );
    }
}
