//! The man pages and shell completions: the committed files are what the clap definitions
//! generate (`OPENAI_PROXY_BLESS=1 cargo test man_completions` rewrites them after a
//! deliberate change), they render without a warning, the shells accept the completions, and
//! `openai-proxy.toml(5)`, the example config and the code agree on every config key and its
//! default (the key-by-key reference lives only in those two files), and the user docs (the
//! README and docs/*.md) show every command.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use openai_proxy::cli::Cli;
use openai_proxy::commands::generate;
use openai_proxy::Config;

use crate::support::bin;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bless() -> bool {
    std::env::var_os("OPENAI_PROXY_BLESS").is_some()
}

/// Compares a committed generated file with what the code generates now.
fn check_current(rel: &str, expected: &[u8]) {
    let path = format!("{ROOT}/{rel}");
    if bless() {
        std::fs::write(&path, expected).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{rel} is stale: the clap definitions changed. Run \
         OPENAI_PROXY_BLESS=1 cargo test man_completions and commit the result"
    );
}

#[test]
fn man_page_is_current() {
    check_current("man/openai-proxy.1", &generate::man_page(Cli::command()));
}

#[test]
fn generate_man_prints_the_committed_man_page() {
    let out = bin::run(&["generate", "man"]);
    assert!(out.status.success(), "{out:?}");
    let committed = std::fs::read(format!("{ROOT}/man/openai-proxy.1")).unwrap();
    assert!(
        out.stdout == committed,
        "`openai-proxy generate man` differs from man/openai-proxy.1"
    );
    let out = bin::run(&["generate", "manual"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("possible values: man"), "{stderr}");
}

#[test]
fn completions_are_current() {
    for (shell, file) in generate::COMPLETION_FILES {
        check_current(
            &format!("contrib/completions/{file}"),
            &generate::completion(shell, Cli::command()),
        );
    }
}

#[test]
fn completions_subcommand_prints_each_script() {
    for (shell, _) in generate::COMPLETION_FILES {
        let out = bin::run(&["completions", &shell.to_string()]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            out.stdout == generate::completion(shell, Cli::command()),
            "completions {shell} differs from the committed script"
        );
    }
    let out = bin::run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("possible values: bash"), "{stderr}");
}

/// `man --warnings -l FILE` at 80 columns: the rendered text; fails on any warning.
fn render(file: &str) -> String {
    crate::support::tools::require("man", "man-db");
    let out = Command::new("man")
        .args(["--warnings", "-l", file])
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man --warnings -l {file}:\n{stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for (i, line) in text.lines().enumerate() {
        assert!(
            line.chars().count() <= 80,
            "{file}: rendered line {} is wider than 80 columns:\n{line}",
            i + 1
        );
    }
    text
}

#[test]
fn man_pages_render_without_warnings() {
    let one = render(&format!("{ROOT}/man/openai-proxy.1"));
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            one.lines().any(|l| l == section),
            "openai-proxy(1) lacks the {section} section"
        );
    }
    let five = render(&format!("{ROOT}/man/openai-proxy.toml.5"));
    for section in ["NAME", "DESCRIPTION", "FILES", "EXAMPLES", "SEE ALSO"] {
        assert!(
            five.lines().any(|l| l == section),
            "openai-proxy.toml(5) lacks the {section} section"
        );
    }
}

/// Every runnable command: `serve`, ..., `container start`, ...
fn command_paths() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix}{}", sub.get_name());
            if sub.has_subcommands() {
                walk(&format!("{path} "), sub, out);
            } else {
                out.push((path, sub.clone()));
            }
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk("", &cmd, &mut out);
    out
}

/// The user docs: README.md and the guides in docs/, one text.
fn user_docs() -> String {
    let mut text = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let mut guides: Vec<_> = std::fs::read_dir(format!("{ROOT}/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    guides.sort();
    for guide in guides {
        text.push_str(&std::fs::read_to_string(guide).unwrap());
    }
    text
}

#[test]
fn man_page_and_user_docs_cover_every_command_and_option() {
    let man = render(&format!("{ROOT}/man/openai-proxy.1"));
    let docs = user_docs();
    let paths = command_paths();
    assert!(paths.len() >= 17, "{:?}", paths.iter().map(|p| &p.0));
    for (path, cmd) in &paths {
        let heading = format!("   openai-proxy {path}");
        assert!(
            man.lines().any(|l| l == heading),
            "no subsection for `{path}` in openai-proxy(1)"
        );
        assert!(
            docs.contains(&format!("openai-proxy {path}"))
                || docs.contains(&format!("openai-proxy [--config PATH] {path}")),
            "neither README.md nor docs/*.md shows `openai-proxy {path}`"
        );
        // What `--help` says about it (its first paragraph) is what the man page says.
        let about = cmd
            .get_long_about()
            .or_else(|| cmd.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let about = about.split("\n\n").next().unwrap_or_default();
        let flat = man.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&about.split_whitespace().collect::<Vec<_>>().join(" ")),
            "openai-proxy(1) lacks the description of `{path}`: {about}"
        );
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long != "help" && long != "version" {
                    assert!(
                        man.contains(&format!("--{long}")),
                        "openai-proxy(1) lacks --{long} of `{path}`"
                    );
                }
            }
        }
    }
}

