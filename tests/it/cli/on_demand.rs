//! Backends on demand: the units of `contrib/systemd/on-demand/` verify cleanly with the
//! drop-ins `enable-backend` writes; what it writes is what the examples show; `wait-ready`
//! waits as documented. (The whole recipe in a real systemd user manager is in the `machine`
//! binary's `on_demand_systemd`.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::activation::free_port;
use crate::support::bin;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const EXAMPLES: &str = "contrib/systemd/on-demand/examples";

/// The `enable-backend` command lines of the examples' README, as words.
fn example_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(format!("{ROOT}/{EXAMPLES}/README.md")).unwrap();
    let commands: Vec<Vec<String>> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("    openai-proxy enable-backend "))
        .map(|l| shlex::split(l).expect("shell words"))
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    commands
}

/// Runs `enable-backend WORDS --dry-run` for a user whose home is /home/me, and returns the
/// files it would write (path under ~/.config/systemd/user/ → content) and its output.
pub fn dry_run(words: &[String]) -> (BTreeMap<String, String>, String) {
    let out = bin::command()
        .env("HOME", "/home/me")
        .env_remove("XDG_CONFIG_HOME")
        .arg("enable-backend")
        .args(words)
        .arg("--dry-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "enable-backend {words:?} --dry-run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        if let Some(path) = line
            .strip_prefix("Would write /home/me/.config/systemd/user/")
            .and_then(|p| p.strip_suffix(':'))
        {
            files.insert(path.to_string(), String::new());
            current = Some(path.to_string());
        } else if let (Some(text), Some(path)) = (line.strip_prefix("    "), &current) {
            let f = files.get_mut(path).unwrap();
            f.push_str(text);
            f.push('\n');
        } else {
            current = None;
        }
    }
    (files, stdout)
}

/// Every file under `dir`, by its path below it.
fn files_under(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn the_examples_are_what_enable_backend_writes() {
    let mut expected = BTreeMap::new();
    for words in example_commands() {
        let (files, stdout) = dry_run(&words);
        assert_eq!(files.len(), 3, "{stdout}");
        assert!(
            stdout.contains("Would run:\n    systemctl --user daemon-reload\n"),
            "{stdout}"
        );
        for (path, text) in files {
            let name = path.split('@').nth(1).unwrap().split('.').next().unwrap();
            expected.insert(format!("{name}/{path}"), text);
        }
    }
    let mut actual = files_under(Path::new(&format!("{ROOT}/{EXAMPLES}")));
    actual.remove("README.md");
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the example files and the commands of {EXAMPLES}/README.md differ"
    );
    for (path, text) in &expected {
        assert_eq!(&actual[path], text, "{EXAMPLES}/{path}");
    }
}

/// The templates of `sub` (with the built binary for /usr/bin/openai-proxy) and the drop-ins of
/// every example (each server's program replaced by an existing one: verify checks it exists)
/// in one directory.
fn units_with_examples(sub: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("model-server");
    std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(format!("{ROOT}/contrib/systemd/on-demand/{sub}")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.file_name().unwrap().to_string_lossy().contains('@') {
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("/usr/bin/openai-proxy", bin::exe());
            std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
        }
    }
    let mut instances = Vec::new();
    for (path, text) in files_under(Path::new(&format!("{ROOT}/{EXAMPLES}"))) {
        let Some((_, unit_path)) = path.split_once('/') else {
            continue;
        };
        let text = text
            .lines()
            .map(|l| match l.strip_prefix("ExecStart=") {
                Some(cmd) => {
                    let rest = cmd.split_once(' ').map_or("", |(_, r)| r);
                    format!("ExecStart={} {rest}\n", fake.display())
                }
                None => format!("{l}\n"),
            })
            .collect::<String>();
        let target = dir.path().join(unit_path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, text).unwrap();
        instances.push(unit_path.split_once(".d/").unwrap().0.to_string());
    }
    instances.sort();
    (dir, instances)
}

fn verify(dir: &Path, units: &[String], user: bool) {
    crate::support::tools::require("systemd-analyze", "systemd");
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out = cmd
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {units:?}:\n{stderr}"
    );
}

#[test]
fn every_unit_and_example_instance_verifies_cleanly() {
    for (sub, user) in [("", false), ("user", true)] {
        let (dir, instances) = units_with_examples(sub);
        assert_eq!(instances.len(), 15, "{instances:?}");
        verify(dir.path(), &instances, user);
    }
}

#[test]
fn the_system_units_are_sandboxed() {
    crate::support::tools::require("systemd-analyze", "systemd");
    let (dir, _) = units_with_examples("");
    for (unit, threshold) in [
        ("openai-proxy-backend@chat.service", "15"),
        ("openai-proxy-server@chat.service", "50"),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(dir.path().join(unit))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{unit}: exposure above {threshold}:\n{stdout}"
        );
    }
}

/// A server that listens only after `delay`, then answers `503` `busy` times before `200`.
fn slow_server(delay: Duration, busy: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let port = free_port();
    let handle = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let mut answered = 0;
        for conn in l.incoming() {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let status = if answered < busy {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            answered += 1;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if answered > busy {
                return answered;
            }
        }
        answered
    });
    (port, handle)
}

#[test]
fn wait_ready_waits_for_listening_and_loading() {
    let (port, server) = slow_server(Duration::from_millis(600), 2);
    let start = Instant::now();
    let out = bin::command()
        .args(["wait-ready", &format!("http://127.0.0.1:{port}/health")])
        .args(["--timeout", "20s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert!(
        stdout.contains(&format!(
            "http://127.0.0.1:{port}/health answered HTTP 200 after"
        )),
        "{stdout}"
    );
    // Two 503s (loading), then the 200.
    assert_eq!(server.join().unwrap(), 3);
}

#[test]
fn wait_ready_gives_up_after_its_timeout() {
    let port = free_port();
    let start = Instant::now();
    let out = bin::command()
        .args(["wait-ready", &format!("http://127.0.0.1:{port}/")])
        .args(["--timeout", "1s"])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "http://127.0.0.1:{port}/ was not ready within 1s (last answer: connection refused)"
        )),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Always a server error: still not ready.
    let (port, _server) = slow_server(Duration::ZERO, usize::MAX);
    let out = bin::command()
        .args(["wait-ready", &format!("http://127.0.0.1:{port}/")])
        .args(["--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(last answer: HTTP 503 Service Unavailable)"),
        "{stderr}"
    );
    for bad in ["https://127.0.0.1:1/", "127.0.0.1:1", "http://user:pw@h/"] {
        let out = bin::run(&["wait-ready", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn wait_ready_stops_waiting_when_the_server_exits() {
    let port = free_port();
    let mut server = Command::new("sleep").arg("1").spawn().unwrap();
    let pid = server.id().to_string();
    // Reaped by a thread, as systemd reaps a main process that exits.
    let reaper = std::thread::spawn(move || server.wait());
    let start = Instant::now();
    let out = bin::command()
        .args(["wait-ready", &format!("http://127.0.0.1:{port}/")])
        .args(["--timeout", "30s", "--pid", &pid])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the server (PID {pid}) exited before")),
        "{stderr}"
    );
    reaper.join().unwrap().unwrap();
}
