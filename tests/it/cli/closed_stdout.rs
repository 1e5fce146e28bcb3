//! A closed stdout (`openai-proxy check-config -v | head -1`, `status | head -c0`) ends a
//! command quietly: exit status 0 and no panic message, whatever the command was printing.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use crate::support::bin::command;
use crate::support::{routes_to, start_proxy};

/// Runs the binary with `args` and `env`, its stdout a pipe whose reading end is already
/// closed (every write fails with EPIPE); returns the exit status and stderr.
fn run_into_closed_pipe(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors that we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = command()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run openai-proxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_quiet(what: &str, (code, stderr): (Option<i32>, String)) {
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{what}: {stderr}");
    assert_eq!(code, Some(0), "{what}: {stderr}");
}

#[test]
fn check_config_and_completions_into_a_closed_pipe() {
    assert_quiet(
        "check-config -v",
        run_into_closed_pipe(&["check-config", "-v"], &[]),
    );
    assert_quiet(
        "completions bash",
        run_into_closed_pipe(&["completions", "bash"], &[]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_endpoints_and_status_into_a_closed_pipe() {
    let proxy = start_proxy(&routes_to("http://127.0.0.1:1")).await;
    let url = proxy.url("");
    let r = tokio::task::spawn_blocking(move || {
        run_into_closed_pipe(&["check-endpoints", "--url", &url, "--only", "health"], &[])
    })
    .await
    .unwrap();
    assert_quiet("check-endpoints", r);

    // `container status` with a stand-in podman: it prints podman's view, then /health.
    let dir = tempfile::tempdir().unwrap();
    let podman = dir.path().join("podman");
    std::fs::write(&podman, "#!/bin/sh\necho 'openai-proxy: running'\n").unwrap();
    std::fs::set_permissions(&podman, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{}\"]\n{}",
            proxy.addr,
            routes_to("http://127.0.0.1:1")
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = config.to_str().unwrap().to_string();
    let r = tokio::task::spawn_blocking(move || {
        run_into_closed_pipe(
            &["--config", &config, "container", "status"],
            &[("PATH", &path)],
        )
    })
    .await
    .unwrap();
    assert_quiet("container status", r);
    proxy.stop().await;
}
