//! A wrong config is refused with exit status 78 and a message naming file, line:column and
//! key; keys are never printed.

use std::path::Path;

use openai_proxy::Config;

use crate::support::bin::{self, command};

const GOOD_BACKENDS: &str = "[backends.ollama]\nurl = \"http://127.0.0.1:11434\"\n";
const GOOD_ROUTE: &str = "[[route]]\npath = \"/v1\"\nbackend = \"ollama\"\n";

/// The arguments that make `serve` start with the config FILE.
fn serve_args(file: &str) -> Vec<String> {
    ["--config", file, "serve", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec()
}

/// Runs `openai-proxy --config FILE` and returns (status, stderr, FILE).
fn serve_with(dir: &Path, text: &str) -> (Option<i32>, String, String) {
    run_with(dir, text, serve_args)
}

/// Writes `text` to a config file, runs the binary with `args(FILE)` and returns (status,
/// stderr, FILE).
fn run_with(
    dir: &Path,
    text: &str,
    args: fn(&str) -> Vec<String>,
) -> (Option<i32>, String, String) {
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    let out = command()
        .args(args(file.to_str().unwrap()))
        .output()
        .expect("run openai-proxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

#[test]
fn each_config_error_class_exits_78_with_file_line_and_key() {
    assert_each_error_class_refused(serve_args);
}

/// Runs the binary with `args(FILE)` for a config with each class of error, and checks that
/// it exits 78 naming the file, line:column, key and problem (`serve` and `check-config`
/// share this).
pub(crate) fn assert_each_error_class_refused(args: fn(&str) -> Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "unknown key",
            format!("[server]\nlisten = [\"127.0.0.1:0\"]\nlisen = 1\n{GOOD_BACKENDS}{GOOD_ROUTE}"),
            ":3:1: server.lisen:",
            "unknown field `lisen`",
        ),
        (
            "bad duration",
            format!("{GOOD_BACKENDS}connect_timeout = \"10x\"\n{GOOD_ROUTE}"),
            ":3:19: backends.ollama.connect_timeout:",
            "unknown unit \"x\"",
        ),
        (
            "duration without unit",
            format!("[server]\nshutdown_timeout = 30\n{GOOD_BACKENDS}{GOOD_ROUTE}"),
            ":2:20: server.shutdown_timeout:",
            "\"30s\"",
        ),
        (
            "bad size",
            format!("[server]\nmax_body_size = \"lots\"\n{GOOD_BACKENDS}{GOOD_ROUTE}"),
            ":2:17: server.max_body_size:",
            "invalid size",
        ),
        (
            "route naming an undefined backend",
            format!("{GOOD_BACKENDS}[[route]]\npath = \"/v1\"\nbackend = \"olama\"\n"),
            ":5:11: route[0].backend:",
            "no backend named \"olama\" (defined: ollama)",
        ),
        (
            "backend URL not http/https",
            format!("[backends.ollama]\nurl = \"ftp://127.0.0.1:21\"\n{GOOD_ROUTE}"),
            ":2:7: backends.ollama.url:",
            "unsupported scheme \"ftp\"",
        ),
        (
            "duplicate route path",
            format!("{GOOD_BACKENDS}{GOOD_ROUTE}{GOOD_ROUTE}"),
            ":7:8: route[1].path:",
            "duplicate route path \"/v1\"",
        ),
        (
            "unreadable key file",
            format!("{GOOD_BACKENDS}api_key_file = \"/nonexistent/openai.key\"\n{GOOD_ROUTE}"),
            ":3:16: backends.ollama.api_key_file:",
            "cannot read key file /nonexistent/openai.key",
        ),
        (
            "TOML syntax error",
            format!("{GOOD_BACKENDS}[[route]\n"),
            ":3:",
            "",
        ),
        (
            "bad listen address",
            format!("[server]\nlisten = [\"localhost\"]\n{GOOD_BACKENDS}{GOOD_ROUTE}"),
            ":2:11: server.listen[0]:",
            "invalid listen address",
        ),
    ];
    for (what, text, position, message) in cases {
        let (code, stderr, file) = run_with(dir.path(), text, args);
        assert_eq!(code, Some(78), "{what}: exit status; stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("{file}{position}")),
            "{what}: expected `{file}{position}` in:\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "{what}: expected `{message}` in:\n{stderr}"
        );
    }
}

#[test]
fn all_validation_errors_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, _) = serve_with(
        dir.path(),
        "[backends.a]\nurl = \"gopher://x\"\nidle_timeout = \"0s\"\n[[route]]\npath = \"v1\"\nbackend = \"zzz\"\n",
    );
    assert_eq!(code, Some(78));
    for needle in [
        "backends.a.url",
        "backends.a.idle_timeout",
        "route[0].path",
        "route[0].backend",
    ] {
        assert!(stderr.contains(needle), "missing {needle} in:\n{stderr}");
    }
}

