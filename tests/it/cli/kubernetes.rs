//! contrib/kubernetes/: the example overlay renders (tests/kubernetes_render.py, a small
//! kustomize that refuses what it does not know; compared with `kubectl kustomize` when that
//! is on PATH), every manifest validates offline against the API schemas of a pinned
//! Kubernetes version, and the pod runs as the rendered Deployment says: its args, its
//! ConfigMap and Secrets laid out as the kubelet mounts them, probed as the kubelet probes,
//! reloading a ConfigMap update under load and draining on SIGTERM within the grace period.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::readiness::{chat_as, configmap, get};
use crate::support::bin::{self, Proc};
use crate::support::mock::Mock;
use crate::support::tools::{python, require_python_module};

/// The Kubernetes version whose schemas the manifests are checked against.
const KUBERNETES: &str = "1.31.0";
const OVERLAY: &str = "contrib/kubernetes/overlays/example";

fn render_script(args: &[&str]) -> std::process::Output {
    require_python_module("kubernetes_validate");
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(python())
        .current_dir(root)
        .arg(format!("{root}/tests/kubernetes_render.py"))
        .args(args)
        .output()
        .expect("run tests/kubernetes_render.py")
}

#[test]
fn the_example_overlay_renders_and_validates_against_the_pinned_kubernetes_schemas() {
    let out = render_script(&["check", OVERLAY, KUBERNETES]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "10 manifests, 9 files, Kubernetes {KUBERNETES}: 0 problems"
        )),
        "{text}"
    );
}

/// The rendered overlay's objects.
fn rendered() -> Vec<Value> {
    let out = render_script(&["render", OVERLAY]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn object<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered overlay"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The config as the pod would read it, with only what cannot be the same here rewritten:
/// in-container absolute paths (the mounts) to the temp dir, the metrics listener to
/// loopback, each backend to `backend(name)`. (The proxy's own listener is moved by
/// `serve --listen`, as `Proc::start` does.)
fn local_config(
    text: &str,
    mounts: &[(String, PathBuf)],
    backend: impl Fn(&str) -> String,
) -> String {
    fn paths(v: &mut toml::Value, mounts: &[(String, PathBuf)]) {
        match v {
            toml::Value::String(s) => {
                for (from, to) in mounts {
                    if let Some(rest) = s.strip_prefix(&format!("{from}/")) {
                        *s = to.join(rest).display().to_string();
                    }
                }
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| paths(v, mounts)),
            toml::Value::Array(a) => a.iter_mut().for_each(|v| paths(v, mounts)),
            _ => {}
        }
    }
    let mut cfg: toml::Value = toml::from_str(text).unwrap();
    paths(&mut cfg, mounts);
    cfg["metrics"]["listen"] = "127.0.0.1:0".into();
    for (name, b) in cfg["backends"].as_table_mut().unwrap() {
        let b = b.as_table_mut().unwrap();
        b.remove("urls");
        b.insert("url".into(), backend(name).into());
    }
    toml::to_string(&cfg).unwrap()
}

/// Every path under `dir` (symlinks not followed).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            all.extend(tree(&e.path()));
        }
        all.insert(e.path());
    }
    all
}