#[test]
fn completion_scripts_are_accepted_by_their_shells() {
    crate::support::tools::require("bash", "bash");
    let bash = format!("{ROOT}/contrib/completions/openai-proxy.bash");
    let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(out.status.success(), "bash -n: {out:?}");
    // Complete with the real script, as bash calls it for <TAB> after `line`.
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let cword = words.len() - 1;
        let script = format!(
            "source '{bash}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\n\
             COMP_POINT=${{#COMP_LINE}}\n\
             fn=$(complete -p openai-proxy | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n\
             \"$fn\" openai-proxy '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words.join(" "),
            words[cword],
            words[cword - 1]
        );
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(out.stderr.is_empty(), "bash completion: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("openai-proxy cont"), "container");
    assert_eq!(complete("openai-proxy container en"), "enable");
    assert_eq!(complete("openai-proxy container start --im"), "--image");
    assert_eq!(
        complete("openai-proxy check-endpoints --chat"),
        "--chat-model"
    );
    assert_eq!(complete("openai-proxy completions z"), "zsh");

    crate::support::tools::require("zsh", "zsh");
    let out = Command::new("zsh")
        .arg("-n")
        .arg(format!("{ROOT}/contrib/completions/_openai-proxy"))
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh -n: {out:?}");

    crate::support::tools::require("fish", "fish");
    let fish = format!("{ROOT}/contrib/completions/openai-proxy.fish");
    let out = Command::new("fish").arg("-n").arg(&fish).output().unwrap();
    assert!(out.status.success(), "fish -n: {out:?}");
    let fish_complete = |line: &str| -> Vec<String> {
        let out = Command::new("fish")
            .arg("-c")
            .arg(format!("source '{fish}'; complete -C '{line}'"))
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        fish_complete("openai-proxy container st"),
        ["start", "status", "stop"]
    );
    assert_eq!(
        fish_complete("openai-proxy container start --im"),
        ["--image"]
    );
}

// ---------------------------------------------------------------------------------------------
// Config keys: openai-proxy.toml(5) ⇔ config/openai-proxy.toml ⇔ the code.

/// A config with one backend and one route, to which one key at a time is added.
fn base(server: &str, log: &str, backend: &str, route: &str) -> String {
    with_metrics(server, log, "", backend, route)
}

/// [`base`] with `[metrics]` too.
fn with_metrics(server: &str, log: &str, metrics: &str, backend: &str, route: &str) -> String {
    format!(
        "[server]\n{server}\n[log]\n{log}\n[metrics]\n{metrics}\n[backends.b]\n\
         url = \"http://127.0.0.1:9\"\n{backend}\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\n\
         {route}\n"
    )
}

/// A token hash for the client of [`with_key`] (any 64 hex digits).
const TOKEN_HASH: &str =
    "token_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"";

/// [`base`] with `line` in the section of `key` (`server`, `log`, ..., `clients`, or a key
/// such as `backends.NAME.url`). A client's table needs a token: a `token_hash`, unless `line`
/// sets its own.
fn with_key(key: &str, line: &str) -> String {
    let section = key.split('.').next().unwrap_or_default();
    match section {
        "server" => base(line, "", "", ""),
        "log" => base("", line, "", ""),
        "metrics" => with_metrics("", "", line, "", ""),
        "usage" => format!("{}[usage]\n{line}\n", base("", "", "", "")),
        "backends" => base("", "", line, ""),
        "clients" => {
            let token = if line.split('=').next().unwrap_or_default().trim() == "token_hash" {
                ""
            } else {
                TOKEN_HASH
            };
            format!("{}[clients.c]\n{token}\n{line}\n", base("", "", "", ""))
        }
        _ => base("", "", "", line),
    }
}

/// What a key needs beside it to be accepted at all: `queue_timeout` applies only with
/// `max_concurrent` (and is an error without it).
fn companion(key: &str) -> &'static str {
    match key {
        "backends.NAME.queue_timeout" => "max_concurrent = 4",
        _ => "",
    }
}

/// The keys serde accepts in each section, read from its "unknown field" message.
fn keys_in_code() -> Vec<String> {
    let mut keys = Vec::new();
    for (section, prefix) in [
        ("server", "server."),
        ("log", "log."),
        ("metrics", "metrics."),
        ("usage", "usage."),
        ("backends", "backends.NAME."),
        ("route", "route."),
        ("clients", "clients.NAME."),
    ] {
        let text = with_key(section, "no_such_key = 1");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        // serde says "expected one of `a`, `b`", or "expected `a`" for a lone key.
        let list = err
            .split("expected one of ")
            .nth(1)
            .or_else(|| err.split("expected ").nth(1))
            .unwrap_or_else(|| panic!("no key list in: {err}"));
        for k in list.split(", ") {
            keys.push(format!("{prefix}{}", k.trim().trim_matches('`')));
        }
    }
    keys
}