#[test]
fn key_material_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-do-not-print me\n").unwrap();
    let (code, stderr, _) = serve_with(
        dir.path(),
        &format!(
            "[backends.ollama]\nurl = \"http://127.0.0.1:1\"\napi_key_file = {key:?}\n{GOOD_ROUTE}"
        ),
    );
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("api_key_file"), "{stderr}");
    assert!(!stderr.contains("sk-do-not-print"), "{stderr}");
}

#[test]
fn missing_config_file_and_usage_errors() {
    let out = bin::run(&["--config", "/nonexistent/openai-proxy.toml"]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/openai-proxy.toml"),
        "{stderr}"
    );

    let out = bin::run(&["serve", "--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bin::run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bin::run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("openai-proxy "));
}

#[test]
fn config_lookup_uses_env_before_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.toml");
    std::fs::write(&file, "[log]\nlevel = \"loud\"\n").unwrap();
    let out = command()
        .env("OPENAI_PROXY_CONFIG", &file)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:9: log.level", file.display())),
        "{stderr}"
    );
}

#[test]
fn embedded_default_is_the_documented_example_and_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/openai-proxy.toml"
    ))
    .unwrap();
    assert_eq!(text, openai_proxy::EMBEDDED_DEFAULT);
    let cfg = openai_proxy::Config::from_toml(&text).unwrap();
    let routes: Vec<(&str, &str)> = cfg
        .routes
        .iter()
        .map(|r| (r.path.as_str(), r.backend.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("/v1/audio/transcriptions", "whisper"),
            ("/v1/chat/completions", "ollama"),
            ("/v1/audio/speech", "kokoro"),
            ("/v1/audio/voices", "kokoro"),
            ("/v1", "openai")
        ]
    );
    let openai = cfg.backend("openai").unwrap();
    assert_eq!(openai.url(), "https://api.openai.com");
    assert_eq!(openai.auth, openai_proxy::AuthPolicy::Forward);
    for local in ["whisper", "ollama", "kokoro"] {
        assert_eq!(
            cfg.backend(local).unwrap().auth,
            openai_proxy::AuthPolicy::Strip
        );
    }
    assert_eq!(cfg.server.listen[0].to_string(), "127.0.0.1:2020");
}

#[test]
fn model_routing_mistakes_name_their_key_and_place() {
    let routes =
        "[backends.a]\nurl = \"http://127.0.0.1:9\"\n[backends.b]\nurl = \"http://127.0.0.1:9\"\n";
    let cases = [
        (
            format!("{routes}[[route]]\npath = \"/v1\"\nbackend = \"a\"\nmodels = []\n"),
            "<string>:8:10: route[0].models: an empty list takes no request",
        ),
        (
            format!("{routes}[[route]]\npath = \"/v1\"\nbackend = \"a\"\nmodels = [\"x\", \"\"]\n"),
            "<string>:8:16: route[0].models[1]: an empty model name matches no request",
        ),
        (
            "[backends.a]\nurl = \"http://127.0.0.1:9\"\n[backends.a.aliases]\n\"x\" = \"x\"\n[[route]]\npath = \"/v1\"\nbackend = \"a\"\n".to_string(),
            "<string>:4:7: backends.a.aliases.x: \"x\" is an alias of itself",
        ),
        (
            "[backends.a]\nurl = \"http://127.0.0.1:9\"\naliases = { \"x\" = \"a\\u0007\" }\n[[route]]\npath = \"/v1\"\nbackend = \"a\"\n".to_string(),
            "backends.a.aliases.x: model name \"a\\u{7}\" contains a control character",
        ),
        (
            format!("[server]\nmax_json_peek = \"100B\"\n{routes}[[route]]\npath = \"/v1\"\nbackend = \"a\"\n"),
            "<string>:2:17: server.max_json_peek: must be between 1KiB and 64MiB",
        ),
        (
            format!("{routes}[[route]]\npath = \"/v1\"\nbackend = \"a\"\n[[route]]\npath = \"/v1\"\nbackend = \"b\"\nmodels = [\"m\"]\n"),
            "<string>:9:8: route[1].path: duplicate route path \"/v1\": an earlier route on it has no `models`",
        ),
    ];
    for (text, want) in cases {
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(want), "expected `{want}` in:\n{err}");
    }
    // A path may repeat after routes on it that list models.
    let ok = format!(
        "{routes}[[route]]\npath = \"/v1\"\nbackend = \"a\"\nmodels = [\"m*\"]\n\
         [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
    );
    Config::from_toml(&ok).unwrap_or_else(|e| panic!("{e}"));
}

