//! No file can stall the proxy: a FIFO, a device or a huge file as the config, a key file or a
//! tokens file is refused at once, naming the file, by `check-config`, by `serve` at start and
//! by a reload, which keeps serving meanwhile; and none of them is read into memory.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;

use crate::support::activation::start_notified;
use crate::support::bin;
use crate::support::client::{body_bytes, full, send};
use crate::support::mock::Mock;

/// Long enough for a loaded machine to start the binary; a FIFO without a writer would
/// block forever.
const NO_HANG: Duration = Duration::from_secs(5);

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A config with one backend; `server` and `backend` are added to their sections.
fn config_text(url: &str, server: &str, backend: &str) -> String {
    format!(
        "[server]\n{server}\n[log]\ntarget = \"stderr\"\n[backends.b]\nurl = \"{url}\"\n{backend}\n\
         [[route]]\npath = \"/v1\"\nbackend = \"b\"\n"
    )
}

/// How a run ended: exit code, stderr, how long it took.
struct Run {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// The most heap a program may take in [`run_limited`]: the proxy needs a few MiB, and
/// reading a 2 GiB file (or `/dev/zero`) would need far more: it would abort instead of
/// exiting 78.
const MAX_HEAP: u64 = 256 << 20;

/// Runs the binary with `args` (see [`run_limited`]).
fn run(args: &[&str]) -> Run {
    let mut cmd = bin::command();
    cmd.args(args);
    run_limited(cmd)
}

/// Runs `cmd` with at most [`MAX_HEAP`] of heap (`RLIMIT_DATA`), killing it after
/// [`NO_HANG`].
fn run_limited(mut cmd: Command) -> Run {
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MAX_HEAP,
                rlim_max: MAX_HEAP,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    });
    let status = bin::wait_exit(&mut child, NO_HANG).or_else(|| {
        let _ = child.kill();
        child.wait().ok()
    });
    Run {
        code: status.and_then(|s| s.code()),
        stderr: reader.join().unwrap(),
        took: start.elapsed(),
    }
}

/// Asserts a run was refused as a config error (78), in time, naming `file` and `why`.
fn assert_refused(what: &str, r: &Run, file: &Path, why: &str) {
    assert!(r.took < NO_HANG, "{what}: took {:?} (hung?)", r.took);
    assert_eq!(r.code, Some(78), "{what}: {}", r.stderr);
    let file = file.display().to_string();
    assert!(
        r.stderr.contains(&file) && r.stderr.contains(why),
        "{what}: expected {file} and {why:?} in:\n{}",
        r.stderr
    );
}

#[test]
fn fifos_are_refused_at_once_by_check_config_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let cfg = dir.path().join("config.toml");
    for (what, config, why) in [
        (
            "config",
            None,
            "cannot read config file (--config): not a regular file",
        ),
        (
            "api_key_file",
            Some(config_text(
                "http://127.0.0.1:9",
                "",
                &format!("api_key_file = {fifo:?}"),
            )),
            "is not a regular file",
        ),
        (
            "client_tokens_file",
            Some(config_text(
                "http://127.0.0.1:9",
                &format!("client_tokens_file = {fifo:?}"),
                "",
            )),
            "is not a regular file",
        ),
    ] {
        let path = match &config {
            None => fifo.clone(),
            Some(text) => {
                std::fs::write(&cfg, text).unwrap();
                cfg.clone()
            }
        };
        let p = path.to_str().unwrap();
        let r = run(&["check-config", p]);
        assert_refused(&format!("check-config, FIFO as {what}"), &r, &fifo, why);
        eprintln!("check-config, FIFO as {what}: refused in {:?}", r.took);
        let r = run(&["--config", p, "serve", "--listen", "127.0.0.1:0"]);
        assert_refused(&format!("serve, FIFO as {what}"), &r, &fifo, why);
    }
}

/// A 2 GiB file that takes no disk space.
fn sparse_file(dir: &Path) -> PathBuf {
    let p = dir.join("huge.toml");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(2 << 30).unwrap();
    p
}