/// "key → default" from openai-proxy.toml(5): entries `NAME = TYPE (default: VALUE)` under
/// subsections `[server]`, `[log]`, `[metrics]`, `[usage]`, `[backends.NAME]`, `[[route]]`,
/// `[clients.NAME]`.
fn keys_in_man() -> BTreeMap<String, String> {
    let text = render(&format!("{ROOT}/man/openai-proxy.toml.5"));
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("   [") {
            section = match h.trim_end_matches(']') {
                "[route" => "route".to_string(),
                other => other.to_string(),
            };
            continue;
        }
        let Some(entry) = line.strip_prefix("       ") else {
            continue;
        };
        if entry.starts_with(' ') {
            continue;
        }
        if let (Some((name, rest)), Some(default)) = (
            entry.split_once(" = "),
            entry
                .rsplit_once("(default: ")
                .map(|(_, d)| d.trim_end_matches(')')),
        ) {
            if !name.contains(' ') && !rest.is_empty() {
                keys.insert(format!("{section}.{name}"), default.to_string());
            }
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented_alike_with_its_real_default() {
    let code = keys_in_code();
    let man = keys_in_man();
    let mut code_sorted = code.clone();
    code_sorted.sort();
    let man_keys: Vec<&String> = man.keys().collect();
    assert_eq!(
        man_keys,
        code_sorted.iter().collect::<Vec<_>>(),
        "openai-proxy.toml(5) and the code disagree on the keys"
    );
    let example = std::fs::read_to_string(format!("{ROOT}/config/openai-proxy.toml")).unwrap();
    // The example's commented `[clients.NAME]` table: its lines up to the first that is no
    // comment.
    let client_example: Vec<&str> = example
        .lines()
        .skip_while(|l| !l.starts_with("# [clients."))
        .take_while(|l| l.starts_with('#'))
        .collect();
    assert!(
        !client_example.is_empty(),
        "config/openai-proxy.toml has no commented [clients.NAME] example"
    );
    for key in &code {
        let default = &man[key];
        let name = key.rsplit('.').next().unwrap();
        assert!(
            example.contains(&format!("{name} =")),
            "config/openai-proxy.toml does not show {key}"
        );
        if key.starts_with("clients.") {
            // A client's keys have no default: without one, that scope or limit is not set.
            assert_eq!(
                default, "none",
                "{key}: a client's key is documented with a default"
            );
            assert!(
                client_example
                    .iter()
                    .any(|l| l.starts_with(&format!("# {name} = "))),
                "config/openai-proxy.toml's [clients.NAME] example does not show {key}"
            );
        }
        match default.as_str() {
            // Required: leaving it out is an error that names it.
            "required" => {
                let text: String = base("", "", "", "")
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{name} = ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let err = match Config::from_toml(&text) {
                    Ok(_) => {
                        panic!("{key} is documented as required, but a config without it is valid")
                    }
                    Err(e) => e.to_string(),
                };
                assert!(
                    err.contains(name),
                    "{key}: the error does not name it: {err}"
                );
            }
            // No default: the key is optional.
            "none" => {}
            // Setting the documented default changes nothing.
            value => {
                let line = format!("{name} = {value}");
                let with = companion(key);
                let reference = Config::from_toml(&with_key(key, with))
                    .unwrap_or_else(|e| panic!("{key}: {with:?} is refused: {e}"));
                let set = Config::from_toml(&with_key(key, &format!("{with}\n{line}")))
                    .unwrap_or_else(|e| panic!("{key}: {line} is refused: {e}"));
                let shown = |c: &Config| {
                    format!(
                        "{:?}",
                        (
                            &c.server,
                            &c.log,
                            &c.metrics,
                            &c.backends,
                            &c.routes,
                            &c.clients
                        )
                    )
                };
                assert_eq!(
                    shown(&set),
                    shown(&reference),
                    "{key}: the documented default {value} is not the real default"
                );
                // In [server] and [log] the example config sets each key to its default.
                if key.starts_with("server.") || key.starts_with("log.") {
                    assert!(
                        example.lines().any(|l| l == line),
                        "config/openai-proxy.toml should say `{line}` ({key})"
                    );
                }
            }
        }
    }
}

#[test]
fn generated_files_are_in_the_packages() {
    // The packaging metadata lists the generated files under these names.
    let cargo = std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).unwrap();
    for (_, file) in generate::COMPLETION_FILES {
        assert!(
            cargo.contains(&format!("contrib/completions/{file}")),
            "Cargo.toml's package metadata lacks contrib/completions/{file}"
        );
        assert!(Path::new(&format!("{ROOT}/contrib/completions/{file}")).is_file());
    }
    for page in ["man/openai-proxy.1", "man/openai-proxy.toml.5"] {
        assert!(
            cargo.contains(page),
            "Cargo.toml's package metadata lacks {page}"
        );
    }
}
