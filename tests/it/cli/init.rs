//! `openai-proxy init`: writes the example config, never over an existing file without
//! --force, finds the user's config folder, and reports which local services answered.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use http::{Response, StatusCode};

use crate::support::bin::command;
use crate::support::dead_addr;
use crate::support::mock::{self, handler, Mock};

/// Runs `openai-proxy --config FILE init ARGS` off the runtime (`FILE`: `None` for the
/// user's config; never the system one, which a test must not touch). Its probes go to the
/// default ports: what they find does not matter to the tests that use this.
async fn init(file: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    if let Some(f) = file {
        cmd.args(["--config", f]);
    }
    cmd.arg("init").args(args);
    assert!(file.is_some() || args.contains(&"--user"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dead() -> u16 {
    dead_addr().port()
}

#[tokio::test]
async fn writes_the_example_and_never_over_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/dir/config.toml");
    let path = file.to_str().unwrap();

    let out = init(Some(path), &[], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        openai_proxy::EMBEDDED_DEFAULT
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let said = text(&out);
    assert!(said.starts_with(&format!("Wrote {path} ")), "{said}");
    assert!(
        said.contains(&format!("Next: openai-proxy --config {path} serve")),
        "{said}"
    );
    assert!(
        said.contains("Then: openai-proxy check-endpoints"),
        "{said}"
    );

    // An existing file stays as it is.
    std::fs::write(&file, "# mine\n").unwrap();
    let out = init(Some(path), &[], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out);
    assert!(
        said.contains(&format!("{path} already exists and was left as it is")),
        "{said}"
    );
    assert!(said.contains("--force"), "{said}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");

    // --force replaces it and keeps the old one.
    let out = init(Some(path), &["--force"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        openai_proxy::EMBEDDED_DEFAULT
    );
    assert_eq!(
        std::fs::read_to_string(format!("{path}.bak")).unwrap(),
        "# mine\n"
    );
    assert!(text(&out).contains(&format!("kept as {path}.bak")));
    // Nothing else was left in the folder.
    let mut names: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["config.toml", "config.toml.bak"]);
}

#[tokio::test]
async fn user_writes_to_the_users_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("xdg");
    let out = init(
        None,
        &["--user"],
        &[("XDG_CONFIG_HOME", xdg.to_str().unwrap())],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let file = xdg.join("openai-proxy/config.toml");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        openai_proxy::EMBEDDED_DEFAULT
    );
    let said = text(&out);
    assert!(
        said.starts_with(&format!("Wrote {} ", file.display())),
        "{said}"
    );
    assert!(said.contains("Next: openai-proxy enable --user"), "{said}");

    // Without $XDG_CONFIG_HOME: ~/.config.
    let home = dir.path().join("home");
    let home_env = home.to_str().unwrap();
    let out = init(
        None,
        &["--user"],
        &[("HOME", home_env), ("XDG_CONFIG_HOME", "")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(home.join(".config/openai-proxy/config.toml").is_file());
}

#[tokio::test]
async fn reports_which_local_services_answered() {
    let answering = |status: StatusCode| {
        Mock::start(handler(move |req| async move {
            mock::collect(req).await;
            Response::builder()
                .status(status)
                .body(mock::full("{}"))
                .unwrap()
        }))
    };
    let ollama = answering(StatusCode::OK).await;
    let kokoro = answering(StatusCode::NOT_FOUND).await;
    let whisper = dead();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    // In the library, where the ports to probe can be given (the binary has no test hook).
    let options = openai_proxy::commands::init::Options {
        probe_ports: vec![
            ("ollama", ollama.addr.port()),
            ("whisper", whisper),
            ("kokoro", kokoro.addr.port()),
        ],
        ..Default::default()
    };
    let said = std::thread::spawn(move || {
        let mut out = Vec::new();
        openai_proxy::commands::init::run(Some(&file), &options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    });
    let said = tokio::task::spawn_blocking(move || said.join().unwrap())
        .await
        .unwrap();
    let line = |name: &str| {
        said.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{said}"))
            .to_string()
    };
    let o = line("Ollama");
    assert!(
        o.starts_with("  ✓") && o.contains("answered (HTTP 200)"),
        "{o}"
    );
    let k = line("Kokoro-FastAPI");
    assert!(
        k.starts_with("  ✓") && k.contains("answered (HTTP 404)"),
        "{k}"
    );
    let w = line("whisper.cpp");
    assert!(
        w.starts_with("  -") && w.contains(&format!("127.0.0.1:{whisper}")),
        "{w}"
    );
    assert!(w.contains("nothing listening (connection refused)"), "{w}");
    assert!(said.contains("get 502"), "{said}");
}