/// A config where `value` stands in each place a message could repeat it.
fn with_huge_value(value: &str) -> Vec<(&'static str, String)> {
    let route = "[[route]]\npath = \"/v1\"\nbackend = \"b\"\n";
    let backend =
        |extra: &str| format!("[backends.b]\nurl = \"http://127.0.0.1:9\"\n{extra}\n{route}");
    vec![
        ("url", format!("[backends.b]\nurl = \"{value}\"\n{route}")),
        ("url with a scheme", format!("[backends.b]\nurl = \"http://{value}\"\n{route}")),
        ("backend name", format!("[backends.{value}]\nurl = \"http://127.0.0.1:9\"\n{route}")),
        ("route's backend", format!("[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"/v1\"\nbackend = \"{value}\"\n")),
        ("route path", format!("[backends.b]\nurl = \"http://127.0.0.1:9\"\n[[route]]\npath = \"{value}\"\nbackend = \"b\"\n")),
        ("unknown key", format!("[server]\n{value} = 1\n{}", backend(""))),
        ("listen", format!("[server]\nlisten = [\"{value}\"]\n{}", backend(""))),
        ("duration", format!("[server]\nshutdown_timeout = \"{value}\"\n{}", backend(""))),
        ("size", format!("[server]\nmax_body_size = \"1{value}\"\n{}", backend(""))),
        ("log level", format!("[log]\nlevel = \"{value}\"\n{}", backend(""))),
        ("environment variable", backend(&format!("api_key_env = \"{value}\""))),
        ("key file", backend(&format!("api_key_file = \"/nonexistent/{value}\""))),
        ("tokens file", format!("[server]\nclient_tokens_file = \"/{value}\"\n{}", backend(""))),
        ("allowed host", format!("[server]\nallowed_hosts = [\"a b {value}\"]\n{}", backend(""))),
        ("web origin", format!("[server]\ncors_origins = [\"{value}\"]\n{}", backend(""))),
        ("secret header", format!("[server]\nsecret_headers = [\"a b {value}\"]\n{}", backend(""))),
        ("route's model", format!("[backends.b]\nurl = \"http://127.0.0.1:9\"\n{route}models = [\"{value}\"]\n")),
        ("alias", backend(&format!("aliases = {{ \"{value}\" = \"m\" }}"))),
    ]
}

#[test]
fn a_huge_value_makes_a_short_message() {
    let huge = "x".repeat(10 << 20);
    // 10 MB where the value is parsed by the proxy, by serde, or is a key (parsing 10 MB
    // takes seconds in a debug build, so not every place).
    let some = [
        "url",
        "backend name",
        "log level",
        "environment variable",
        "web origin",
    ];
    for (what, text) in with_huge_value(&huge) {
        if !some.contains(&what) {
            continue;
        }
        let err = openai_proxy::Config::from_toml(&text)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        let message = err.to_string();
        for line in message.lines() {
            assert!(
                line.len() < 1000,
                "{what}: a line of {} bytes:\n{}",
                line.len(),
                &line[..line.len().min(2000)]
            );
        }
        assert!(message.contains("bytes)"), "{what}: {message}");
    }
    // Every place, through the binary: a file may hold at most 1 MiB, so 900 kB it is.
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(900_000);
    for (what, text) in with_huge_value(&big) {
        let (code, stderr, file) = run_with(dir.path(), &text, |f| {
            ["check-config", f].map(String::from).to_vec()
        });
        assert_eq!(code, Some(78), "{what}");
        assert!(stderr.contains(&file), "{what}: {stderr}");
        for line in stderr.lines() {
            assert!(line.len() < 1000, "{what}: a line of {} bytes", line.len());
        }
    }
}
