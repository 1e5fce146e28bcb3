//! `enable-backend` and `disable-backend`: a model server started on demand by systemd,
//! without hand-written units. The templates of `contrib/systemd/on-demand/` (installed by the
//! packages) do the work; for a backend NAME these commands write or remove one drop-in per
//! unit instance, each named [`DROP_IN`]:
//!
//! - `openai-proxy-backend@NAME.socket.d/`: the address the proxy's config points at;
//! - `openai-proxy-backend@NAME.service.d/`: where the server listens, and the idle time after
//!   which `systemd-socket-proxyd` exits (and the server stops);
//! - `openai-proxy-server@NAME.service.d/`: the server's command, and the servers it never runs
//!   beside (`Conflicts=`, with an ordering so that one stops before the other starts);
//!
//! then enable (or disable) the socket. A plan (files and commands) is made first, so
//! `--dry-run` shows exactly what would be done, and the tests compare it with the docs.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use super::manage;
use super::process::{self, argv, Argv};
use crate::config::{format_duration, valid_name};

/// The file name of every drop-in these commands write.
pub const DROP_IN: &str = "openai-proxy.conf";

/// The socket unit of backend `name`.
pub fn socket_unit(name: &str) -> String {
    format!("openai-proxy-backend@{name}.socket")
}

/// The `systemd-socket-proxyd` service of backend `name`.
pub fn forwarder_unit(name: &str) -> String {
    format!("openai-proxy-backend@{name}.service")
}

/// The model server's service of backend `name`.
pub fn server_unit(name: &str) -> String {
    format!("openai-proxy-server@{name}.service")
}

/// The templates the drop-ins extend.
const TEMPLATES: [&str; 3] = [
    "openai-proxy-backend@.socket",
    "openai-proxy-backend@.service",
    "openai-proxy-server@.service",
];

/// `enable-backend`, as plain values.
#[derive(Debug, Clone)]
pub struct Enable {
    /// The backend's name (the config's `[backends.NAME]`).
    pub name: String,
    /// The server's command line (shell words).
    pub exec: String,
    /// Where systemd listens: the port of `backends.NAME.url`.
    pub port: u16,
    /// Where the server listens; default `port` + 10000.
    pub server_port: Option<u16>,
    /// Time without a connection after which the server stops.
    pub idle: Duration,
    /// Backends whose servers never run at the same time as this one.
    pub conflicts: Vec<String>,
    /// What `wait-ready` asks for; default `/`.
    pub ready_path: Option<String>,
    /// The user's service manager instead of the system's.
    pub user: bool,
    /// Print what would be done, and do nothing.
    pub dry_run: bool,
    /// Say each step.
    pub verbose: bool,
}

/// `disable-backend`, as plain values.
#[derive(Debug, Clone)]
pub struct Disable {
    /// The backend's name.
    pub name: String,
    /// The user's service manager instead of the system's.
    pub user: bool,
    /// Print what would be done, and do nothing.
    pub dry_run: bool,
    /// Say each step.
    pub verbose: bool,
}

/// What a command does: commands to run first, files to write or remove, commands to run
/// after.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Commands run first.
    pub before: Vec<Argv>,
    /// Files written, with their content.
    pub write: Vec<(PathBuf, String)>,
    /// Files removed.
    pub remove: Vec<PathBuf>,
    /// Commands run last.
    pub after: Vec<Argv>,
}

/// Where drop-ins go: `$XDG_CONFIG_HOME/systemd/user` (`~/.config/...`) with `--user`, else
/// `/etc/systemd/system`.
pub fn unit_dir(user: bool) -> anyhow::Result<PathBuf> {
    if !user {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| anyhow!("neither $XDG_CONFIG_HOME nor $HOME is set"))?;
    Ok(config.join("systemd/user"))
}

fn systemctl(user: bool, rest: &[&str]) -> Argv {
    let mut c = argv(&["systemctl"]);
    if user {
        c.push("--user".into());
    }
    c.extend(rest.iter().map(|s| s.to_string()));
    c
}

fn check_name(name: &str, what: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!(
            "{what} {name:?} is not a backend name: use letters, digits, '-' and '_' (at most \
             64), as in the proxy's config"
        );
    }
    Ok(())
}

/// The header of every drop-in.
fn header(name: &str, user: bool) -> String {
    let flag = if user { "--user " } else { "" };
    format!(
        "# Written by `openai-proxy enable-backend {flag}{name}`; disable-backend removes it.\n"
    )
}

