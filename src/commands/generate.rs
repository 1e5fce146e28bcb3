//! The man page `openai-proxy(1)` and the shell completions, generated from the clap
//! definitions of the command line (`Cli::command()`, passed in; clap_mangen, clap_complete),
//! so they say what `--help` says.
//! `openai-proxy generate man` and `openai-proxy completions SHELL` print them.
//! The generated files are committed (`man/`, `contrib/completions/`); a test fails when they
//! are stale, and `OPENAI_PROXY_BLESS=1 cargo test man_completions` rewrites them.

use clap::{Arg, ArgAction};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};

/// The binary's name, as completions and the man page use it.
pub const BIN: &str = "openai-proxy";

/// The shells whose completions are committed, with the file name each is committed as.
pub const COMPLETION_FILES: [(Shell, &str); 3] = [
    (Shell::Bash, "openai-proxy.bash"),
    (Shell::Zsh, "_openai-proxy"),
    (Shell::Fish, "openai-proxy.fish"),
];

/// A shell completion script for the command line `cli`.
pub fn completion(shell: Shell, mut cli: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cli, BIN, &mut out);
    if shell == Shell::Bash {
        // clap_complete's bash script spells the state of a hyphenated binary name two ways
        // ("openai__proxy__subcmd__container" in its loop, "openai__subcmd__proxy__subcmd__
        // container" in its case labels), so nothing after the first word would complete
        // (clap-rs/clap#6421). Use the loop's spelling everywhere.
        let text = String::from_utf8_lossy(&out)
            .replace(&BIN.replace('-', "__subcmd__"), &BIN.replace('-', "__"));
        out = text.into_bytes();
    }
    out
}

/// One man-page entry: a term and what it means.
type Entry = (&'static str, &'static str);

const EXIT_STATUS: &[Entry] = &[
    ("0", "Success."),
    (
        "1",
        "A runtime failure: an address cannot be bound, a service-manager or podman command \
         failed, check-endpoints found a failing check or could not reach the proxy.",
    ),
    (
        "2",
        "A usage error: unknown option, missing or invalid argument.",
    ),
    (
        "3",
        "status and container status: the proxy is not serving (its /health does not answer \
         200).",
    ),
    (
        "78",
        "A configuration error (EX_CONFIG): the config file is missing, unreadable or \
         invalid, or a key file, key variable, credential or CA file it names is not there. \
         Every problem is printed as FILE:LINE:COL: KEY: MESSAGE. The systemd units do not \
         restart the service after this status.",
    ),
];

const ENVIRONMENT: &[Entry] = &[
    (
        "OPENAI_PROXY_CONFIG",
        "The config file to use when --config is not given.",
    ),
    (
        "XDG_CONFIG_HOME, HOME",
        "Where the per-user config is looked for: $XDG_CONFIG_HOME/openai-proxy/config.toml, \
         or ~/.config/openai-proxy/config.toml (not when running as root). With container \
         enable --user: where the quadlet goes.",
    ),
    (
        "OPENAI_BASE_URL",
        "check-endpoints: where the proxy is, when --url is not given (a trailing /v1 is \
         removed).",
    ),
    (
        "OPENAI_API_KEY",
        "check-endpoints: sent as \"Authorization: Bearer KEY\", never printed. For serve it \
         means nothing unless a backend names it with api_key_env.",
    ),
    (
        "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES",
        "Sockets passed by systemd socket activation; when present they are used instead of \
         server.listen.",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "systemd readiness and watchdog notification (Type=notify, WatchdogSec=).",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Where systemd puts credentials (LoadCredential=); api_key_credential reads from it.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr is the journal; log.target = \"auto\" then logs to journald.",
    ),
    (
        "XDG_RUNTIME_DIR",
        "Used with --user to reach the per-user systemd instance.",
    ),
];

