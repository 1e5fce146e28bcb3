//! Backends on demand in a real systemd user manager (tests/tools/systemd-user-sandbox): the
//! recipe of `contrib/systemd/on-demand/` with the proxy in front (first request starts the
//! server, idle stops it while the proxy runs on, conflicting servers in one swap group take
//! turns without cutting a stream; models loaded and unloaded through the proxy's API and
//! `openai-proxy models`). The units alone, `enable-backend` and `wait-ready` are in
//! the integration tests' `cli::on_demand`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::activation::free_port;
use crate::support::bin;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Copies the units of `contrib/systemd/user/` (the proxy, with `--config CFG` and `port`) and
/// of `contrib/systemd/on-demand/user/` (with the built binary) to a temp dir.
fn sandbox_units(config: &Path, port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let exec = format!("{} --config {}", bin::exe(), config.display());
    for (from, replace) in [
        ("contrib/systemd/user", exec.as_str()),
        ("contrib/systemd/on-demand/user", bin::exe()),
    ] {
        for e in std::fs::read_dir(format!("{ROOT}/{from}")).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p)
                .unwrap()
                .replace("/usr/bin/openai-proxy", replace)
                .replace("127.0.0.1:2020", &format!("127.0.0.1:{port}"));
            std::fs::write(dir.path().join(p.file_name().unwrap()), text).unwrap();
        }
    }
    dir
}

/// Runs `bash tests/scripts/SCRIPT` in a real systemd user manager with the proxy's units
/// (listening on `port`, config `config`) and the on-demand templates, with `env` besides
/// PORT, BIN, CFG, MOCK and DIR; fails the test unless the script says "ALL OK".
fn run_in_user_manager(script: &str, config: &str, port: u16, env: &[(&str, String)]) {
    crate::support::tools::require_user_manager();
    crate::support::tools::require("/usr/bin/python3", "python3");
    crate::support::tools::require("/usr/lib/systemd/systemd-socket-proxyd", "systemd");
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let units = sandbox_units(&cfg, port);
    let sandbox: PathBuf = format!("{ROOT}/tests/tools/systemd-user-sandbox").into();
    let out = Command::new(sandbox)
        .arg(units.path())
        .arg("bash")
        .arg(format!("{ROOT}/tests/scripts/{script}"))
        .env("SANDBOX_TIMEOUT", "240")
        .env("PORT", port.to_string())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BIN", bin::exe())
        .env("CFG", &cfg)
        .env("MOCK", format!("{ROOT}/tests/scripts/mock-model-server.py"))
        .env("DIR", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Its steps with their times (shown with --nocapture).
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{script} in a systemd user manager failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn on_demand_backends_in_a_real_systemd_user_manager() {
    let (port, pa, pb) = (free_port(), free_port(), free_port());
    let config = format!(
        "[backends.a]\nurl = \"http://127.0.0.1:{pa}\"\nswap_group = \"gpu\"\n\
         start_timeout = \"60s\"\n\
         [backends.b]\nurl = \"http://127.0.0.1:{pb}\"\nswap_group = \"gpu\"\n\
         start_timeout = \"60s\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"a\"\nmodels = [\"a\"]\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"b\"\nmodels = [\"b\"]\n"
    );
    let env = [
        ("PA", pa.to_string()),
        ("PB", pb.to_string()),
        ("SA", free_port().to_string()),
        ("SB", free_port().to_string()),
        ("PC", free_port().to_string()),
    ];
    run_in_user_manager("on-demand.sh", &config, port, &env);
}

#[test]
fn models_load_and_unload_in_a_real_systemd_user_manager() {
    let (port, pm, pp) = (free_port(), free_port(), free_port());
    // m is on demand and not asked for its list: GET /models shows the model its route names.
    let config = format!(
        "[backends.m]\nurl = \"http://127.0.0.1:{pm}\"\non_demand = true\n\
         [backends.plain]\nurl = \"http://127.0.0.1:{pp}\"\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"m\"\nmodels = [\"m\"]\n\
         [[route]]\npath = \"/v1/chat/completions\"\nbackend = \"plain\"\nmodels = [\"plain\"]\n"
    );
    let env = [
        ("PM", pm.to_string()),
        ("SM", free_port().to_string()),
        ("PP", pp.to_string()),
    ];
    run_in_user_manager("models.sh", &config, port, &env);
}