#[test]
fn huge_files_and_devices_are_refused_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let huge = sparse_file(dir.path());
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    // Under MAX_HEAP: reading one of these files would abort, or never end.
    for (file, why) in [(&huge, "larger than 1MiB"), (&zero, "not a regular file")] {
        let r = run(&["check-config", file.to_str().unwrap()]);
        assert_refused("check-config", &r, file, why);
    }
    let key = dir.path().join("key");
    std::os::unix::fs::symlink("/dev/zero", &key).unwrap();
    let cfg = dir.path().join("config.toml");
    for (file, why) in [
        (&key, "is not a regular file"),
        (&huge, "is larger than 1MiB"),
    ] {
        let backend = format!("api_key_file = {file:?}");
        std::fs::write(&cfg, config_text("http://127.0.0.1:9", "", &backend)).unwrap();
        let r = run(&["check-config", cfg.to_str().unwrap()]);
        assert_refused(&backend, &r, file, why);
    }
    // The limit is real: a program that takes 300 MiB under it fails.
    let mut greedy = Command::new(crate::support::tools::python());
    greedy.args(["-c", "x = bytearray(300 << 20)"]);
    let r = run_limited(greedy);
    assert_ne!(r.code, Some(0), "RLIMIT_DATA did not limit: {}", r.stderr);
}

/// A request to `/v1/models` every 5 ms until `stop`; counts the answers and the failures.
fn keep_asking(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ok2, failed2) = (ok.clone(), failed.clone());
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let req = Request::get(format!("http://{addr}/v1/models"))
                .body(full(""))
                .unwrap();
            let res = send(req).await;
            let good = res.status() == 200;
            body_bytes(res).await;
            if good { &ok2 } else { &failed2 }.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (task, ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refuses_fifos_and_huge_files_and_keeps_serving() {
    let m = Mock::echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let good = config_text(&m.url(), "", "");
    std::fs::write(&cfg, &good).unwrap();
    let (proc, notify) = start_notified(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let (asking, ok, failed) = keep_asking(proc.addr, stop.clone());

    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let huge = sparse_file(dir.path());
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let before = proc.peak_rss_kib();
    let replace = |from: &Path| {
        let tmp = dir.path().join("next");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(from, &tmp).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    // What is wrong, how the config is made so, what the refusal says.
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, String);
    let cases: Vec<Case> = vec![
        (
            "FIFO as config",
            Box::new(|| replace(&fifo)),
            format!(
                "{}: cannot read config file (--config): not a regular file",
                cfg.display()
            ),
        ),
        (
            "2 GiB config",
            Box::new(|| replace(&huge)),
            "cannot read config file (--config): larger than 1MiB".into(),
        ),
        (
            "/dev/zero as config",
            Box::new(|| replace(&zero)),
            "cannot read config file (--config): not a regular file".into(),
        ),
        (
            "FIFO as api_key_file",
            Box::new(|| {
                let text = config_text(&m.url(), "", &format!("api_key_file = {fifo:?}"));
                std::fs::remove_file(&cfg).unwrap();
                std::fs::write(&cfg, text).unwrap();
            }),
            format!("key file {} is not a regular file", fifo.display()),
        ),
        (
            "FIFO as client_tokens_file",
            Box::new(|| {
                let text = config_text(&m.url(), &format!("client_tokens_file = {fifo:?}"), "");
                std::fs::write(&cfg, text).unwrap();
            }),
            format!(
                "client tokens file {} is not a regular file",
                fifo.display()
            ),
        ),
    ];
    for (what, swap, why) in &cases {
        swap();
        let answered = ok.load(Ordering::SeqCst);
        proc.signal(libc::SIGHUP);
        notify.wait_for("RELOADING=1", Duration::from_secs(10));
        let ready = notify.wait_for("READY=1", Duration::from_secs(10));
        assert!(ready.contains("reload FAILED"), "{what}: {ready}");
        // Requests went on being answered, by the old config.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::SeqCst) < answered + 3 {
            assert!(
                Instant::now() < deadline,
                "{what}: no request answered since"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = proc.log_text();
        let refused = log.lines().any(|l| {
            l.contains("reload failed, keeping the previous configuration: ")
                && l.contains(why.as_str())
        });
        assert!(refused, "{what}: expected {why:?} in:\n{log}");
    }
    // Nothing was read into memory.
    let grew = proc.peak_rss_kib().saturating_sub(before);
    assert!(grew < 32 << 10, "peak RSS grew by {grew} KiB");
    // A good config again: the reload works.
    std::fs::write(&cfg, &good).unwrap();
    proc.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let ready = notify.wait_for("READY=1", Duration::from_secs(10));
    assert!(!ready.contains("FAILED"), "{ready}");

    stop.store(true, Ordering::SeqCst);
    asking.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
    proc.stop().await;
}