const FILES: &[Entry] = &[
    (
        "/etc/openai-proxy/config.toml",
        "The system-wide configuration; see openai-proxy.toml(5).",
    ),
    (
        "~/.config/openai-proxy/config.toml",
        "A user's configuration ($XDG_CONFIG_HOME/openai-proxy/config.toml), used before the \
         system-wide one when not running as root.",
    ),
    (
        "/usr/lib/systemd/system/openai-proxy.socket, /usr/lib/systemd/system/openai-proxy.service",
        "The system units: the socket listens on 127.0.0.1:2020 and starts the service on the \
         first connection.",
    ),
    (
        "/usr/lib/systemd/user/openai-proxy.socket, /usr/lib/systemd/user/openai-proxy.service",
        "The same for a user's own systemd (systemctl --user).",
    ),
    (
        "/etc/containers/systemd/openai-proxy.container, ~/.config/containers/systemd/openai-proxy.container",
        "The Podman quadlet that container enable installs.",
    ),
    (
        "/Library/LaunchDaemons/org.openai-proxy.plist, ~/Library/LaunchAgents/org.openai-proxy.plist",
        "The launchd jobs on macOS (Homebrew uses its own: brew services).",
    ),
];

const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "Serve in the foreground with the built-in default config:",
        &["openai-proxy"],
    ),
    (
        "Serve with a config file on another address:",
        &["openai-proxy -c ./proxy.toml serve --listen 127.0.0.1:8080"],
    ),
    (
        "Point OpenAI tools at the proxy:",
        &[
            "export OPENAI_BASE_URL=http://127.0.0.1:2020/v1",
            "curl -s $OPENAI_BASE_URL/chat/completions \\",
            "  -H 'Content-Type: application/json' -d '{\"model\":\"llama3\",",
            "  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'",
        ],
    ),
    (
        "Check the config, then every route of the running proxy:",
        &[
            "openai-proxy check-config -v",
            "openai-proxy check-endpoints --chat-model llama3.2",
        ],
    ),
    (
        "Give a tool a token of its own, for the local models only, then apply it:",
        &[
            "TOKEN=$(sudo openai-proxy client add aider \\",
            "  --models 'llama*' --no-server-key)",
            "sudo openai-proxy reload",
        ],
    ),
    (
        "Run it as a socket-activated service, then apply a changed config:",
        &[
            "sudo openai-proxy enable",
            "sudo openai-proxy reload",
            "openai-proxy status",
        ],
    ),
    (
        "The same for your own user only (a config in ~/.config/openai-proxy/):",
        &["openai-proxy enable --user"],
    ),
    (
        "Run it in a Podman container, now and at every login:",
        &[
            "podman build --format docker -t openai-proxy \\",
            "  -f contrib/container/Containerfile .",
            "openai-proxy container enable --user",
            "openai-proxy container logs --follow",
        ],
    ),
    (
        "Install the bash completions for yourself:",
        &[
            "openai-proxy completions bash \\",
            "  > ~/.local/share/bash-completion/completions/openai-proxy",
        ],
    ),
];

const SEE_ALSO: &str = "openai-proxy.toml(5), systemctl(1), systemd.socket(5), \
                        systemd.service(5), podman(1), podman-systemd.unit(5), launchctl(1)";