/// A duration as systemd reads it: whole seconds, or milliseconds.
fn systemd_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The plan of `enable-backend`. `resolve` finds a program name in `$PATH`.
// Why one piece: the steps of `enable-backend` in the order they run (checks, units, drop-ins,
// commands), as a reader of its `--dry-run` output sees them.
pub fn enable_plan(
    o: &Enable,
    dir: &Path,
    resolve: impl Fn(&str) -> Option<PathBuf>,
) -> anyhow::Result<Plan> {
    check_name(&o.name, "NAME")?;
    let server_port = match o.server_port {
        Some(p) => p,
        None => o.port.checked_add(10000).ok_or_else(|| {
            anyhow!(
                "--port {} leaves no room for the default --server-port (port + 10000): give \
                 --server-port",
                o.port
            )
        })?,
    };
    if o.port == 0 || server_port == 0 {
        bail!("ports must be between 1 and 65535");
    }
    if server_port == o.port {
        bail!("--server-port must differ from --port: systemd listens on one, the server on the other");
    }
    if o.idle < Duration::from_secs(1) {
        bail!("--idle must be at least 1s");
    }
    let exec = exec_start(&o.exec, resolve)?;
    let mut env = format!("PORT={server_port}");
    if let Some(p) = &o.ready_path {
        if !p.starts_with('/')
            || !p
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'\\%$".contains(&b))
        {
            bail!("--ready-path must be a path such as /health (no spaces, quotes, '%' or '$')");
        }
        let _ = write!(env, " READY_PATH={p}");
    }
    let mut conflicts = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for other in &o.conflicts {
        check_name(other, "--conflicts")?;
        if *other == o.name {
            bail!("--conflicts {other}: a backend cannot conflict with itself");
        }
        if seen.contains(&other.as_str()) {
            continue;
        }
        seen.push(other);
        // One ordering per pair, the same whichever of the two is written: the one stops
        // before the other starts (systemd orders a stop before a start for any ordering).
        let order = if o.name.as_str() < other.as_str() {
            "Before"
        } else {
            "After"
        };
        let unit = server_unit(other);
        let _ = write!(conflicts, "Conflicts={unit}\n{order}={unit}\n");
    }
    let head = header(&o.name, o.user);
    let socket = format!("{head}[Socket]\nListenStream=127.0.0.1:{}\n", o.port);
    let forwarder = format!(
        "{head}[Service]\nEnvironment=PORT={server_port} IDLE={}\n",
        systemd_duration(o.idle)
    );
    let unit_section = if conflicts.is_empty() {
        String::new()
    } else {
        format!("[Unit]\n{conflicts}")
    };
    let server = format!("{head}{unit_section}[Service]\nEnvironment={env}\nExecStart={exec}\n");
    let socket_unit = socket_unit(&o.name);
    Ok(Plan {
        before: Vec::new(),
        write: vec![
            (drop_in(dir, &socket_unit), socket),
            (drop_in(dir, &forwarder_unit(&o.name)), forwarder),
            (drop_in(dir, &server_unit(&o.name)), server),
        ],
        remove: Vec::new(),
        after: vec![
            systemctl(o.user, &["daemon-reload"]),
            systemctl(o.user, &["enable", &socket_unit]),
            // Takes a changed address at once; stops a running server of an earlier set-up.
            systemctl(o.user, &["restart", &socket_unit]),
        ],
    })
}

/// The plan of `disable-backend`.
pub fn disable_plan(o: &Disable, dir: &Path) -> anyhow::Result<Plan> {
    check_name(&o.name, "NAME")?;
    let socket = socket_unit(&o.name);
    Ok(Plan {
        before: vec![
            systemctl(o.user, &["disable", "--now", &socket]),
            systemctl(
                o.user,
                &["stop", &forwarder_unit(&o.name), &server_unit(&o.name)],
            ),
        ],
        write: Vec::new(),
        remove: [socket, forwarder_unit(&o.name), server_unit(&o.name)]
            .iter()
            .map(|u| drop_in(dir, u))
            .collect(),
        after: vec![systemctl(o.user, &["daemon-reload"])],
    })
}

fn drop_in(dir: &Path, unit: &str) -> PathBuf {
    dir.join(format!("{unit}.d")).join(DROP_IN)
}

