//! `openai-proxy client add|list|remove` through the real binary: the token printed once and
//! only its hash stored (in the tokens file, or as token_hash in the config), every other byte
//! of both files kept, the token accepted by a proxy started with the result, and every refusal
//! leaving the files as they were.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use http::{Request, StatusCode};

use crate::support::bin::{command, Proc};
use crate::support::client::{full, send};
use crate::support::mock::Mock;

/// Runs `openai-proxy --config CONFIG client ARGS`.
fn client(config: &Path, args: &[&str]) -> Output {
    command()
        .arg("--config")
        .arg(config)
        .arg("client")
        .args(args)
        .output()
        .expect("run openai-proxy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A config with one backend at `url` and one route, and, when `tokens` is given, a tokens
/// file with that text (mode 0600).
fn setup(url: &str, tokens: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let file = dir.path().join("clients");
    let server = match tokens {
        Some(text) => {
            std::fs::write(&file, text).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!(
                "[server]\nclient_tokens_file = {:?}\n",
                file.to_str().unwrap()
            )
        }
        None => "[server]\nlisten = [\"127.0.0.1:2020\"]  # kept as it is\n".to_string(),
    };
    std::fs::write(
        &config,
        format!(
            "# my proxy\n{server}\n[backends.ollama]\nurl = \"{url}\"\n\n\
             [[route]]\npath = \"/v1\"\nbackend = \"ollama\"\n"
        ),
    )
    .unwrap();
    (dir, config, file)
}

/// The one line `add` prints: the token.
fn token_of(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let token = text.trim_end().to_string();
    assert!(
        token.len() >= 64 && token.bytes().all(|b| b.is_ascii_graphic()),
        "{token}"
    );
    token
}

fn check_config(config: &Path) {
    let out = command()
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn add_with_a_tokens_file_stores_the_hash_there_and_the_scope_in_the_config() {
    let old_tokens =
        "# LAN\nalice sha256:".to_string() + &sha256_hex("alice-token-0123456789") + "\n";
    let (_dir, config, file) = setup("http://127.0.0.1:9", Some(&old_tokens));
    let old_config = std::fs::read(&config).unwrap();

    let out = client(&config, &["add", "guest"]);
    let token = token_of(&out);
    assert!(token.starts_with("op-"), "{token}");
    assert!(stderr(&out).contains("Added client guest: the hash of its token is in"));
    assert!(
        stderr(&out).contains("openai-proxy reload"),
        "{}",
        stderr(&out)
    );
    let tokens = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        tokens,
        format!("{old_tokens}guest sha256:{}\n", sha256_hex(&token))
    );
    assert!(!tokens.contains(&token));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // No option: the config is not touched.
    assert_eq!(std::fs::read(&config).unwrap(), old_config);

    // With options, a table (without a hash) goes to the end of the config.
    let out = client(
        &config,
        &[
            "add",
            "bob.x@home",
            "--models",
            "llama*",
            "--no-server-key",
            "--max-concurrent",
            "2",
        ],
    );
    let bob = token_of(&out);
    let text = std::fs::read_to_string(&config).unwrap();
    let (before, added) = text.split_at(old_config.len());
    assert_eq!(before.as_bytes(), old_config);
    assert_eq!(
        added,
        "\n[clients.\"bob.x@home\"]\nmodels = [\"llama*\"]\nbackends_with_server_key = []\n\
         max_concurrent = 2\n"
    );
    assert!(!text.contains("sha256") && !text.contains(&bob));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .ends_with(&format!("bob.x@home sha256:{}\n", sha256_hex(&bob))));
    check_config(&config);
}

#[test]
fn add_makes_the_tokens_file_the_config_names() {
    let (_dir, config, file) = setup("http://127.0.0.1:9", Some(""));
    std::fs::remove_file(&file).unwrap();
    let token = token_of(&client(&config, &["add", "first"]));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("first sha256:{}\n", sha256_hex(&token))
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    check_config(&config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_without_a_tokens_file_puts_the_hash_in_the_config_and_the_token_works() {
    let m = Mock::echo("ollama").await;
    let (_dir, config, _) = setup(&m.url(), None);
    let old_config = std::fs::read_to_string(&config).unwrap();
    let out = client(
        &config,
        &[
            "add",
            "guest",
            "--routes",
            "/v1/chat",
            "--tokens-per-day",
            "10000",
        ],
    );
    let token = token_of(&out);
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text,
        format!(
            "{old_config}\n[clients.guest]\ntoken_hash = \"sha256:{}\"\n\
             routes = [\"/v1/chat\"]\ntokens_per_day = 10000\n",
            sha256_hex(&token)
        )
    );
    check_config(&config);

    let proc = Proc::start(&config, &[]);
    let ask = |auth: Option<String>| {
        let mut req = Request::post(format!("http://{}/v1/chat/completions", proc.addr))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        send(
            req.body(full(r#"{"model":"llama3","messages":[]}"#))
                .unwrap(),
        )
    };
    assert_eq!(
        ask(Some(format!("Bearer {token}"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(ask(None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(m.requests().len(), 1);
}

/// Runs `client ARGS` and checks that it exits with `code`, says `says`, prints no token and
/// changes neither file.
fn assert_refused(config: &Path, file: &Path, args: &[&str], code: i32, says: &str) {
    let files = || (std::fs::read(config).unwrap(), std::fs::read(file).unwrap());
    let before = files();
    let out = client(config, args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{args:?}");
    assert!(files() == before, "{args:?} changed a file");
}

#[test]
fn refusals_change_nothing() {
    let tokens = format!("guest sha256:{}\n", sha256_hex("guest-token-0123456789"));
    let (dir, config, file) = setup("http://127.0.0.1:9", Some(&tokens));
    let refused = |args: &[&str], code, says| assert_refused(&config, &file, args, code, says);
    refused(&["add", "guest"], 1, "a client named guest exists already");
    refused(&["add", "bad/name"], 2, "a client name may have letters");
    refused(
        &["add", "x", "--server-key-for", "nope"],
        78,
        "no backend named \"nope\"",
    );
    refused(
        &["add", "x", "--max-concurrent", "0"],
        2,
        "--max-concurrent",
    );
    refused(&["remove", "nobody"], 1, "there is no client named nobody");
    refused(&["remove", "guest"], 1, "has the only token");
    // A token that cannot be printed is taken back.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let before = (
            std::fs::read(&config).unwrap(),
            std::fs::read(&file).unwrap(),
        );
        let out = command()
            .arg("--config")
            .arg(&config)
            .args(["client", "add", "x", "--max-concurrent", "1"])
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("the client was not added"),
            "{}",
            stderr(&out)
        );
        let after = (
            std::fs::read(&config).unwrap(),
            std::fs::read(&file).unwrap(),
        );
        assert!(after == before, "a file changed");
    }
    // A table without a token: the config does not load, and stays as it is.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[clients.tabled]\nmax_concurrent = 1\n"),
    )
    .unwrap();
    refused(&["add", "tabled"], 78, "the config does not load");
    refused(&["add", "x"], 78, "clients.tabled: has no token");

    // No config file: the built-in default.
    if !Path::new("/etc/openai-proxy/config.toml").exists() {
        let out = command()
            .env("HOME", dir.path())
            .args(["client", "add", "x"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("openai-proxy init"),
            "{}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn list_and_remove() {
    let tokens = format!(
        "# who\nalice sha256:{}\n",
        sha256_hex("alice-token-0123456789")
    );
    let (_dir, config, file) = setup("http://127.0.0.1:9", Some(&tokens));
    let old_config = std::fs::read(&config).unwrap();
    let old_tokens = std::fs::read(&file).unwrap();
    token_of(&client(
        &config,
        &[
            "add",
            "guest",
            "--models",
            "llama*",
            "--no-server-key",
            "--max-concurrent",
            "2",
            "--tokens-per-day",
            "10000",
        ],
    ));
    token_of(&client(
        &config,
        &["add", "zed", "--requests-per-minute", "60"],
    ));

    let out = client(&config, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    let lines: Vec<String> = list
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "alice tokens file no limits",
            "guest tokens file models: llama* server key: none max 2 at once, 10000 tokens/day",
            "zed tokens file 60 requests/minute",
        ],
        "{list}"
    );
    assert!(!list.contains("sha256:"));
    let verbose = command()
        .arg("--config")
        .arg(&config)
        .args(["check-config", "-v"])
        .output()
        .unwrap();
    let verbose = stdout(&verbose);
    assert!(verbose.contains("  zed: 60 requests/minute\n"), "{verbose}");
    assert!(!verbose.contains("sha256:"), "{verbose}");

    // Removing both leaves the files byte for byte as they were.
    let out = client(&config, &["remove", "guest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Removed client guest"),
        "{}",
        stderr(&out)
    );
    assert!(!std::fs::read_to_string(&config).unwrap().contains("guest"));
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("[clients.zed]"));
    assert!(client(&config, &["remove", "zed"]).status.success());
    assert_eq!(std::fs::read(&config).unwrap(), old_config);
    assert_eq!(std::fs::read(&file).unwrap(), old_tokens);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = client(&config, &["list"]);
    assert_eq!(stdout(&out), "alice  tokens file  no limits\n");
}