/// Appends text with paragraphs (blank lines), filled prose lines, and indented blocks: an
/// indented line whose first word is followed by two or more spaces starts a definition
/// (term, then its description, continued by lines indented further); other indented lines
/// are shown as they are.
fn paragraphs(roff: &mut Roff, text: &str) {
    let definition = |line: &str| -> Option<(String, String)> {
        let trimmed = line.trim_start();
        if trimmed.len() == line.len() {
            return None;
        }
        trimmed
            .split_once("  ")
            .filter(|(term, _)| !term.contains(' '))
            .map(|(term, rest)| (term.to_string(), rest.trim().to_string()))
    };
    // The terms' column: as wide as the widest term, plus two.
    let width = text
        .lines()
        .filter_map(|l| definition(l).map(|(term, _)| term.chars().count() + 2))
        .max()
        .unwrap_or(0)
        .to_string();
    let mut literal = false;
    let mut in_definitions = false;
    let end_literal = |roff: &mut Roff, literal: &mut bool| {
        if *literal {
            roff.control("fi", []);
            roff.control("RE", []);
            *literal = false;
        }
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            end_literal(roff, &mut literal);
            if in_definitions {
                roff.control("RE", []);
                in_definitions = false;
            }
            roff.control("PP", []);
            continue;
        }
        if indent == 0 {
            end_literal(roff, &mut literal);
            roff.text([roman(trimmed)]);
            continue;
        }
        match definition(line) {
            Some((term, rest)) => {
                end_literal(roff, &mut literal);
                if !in_definitions {
                    roff.control("RS", ["4"]);
                    in_definitions = true;
                }
                roff.control("TP", [width.as_str()]);
                roff.text([bold(term)]);
                roff.text([roman(rest)]);
            }
            None if in_definitions && !literal => {
                // A continuation of the definition above.
                roff.text([roman(trimmed)]);
            }
            None => {
                if !literal {
                    roff.control("RS", ["4"]);
                    roff.control("nf", []);
                    literal = true;
                }
                roff.text([roman(trimmed)]);
            }
        }
    }
    end_literal(roff, &mut literal);
    if in_definitions {
        roff.control("RE", []);
    }
}

fn visible_args(cmd: &clap::Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .filter(|a| !a.is_global_set())
        .collect()
}

fn takes_value(a: &Arg) -> bool {
    a.get_num_args().is_some_and(|n| n.takes_values())
}

fn value_name(a: &Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
}

fn repeatable(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append | ArgAction::Count)
}

/// `[-l ADDR]...` for the synopsis.
fn synopsis_arg(a: &Arg) -> Vec<Inline> {
    let mut out = Vec::new();
    let required = a.is_required_set();
    if !required {
        out.push(roman("["));
    }
    if a.is_positional() {
        out.push(italic(value_name(a)));
    } else {
        let flag = match (a.get_short(), a.get_long()) {
            (Some(s), _) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => String::new(),
        };
        out.push(bold(flag));
        if takes_value(a) {
            out.push(roman(" "));
            out.push(italic(value_name(a)));
        }
    }
    if !required {
        out.push(roman("]"));
    }
    if repeatable(a) || a.get_num_args().is_some_and(|n| n.max_values() > 1) {
        out.push(roman("..."));
    }
    out
}

fn synopsis_line(roff: &mut Roff, path: &str, cmd: &clap::Command) {
    let mut line = vec![
        bold(BIN),
        roman(" ["),
        bold("-c"),
        roman(" "),
        italic("PATH"),
    ];
    line.push(roman("]"));
    for word in path.split(' ').filter(|w| !w.is_empty()) {
        line.push(roman(" "));
        line.push(bold(word));
    }
    for a in visible_args(cmd) {
        line.push(roman(" "));
        line.extend(synopsis_arg(a));
    }
    roff.text(line);
    roff.control("br", []);
}

/// Every runnable command line: `(path, command)`, depth first, without `help`.
fn commands(cmd: &clap::Command) -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            if sub.has_subcommands() {
                walk(&format!("{path} "), sub, out);
            } else {
                out.push((path, sub.clone()));
            }
        }
    }
    let mut out = Vec::new();
    walk("", cmd, &mut out);
    out
}

