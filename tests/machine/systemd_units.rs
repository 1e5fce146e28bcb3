//! The systemd units: lint-clean, hardened, and working in a real systemd user manager
//! (socket activation, readiness, reload, drain on stop, idle exit, `status --user`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::activation::free_port;
use crate::support::bin;
use crate::support::mock::Mock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Copies units from `contrib/systemd/<sub>` to a temp dir, with the built binary (and
/// `--config CFG` when given) instead of /usr/bin/openai-proxy, and `port` instead of 2020.
fn units(sub: &str, config: Option<&Path>, port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let exec = match config {
        Some(c) => format!("{} --config {}", bin::exe(), c.display()),
        None => bin::exe().to_string(),
    };
    for name in ["openai-proxy.socket", "openai-proxy.service"] {
        let text = std::fs::read_to_string(format!("{ROOT}/contrib/systemd/{sub}{name}")).unwrap();
        let text = text
            .replace("/usr/bin/openai-proxy", &exec)
            .replace("127.0.0.1:2020", &format!("127.0.0.1:{port}"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn verify(dir: &Path, user: bool) {
    crate::support::tools::require("systemd-analyze", "systemd");
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg("--man=no");
    let runtime = tempfile::tempdir().unwrap();
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let out = cmd
        .arg(dir.join("openai-proxy.socket"))
        .arg(dir.join("openai-proxy.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
fn unit_files_verify_cleanly() {
    let system = units("", None, 2020);
    verify(system.path(), false);
    let user = units("user/", None, 2020);
    verify(user.path(), true);
}

#[test]
fn system_service_is_hardened() {
    crate::support::tools::require("systemd-analyze", "systemd");
    let system = units("", None, 2020);
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15", "--no-pager"])
        .arg(system.path().join("openai-proxy.service"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default();
    assert!(
        out.status.success(),
        "exposure above 1.5: {overall}\n{stdout}"
    );
    let text =
        std::fs::read_to_string(format!("{ROOT}/contrib/systemd/openai-proxy.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStartPre=/usr/bin/openai-proxy check-config",
        "DynamicUser=yes",
        "#LoadCredential=openai:",
        "WatchdogSec=",
    ] {
        assert!(text.contains(line), "openai-proxy.service lacks {line}");
    }
    let socket =
        std::fs::read_to_string(format!("{ROOT}/contrib/systemd/openai-proxy.socket")).unwrap();
    for line in [
        "ListenStream=127.0.0.1:2020",
        "FileDescriptorName=http",
        "WantedBy=sockets.target",
    ] {
        assert!(socket.contains(line), "openai-proxy.socket lacks {line}");
    }
}

fn routes(a_or_b: (&str, &str), sse: &str, extra: &str) -> String {
    format!(
        "{extra}\n[backends.{0}]\nurl = \"{1}\"\n[backends.llm]\nurl = \"{sse}\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"llm\"\n\
         [[route]]\npath = \"/v1\"\nbackend = \"{0}\"\n",
        a_or_b.0, a_or_b.1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_units_in_a_real_systemd_user_manager() {
    crate::support::tools::require_user_manager();
    let a = Mock::echo("a").await;
    let b = Mock::echo("b").await;
    let sse = Mock::sse(5, Duration::from_millis(300)).await;
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("config.toml");
    std::fs::write(&cfg, routes(("a", &a.url()), &sse.url(), "")).unwrap();
    std::fs::write(
        work.path().join("b.toml"),
        routes(("b", &b.url()), &sse.url(), ""),
    )
    .unwrap();
    std::fs::write(
        work.path().join("broken.toml"),
        "[[route]]\npath = \"/v1\"\nbackend = \"gone\"\n",
    )
    .unwrap();
    std::fs::write(
        work.path().join("idle.toml"),
        routes(("b", &b.url()), &sse.url(), "[server]\nidle_exit = \"1s\""),
    )
    .unwrap();
    let port = free_port();
    let unit_dir = units("user/", Some(&cfg), port);
    let sandbox: PathBuf = format!("{ROOT}/tests/tools/systemd-user-sandbox").into();
    let script = format!("{ROOT}/tests/scripts/systemd-user.sh");
    let out = tokio::task::spawn_blocking({
        let (unit_dir, cfg, work) = (
            unit_dir.path().to_path_buf(),
            cfg.clone(),
            work.path().to_path_buf(),
        );
        move || {
            Command::new(sandbox)
                .arg(unit_dir)
                .arg("bash")
                .arg(script)
                .env("PORT", port.to_string())
                .env("BIN", bin::exe())
                .env("CFG", cfg)
                .env("DIR", work)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "systemd user sandbox run failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn service_commands_explain_a_missing_service_manager() {
    crate::support::tools::require("systemctl", "systemd");
    let empty = tempfile::tempdir().unwrap();
    // No user manager behind $XDG_RUNTIME_DIR.
    let out = bin::command()
        .env("XDG_RUNTIME_DIR", empty.path())
        .args(["start", "--user", "-v"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no user service manager: systemd --user is not running"),
        "{stderr}"
    );
    // No systemctl at all.
    let out = bin::command()
        .env("PATH", empty.path())
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("systemctl is not installed"), "{stderr}");
    assert!(stderr.contains("openai-proxy serve"), "{stderr}");
}