/// The server's command as an `ExecStart=` value: the shell words of `exec`, the program
/// found in `$PATH` when it is a bare name, each word quoted for systemd where needed and its
/// `%` doubled (systemd would read a specifier). `$PORT` and `${PORT}` stay for systemd to
/// replace.
fn exec_start(exec: &str, resolve: impl Fn(&str) -> Option<PathBuf>) -> anyhow::Result<String> {
    if exec.chars().any(char::is_control) {
        bail!("--exec must be one line, without control characters");
    }
    let words = shlex::split(exec)
        .ok_or_else(|| anyhow!("--exec is not a valid command line (an unclosed quote?)"))?;
    let Some((program, args)) = words.split_first() else {
        bail!("--exec is empty: give the server's command, e.g. --exec \"llama-server -m MODEL.gguf --port \\$PORT\"");
    };
    let program = if program.contains('/') {
        let p = Path::new(program);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .context("cannot find the current directory")?
                .join(p)
        }
    } else {
        resolve(program).ok_or_else(|| {
            anyhow!("{program}: not found in $PATH; give the server's full path in --exec")
        })?
    };
    let program = program
        .to_str()
        .ok_or_else(|| anyhow!("the program's path is not UTF-8"))?
        .to_string();
    let mut line = String::new();
    for w in std::iter::once(&program).chain(args) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&systemd_word(w));
    }
    Ok(line)
}