fn option_entry(roff: &mut Roff, a: &Arg) {
    let mut header = Vec::new();
    if a.is_positional() {
        header.push(italic(value_name(a)));
    } else {
        if let Some(s) = a.get_short() {
            header.push(bold(format!("-{s}")));
            if a.get_long().is_some() {
                header.push(roman(", "));
            }
        }
        if let Some(l) = a.get_long() {
            header.push(bold(format!("--{l}")));
        }
        if takes_value(a) {
            header.push(roman(" "));
            header.push(italic(value_name(a)));
        }
    }
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && !a.is_hide_default_value_set() && takes_value(a) {
        header.push(roman(format!(" [default: {}]", defaults.join(","))));
    }
    roff.control("TP", []);
    roff.text(header);
    let help = a
        .get_long_help()
        .or_else(|| a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut first = true;
    for para in help.split("\n\n") {
        if !first {
            roff.control("IP", []);
        }
        first = false;
        roff.text([roman(para.split_whitespace().collect::<Vec<_>>().join(" "))]);
    }
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() {
        roff.control("IP", []);
        roff.text([roman(format!("Possible values: {}.", values.join(", ")))]);
    }
}

fn entries(roff: &mut Roff, title: &str, items: &[Entry]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        let terms: Vec<&str> = term.split(", ").collect();
        let mut header = Vec::new();
        for (i, t) in terms.iter().enumerate() {
            if i > 0 {
                // One term per line: long paths would not fit next to each other.
                roff.text(header.clone());
                roff.control("TQ", []);
                header.clear();
            }
            header.push(bold(*t));
        }
        roff.text(header);
        roff.text([roman(*text)]);
    }
}

/// The man page `openai-proxy(1)` of the command line `cli`.
// Why one piece: the man page's sections in the order they appear, each a few roff calls.
pub fn man_page(mut cmd: clap::Command) -> Vec<u8> {
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("OPENAI-PROXY")
        .section("1")
        .manual("User Commands");
    let mut out = Vec::new();
    // Title, NAME and DESCRIPTION come from clap_mangen; each render_* call starts with the
    // same two-line preamble (an apostrophe string), which is kept only once.
    let mut chunk = Vec::new();
    let _ = man.render_title(&mut chunk);
    let preamble_end = chunk
        .windows(4)
        .position(|w| w == b"\n.TH")
        .map_or(0, |p| p + 1);
    let preamble = chunk[..preamble_end].to_vec();
    out.extend_from_slice(&chunk);
    let strip = |bytes: Vec<u8>| -> Vec<u8> {
        if bytes.starts_with(&preamble) {
            bytes[preamble.len()..].to_vec()
        } else {
            bytes
        }
    };
    let mut name = Vec::new();
    let _ = man.render_name_section(&mut name);
    out.extend(strip(name));

    let mut roff = Roff::new();
    // No hyphenation, ragged right: option names and paths stay whole.
    roff.control("nh", []);
    roff.control("ad", ["l"]);
    roff.control("SH", ["SYNOPSIS"]);
    synopsis_line(&mut roff, "", &clap::Command::new(BIN));
    for (path, sub) in commands(&cmd) {
        synopsis_line(&mut roff, &path, &sub);
    }
    let mut synopsis = Vec::new();
    let _ = roff.to_writer(&mut synopsis);
    out.extend(strip(synopsis));

    let mut description = Vec::new();
    let _ = man.render_description_section(&mut description);
    out.extend(strip(description));

    let mut roff = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        roff.control("PP", []);
        paragraphs(&mut roff, &after.to_string());
    }
    roff.control("SH", ["OPTIONS"]);
    roff.text([roman(
        "These options are accepted before or after any command.",
    )]);
    for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        option_entry(&mut roff, a);
    }

    roff.control("SH", ["COMMANDS"]);
    for (path, sub) in commands(&cmd) {
        roff.control("SS", [format!("{BIN} {path}").as_str()]);
        let about = sub
            .get_long_about()
            .or_else(|| sub.get_about())
            .map(|s| s.to_string())
            .unwrap_or_default();
        paragraphs(&mut roff, &about);
        for a in visible_args(&sub) {
            option_entry(&mut roff, a);
        }
    }

    entries(&mut roff, "EXIT STATUS", EXIT_STATUS);
    entries(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    entries(&mut roff, "FILES", FILES);

    roff.control("SH", ["EXAMPLES"]);
    for (what, lines) in EXAMPLES {
        roff.control("PP", []);
        roff.text([roman(*what)]);
        roff.control("RS", ["4"]);
        roff.control("nf", []);
        for l in *lines {
            roff.text([roman(*l)]);
        }
        roff.control("fi", []);
        roff.control("RE", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    let mut rest = Vec::new();
    let _ = roff.to_writer(&mut rest);
    out.extend(strip(rest));
    out
}