/// Read-only as the kubelet mounts volumes: directories 0555, files `mode` without write bits.
fn read_only(dir: &Path, mode: u32) {
    for p in tree(dir) {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let m = if meta.is_dir() { 0o555 } else { mode & 0o555 };
        if !meta.file_type().is_symlink() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
}

fn writable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in tree(dir) {
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// A request of the load: whether it started before SIGTERM, and its status or error.
type Outcome = (bool, Result<u16, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pod_serves_reloads_a_configmap_update_under_load_and_drains_on_sigterm() {
    let objs = rendered();
    let dep = object(&objs, "Deployment", "openai-proxy");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let token = str_of(&object(&objs, "Secret", "openai-proxy-clients")["stringData"]["tokens"])
        .lines()
        .find_map(|l| l.strip_prefix("example-app "))
        .unwrap()
        .to_owned();
    let metrics_token =
        str_of(&object(&objs, "Secret", "openai-proxy-metrics")["stringData"]["token"]).to_owned();
    let key =
        str_of(&object(&objs, "Secret", "openai-proxy-openai")["stringData"]["api-key"]).to_owned();

    // Each volume as the kubelet lays it out, in a directory of its own.
    let root = tempfile::tempdir().unwrap();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new(); // (dir, files, mode)
    for m in c["volumeMounts"].as_array().unwrap() {
        let name = str_of(&m["name"]);
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap();
        let (files, mode) = if let Some(cm) = vol.get("configMap") {
            (
                &object(&objs, "ConfigMap", str_of(&cm["name"]))["data"],
                &cm["defaultMode"],
            )
        } else {
            let s = &vol["secret"];
            (
                &object(&objs, "Secret", str_of(&s["secretName"]))["stringData"],
                &s["defaultMode"],
            )
        };
        let files: Vec<(String, String)> = files
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), str_of(v).to_owned()))
            .collect();
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        mounts.push((str_of(&m["mountPath"]).to_owned(), dir.clone()));
        volumes.push((dir, files, mode.as_u64().unwrap_or(0o644) as u32));
    }
    let (a, b) = (Mock::echo("a").await, Mock::echo("b").await);
    let stream_backend = Mock::sse(40, Duration::from_millis(200)).await;
    let config_dir = root.path().join("config");
    for (dir, files, mode) in &volumes {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(f, text)| match dir == &config_dir {
                true => (f.clone(), local_config(text, &mounts, |_| a.url())),
                false => (f.clone(), text.clone()),
            })
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        configmap(dir, "..2026_12_08_00_00_00.1", &refs);
        read_only(dir, *mode);
    }
    // The root filesystem is read-only: the working directory and TMPDIR too.
    let (cwd, tmp) = (root.path().join("cwd"), root.path().join("tmp"));
    for d in [&cwd, &tmp] {
        std::fs::create_dir(d).unwrap();
        read_only(d, 0o555);
    }
    let before = tree(root.path());

    // The container's command line: the image's ENTRYPOINT (the binary) and the args, with
    // the in-container paths moved to the temp dir.
    let mut cmd = bin::command();
    for arg in c["args"].as_array().unwrap() {
        let mut arg = str_of(arg).to_owned();
        for (from, to) in &mounts {
            if let Some(rest) = arg.strip_prefix(&format!("{from}/")) {
                arg = to.join(rest).display().to_string();
            }
        }
        cmd.arg(arg);
    }
    for e in c["env"].as_array().into_iter().flatten() {
        cmd.env(str_of(&e["name"]), str_of(&e["value"]));
    }
    cmd.args(["--listen", "127.0.0.1:0"])
        .current_dir(&cwd)
        .env("TMPDIR", &tmp)
        .env("HOME", "/nonexistent");
    let mut proc = Proc::spawn(cmd);
    let addr = proc.addr;

    // The kubelet's probes, with the rendered paths.
    let ready = str_of(&c["readinessProbe"]["httpGet"]["path"]);
    let live = str_of(&c["livenessProbe"]["httpGet"]["path"]);
    assert_eq!(get(addr, ready).await.0, 200, "{}", proc.log_text());
    assert_eq!(get(addr, live).await.0, 200);

    // The Secrets work: the client token, the Service name for Host, the injected key.
    let auth = format!("Bearer {token}");
    assert_eq!(chat_as(addr, "llama3.2", &[]).await.unwrap().0, 401);
    let svc = [
        ("authorization", auth.as_str()),
        ("host", "openai-proxy.ai.svc"),
    ];
    assert_eq!(chat_as(addr, "gpt-4o-mini", &svc).await.unwrap().0, 200);
    // The last request but the nodes' health checks (every backend is `a` here).
    let seen = (a.requests().into_iter().rev())
        .find(|r| r.uri.path() != "/health")
        .unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    let other = [
        ("authorization", auth.as_str()),
        ("host", "openai-proxy.example"),
    ];
    assert_eq!(chat_as(addr, "gpt-4o-mini", &other).await.unwrap().0, 403);
    // /metrics on its own listener takes the ServiceMonitor's token.
    let log = proc.log_text();
    let metrics: std::net::SocketAddr = log
        .split("metrics: http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let scrape = crate::support::client::send(
        http::Request::get(format!("http://{metrics}/metrics"))
            .header("authorization", format!("Bearer {metrics_token}"))
            .body(crate::support::client::full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(scrape.status(), 200);

    // Requests all along, each recorded as (started before SIGTERM, its outcome).
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let (signalled, results, auth) = (signalled.clone(), results.clone(), auth.clone());
        tokio::spawn(async move {
            while !*stop_rx.borrow() {
                let before = signalled.lock().unwrap().is_none();
                let r = chat_as(addr, "llama3.2", &[("authorization", &auth)]).await;
                let refused = r.is_err() && !before;
                results.lock().unwrap().push((before, r.map(|(s, _)| s)));
                if refused {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    // (a) A ConfigMap update: chat for llama to b, the rest to the streaming backend.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, files, mode) = volumes.iter().find(|(d, _, _)| d == &config_dir).unwrap();
    let (file, text) = &files[0];
    let text = local_config(text, &mounts, |name| match name {
        "openai" => stream_backend.url(),
        _ => b.url(),
    });
    writable(&config_dir);
    configmap(&config_dir, "..2026_12_08_00_05_00.2", &[(file, &text)]);
    read_only(&config_dir, *mode);
    let swapped = tree(root.path());
    assert!(
        swapped
            .difference(&before)
            .all(|p| p.starts_with(&config_dir)),
        "something but the kubelet wrote: {:?}",
        swapped.difference(&before).collect::<Vec<_>>()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the update was not picked up:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // (b) SIGTERM with a stream in flight (8 s: longer than shutdown_delay) and the loop on.
    let stream = {
        let auth = auth.clone();
        tokio::spawn(async move { chat_as(addr, "gpt-4o-mini", &[("authorization", &auth)]).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    *signalled.lock().unwrap() = Some(Instant::now());
    let t0 = Instant::now();
    proc.signal(libc::SIGTERM);
    let mut status = 0;
    while t0.elapsed() < Duration::from_millis(500) {
        status = get(addr, ready).await.0;
        if status == 503 {
            break;
        }
    }
    assert_eq!(status, 503, "/ready did not turn 503 at once");
    assert_eq!(get(addr, live).await.0, 200, "alive while stopping");
    let exit = tokio::task::spawn_blocking(move || {
        let st = proc.wait_exit(grace);
        (st.and_then(|s| s.code()), t0.elapsed(), proc.log_text())
    })
    .await
    .unwrap();
    stop_tx.send(true).unwrap();
    load.await.unwrap();
    let (code, took, log) = exit;
    assert_eq!(code, Some(0), "not exited 0 within {grace:?}:\n{log}");
    assert!(took < grace, "{took:?}");
    let (status, body) = stream.await.unwrap().expect("the stream in flight");
    assert_eq!(status, 200);
    assert!(
        body.contains("data: 39") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    let results = results.lock().unwrap();
    let failed_before: Vec<_> = results
        .iter()
        .filter(|(before, r)| *before && *r != Ok(200))
        .collect();
    assert!(
        failed_before.is_empty(),
        "{failed_before:?} of {}",
        results.len()
    );
    assert!(
        results.iter().any(|(before, r)| !before && *r == Ok(200)),
        "nothing served during shutdown_delay"
    );
    assert!(
        log.contains("server.watch_config: the config or a file it names changed"),
        "{log}"
    );

    // Nothing written outside what the kubelet wrote.
    assert_eq!(tree(root.path()), swapped);
    for (dir, _, _) in &volumes {
        writable(dir);
    }
    writable(&cwd);
    writable(&tmp);
}