/// One word of a systemd command line.
fn systemd_word(w: &str) -> String {
    let w = w.replace('%', "%%");
    let plain = !w.is_empty()
        && w != ";"
        && !w
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
    if plain {
        w
    } else {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Finds `program` in `$PATH`.
fn in_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Prints what `plan` would do.
fn show(plan: &Plan, out: &mut dyn Write) -> anyhow::Result<()> {
    let indented = |cmds: &[Argv]| {
        cmds.iter()
            .map(|c| format!("    {}\n", process::show(c)))
            .collect::<String>()
    };
    if !plan.before.is_empty() {
        write!(out, "Would run:\n{}", indented(&plan.before))?;
    }
    for (path, text) in &plan.write {
        writeln!(out, "Would write {}:", path.display())?;
        for line in text.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    for path in &plan.remove {
        writeln!(out, "Would remove {}", path.display())?;
    }
    write!(out, "Would run:\n{}", indented(&plan.after))?;
    Ok(())
}

/// Runs `enable-backend`.
pub fn enable(o: &Enable, out: &mut dyn Write) -> anyhow::Result<()> {
    let plan = enable_plan(o, &unit_dir(o.user)?, in_path)?;
    if o.dry_run {
        return show(&plan, out);
    }
    manage::detect(o.user)?;
    check_templates(o.user, o.verbose)?;
    let program = shlex::split(&o.exec).and_then(|w| w.into_iter().next());
    if let Some(p) = program.filter(|p| p.contains('/') && !Path::new(p).is_file()) {
        writeln!(
            out,
            "Note: {p} does not exist (yet); the server cannot start without it"
        )?;
    }
    for (path, text) in &plan.write {
        write_file(path, text)?;
        writeln!(out, "Wrote {}", path.display())?;
    }
    for c in &plan.after {
        process::execute(c, o.verbose)?;
    }
    let idle = format_duration(o.idle);
    writeln!(
        out,
        "Backend {name}: systemd listens on 127.0.0.1:{port}; the first connection starts the \
         server ({server}), and it stops after {idle} without a connection.\n\
         In the proxy's config (then `openai-proxy reload{flag}`):\n    [backends.{name}]\n    \
         url = \"http://127.0.0.1:{port}\"\n    {demand}",
        name = o.name,
        port = o.port,
        server = server_unit(&o.name),
        flag = if o.user { " --user" } else { "" },
        demand = if o.conflicts.is_empty() {
            "on_demand = true".to_string()
        } else {
            format!(
                "swap_group = \"gpu\"    # the same group in [backends.{}]",
                o.conflicts.join("], [backends.")
            )
        },
    )?;
    Ok(())
}

/// Runs `disable-backend`.
pub fn disable(o: &Disable, out: &mut dyn Write) -> anyhow::Result<()> {
    let plan = disable_plan(o, &unit_dir(o.user)?)?;
    if o.dry_run {
        return show(&plan, out);
    }
    manage::detect(o.user)?;
    for c in &plan.before {
        process::execute(c, o.verbose)?;
    }
    let mut removed = 0;
    for path in &plan.remove {
        match std::fs::remove_file(path) {
            Ok(()) => {
                removed += 1;
                writeln!(out, "Removed {}", path.display())?;
                // The directory too, unless something else is in it (a `systemctl edit`).
                if let Some(d) = path.parent() {
                    let _ = std::fs::remove_dir(d);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    if removed == 0 {
        writeln!(out, "No drop-in of backend {} was there", o.name)?;
    }
    for c in &plan.after {
        process::execute(c, o.verbose)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let hint = |e: &std::io::Error| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (run it as root, or with --user for your own user manager)"
        } else {
            ""
        }
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| anyhow!("cannot create {}: {e}{}", d.display(), hint(&e)))?;
    }
    std::fs::write(path, text)
        .map_err(|e| anyhow!("cannot write {}: {e}{}", path.display(), hint(&e)))
}

/// Fails, saying where they are, unless the service manager knows the templates.
fn check_templates(user: bool, verbose: bool) -> anyhow::Result<()> {
    let mut c = systemctl(user, &["list-unit-files", "--no-legend", "--full", "--"]);
    c.extend(TEMPLATES.iter().map(|t| t.to_string()));
    let out = process::capture(&c, verbose)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = TEMPLATES
        .iter()
        .copied()
        .filter(|t| {
            !text
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*t))
        })
        .collect();
    if !missing.is_empty() {
        let (from, to) = if user {
            ("contrib/systemd/on-demand/user", "~/.config/systemd/user/")
        } else {
            ("contrib/systemd/on-demand", "/etc/systemd/system/")
        };
        bail!(
            "the service manager does not know {}: the packages install them; from the source \
             tree, copy {from}/* to {to}",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(exec: &str) -> Enable {
        Enable {
            name: "chat".into(),
            exec: exec.into(),
            port: 8081,
            server_port: None,
            idle: Duration::from_secs(600),
            conflicts: Vec::new(),
            ready_path: None,
            user: true,
            dry_run: true,
            verbose: false,
        }
    }

    fn found(p: &str) -> Option<PathBuf> {
        Some(PathBuf::from("/usr/bin").join(p))
    }

    #[test]
    fn exec_lines() {
        let line = |e: &str| exec_start(e, found).unwrap();
        assert_eq!(
            line("llama-server -m '/models/my model.gguf' --port $PORT"),
            "/usr/bin/llama-server -m \"/models/my model.gguf\" --port $PORT"
        );
        assert_eq!(
            line("/opt/x --ctx=100% --a=\"b\""),
            "/opt/x --ctx=100%% --a=b"
        );
        assert_eq!(
            line("x 'say \"hi\"' ''"),
            "/usr/bin/x \"say \\\"hi\\\"\" \"\""
        );
        assert!(exec_start("x 'open", found).is_err());
        assert!(exec_start("", found).is_err());
        assert!(exec_start("x\ny", found).is_err());
        let e = exec_start("nowhere-server", |_| None).unwrap_err();
        assert!(e.to_string().contains("not found in $PATH"), "{e}");
    }

    #[test]
    fn enable_writes_three_drop_ins() {
        let mut o = opts("llama-server --port $PORT");
        o.conflicts = vec!["coder".into(), "audio".into(), "coder".into()];
        let plan = enable_plan(&o, Path::new("/u"), found).unwrap();
        let files: Vec<String> = plan
            .write
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/u/openai-proxy-backend@chat.socket.d/openai-proxy.conf",
                "/u/openai-proxy-backend@chat.service.d/openai-proxy.conf",
                "/u/openai-proxy-server@chat.service.d/openai-proxy.conf",
            ]
        );
        assert!(plan.write[1]
            .1
            .ends_with("Environment=PORT=18081 IDLE=600s\n"));
        let server = &plan.write[2].1;
        assert!(
            server.contains(
                "[Unit]\nConflicts=openai-proxy-server@coder.service\n\
                 Before=openai-proxy-server@coder.service\n\
                 Conflicts=openai-proxy-server@audio.service\n\
                 After=openai-proxy-server@audio.service\n[Service]\n"
            ),
            "{server}"
        );
        let cmds: Vec<String> = plan.after.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable openai-proxy-backend@chat.socket",
                "systemctl --user restart openai-proxy-backend@chat.socket",
            ]
        );
    }

    #[test]
    fn enable_refuses_what_cannot_work() {
        let bad = |f: &dyn Fn(&mut Enable)| {
            let mut o = opts("x");
            f(&mut o);
            enable_plan(&o, Path::new("/u"), found)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(&|o| o.name = "a b".into()).contains("not a backend name"));
        assert!(bad(&|o| o.conflicts = vec!["chat".into()]).contains("itself"));
        assert!(bad(&|o| o.port = 60000).contains("--server-port"));
        assert!(bad(&|o| o.server_port = Some(8081)).contains("differ"));
        assert!(bad(&|o| o.idle = Duration::from_millis(500)).contains("at least 1s"));
        assert!(bad(&|o| o.ready_path = Some("health".into())).contains("--ready-path"));
    }

    #[test]
    fn durations_for_systemd() {
        assert_eq!(systemd_duration(Duration::from_secs(600)), "600s");
        assert_eq!(systemd_duration(Duration::from_millis(1500)), "1500ms");
    }
}
